"""Evaluation on ML-100K, leave-one-out by time, full ranking (history excluded):

1. throughput of `lmrec.evaluation.evaluate` (users/s) for EASE and popularity, accuracy
   metrics only and with every default metric, beside the previous per-model loop
   (`leave_one_out_metrics` before issue 3, copied below) in the same run, as ratios;
2. the classic models' test metrics with the runner, checked to be equal to the old loop;
3. popularity against RecBole 1.2.1's Pop, with the effect of tie-breaking.

Run: .venv/bin/python benchmarks/bench_eval.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.evaluation import bootstrap_ci, evaluate, paired_test
from lmrec.io.sample import import_sample
from lmrec.models import create_model
from lmrec.models.base import History
from lmrec.store import Store

MODELS = ["popularity", "itemknn", "userknn", "ease", "als", "bpr", "tfidf"]
#: RecBole 1.2.1 on the same protocol (benchmarks/models.md; Pop as given in issue 3).
RECBOLE_NDCG = {"popularity": 0.0403, "itemknn": 0.0629, "ease": 0.0706, "bpr": 0.0673}


def old_loop(model, split, k: int = 10) -> dict[str, float]:
    """`leave_one_out_metrics` as it was before the evaluation package (test part)."""
    target, hist = split.test, split.train_valid()
    users, items = np.asarray(target.user), np.asarray(target.item)
    ndcg, hit = np.zeros(len(users)), np.zeros(len(users))
    for s in range(0, len(users), 1024):
        idx, _, _ = model.rank(History.from_dataset(hist, users[s : s + 1024]), k)
        match = idx == items[s : s + 1024, None]
        found = match.any(axis=1)
        pos = match.argmax(axis=1)
        ndcg[s : s + 1024] = np.where(found, 1.0 / np.log2(pos + 2), 0.0)
        hit[s : s + 1024] = found
    return {f"ndcg@{k}": float(ndcg.mean()), f"recall@{k}": float(hit.mean())}


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{Path(tmp) / 'ml.db'}") as s:
        import_sample(s)
        ds = Dataset.from_store(s, name="ml-100k")
    split = leave_one_out(ds)
    split.train_valid()
    n = split.test.n_interactions
    print(f"{ds}; LOO test users {n}; repeats {args.repeats} (median)")

    print("\n1. throughput (users/s, full ranking of 1682 items)")
    print(f"{'model':12s} {'old loop':>9s} {'evaluate acc':>13s} {'ratio':>6s} "
          f"{'evaluate all':>13s} {'ratio':>6s}")  # fmt: skip
    for name in ("popularity", "ease"):
        model = create_model(name).fit(split.train)
        t_old, _ = timed(lambda m=model: old_loop(m, split), args.repeats)
        t_acc, _ = timed(
            lambda m=model: evaluate(m, split, k=10, metrics=["ndcg", "recall"]), args.repeats
        )
        t_all, _ = timed(lambda m=model: evaluate(m, split, k=10), args.repeats)
        print(
            f"{name:12s} {n / t_old:9.0f} {n / t_acc:13.0f} {t_old / t_acc:6.2f} "
            f"{n / t_all:13.0f} {t_old / t_all:6.2f}",
            flush=True,
        )
    model = create_model("ease").fit(split.train)
    t_curve, _ = timed(lambda: evaluate(model, split, k=(1, 5, 10, 20, 50)), args.repeats)
    print(f"ease, every default metric at k = 1, 5, 10, 20, 50: {n / t_curve:.0f} users/s")

    print("\n2. classic models, test part, with the runner (old loop equal?)")
    print(f"{'model':12s} {'NDCG@10':>8s} {'Recall@10':>9s} {'MRR@10':>7s} {'Cov@10':>7s} "
          f"{'Nov@10':>7s} {'Div@10':>7s} {'Gini@10':>7s} {'Pers@10':>7s} {'old==new':>8s} "
          f"{'RecBole':>7s} {'ratio':>6s}")  # fmt: skip
    results = {}
    for name in MODELS:
        model = create_model(name).fit(split.train)
        r = results[name] = evaluate(model, split, k=10)
        s = r.summary()
        old = old_loop(model, split)  # the same fitted model
        same = old["ndcg@10"] == s["ndcg@10"] and old["recall@10"] == s["recall@10"]
        ref = RECBOLE_NDCG.get(name)
        tail = f" {ref:7.4f} {s['ndcg@10'] / ref:6.2f}" if ref else ""
        print(
            f"{name:12s} {s['ndcg@10']:8.4f} {s['recall@10']:9.4f} {s['mrr@10']:7.4f} "
            f"{s['coverage@10']:7.4f} {s['novelty@10']:7.3f} {s['diversity@10']:7.4f} "
            f"{s['gini@10']:7.4f} {s['personalization@10']:7.4f} {same!s:>8s}" + tail,
            flush=True,
        )
    base = results["popularity"]
    for name in MODELS[1:]:
        t = paired_test(base, results[name], "ndcg@10")
        d = results[name].per_user["ndcg@10"] - base.per_user["ndcg@10"]
        lo, hi = bootstrap_ci(d, n_boot=1000)
        print(
            f"  {name} - popularity: NDCG@10 diff {t['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}], "
            f"Wilcoxon p={t['p_value']:.2g}"
        )

    print("\n3. popularity vs RecBole Pop (NDCG@10 0.0403): ranking depth and tie-breaking")
    pop = create_model("popularity").fit(split.train)
    for depth in (10, 50, 1682):
        r = evaluate(pop, split, k=10, metrics=["ndcg", "recall"], depth=depth)
        print(f"  ranked to depth {depth:4d}: NDCG@10 {r.summary()['ndcg@10']:.4f}")
    counts = pop.counts
    print(f"  items tied with another on the training count: "
          f"{int((np.unique(counts, return_counts=True)[1] > 1).sum())} count values shared")  # fmt: skip
    vals = []
    for seed in range(20):
        jitter = np.random.default_rng(seed).random(len(counts)).astype(np.float32) * 1e-3
        pop.counts = counts + jitter  # counts are integers: a jitter < 1 only breaks ties
        vals.append(evaluate(pop, split, k=10, metrics=["ndcg"]).summary()["ndcg@10"])
    pop.counts = counts
    print(
        f"  random tie-breaking, 20 seeds: NDCG@10 mean {np.mean(vals):.4f}, "
        f"min {min(vals):.4f}, max {max(vals):.4f}"
    )


if __name__ == "__main__":
    main()
