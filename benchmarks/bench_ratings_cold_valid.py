"""How lmrating's cold-item default was chosen: variants on a cold-item validation split INSIDE
the training part of `bench_ratings.py`'s cold split (the test items are never used).

    PYTHONPATH=src python benchmarks/bench_ratings_cold_valid.py [baseline,mf_map,...]

Outer split: `cold_start_items(ds, 0.2, seed=0)` (as bench_ratings.py); inner:
`cold_start_items(outer.train, 0.2, seed=1)`. Prints RMSE, MAE, fit seconds and the text map.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

VARIANTS: dict[str, tuple[str, dict]] = {
    "baseline": ("baseline", {}),
    "joint_nomap": ("lmrating", {"text_training": True, "text_map": False}),
    "joint_map": ("lmrating", {"text_training": True}),
    "mf_map": ("lmrating", {}),
}


def main() -> None:
    from bench_ratings import load

    from lmrec.data.split import cold_start_items
    from lmrec.models import create_model

    ds = load()
    inner = cold_start_items(cold_start_items(ds, 0.2, seed=0).train, 0.2, seed=1)
    v = inner.test
    print("valid ratings", len(v), "items", len(np.unique(v.item)), flush=True)
    for key in sys.argv[1].split(",") if len(sys.argv) > 1 else list(VARIANTS):
        name, params = VARIANTS[key]
        t0 = time.perf_counter()
        m = create_model(name, **params).fit(inner.train)
        e = m.predict_ratings(v.user.astype(np.int64), v.item.astype(np.int64)) - v.value
        rmse, mae = np.sqrt(np.mean(e * e)), np.mean(np.abs(e))
        secs = time.perf_counter() - t0
        info = json.dumps(getattr(m, "text_map_", None))
        print(f"{key} rmse {rmse:.4f} mae {mae:.4f} s {secs:.0f} {info}", flush=True)


if __name__ == "__main__":
    main()
