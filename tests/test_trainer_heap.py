"""`heap_allocations`: large tensors reuse heap memory while training (glibc)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

# Run in a fresh interpreter: the allocator's state after other tests (arenas, a heap top
# that cannot grow in place) would blur the page-fault counts.
PROBE = r"""
import json, resource, torch
from lmrec.nn.trainer import heap_allocations

def faults(n=6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        # 36 MiB: above every mmap threshold glibc adapts to (32 MiB), like the logits of a
        # full-softmax training step.
        x = torch.empty(9 * 1024 * 1024)
        x.fill_(1.0)
        del x
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n

torch.set_num_threads(1)
outside = faults()
with heap_allocations():
    faults(1)  # the heap grows once
    inside = faults()
after = faults()
print(json.dumps({"outside": outside, "inside": inside, "after": after}))
"""


def test_large_tensors_stop_page_faulting_inside_and_defaults_return() -> None:
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    # A clean environment too: variables that imports in this process set (KMP_*, seen from
    # faiss/implicit) change the child's memory layout and its counts.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    # Measured (2026-11-23/30): outside 9223, after 9217 (or 3072); inside 0, 1536 or 3072 by
    # the process's memory layout (and once in a full test run 3072 three times in a row), and
    # once (2026-12-07, a clean-clone CI run) 7680: where the heap top cannot grow in place
    # the reuse is small. So up to three fresh processes (three randomised layouts): freed big
    # tensors are reused inside, at least in part, in one of them; without reuse no layout
    # gets under half the faults.
    seen = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env
        )
        f = json.loads(out.stdout)
        seen.append(f)
        assert f["outside"] > 5_000, f  # 36 MiB of fresh 4 KiB pages each time
        assert f["after"] > f["outside"] / 4, f  # the defaults return after
        if f["inside"] < f["outside"] / 2:
            break
    assert min(f["inside"] / f["outside"] for f in seen) < 0.5, seen
