"""Choose bayesmf's defaults on a validation split: ML-100K, the training part of fold 0 of
`bench_ratings.py`'s 5 folds (seed 0), of which a random 10% (seed 1) is held out for
validation; the test fold is not read.

    PYTHONPATH=src python benchmarks/tune_bayesmf.py [NAME=VALUE ...]

prints the parameters, validation RMSE / MAE and fit seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ratings import load

from lmrec.models import create_model


def main() -> None:
    params = {k: int(v) for k, v in (a.split("=", 1) for a in sys.argv[1:])}
    ds = load()
    fold = np.random.default_rng(0).permutation(len(ds)) % 5
    train = ds.subset(fold != 0)
    held = np.random.default_rng(1).random(len(train)) < 0.1
    fit, valid = train.subset(~held), train.subset(held)
    t0 = time.perf_counter()
    m = create_model("bayesmf", **params).fit(fit)
    seconds = time.perf_counter() - t0
    e = m.predict_ratings(valid.user.astype(np.int64), valid.item.astype(np.int64)) - valid.value
    print(params, f"valid rmse {np.sqrt(np.mean(e * e)):.4f} mae {np.mean(np.abs(e)):.4f} "
          f"fit {seconds:.0f}s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
