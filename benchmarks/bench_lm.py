"""Quality of the language-model recommenders on ML-100K, side by side with their baselines.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_lm.py [--threads 2] [--json OUT]

1. Leave-one-out, full ranking: tfidf vs lmcontent (frozen all-MiniLM-L6-v2) vs lmcontent with
   a fine-tuned encoder (projection head trained on split.train only). Hyperparameters of
   tfidf and lmcontent are chosen on the validation split (NDCG@10); test is reported.
2. Item cold start (`cold_start_items`, 20% of items; ranking among the cold items only):
   random, tfidf, lmcontent, lmmf, and lmcontent/lmmf with exact-match category and attribute
   tokens beside the text (`side_features`); NDCG@10 and Recall@10 with bootstrap 95% intervals.
   All settings are chosen on an inner cold-item split of the training data.
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


def _paired(a: Any, b: Any, la: str, lb: str) -> dict[str, Any]:
    from lmrec.evaluation import paired_test

    out = {"a": la, "b": lb}
    for test in ("wilcoxon", "ttest"):
        r = paired_test(a, b, metric="ndcg@10", test=test)
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


def _tune_inner(name: str, grid: list[dict], inner: Any, **kw: Any) -> dict:
    """The settings with the best NDCG@10 on the test part of an inner split of train."""
    best, best_v = {}, -1.0
    for p in grid:
        v = _eval(_fit(name, p, inner.train)[0], inner, "test", **kw).summary()["ndcg@10"]
        print(f"    tune {name} {json.dumps(p)}: inner ndcg@10 {v:.4f}", flush=True)
        if v > best_v:
            best, best_v = p, v
    return best


def cold_items(ds: Any) -> dict[str, Any]:
    from lmrec.data.split import cold_start_items

    split = cold_start_items(ds, 0.2, seed=0)
    inner = cold_start_items(split.train, 0.2, seed=1)  # cold items drawn from the warm ones
    print(f"2. item cold start: {split}; tuning on {inner}", flush=True)
    tf_p = _tune_inner("tfidf", [{"half_life": h} for h in (5.0, 20.0, None)], inner,
                       candidates="cold")  # fmt: skip
    lm_grid: list[dict] = [
        {"scoring": "kernel", "temperature": 0.03, "half_life": 1.0},
        {"scoring": "kernel", "temperature": 0.1, "half_life": 20.0},
        {"scoring": "cosine", "half_life": 20.0},
        {"scoring": "cosine", "half_life": None},
    ]
    lm_p = _tune_inner("lmcontent", lm_grid, inner, candidates="cold")
    # Hybrid items: the MiniLM vector + exact-match category/attribute tokens (`side_features`).
    # Also with the year left out of the text (MiniLM blurs it) and matched as a token instead.
    no_year = "{title}. {categories}."
    hy_grid = [
        {**lm_p, "side_features": w, **({"item_template": t} if t else {})}
        for t in (None, no_year)
        for w in (1.0, 3.0)
    ]
    hy_p = _tune_inner("lmcontent", hy_grid, inner, candidates="cold")
    mf_grid: list[dict] = [{"epochs": 10}, {"epochs": 10, "use_offset": False}]
    mf_p = _tune_inner("lmmf", mf_grid, inner, candidates="cold")
    mfh_grid = [
        {**mf_p, "side_features": w, **({"item_template": t} if t else {})}
        for t in (None, no_year)
        for w in (0.5, 1.0)
    ]
    mfh_p = _tune_inner("lmmf", mfh_grid, inner, candidates="cold")
    rows, res = [], {}
    for label, name, p in (
        ("random", "random", {}),
        ("tfidf", "tfidf", tf_p),
        ("lmcontent", "lmcontent", lm_p),
        ("lmmf", "lmmf", mf_p),
        ("lmcontent+side", "lmcontent", hy_p),
        ("lmmf+side", "lmmf", mfh_p),
    ):
        model, fit_s = _fit(name, p, split.train)
        res[label] = _eval(model, split, "test", candidates="cold")
        rows.append(_row(label, res[label], fit_s, ci=True))
    paired = [
        _paired(res[a], res[b], a, b)
        for a, b in (
            ("tfidf", "lmcontent"), ("tfidf", "lmmf"), ("random", "lmcontent"), ("random", "lmmf"),
            ("tfidf", "lmcontent+side"), ("tfidf", "lmmf+side"),
            ("lmcontent", "lmcontent+side"), ("lmmf", "lmmf+side"),
        )
    ]  # fmt: skip
    params = {
        "tfidf": tf_p, "lmcontent": lm_p, "lmmf": mf_p, "lmcontent+side": hy_p, "lmmf+side": mfh_p
    }  # fmt: skip
    return {"params": params, "rows": rows, "paired": paired}


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
        out["cold_items"] = cold_items(ds)
    if args.only in (None, "cold_users"):
        out["cold_users"] = cold_users(ds)
    out["seconds"] = round(time.perf_counter() - t0)
    print(f"total {out['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
