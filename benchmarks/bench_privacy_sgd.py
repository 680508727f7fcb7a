"""DP-SGD on ML-100K (leave-one-out by time, full ranking; benchmarks/privacy.md): test
NDCG@10 of `sasrec` and `biasedmf` against epsilon (delta = 1e-5, one user = the unit),
one seed, fixed settings (no early stopping, so the guarantee covers everything the network
learned; epsilon = inf is the same settings without DP). The accountant's figures (noise
multiplier, sampling rate, steps, epsilon spent) come from the fitted model's `privacy_`.

Run: PYTHONPATH=src nice -n 19 .venv/bin/python benchmarks/bench_privacy_sgd.py MODEL [EPS ...]
"""

from __future__ import annotations

import sys
import time

from bench_privacy import epsilons, ml100k_split

from lmrec.evaluation import leave_one_out_metrics
from lmrec.models import create_model

#: Fixed settings per model (train + valid is fitted; no early stopping).
SETTINGS = {
    "sasrec": {
        "epochs": 20,
        "patience": None,
        "batch_size": 128,
        "max_grad_norm": 1.0,
        "num_threads": 1,
        "progress": False,
    },
    "biasedmf": {"epochs": 40, "max_grad_norm": 1.0, "dp_batch_size": 64},
}


def main() -> None:
    name = sys.argv[1]
    eps_list = epsilons(sys.argv[2:])
    split = ml100k_split()
    print(
        "| model | epsilon | test NDCG@10 | test Recall@10 | noise multiplier | sample rate | "
        "steps | epsilon spent (RDP) | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for eps in eps_list:
        params = dict(SETTINGS[name])
        if eps is not None:
            params["epsilon"] = eps
        t0 = time.perf_counter()
        m = create_model(name, **params).fit(split.train_valid())
        fit_s = time.perf_counter() - t0
        t = leave_one_out_metrics(m, split, "test")
        p = getattr(m, "privacy_", None) or {}
        print(
            f"| {name} | {eps if eps is not None else 'inf'} | {t['ndcg@10']:.4f} | "
            f"{t['recall@10']:.4f} | {p.get('noise_multiplier', 0):.3f} | "
            f"{p.get('sample_rate', 0):.4f} | {p.get('steps', '-')} | "
            f"{p.get('epsilon', float('inf')):.3f} | {fit_s:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
