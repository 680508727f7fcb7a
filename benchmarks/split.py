"""Time every splitter on a synthetic dataset of MovieLens-1M size (and on ML-100K if cached).

Run: .venv/bin/python benchmarks/split.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

from lmrec.data import (
    Dataset,
    Vocabulary,
    cold_start_items,
    cold_start_users,
    kfold,
    leave_one_out,
    random_split,
    temporal_split,
)


def synthetic(n_users: int = 6040, n_items: int = 3706, n: int = 1_000_209, seed: int = 0):
    """Skewed users and items (Zipf-like popularity), timestamps over three years, ties common."""
    rng = np.random.default_rng(seed)
    uw = 1.0 / np.arange(1, n_users + 1) ** 0.7
    iw = 1.0 / np.arange(1, n_items + 1) ** 0.9
    user = rng.choice(n_users, size=n, p=uw / uw.sum())
    item = rng.choice(n_items, size=n, p=iw / iw.sum())
    ts = rng.integers(956_703_932, 1_046_454_590, size=n).astype(np.float64) // 60 * 60
    return Dataset(
        Vocabulary([f"u{i}" for i in range(n_users)]),
        Vocabulary([f"i{i}" for i in range(n_items)]),
        user,
        item,
        value=rng.integers(1, 6, size=n).astype(np.float32),
        ts=ts,
        name="synthetic-ml1m",
    )


def bench(ds: Dataset, repeat: int) -> None:
    cases: dict[str, Callable[[], object]] = {
        "leave_one_out": lambda: leave_one_out(ds),
        "temporal_split": lambda: temporal_split(ds),
        "random_split 8:1:1": lambda: random_split(ds, seed=1),
        "kfold k=5 (all 5)": lambda: kfold(ds, 5, seed=1),
        "cold_start_users 0.2": lambda: cold_start_users(ds, seed=1),
        "cold_start_items 0.2": lambda: cold_start_items(ds, seed=1),
        "loo + train_valid()": lambda: leave_one_out(ds).train_valid(),
    }
    print(f"\n{ds!r}")
    print(f"{'splitter':<24}{'median s':>10}{'min s':>10}")
    for name, fn in cases.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"{name:<24}{np.median(times):>10.4f}{min(times):>10.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    t0 = time.perf_counter()
    ds = synthetic()
    print(f"built synthetic dataset in {time.perf_counter() - t0:.2f} s")
    bench(ds, args.repeat)
    try:
        import tempfile

        from lmrec.io.sample import cache_dir, import_sample
        from lmrec.store import Store

        if (cache_dir() / "ml-100k" / "ml-100k.inter").exists():
            with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{tmp}/ml.db") as s:
                import_sample(s)
                ml = Dataset.from_store(s, name="ml-100k")
            bench(ml, args.repeat)
    except Exception as e:  # the sample is optional here
        print(f"ML-100K skipped: {e}")


if __name__ == "__main__":
    main()
