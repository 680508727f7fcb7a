"""Quality of the language-model recommenders on ML-100K, side by side with their baselines.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_lm.py [--threads 2] [--json OUT]

1. Leave-one-out, full ranking: tfidf vs lmcontent (frozen all-MiniLM-L6-v2) vs lmcontent with
   a fine-tuned encoder (projection head trained on split.train only). Hyperparameters of
   tfidf and lmcontent are chosen on the validation split (NDCG@10); test is reported.
2. Item cold start (`cold_start_items(ds, 0.2, seed=s)` for each of --seeds; ranking among the
   cold items only): random, tfidf, lmcontent, lmmf with side features, and coldstart_item
   (text -> collaborative map) with its ablations (tokens only, TF-IDF text, predicted
   popularity alone); NDCG@10 and Recall@10 with bootstrap 95% intervals per seed, and the mean.
   All settings are chosen on inner cold-item splits of each seed's training data (mean over
   --inner-seeds).
3. User cold start (`cold_start_users`, 20% of users, attributes only): popularity vs
   coldstart_user, whose settings are chosen on an inner cold-user split of the training users;
   paired Wilcoxon and t-tests on per-user NDCG@10.
All metrics come from `lmrec.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

K = 10
METRICS = ["ndcg", "recall"]


def _fit(name: str, params: dict[str, Any], data: Any) -> tuple[Any, float]:
    from lmrec.models import create_model

    t0 = time.perf_counter()
    model = create_model(name, **params).fit(data)
    return model, time.perf_counter() - t0


def _eval(model: Any, split: Any, on: str, **kw: Any) -> Any:
    from lmrec.evaluation import evaluate

    return evaluate(model, split, on=on, k=K, metrics=METRICS, **kw)


def _row(label: str, res: Any, fit_s: float | None = None, ci: bool = False) -> dict[str, Any]:
    from lmrec.evaluation import bootstrap_ci

    s = res.summary()
    row: dict[str, Any] = {
        "model": label,
        "ndcg@10": round(s["ndcg@10"], 4),
        "recall@10": round(s["recall@10"], 4),
        "users": s["users"],
    }
    if ci:
        row["ndcg@10 95% CI"] = [round(x, 4) for x in bootstrap_ci(res.per_user["ndcg@10"])]
        row["recall@10 95% CI"] = [round(x, 4) for x in bootstrap_ci(res.per_user["recall@10"])]
    if fit_s is not None:
        row["fit_s"] = round(fit_s, 1)
    print("   ", json.dumps(row), flush=True)
    return row


def _tune(name: str, grid: dict[str, list[Any]], split: Any, fixed: dict | None = None) -> dict:
    """The grid point with the best validation NDCG@10."""
    best, best_v = {}, -1.0
    for values in itertools.product(*grid.values()):
        p = {**(fixed or {}), **dict(zip(grid, values, strict=True))}
        model, _ = _fit(name, p, split.train)
        v = _eval(model, split, "valid").summary()["ndcg@10"]
        print(f"    tune {name} {json.dumps(p)}: valid ndcg@10 {v:.4f}", flush=True)
        if v > best_v:
            best, best_v = p, v
    return best


def _paired(a: Any, b: Any, la: str, lb: str, metric: str = "ndcg@10") -> dict[str, Any]:
    from lmrec.evaluation import paired_test

    out: dict[str, Any] = {"a": la, "b": lb}
    if metric != "ndcg@10":
        out["metric"] = metric
    for test in ("wilcoxon", "ttest"):
        r = paired_test(a, b, metric=metric, test=test)
        out[f"p_{test}"] = float(f"{r['p_value']:.3g}")
        out["diff"] = round(r["diff"], 4)
        out["ratio"] = round(r["mean_b"] / r["mean_a"], 3) if r["mean_a"] else None
    print("    paired", json.dumps(out), flush=True)
    return out


def loo(ds: Any, workdir: Path) -> dict[str, Any]:
    from lmrec.data.split import leave_one_out
    from lmrec.text.finetune import finetune

    split = leave_one_out(ds)
    print("1. leave-one-out, full ranking", flush=True)
    tf_p = _tune("tfidf", {"half_life": [1.0, 5.0, None], "ngram_max": [1, 2]}, split)
    lm_grid = {"temperature": [0.03, 0.1], "half_life": [1.0, 5.0]}
    lm_p = _tune("lmcontent", lm_grid, split)
    t0 = time.perf_counter()
    ft = finetune(split.train, workdir / "head-loo")
    ft_s = time.perf_counter() - t0
    print(f"    fine-tuned head in {ft_s:.0f} s, loss {ft.losses[0]:.3f} -> {ft.losses[-1]:.3f}")
    ft_p = _tune("lmcontent", lm_grid, split, {"encoder": str(ft.path)})
    out: dict[str, Any] = {"params": {"tfidf": tf_p, "lmcontent": lm_p, "lmcontent-ft": ft_p}}
    res: dict[str, dict[str, Any]] = {}
    for label, name, p in (
        ("popularity", "popularity", {}),
        ("tfidf", "tfidf", tf_p),
        ("lmcontent", "lmcontent", lm_p),
        ("lmcontent-ft", "lmcontent", ft_p),
    ):
        model, fit_s = _fit(name, p, split.train)
        res[label] = {on: _eval(model, split, on) for on in ("valid", "test")}
        for on in ("valid", "test"):
            out.setdefault(on, []).append(_row(f"{label} ({on})", res[label][on], fit_s))
    out["finetune_s"] = round(ft_s, 1)
    out["paired"] = [
        _paired(res["tfidf"]["test"], res["lmcontent"]["test"], "tfidf", "lmcontent"),
        _paired(res["tfidf"]["test"], res["lmcontent-ft"]["test"], "tfidf", "lmcontent-ft"),
        _paired(
            res["lmcontent"]["valid"], res["lmcontent-ft"]["valid"], "frozen valid", "ft valid"
        ),
        _paired(res["lmcontent"]["test"], res["lmcontent-ft"]["test"], "frozen test", "ft test"),
    ]
    return out


def _tune_inner(name: str, grid: list[dict], inners: list[tuple[Any, Any]]) -> dict:
    """The settings with the best mean NDCG@10 over inner splits of train, each ranked among
    its own cold items (`inners`: (inner split, candidate mask) pairs)."""
    best, best_v = {}, -1.0
    for p in grid:
        vals = [
            _eval(_fit(name, p, inner.train)[0], inner, "test", candidates=mask).summary()[
                "ndcg@10"
            ]
            for inner, mask in inners
        ]
        v = sum(vals) / len(vals)
        each = " ".join(f"{x:.4f}" for x in vals)
        print(f"    tune {name} {json.dumps(p)}: inner ndcg@10 {each} mean {v:.4f}", flush=True)
        if v > best_v:
            best, best_v = p, v
    return {**best, "_inner_ndcg": round(best_v, 4)}


def _grid(**axes: list[Any]) -> list[dict]:
    return [dict(zip(axes, v, strict=True)) for v in itertools.product(*axes.values())]


#: Settings of lmmf + side features chosen on the inner split of seed 0 by an earlier run of
#: this script (epochs 10 vs 20, offset or not, side weight 0.5 / 1, year in the text or not);
#: fixed here because each lmmf fit takes minutes on this machine.
LMMF_SIDE = {"epochs": 10, "use_offset": False, "side_features": 1.0}


def cold_items_seed(ds: Any, seed: int, inner_seeds: list[int]) -> dict[str, Any]:
    """One outer item split: tune on inner cold-item splits of its train, test on its cold
    items. Inner splits rank among their own cold items only (the outer cold items, which
    have no interactions at all there, are left out of the candidates)."""
    from lmrec.data.split import cold_start_items

    split = cold_start_items(ds, 0.2, seed=seed)
    inners = []
    for r in inner_seeds:
        inner = cold_start_items(split.train, 0.2, seed=r)
        mask = (inner.train.item_counts() == 0) & (split.train.item_counts() > 0)
        inners.append((inner, mask))
    print(f"2. item cold start, seed {seed}: {split}; tuning on inner seeds {inner_seeds}")
    tf_p = _tune_inner("tfidf", _grid(half_life=[5.0, 20.0, None]), inners)
    lm_grid: list[dict] = [
        {"scoring": "kernel", "temperature": 0.1, "half_life": 20.0},
        {"scoring": "cosine", "half_life": None},
    ]
    lm_p = _tune_inner("lmcontent", lm_grid, inners)
    ci_grid = _grid(side_features=[0.0, 0.5], popularity_weight=[0.0, 0.25, 0.5], reg=[1, 3, 10])
    ci_p = _tune_inner("coldstart_item", ci_grid, inners)
    # Ablations: the same map without the MiniLM vector (category/year tokens only), with a
    # TF-IDF text vector (truncated SVD, 256 dims) instead of MiniLM, and the predicted
    # popularity alone (non-personalised: popularity_weight 1000 swamps the user's part).
    tok_grid = _grid(text_weight=[0.0], popularity_weight=[0.0, 0.25, 0.5], reg=[0.3, 1, 3])
    tok_p = _tune_inner("coldstart_item", tok_grid, inners)
    tfx_grid = _grid(
        encoder=["tfidf:256"], side_features=[0.0, 0.5], popularity_weight=[0.25], reg=[1, 3, 10]
    )
    tfx_p = _tune_inner("coldstart_item", tfx_grid, inners)
    pop_p = _tune_inner("coldstart_item", _grid(popularity_weight=[1000.0], reg=[1, 3, 10]), inners)
    rows, res = [], {}
    for label, name, p in (
        ("random", "random", {}),
        ("tfidf", "tfidf", tf_p),
        ("lmcontent", "lmcontent", lm_p),
        ("lmmf+side", "lmmf", LMMF_SIDE),
        ("coldstart_item", "coldstart_item", ci_p),
        ("coldstart_item tokens only", "coldstart_item", tok_p),
        ("coldstart_item tfidf text", "coldstart_item", tfx_p),
        ("predicted popularity", "coldstart_item", pop_p),
    ):
        p = {k: v for k, v in p.items() if not k.startswith("_")}
        model, fit_s = _fit(name, p, split.train)
        res[label] = _eval(model, split, "test", candidates="cold")
        rows.append(_row(label, res[label], fit_s, ci=True))
    paired = [
        _paired(res[a], res[b], a, b)
        for a, b in (
            ("tfidf", "coldstart_item"), ("random", "coldstart_item"),
            ("lmmf+side", "coldstart_item"), ("tfidf", "lmmf+side"), ("tfidf", "lmcontent"),
            ("coldstart_item tokens only", "coldstart_item"),
            ("coldstart_item tfidf text", "coldstart_item"),
            ("predicted popularity", "coldstart_item"), ("tfidf", "predicted popularity"),
        )
    ] + [
        _paired(res[a], res["coldstart_item"], a, "coldstart_item", metric="recall@10")
        for a in ("tfidf", "lmmf+side", "coldstart_item tokens only", "coldstart_item tfidf text")
    ]  # fmt: skip
    params = {
        "tfidf": tf_p, "lmcontent": lm_p, "lmmf+side": LMMF_SIDE, "coldstart_item": ci_p,
        "tokens only": tok_p, "tfidf text": tfx_p, "predicted popularity": pop_p,
    }  # fmt: skip
    return {"seed": seed, "split": str(split), "params": params, "rows": rows, "paired": paired}


def cold_items(ds: Any, seeds: list[int], inner_seeds: list[int]) -> dict[str, Any]:
    """`cold_items_seed` for each outer seed, and the mean over seeds of each model's metrics."""
    per_seed = [cold_items_seed(ds, s, inner_seeds) for s in seeds]
    mean: list[dict[str, Any]] = []
    for i, row in enumerate(per_seed[0]["rows"]):
        m = {"model": row["model"]}
        for key in ("ndcg@10", "recall@10"):
            m[key] = round(sum(r["rows"][i][key] for r in per_seed) / len(per_seed), 4)
        mean.append(m)
        print("    mean", json.dumps(m), flush=True)
    return {"seeds": seeds, "inner_seeds": inner_seeds, "per_seed": per_seed, "mean": mean}


def cold_users(ds: Any) -> dict[str, Any]:
    from lmrec.data.split import cold_start_users

    split = cold_start_users(ds, 0.2, seed=0)
    inner = cold_start_users(split.train, 0.2, seed=1)
    print(f"3. user cold start: {split}; tuning on {inner}", flush=True)
    best, best_v = {}, -1.0
    grid = {
        "user_fields": [None, ["age", "gender", "occupation"]],
        "reg": [3.0, 10.0],
        "neighbor_weight": [0.5, 1.0],
    }
    pop_inner = _eval(_fit("popularity", {}, inner.train)[0], inner, "test").summary()["ndcg@10"]
    print(f"    tune popularity: inner ndcg@10 {pop_inner:.4f}")
    for values in itertools.product(*grid.values()):
        p = dict(zip(grid, values, strict=True))
        v = _eval(_fit("coldstart_user", p, inner.train)[0], inner, "test").summary()["ndcg@10"]
        print(f"    tune coldstart_user {json.dumps(p)}: inner ndcg@10 {v:.4f}", flush=True)
        if v > best_v:
            best, best_v = p, v
    rows, res = [], {}
    for label, name, p in (
        ("popularity", "popularity", {}),
        ("coldstart_user (defaults)", "coldstart_user", {}),
        ("coldstart_user (tuned)", "coldstart_user", best),
        ("coldstart_user (neighbours only)", "coldstart_user",
         {**best, "reg": 1e6, "neighbor_weight": 1.0}),
    ):  # fmt: skip
        model, fit_s = _fit(name, p, split.train)
        res[label] = _eval(model, split, "test")
        rows.append(_row(label, res[label], fit_s, ci=True))
    paired = [_paired(res["popularity"], res[b], "popularity", b) for b in list(res)[1:]]
    return {"params": best, "rows": rows, "paired": paired}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--only", choices=["loo", "cold_items", "cold_users"], help="one part only")
    ap.add_argument(
        "--seeds", default="0,1,2", help="item cold start: outer split seeds (default 0,1,2)"
    )
    ap.add_argument(
        "--inner-seeds", default="1,2", help="item cold start: inner (tuning) seeds (default 1,2)"
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.store import Store

    workdir = Path(tempfile.mkdtemp(prefix="bench-lm-"))
    with Store(f"sqlite:///{workdir / 'ml.db'}") as s:
        import_sample(s)
        ds = Dataset.from_store(s, name="ml-100k")
    t0 = time.perf_counter()
    out: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count()}
    if args.only in (None, "loo"):
        out["loo"] = loo(ds, workdir)
    if args.only in (None, "cold_items"):
        seeds = [int(x) for x in args.seeds.split(",")]
        inner_seeds = [int(x) for x in args.inner_seeds.split(",")]
        out["cold_items"] = cold_items(ds, seeds, inner_seeds)
    if args.only in (None, "cold_users"):
        out["cold_users"] = cold_users(ds)
    out["seconds"] = round(time.perf_counter() - t0)
    print(f"total {out['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
