"""Diversity re-ranking on ML-100K: the accuracy / diversity trade-off and DPP speed.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rerank.py [--model ease] [--quick]
        [--similarity categories|jaccard] [--skip-speed] [--skip-tradeoff] [--calibrated]

1. Trade-off. Leave-one-out by time; the model is fitted on split.train. Every setting
   (method x diversity weight d x pool size) is measured on the validation part (history =
   train); the setting is chosen there: the largest genre diversity (ILD@10, 1 - cosine of the
   genre sets) among settings whose validation NDCG@10 is at least 96% of the model's own (one
   point of margin under the 5% budget, for the validation-to-test noise). Then the model and the
   chosen setting are measured on the test part (history = train + valid), with a paired
   Wilcoxon test on the per-user NDCG@10. ILD@10 is reported with both genre distances:
   1 - cosine (the re-rankers' own similarity) and 1 - Jaccard (`lmrec.evaluation`'s
   diversity@10). Writes benchmarks/rerank_tradeoff.png and prints a JSON summary.
2. Speed. DPP (and MMR, max-sum) choosing 10 of a model's top 500 candidates for real users,
   with genre features (19 dimensions) and text vectors (384, all-MiniLM-L6-v2).

With `--similarity jaccard` the re-rankers use the Jaccard index of the genre sets (the
similarity of `lmrec.evaluation`'s diversity@10), the grid adds d = 0.6, 0.7 and the rank-based
relevance (`relevance="rank"`), and the choice maximises validation ILD@10 by 1 - Jaccard under
the same NDCG rules; the plot (benchmarks/rerank_tradeoff_jaccard.png) uses that axis.

With `--calibrated` (1 thread): the base is the better validation NDCG@10 of EASE and ALS;
relevance="prob" (softmax of score / T - b log(rank + 1) over the pool, T and b fitted on the
validation items by `lmrec.rerank.calibrate`; also T alone) with max-sum, local search off and
on, pools 50 and 100, beside rank relevance; the choice: the largest validation Jaccard ILD@10
with validation NDCG@10 >= 95% of the base's. Writes benchmarks/rerank_tradeoff_calibrated.png.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent


def _mark_choice(ax, pt: dict, base: dict, key: str, title: str, xlabel: str) -> None:
    """Circle the chosen setting; dashed lines at the 5% NDCG budget and at +20% ILD."""
    ax.scatter([pt[key]], [pt["ndcg"]], s=160, facecolors="none", edgecolors="k", zorder=4,
               label="chosen on validation")  # fmt: skip
    ax.axhline(0.95 * base["ndcg"], color="grey", lw=0.8, ls="--")
    ax.axvline(1.2 * base[key], color="grey", lw=0.8, ls="--")
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def load_ml100k():
    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.store import Store

    with tempfile.TemporaryDirectory() as d, Store(f"sqlite:///{d}/ml.db") as s:
        import_sample(s)
        return Dataset.from_store(s, name="ml-100k")


def genre_vectors(ds) -> np.ndarray:
    from lmrec.evaluation.runner import item_category_matrix

    return item_category_matrix(ds).toarray()


def measure(model, split, on: str, gvec: np.ndarray):
    from lmrec.evaluation import evaluate

    res = evaluate(
        model,
        split,
        on=on,
        k=10,
        metrics=["ndcg", "recall", "diversity", "diversity_emb", "coverage"],
        item_vectors=gvec,
    )
    s = res.summary()
    row = {
        "ndcg": s["ndcg@10"],
        "recall": s["recall@10"],
        "ild_cos": s["diversity_emb@10"],
        "ild_jac": s["diversity@10"],
        "coverage": s["coverage@10"],
    }
    return row, res


def tradeoff(args, ds) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import bootstrap_ci, paired_test
    from lmrec.models import create_model
    from lmrec.rerank import RerankConfig, diversify, item_similarity

    split = leave_one_out(ds)
    gvec = genre_vectors(ds)
    model = create_model(args.model).fit(split.train)
    jac = args.similarity == "jaccard"
    sim = item_similarity(model, args.similarity)
    key = "ild_jac" if jac else "ild_cos"  # the diversity the choice maximises and the plot shows
    grid_d = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5] if not args.quick else [0.2, 0.4]
    if jac and not args.quick:
        grid_d += [0.6, 0.7]
    pools = [30, 50, 100] if not args.quick else [50]
    methods = ["mmr", "maxsum", "dpp"]
    rels = ["scores", "rank"] if jac else ["scores"]
    settings = [(m, d, p, True, rl) for rl in rels for m in methods for d in grid_d for p in pools]
    # The published (undiscounted) greedy of each method, at one pool size, for comparison.
    settings += [(m, d, 50, False, "scores") for m in methods for d in grid_d]

    base_v, _ = measure(model, split, "valid", gvec)
    rows = []
    t0 = time.perf_counter()
    for method, d, pool, disc, rl in settings:
        cfg = RerankConfig(method=method, diversity=d, pool=pool, discount=disc, relevance=rl)
        rr = diversify(model, cfg, similarity=sim)
        v, _ = measure(rr, split, "valid", gvec)
        rows.append(
            {
                "method": method,
                "d": d,
                "pool": pool,
                "discount": disc,
                "relevance": rl,
                "valid": v,
            }
        )
        print(
            f"valid {method:6s} d={d:.2f} pool={pool:3d} disc={int(disc)} rel={rl:6s} NDCG "
            f"{v['ndcg']:.4f} ({v['ndcg'] / base_v['ndcg'] - 1:+.1%})  ILDcos {v['ild_cos']:.4f} "
            f"({v['ild_cos'] / base_v['ild_cos'] - 1:+.1%})  ILDjac {v['ild_jac']:.4f}",
            flush=True,
        )
    sweep_s = time.perf_counter() - t0

    # Rule B: the budget as the issue states it (valid NDCG@10 >= 95% of the model's); reported
    # beside the chosen setting (rule A), with its test numbers.
    ok_b = [r for r in rows if r["valid"]["ndcg"] >= 0.95 * base_v["ndcg"]]
    best_b = max(ok_b, key=lambda r: r["valid"][key])
    ok = [r for r in rows if r["valid"]["ndcg"] >= 0.96 * base_v["ndcg"]]
    best = max(ok, key=lambda r: r["valid"][key])

    def config(r: dict, discount: bool | None = None) -> RerankConfig:
        disc = r["discount"] if discount is None else discount
        return RerankConfig(
            method=r["method"],
            diversity=r["d"],
            pool=r["pool"],
            discount=disc,
            relevance=r["relevance"],
        )

    chosen = diversify(model, config(best), similarity=sim)
    base_t, res_base = measure(model, split, "test", gvec)
    best_t, res_best = measure(chosen, split, "test", gvec)
    chosen_b = diversify(model, config(best_b), similarity=sim)
    best_b_t, res_b = measure(chosen_b, split, "test", gvec)
    test_b = paired_test(res_base, res_b, metric="ndcg@10", test="wilcoxon")
    test = paired_test(res_base, res_best, metric="ndcg@10", test="wilcoxon")
    diff = res_best.per_user["ndcg@10"] - res_base.per_user["ndcg@10"]
    ci = bootstrap_ci(diff, n_boot=2000, seed=0)
    # Test points of every setting, for the plot only (the choice above used validation).
    for r in rows:
        if r["discount"] and r["pool"] == best["pool"] and r["relevance"] == best["relevance"]:
            rr = diversify(model, config(r, discount=True), similarity=sim)
            r["test"], _ = measure(rr, split, "test", gvec)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"mmr": "tab:blue", "maxsum": "tab:green", "dpp": "tab:red"}
    for ax, part, base in ((axes[0], "valid", base_v), (axes[1], "test", base_t)):
        ax.scatter([base[key]], [base["ndcg"]], c="k", marker="s", zorder=3, label="model")
        for m in methods:
            pts = [
                r
                for r in rows
                if r["method"] == m
                and r["discount"]
                and r["pool"] == best["pool"]
                and r["relevance"] == best["relevance"]
                and part in r
            ]
            pts.sort(key=lambda r: r["d"])
            ax.plot(
                [base[key]] + [r[part][key] for r in pts],
                [base["ndcg"]] + [r[part]["ndcg"] for r in pts],
                "o-",
                color=colors[m],
                label=f"{m} (pool {best['pool']}, relevance {best['relevance']})",
                ms=4,
            )
            if part == "valid":
                und = sorted(
                    (r for r in rows if r["method"] == m and not r["discount"]),
                    key=lambda r: r["d"],
                )
                ax.plot(
                    [base[key]] + [r["valid"][key] for r in und],
                    [base["ndcg"]] + [r["valid"]["ndcg"] for r in und],
                    "x:",
                    color=colors[m],
                    alpha=0.6,
                    label=f"{m}, no slot discount (pool 50)",
                )
        pt = best[part] if part == "valid" else best_t
        _mark_choice(ax, pt, base, key, f"{args.model} on ML-100K, {part} (leave-one-out)",
                     f"genre ILD@10 (mean pairwise 1 - {'Jaccard' if jac else 'cosine'})")  # fmt: skip
        ax.set_ylabel("NDCG@10")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    png = HERE / (
        f"rerank_tradeoff{'' if args.model == 'ease' else '_' + args.model}"
        f"{'_jaccard' if jac else ''}.png"
    )
    fig.savefig(png, dpi=120)

    def rel(a, b):
        return {k: round(a[k] / b[k] - 1, 4) for k in ("ndcg", "recall", "ild_cos", "ild_jac")}

    return {
        "model": args.model,
        "similarity": args.similarity,
        "chosen": {k: best[k] for k in ("method", "d", "pool", "discount", "relevance")},
        "valid": {"model": base_v, "chosen": best["valid"], "change": rel(best["valid"], base_v)},
        "test": {"model": base_t, "chosen": best_t, "change": rel(best_t, base_t)},
        "test_ndcg_paired": test,
        "rule_b_95pct": {
            "chosen": {k: best_b[k] for k in ("method", "d", "pool", "discount", "relevance")},
            "valid_change": rel(best_b["valid"], base_v),
            "test": best_b_t,
            "test_change": rel(best_b_t, base_t),
            "test_ndcg_paired": test_b,
        },
        "test_ndcg_diff_ci95": [float(ci[0]), float(ci[1])],
        "sweep_seconds": round(sweep_s, 1),
        "settings": len(rows),
        "png": str(png.relative_to(HERE.parent)),
    }


def calibrated(args, ds) -> dict:
    """Calibrated relevance (relevance="prob", `lmrec.rerank.calibrate`) with max-sum and its
    swap local search, on the Jaccard genre measure; writes rerank_tradeoff_calibrated.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import bootstrap_ci, paired_test
    from lmrec.models import create_model
    from lmrec.rerank import RerankConfig, calibrate, diversify, item_similarity

    split = leave_one_out(ds)
    gvec = genre_vectors(ds)
    # The base: the better validation NDCG@10 of the two strongest models (defaults).
    bases = {}
    for name in ("ease", "als"):
        m = create_model(name).fit(split.train)
        bases[name] = (m, measure(m, split, "valid", gvec)[0])
        print(f"base candidate {name}: valid NDCG@10 {bases[name][1]['ndcg']:.4f}", flush=True)
    base_name = max(bases, key=lambda n: bases[n][1]["ndcg"])
    model, base_v = bases[base_name]
    sim = item_similarity(model, "jaccard")
    key = "ild_jac"
    pools = [50, 100] if not args.quick else [50]
    cals = {}
    for pool in pools:
        for fit_rank in (True, False):
            t0 = time.perf_counter()
            cal = calibrate(model, split.train, split.valid, pool=pool, fit_rank=fit_rank)
            cals[(pool, fit_rank)] = cal
            print(
                f"calibration pool {pool} fit_rank {fit_rank}: {cal} "
                f"({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    grid_p = [0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.07]
    grid_r = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    if args.quick:
        grid_p, grid_r = [0.01, 0.03], [0.3]
    # (variant, d, pool, local search); variants: prob (temperature and rank term), probT
    # (temperature only), rank (the previous best relevance, for comparison)
    settings = [
        (v, d, p, ls)
        for v in ("prob", "probT")
        for p in pools
        for ls in (False, True)
        for d in grid_p
    ]
    settings += [("rank", d, 50, False) for d in grid_r]

    def build(v, d, pool, ls):
        extra = {}
        if v in ("prob", "probT"):
            extra = {"relevance": "prob", **cals[(pool, v == "prob")].params()}
        else:
            extra = {"relevance": "rank"}
        cfg = RerankConfig(method="maxsum", diversity=d, pool=pool, local_search=ls, **extra)
        return diversify(model, cfg, similarity=sim)

    rows = []
    t0 = time.perf_counter()
    for v, d, pool, ls in settings:
        t1 = time.perf_counter()
        val, _ = measure(build(v, d, pool, ls), split, "valid", gvec)
        rows.append(
            {
                "variant": v,
                "d": d,
                "pool": pool,
                "local_search": ls,
                "valid": val,
                "seconds": round(time.perf_counter() - t1, 2),
            }
        )
        print(
            f"valid {v:5s} d={d:.3f} pool={pool:3d} ls={int(ls)} NDCG {val['ndcg']:.4f} "
            f"({val['ndcg'] / base_v['ndcg'] - 1:+.1%})  ILDjac {val['ild_jac']:.4f} "
            f"({val['ild_jac'] / base_v['ild_jac'] - 1:+.1%})  ILDcos {val['ild_cos']:.4f} "
            f"({val['ild_cos'] / base_v['ild_cos'] - 1:+.1%})  {rows[-1]['seconds']} s",
            flush=True,
        )
    sweep_s = time.perf_counter() - t0
    ok = [r for r in rows if r["valid"]["ndcg"] >= 0.95 * base_v["ndcg"]]
    best = max(ok, key=lambda r: r["valid"][key])
    print(f"chosen on validation: {best}", flush=True)
    base_t, res_base = measure(model, split, "test", gvec)
    best_t, res_best = measure(
        build(best["variant"], best["d"], best["pool"], best["local_search"]), split, "test", gvec
    )
    test = paired_test(res_base, res_best, metric="ndcg@10", test="wilcoxon")
    diff = res_best.per_user["ndcg@10"] - res_base.per_user["ndcg@10"]
    ci = bootstrap_ci(diff, n_boot=2000, seed=0)
    # Test points of the chosen curve (same variant, pool and local search) and of calibrated
    # max-sum with local search at the same pool, for the plot only (the choice is made above).
    for r in rows:
        if (r["variant"], r["pool"], r["local_search"]) == ("prob", best["pool"], True) or (
            r["variant"],
            r["pool"],
            r["local_search"],
        ) == (
            best["variant"],
            best["pool"],
            best["local_search"],
        ):
            r["test"], _ = measure(
                build(r["variant"], r["d"], r["pool"], r["local_search"]), split, "test", gvec
            )

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    curves = [
        ("prob", best["pool"], True, "tab:green", "o-"),
        ("prob", best["pool"], False, "tab:olive", "^--"),
        ("probT", best["pool"], True, "tab:purple", "s-"),
        ("rank", 50, False, "tab:blue", "x:"),
    ]
    names = {
        "prob": "calibrated p (T, rank term)",
        "probT": "calibrated p (T only)",
        "rank": "rank relevance (previous best)",
    }
    for ax, part, base in ((axes[0], "valid", base_v), (axes[1], "test", base_t)):
        ax.scatter([base[key]], [base["ndcg"]], c="k", marker="s", zorder=3, label=base_name)
        for v, pool, ls, color, style in curves:
            pts = sorted(
                (
                    r
                    for r in rows
                    if (r["variant"], r["pool"], r["local_search"]) == (v, pool, ls) and part in r
                ),
                key=lambda r: r["d"],
            )
            if not pts:
                continue
            ax.plot(
                [base[key]] + [r[part][key] for r in pts],
                [base["ndcg"]] + [r[part]["ndcg"] for r in pts],
                style,
                color=color,
                ms=4,
                label=f"max-sum, {names[v]}, pool {pool}{', local search' if ls else ''}",
            )
        pt = best["valid"] if part == "valid" else best_t
        _mark_choice(ax, pt, base, key, f"{base_name} on ML-100K, {part} (leave-one-out)",
                     "genre ILD@10 (mean pairwise 1 - Jaccard)")  # fmt: skip
        ax.set_ylabel("NDCG@10")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    png = HERE / "rerank_tradeoff_calibrated.png"
    fig.savefig(png, dpi=120)

    def rel(a, b):
        return {k: round(a[k] / b[k] - 1, 4) for k in ("ndcg", "recall", "ild_cos", "ild_jac")}

    parts = (("valid", base_v), ("test", base_t))
    return {
        "base": base_name,
        "base_valid_ndcg": {n: round(b[1]["ndcg"], 4) for n, b in bases.items()},
        "calibrations": {f"pool {p}, fit_rank {fr}": c.__dict__ for (p, fr), c in cals.items()},
        "chosen": {k: best[k] for k in ("variant", "d", "pool", "local_search")},
        "valid": {"model": base_v, "chosen": best["valid"], "change": rel(best["valid"], base_v)},
        "test": {"model": base_t, "chosen": best_t, "change": rel(best_t, base_t)},
        "test_ndcg_paired": test,
        "test_ndcg_diff_ci95": [float(ci[0]), float(ci[1])],
        "sweep_seconds": round(sweep_s, 1),
        "settings": len(rows),
        "png": str(png.relative_to(HERE.parent)),
        "rows": [
            {
                **{k: r[k] for k in ("variant", "d", "pool", "local_search", "seconds")},
                **{f"{part}_change": rel(r[part], base) for part, base in parts if part in r},
            }
            for r in rows
        ],
    }


def speed(args, ds) -> dict:
    from lmrec.data.split import leave_one_out
    from lmrec.models import create_model
    from lmrec.models.base import History
    from lmrec.rerank import ItemSimilarity, RerankConfig, dpp, maxsum, mmr

    split = leave_one_out(ds)
    model = create_model(args.model).fit(split.train)
    rng = np.random.default_rng(0)
    users = rng.choice(ds.n_users, size=200, replace=False)
    idx, val, _ = model.rank(History.from_dataset(split.train, users), 500)
    sims = {"genres (19-d)": ItemSimilarity.from_categories(ds.item_features.categories)}
    if not args.quick:
        t0 = time.perf_counter()
        sims["text (384-d MiniLM)"] = ItemSimilarity.from_text(ds)
        print(f"encoded {ds.n_items} item texts in {time.perf_counter() - t0:.1f} s", flush=True)
    out = {}
    for sname, sim in sims.items():
        for fname, fn in (("dpp", dpp), ("mmr", mmr), ("maxsum", maxsum)):
            times = []
            cfg = RerankConfig(diversity=0.3)
            for r in range(len(users)):
                fn(idx[r], val[r], 10, sim, cfg)  # warm
                t = time.perf_counter()
                fn(idx[r], val[r], 10, sim, cfg)
                times.append(time.perf_counter() - t)
            ms = np.array(times) * 1e3
            out[f"{fname}, {sname}"] = {
                "median_ms": round(float(np.median(ms)), 3),
                "p95_ms": round(float(np.percentile(ms, 95)), 3),
                "max_ms": round(float(ms.max()), 3),
            }
            print(f"{fname:6s} {sname:20s} 500 -> 10: {out[f'{fname}, {sname}']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ease", help="model name (default ease)")
    ap.add_argument("--quick", action="store_true", help="a small grid, genre features only")
    ap.add_argument("--skip-tradeoff", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument(
        "--similarity",
        choices=["categories", "jaccard"],
        default="categories",
        help="genre similarity of the re-rankers, and the ILD the choice maximises",
    )
    ap.add_argument(
        "--calibrated",
        action="store_true",
        help="calibrated relevance (relevance=prob) with max-sum local search, Jaccard measure",
    )
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1 if args.calibrated else 2)
    except ImportError:  # pragma: no cover
        pass
    ds = load_ml100k()
    if args.calibrated:
        print(json.dumps({"calibrated": calibrated(args, ds)}, indent=2, default=str))
        return
    result = {} if args.skip_speed else {"speed": speed(args, ds)}
    if not args.skip_tradeoff:
        result["tradeoff"] = tradeoff(args, ds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
