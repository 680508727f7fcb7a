"""Encoding throughput of the default text encoder (bundled all-MiniLM-L6-v2) on ML-100K texts,
and the time of a second run served from the store's vector cache.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_text.py [--threads 2] [--batch-size 64]

Texts: the 1682 item texts and 943 user texts of ML-100K (`lmrec.text.item_texts`,
`user_texts`) and 943 behaviour texts (the newest 20 ratings per user). Each kind is encoded
into a fresh SQLite store (first run: every text encoded), then again (second run: every vector
read from the store, none encoded). The in-process memo is off, as in `lmrec encode`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.store import Store
    from lmrec.text import behaviour_texts, encode_cached, item_texts, load_encoder, user_texts

    tmp = Path(tempfile.mkdtemp(prefix="bench-text-"))
    with Store(f"sqlite:///{tmp / 'ml.db'}") as s:
        import_sample(s)
        ds = Dataset.from_store(s, name="ml-100k")
    kinds = {
        "items": item_texts(ds),
        "users": [t for t in user_texts(ds) if t],
        "behaviour": [t for t in behaviour_texts(ds, max_items=20) if t],
    }
    enc = load_encoder("minilm")
    t0 = time.perf_counter()
    enc.encode(["warm up"])  # loads the model
    load_s = time.perf_counter() - t0
    rows = []
    with Store(f"sqlite:///{tmp / 'cache.db'}") as store:
        for kind, texts in kinds.items():
            chars = sum(len(t) for t in texts) / max(len(texts), 1)
            first: dict = {}
            encode_cached(enc, texts, store, batch_size=args.batch_size, memo=False, stats=first)
            second: dict = {}
            encode_cached(enc, texts, store, batch_size=args.batch_size, memo=False, stats=second)
            row = {
                "kind": kind,
                "texts": first["unique"],
                "mean_chars": round(chars, 1),
                "first_s": round(first["seconds"], 2),
                "texts_per_s": round(first["encoded"] / first["seconds"], 1),
                "second_s": round(second["seconds"], 3),
                "second_encoded": second["encoded"],
                "speedup": round(first["seconds"] / second["seconds"], 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "encoder": enc.name,
        "model_load_s": round(load_s, 2),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
