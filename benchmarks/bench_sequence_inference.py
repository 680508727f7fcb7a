"""Cost of a sequence model's inference vector on CPU: the full encoder's last row
(`encode(...)[:, -1]`, what `last_hidden` computed before 2026-12-04) against
`last_hidden`, which runs the last block for the last position only
(`TransformerEncoder.last`). One process, one torch thread, alternating, median of
`--reps` calls per batch size; also the largest difference between the two vectors.

    .venv/bin/python benchmarks/bench_sequence_inference.py --items 1682 --len 50 \
        --batches 50,512 --layers 2 --width 64
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=1682)
    p.add_argument("--len", type=int, default=50, help="history length (full windows)")
    p.add_argument("--batches", default="50,512")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--nets", default="SASRecNet,BERT4RecNet")
    args = p.parse_args()

    import numpy as np
    import torch

    from lmrec.nn import sequence

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for name in args.nets.split(","):
        net = getattr(sequence, name)(
            args.items, width=args.width, layers=args.layers, max_len=args.len
        ).eval()
        for b in (int(x) for x in args.batches.split(",")):
            tokens = torch.randint(1, args.items + 1, (b, args.len))
            tokens[: b // 4, : args.len // 2] = 0  # a quarter of the rows left-padded
            times: dict[str, list[float]] = {"full": [], "last": []}
            with torch.no_grad():
                calls = {
                    "full": lambda net=net, t=tokens: net.encode(t, net.item_weight())[:, -1],
                    "last": lambda net=net, t=tokens: net.last_hidden(t),
                }
                diff = float((calls["full"]() - calls["last"]()).abs().max())
                for _ in range(args.reps):
                    for k, f in calls.items():
                        t0 = time.perf_counter()
                        f()
                        times[k].append(time.perf_counter() - t0)
            full, last = (float(np.median(times[k]) * 1e3) for k in ("full", "last"))
            row = {"net": name, "batch": b, "full_ms": round(full, 3), "last_ms": round(last, 3),
                   "speedup": round(full / last, 2), "max_abs_diff": diff}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
