"""Classic models on ML-100K, leave-one-out by time, full ranking: fit time, evaluation time,
test NDCG@10 / Recall@10, side by side with RecBole 1.2.1 on the same protocol.

Run: .venv/bin/python benchmarks/bench_models.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.evaluation import leave_one_out_metrics
from lmrec.io.sample import import_sample
from lmrec.models import create_model
from lmrec.store import Store

#: name -> (NDCG@10, Recall@10, end-to-end seconds) reported for RecBole 1.2.1.
RECBOLE = {
    "itemknn": (0.0629, 0.1145, 6.8),
    "bpr": (0.0673, 0.1241, 38.0),
    "ease": (0.0706, 0.1347, 5.2),
}

RUNS: list[tuple[str, str, dict]] = [
    ("popularity", "popularity", {}),
    ("itemknn", "itemknn", {}),
    ("itemknn (no recency)", "itemknn", {"half_life": None}),
    ("userknn", "userknn", {}),
    ("userknn (no recency)", "userknn", {"half_life": None}),
    ("ease", "ease", {}),
    ("ease (no recency, reg=2)", "ease", {"half_life": None, "reg": 2}),
    ("als", "als", {}),
    ("als (no recency)", "als", {"half_life": None}),
    ("bpr", "bpr", {}),
    ("bpr (no recency, trained factors)", "bpr", {"half_life": None, "fold_in": "new"}),
    ("tfidf", "tfidf", {}),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{Path(tmp) / 'ml.db'}") as s:
        import_sample(s)
        t0 = time.perf_counter()
        ds = Dataset.from_store(s, name="ml-100k")
        snap = time.perf_counter() - t0
    t0 = time.perf_counter()
    split = leave_one_out(ds)
    split.train_valid()
    split_s = time.perf_counter() - t0
    print(f"{ds}; snapshot {snap:.2f} s, LOO split {split_s:.2f} s")
    head = f"{'model':36s} {'fit s':>7s} {'eval s':>7s} {'NDCG@10':>8s} {'Recall@10':>9s}"
    print(head + f" {'RecBole NDCG':>12s} {'ratio':>6s} {'RecBole s':>9s} {'e2e s':>6s}")
    for label, name, params in RUNS:
        model = create_model(name, **params)
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = leave_one_out_metrics(model, split, "test")
        ev_s = time.perf_counter() - t0
        e2e = snap + split_s + fit_s + ev_s
        ref = RECBOLE.get(name)
        extra = (
            f" {ref[0]:12.4f} {m['ndcg@10'] / ref[0]:6.2f} {ref[2]:9.1f} {e2e:6.2f}"
            if ref
            else f" {'':12s} {'':6s} {'':9s} {e2e:6.2f}"
        )
        print(
            f"{label:36s} {fit_s:7.2f} {ev_s:7.2f} {m['ndcg@10']:8.4f} {m['recall@10']:9.4f}"
            + extra,
            flush=True,
        )


if __name__ == "__main__":
    main()
