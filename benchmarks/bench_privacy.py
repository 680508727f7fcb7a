"""DP-EASE on ML-100K (leave-one-out by time, full ranking; benchmarks/privacy.md): for each
epsilon (delta = 1e-5), the clip c (items per user) and the regularisation are chosen on
validation NDCG@10 from a small grid, then test NDCG@10 is measured once; epsilon = inf is
EASE without noise (its defaults). The accountant's figures (sigma, sensitivity, the epsilon
spent) come from the fitted model (`EASE.privacy_`).

Run: nice -n 10 .venv/bin/python benchmarks/bench_privacy.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.evaluation import leave_one_out_metrics
from lmrec.io.sample import import_sample
from lmrec.models import create_model
from lmrec.store import Store

EPSILONS = (1.0, 4.0, 8.0, None)
CLIPS = (16, 32, 64)
#: `LMREC_DP_REGS=128,512,2048` replaces the grid of regularisations.
REGS = tuple(float(r) for r in os.environ.get("LMREC_DP_REGS", "8,32,128").split(","))


def ml100k_split():
    """ML-100K imported into a throwaway store, split leave-one-out by time."""
    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{Path(tmp) / 'ml.db'}") as s:
        import_sample(s)
        ds = Dataset.from_store(s, name="ml-100k")
    return leave_one_out(ds)


def epsilons(args: list[str]) -> list[float | None]:
    """Command-line epsilons ("inf": no DP), or EPSILONS."""
    return [float(e) if e != "inf" else None for e in args] or list(EPSILONS)


def main() -> None:
    split = ml100k_split()
    print(
        "| epsilon | clip c | reg | valid NDCG@10 | test NDCG@10 | test Recall@10 | sigma | "
        "sensitivity | epsilon spent | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for eps in epsilons(sys.argv[1:]):
        grid = (
            [({}, "default")]
            if eps is None
            else [
                ({"epsilon": eps, "dp_max_items": c, "reg": r}, f"{c} {r}")
                for c in CLIPS
                for r in REGS
            ]
        )
        best = None
        for params, _ in grid:
            m = create_model("ease", **params).fit(split.train)
            v = leave_one_out_metrics(m, split, "valid")["ndcg@10"]
            if best is None or v > best[0]:
                best = (v, params)
        v, params = best
        t0 = time.perf_counter()
        m = create_model("ease", **params).fit(split.train_valid())
        fit_s = time.perf_counter() - t0
        t = leave_one_out_metrics(m, split, "test")
        p = getattr(m, "privacy_", None) or {}
        print(
            f"| {eps if eps is not None else 'inf'} | {params.get('dp_max_items', '-')} | "
            f"{params.get('reg', 8.0)} | {v:.4f} | {t['ndcg@10']:.4f} | {t['recall@10']:.4f} | "
            f"{p.get('sigma', 0):.2f} | {p.get('sensitivity', 0):.2f} | "
            f"{p.get('epsilon', float('inf')):.3f} | {fit_s:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
