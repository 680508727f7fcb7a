"""Cost of one SASRec training step on CPU with and without `lmrec.nn.trainer.heap_allocations`
(glibc serves tensors above 32 MiB with fresh mmap'd pages; the full-softmax logits of a batch
are such a tensor). Each variant runs in its own process, alternating, `--rounds` times.

    .venv/bin/python benchmarks/bench_train_step.py --items 3400 --batch 64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(heap: bool, items: int, batch: int, steps: int) -> dict:
    import contextlib

    import torch

    from lmrec.nn.sequence import SASRecNet
    from lmrec.nn.trainer import heap_allocations

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = SASRecNet(items, max_len=50)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    data = [
        {"tokens": torch.randint(1, items + 1, (batch, 50)),
         "targets": torch.randint(1, items + 1, (batch, 50))}
        for _ in range(5)
    ]  # fmt: skip

    def step(b: dict) -> None:
        opt.zero_grad()
        net(b).backward()
        opt.step()

    with heap_allocations() if heap else contextlib.nullcontext():
        for b in data:
            step(b)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(steps):
            step(data[i % len(data)])
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "heap": heap,
        "ms_per_step": round(wall / steps * 1e3, 1),
        "user_ms": round((r1.ru_utime - r0.ru_utime) / steps * 1e3, 1),
        "sys_ms": round((r1.ru_stime - r0.ru_stime) / steps * 1e3, 1),
        "page_faults": round((r1.ru_minflt - r0.ru_minflt) / steps),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=3400)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", choices=["heap", "mmap"])
    a = p.parse_args()
    if a.child:
        print(json.dumps(one(a.child == "heap", a.items, a.batch, a.steps)))
        return
    rows = []
    for _ in range(a.rounds):
        for v in ("mmap", "heap"):
            cmd = [sys.executable, __file__, "--child", v, "--items", str(a.items),
                   "--batch", str(a.batch), "--steps", str(a.steps)]  # fmt: skip
            rows.append(json.loads(subprocess.run(cmd, capture_output=True, check=True).stdout))
            print(json.dumps(rows[-1]), flush=True)
    for v in (False, True):
        ms = sorted(r["ms_per_step"] for r in rows if r["heap"] == v)
        print(f"heap={v}: median {ms[len(ms) // 2]} ms/step over {len(ms)} runs")


if __name__ == "__main__":
    main()
