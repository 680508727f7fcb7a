"""Rating prediction on MovieLens-100K: lmrec's rating models beside scikit-surprise, on the
same folds, in one run.

    PYTHONPATH=src python benchmarks/bench_ratings.py --out benchmarks/ratings.json \
        [--surprise /work/venv-surprise/bin/python] [--models baseline,svdpp] [--folds 5]

Protocol (Surprise's): the 100,000 ratings are dealt at random into 5 folds (seed 0); each
fold is the test set once, the other four the training set. Every lmrec model is fitted on
each training set with its default parameters and RMSE / MAE / fit seconds are measured on
the test fold. Surprise's algorithms run on the very same folds through `surprise_runner.py`
in a separate environment (scikit-surprise is not an lmrec dependency).

Cold items: 20% of the rated items are held out with all their ratings
(`lmrec.data.split.cold_start_items`, seed 0); the LM-enhanced model (`lmrating`) and the
item-bias baseline are fitted on the rest and predict the held-out ratings; paired tests on
the per-user mean squared errors (Wilcoxon) and the per-rating squared errors (t-test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def load() -> object:
    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.store import Store

    db = Path(tempfile.gettempdir()) / "lmrec-bench-ratings.db"
    if not db.exists():
        with Store(f"sqlite:///{db}") as s:
            import_sample(s)
    with Store(f"sqlite:///{db}") as s:
        return Dataset.from_store(s, name="ml-100k")


def lmrec_side(ds, fold: np.ndarray, models: list[str], only: int | None = None) -> dict:
    from lmrec.models import create_model

    out: dict[str, dict] = {}
    for name in models:
        res = out.setdefault(name, {"rmse": [], "mae": [], "fit_seconds": []})
        for f in range(int(fold.max()) + 1) if only is None else [only]:
            train, test = ds.subset(fold != f), ds.subset(fold == f)
            t0 = time.perf_counter()
            m = create_model(name).fit(train)
            res["fit_seconds"].append(time.perf_counter() - t0)
            e = m.predict_ratings(test.user.astype(np.int64), test.item.astype(np.int64))
            e = e - test.value
            res["rmse"].append(float(np.sqrt(np.mean(e * e))))
            res["mae"].append(float(np.mean(np.abs(e))))
            print(name, f, res["rmse"][-1], res["mae"][-1], res["fit_seconds"][-1], flush=True)
        for k in ("rmse", "mae", "fit_seconds"):
            res[f"{k}_mean"] = float(np.mean(res[k]))
            res[f"{k}_std"] = float(np.std(res[k], ddof=1)) if len(res[k]) > 1 else 0.0
    return out


def cold_items(ds, models: list[str]) -> dict:
    from scipy import stats

    from lmrec.data.split import cold_start_items
    from lmrec.models import create_model

    split = cold_start_items(ds, 0.2, seed=0)
    t = split.test
    users = t.user.astype(np.int64)
    out: dict[str, dict] = {"test_ratings": len(t), "test_items": len(np.unique(t.item))}
    sq: dict[str, np.ndarray] = {}
    for name in models:
        t0 = time.perf_counter()
        m = create_model(name).fit(split.train)
        secs = time.perf_counter() - t0
        e = m.predict_ratings(users, t.item.astype(np.int64)) - t.value
        sq[name] = e * e
        out[name] = {
            "rmse": float(np.sqrt(np.mean(e * e))),
            "mae": float(np.mean(np.abs(e))),
            "fit_seconds": secs,
        }
        if getattr(m, "text_map_", None):  # lmrating's cross-validated text map
            out[name]["text_map"] = m.text_map_
        print("cold", name, out[name], flush=True)
    base = models[0]
    u, inv = np.unique(users, return_inverse=True)
    n = np.bincount(inv)
    per_user = {k: np.bincount(inv, v) / n for k, v in sq.items()}
    for name in models[1:]:
        w = stats.wilcoxon(per_user[name] - per_user[base])
        tt = stats.ttest_rel(sq[name], sq[base])
        out[name]["vs"] = base
        out[name]["wilcoxon_per_user_mse_p"] = float(w.pvalue)
        out[name]["users"] = len(u)
        out[name]["ttest_per_rating_se_p"] = float(tt.pvalue)
        out[name]["mean_se_diff"] = float(np.mean(sq[name] - sq[base]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/ratings.json")
    ap.add_argument("--surprise", help="python of an environment with scikit-surprise")
    ap.add_argument("--models", default="baseline,knnbaseline,biasedmf,svdpp,lmrating,ratingblend")
    ap.add_argument("--cold", default="baseline,lmrating")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--skip-folds", action="store_true", help="only the cold-item part")
    ap.add_argument(
        "--only-fold",
        type=int,
        help="run lmrec's models on this fold only (to run folds in parallel)",
    )
    args = ap.parse_args()
    ds = load()
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(ds)) % args.folds
    report: dict = {"dataset": repr(ds), "folds": args.folds}
    proc, tmp = None, Path(tempfile.mkdtemp())
    if args.surprise and not args.skip_folds:
        # Fail now, not after the lmrec side, when the Surprise environment lacks a package.
        check = [args.surprise, "-c", "import numpy, pandas, surprise"]
        got = subprocess.run(check, capture_output=True, text=True)
        if got.returncode != 0:
            raise SystemExit(f"{args.surprise} cannot import surprise_runner's packages:\n"
                             f"{got.stderr.strip()}")  # fmt: skip
        # Surprise runs at the same time as lmrec, on the same folds (same machine load).
        csv = tmp / "folds.csv"
        with csv.open("w") as fh:
            fh.write("user,item,rating,fold\n")
            for u, i, r, f in zip(
                ds.users.ids_of(ds.user), ds.items.ids_of(ds.item), ds.value, fold, strict=True
            ):
                fh.write(f"{u},{i},{r:g},{f}\n")
        runner = Path(__file__).with_name("surprise_runner.py")
        log = (tmp / "surprise.log").open("w")
        cmd = [args.surprise, str(runner), str(csv), str(tmp / "surprise.json")]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    if not args.skip_folds:
        report["lmrec"] = lmrec_side(ds, fold, args.models.split(","), args.only_fold)
        Path(args.out).write_text(json.dumps(report, indent=2))
    if args.cold:
        report["cold_items"] = cold_items(ds, args.cold.split(","))
        Path(args.out).write_text(json.dumps(report, indent=2))
    if proc is not None:
        if proc.wait() != 0:
            raise SystemExit(f"surprise_runner failed; see {tmp / 'surprise.log'}")
        report["surprise"] = json.loads((tmp / "surprise.json").read_text())
    Path(args.out).write_text(json.dumps(report, indent=2))
    for side in ("lmrec", "surprise"):
        for name, r in report.get(side, {}).items():
            print(
                f"| {side} | {name} | {r['rmse_mean']:.4f} ± {r['rmse_std']:.4f} | "
                f"{r['mae_mean']:.4f} ± {r['mae_std']:.4f} | {r['fit_seconds_mean']:.1f} |"
            )
    json.dump(report.get("cold_items", {}), sys.stdout, indent=2)


if __name__ == "__main__":
    main()
