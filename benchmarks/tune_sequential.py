"""Validation grids and seed repeats for the Transformer sequence models on ML-100K.

    .venv/bin/python benchmarks/tune_sequential.py GRID [GRID ...] [--device cpu] [--jobs 1]
        [--threads 1] [--seeds 0] [--data DIR] [--text-vectors FILE.npy] [--out DIR]

Protocol (the same as `bench_sequential.py ml100k`): leave-one-out by time; every setting is
fitted on the train part with early stopping on the valid part (NDCG@10, full ranking), and
settings are compared by that *validation* score only. The test part is also evaluated
(train + valid as history) and written beside it, with each user's test NDCG@10 in
`OUT/per_user/<run>.npy`, for the report and for paired tests of the chosen settings; it is
never used to choose.

Grids (`GRIDS`): bert4rec, xlnet (model-specific settings around the defaults), seeds
(SASRec ids only vs text=fuse, seeds 1, 2, 0).
Runs are independent processes (`--jobs`), so a GPU or many cores can take several at once;
invocations sharing `--out` split the runs between them (each run is claimed by a file in
`OUT/claims`; delete it to run again) and skip those already in `OUT/results.jsonl`.

--data: a dataset saved by `Dataset.save` (default: the ML-100K sample, through the store).
--text-vectors: (n_items, D) item text vectors in the dataset's item order, used instead of
encoding the item texts (for a machine without the language model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


#: name -> list of (model, params); the models' defaults fill the rest. Small on purpose: each
#: run takes minutes on one shared CPU thread.
GRIDS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "bert4rec": [
        ("bert4rec", {"mask_prob": 0.4, "patience": 15}),
        ("bert4rec", {"mask_prob": 0.2, "patience": 15}),
        ("bert4rec", {"mask_prob": 0.4, "patience": 15, "seed": 1}),
        ("bert4rec", {"mask_prob": 0.4, "patience": 15, "seed": 2}),
        ("bert4rec", {"dropout": 0.1, "patience": 15}),
        ("bert4rec", {"mask_prob": 0.4, "learning_rate": 1e-3, "patience": 20}),
    ],
    "xlnet": [
        ("xlnet", {"target_fraction": 0.5}),
        ("xlnet", {"last_target_prob": 0.3}),
        ("xlnet", {"target_fraction": 0.5, "seed": 1}),
        ("xlnet", {"target_fraction": 0.5, "seed": 2}),
    ],
    "seeds": [
        (name, {**text, "seed": s})
        for s in (1, 2, 0)
        for name, text in (("sasrec", {}), ("sasrec", {"text": "fuse"}))
    ],
}


def run_label(model: str, params: dict[str, Any]) -> str:
    keys = sorted(k for k in params if k not in ("num_threads", "device"))
    return model + "".join(f"_{k}={params[k]}" for k in keys)


_SPLIT: Any = None


def _split(data: str | None) -> Any:
    global _SPLIT
    if _SPLIT is None:
        from lmrec.data import Dataset
        from lmrec.data.split import leave_one_out

        if data:
            ds = Dataset.load(data)
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_sequential import ml100k_dataset

            ds = ml100k_dataset()
        _SPLIT = leave_one_out(ds)
    return _SPLIT


def _one(
    model: str,
    params: dict[str, Any],
    data: str | None,
    text_vectors: str | None,
    amp: bool,
    out: str,
) -> dict[str, Any] | None:
    """One run's results (None when another invocation on `out` has claimed it)."""
    import torch

    from lmrec.evaluation import evaluate
    from lmrec.models import create_model
    from lmrec.nn import trainer

    label = run_label(model, params)
    claims = Path(out) / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    try:  # another invocation on the same --out may have taken this run
        os.close(os.open(claims / label, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return None
    print(json.dumps({"start": label}), flush=True)

    if not amp:  # full precision on CUDA too, as on the CPU

        class FullPrecision(trainer.TrainConfig):
            amp: bool = False

        trainer.TrainConfig = FullPrecision  # type: ignore[misc]
    torch.set_num_threads(int(params.get("num_threads") or 1))
    split = _split(data)
    m = create_model(model, **params)
    if text_vectors:
        vectors = np.load(text_vectors)
        if vectors.shape[0] != split.train.n_items:
            raise SystemExit(
                f"{text_vectors}: {vectors.shape[0]} rows, the data has {split.train.n_items} items"
            )
        m._text_vectors = lambda dataset: vectors  # type: ignore[method-assign]
    t0 = time.perf_counter()
    m.fit(split.train, valid=split.valid)
    fit_s = time.perf_counter() - t0
    res = evaluate(m, split, on="test", k=10)
    per_user = Path(out) / "per_user"
    per_user.mkdir(parents=True, exist_ok=True)
    np.save(per_user / f"{label}.npy", np.asarray(res.per_user["ndcg@10"], np.float32))
    np.save(per_user / "users.npy", np.asarray(res.users))
    r = m.train_result
    summ = res.summary()
    return {
        "label": label,
        "model": model,
        "params": params,
        "valid_ndcg": round(r.best_score, 4),
        "best_epoch": r.best_epoch,
        "epochs": r.epochs_run,
        "fit_s": round(fit_s, 1),
        "to_best_s": round(r.seconds_to_best, 1),
        "test_ndcg@10": round(summ["ndcg@10"], 4),
        "test_recall@10": round(summ["recall@10"], 4),
        "valid_curve": [round(h.get("valid", float("nan")), 4) for h in r.history],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("grids", nargs="+", choices=sorted(GRIDS))
    ap.add_argument("--device", default="cpu", help="torch device of every run (default cpu)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds of settings that name none"
    )
    ap.add_argument("--data", help="a dataset saved by Dataset.save (default: ML-100K)")
    ap.add_argument("--text-vectors", help="item text vectors .npy (default: encode texts)")
    ap.add_argument("--only", nargs="+", help="only the runs with these labels, in this order")
    ap.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    ap.add_argument("--out", type=Path, default=Path("tune_sequential"), help="output folder")
    args = ap.parse_args(argv)
    runs = []
    for g in args.grids:
        for model, params in GRIDS[g]:
            for seed in [params["seed"]] if "seed" in params else args.seeds:
                p = {**params, "device": args.device, "num_threads": args.threads}
                if "seed" in params or len(args.seeds) > 1 or seed != 0:
                    p["seed"] = seed
                runs.append((model, p))
    if args.only:
        by_label = {run_label(m, p): (m, p) for m, p in runs}
        unknown = [lab for lab in args.only if lab not in by_label]
        if unknown:
            raise SystemExit(f"--only: no such run {unknown}; runs: {sorted(by_label)}")
        runs = [by_label[lab] for lab in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = set()
    if results.exists():
        done = {json.loads(line)["label"] for line in results.read_text().splitlines() if line}
    todo = [(m, p) for m, p in runs if run_label(m, p) not in done]
    print(f"{len(runs)} runs, {len(todo)} to do", flush=True)
    import multiprocessing as mp

    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(_one, m, p, args.data, args.text_vectors, args.amp, str(args.out)): (m, p)
            for m, p in todo
        }
        for f in as_completed(futures):
            try:
                row = f.result()
            except Exception as e:  # report and go on with the other runs
                m, p = futures[f]
                print(json.dumps({"label": run_label(m, p), "error": repr(e)}), flush=True)
                continue
            if row is None:
                continue
            print(json.dumps(row), flush=True)
            with results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
