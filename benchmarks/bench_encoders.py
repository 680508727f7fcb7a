"""Item vectors of a store for one text encoder, with the encoding throughput.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_encoders.py \
        --db sqlite:////work/artifacts/beauty-enc.db --encoder minilm --label minilm \
        --out-dir /work/artifacts/vectors --threads 1

Writes OUT_DIR/<prefix>_<label>.npy (float32, (n_items, dim), rows in `ds.items` order) and
appends one line to OUT_DIR/README.txt: the encoder name (its cache key), seconds and texts/s.
Texts are `lmrec.text.templates.item_texts(ds)`; sentence-transformers sorts each call's texts by
length into batches. The store is only read. `--limit N` times the first N texts and writes no
vectors (a throughput probe).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True, help="store URL (read only)")
    ap.add_argument("--encoder", default="minilm", help="encoder spec for load_encoder")
    ap.add_argument("--label", help="file label (default: the spec)")
    ap.add_argument("--prefix", default="beauty", help="file prefix (default beauty)")
    ap.add_argument("--out-dir", default="vectors")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, help="time only the first N texts; write nothing")
    ap.add_argument("--note", default="", help="free text appended to the README line")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from lmrec import Dataset, Store
    from lmrec.text import load_encoder
    from lmrec.text.templates import item_texts

    with Store(args.db) as store:
        ds = Dataset.from_store(store)
    texts = item_texts(ds)
    if args.limit:
        texts = texts[: args.limit]
    t0 = time.perf_counter()
    enc = load_encoder(args.encoder)
    enc.encode(texts[:8])  # load the model and warm up outside the timing
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecs = enc.encode(texts, batch_size=args.batch_size)
    secs = time.perf_counter() - t0
    label = args.label or args.encoder
    rate = len(texts) / secs
    res = {
        "encoder": enc.name,
        "spec": args.encoder,
        "dim": int(vecs.shape[1]),
        "texts": len(texts),
        "mean_chars": float(np.mean([len(t) for t in texts])),
        "seconds": round(secs, 1),
        "texts_per_second": round(rate, 1),
        "load_seconds": round(load_s, 1),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "load_average": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    print(json.dumps(res, indent=2))
    if args.limit:
        return
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fname = f"{args.prefix}_{label}.npy"
    np.save(out / fname, vecs.astype(np.float32))
    line = (
        f"{fname}: encoder {enc.name} (spec {args.encoder!r}), shape {vecs.shape}, rows in "
        f"ds.items order of {args.db}; {secs:.1f} s, {rate:.1f} texts/s, {args.threads} torch "
        f"thread(s), batch {args.batch_size}, {res['date']}"
    )
    if args.note:
        line += f"; {args.note}"
    with (out / "README.txt").open("a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
