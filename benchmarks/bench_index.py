"""Recall@k and speed of the FAISS retrieval index (lmrec.service.index) against exact search.

Synthetic item vectors like MF factors: n items around `clusters` centres with Gaussian noise and
norms spread over [0.5, 2] (inner-product search, not cosine); queries drawn the same way.
Exact top-k comes from brute force (IndexFlatIP); each approximate index is measured against it.

    .venv/bin/python benchmarks/bench_index.py --n 1000000 --dim 64 --queries 1000 --k 100
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    step = 200_000
    for a in range(0, n, step):
        b = min(n, a + step)
        x = centres[rng.integers(clusters, size=b - a)] + 0.7 * rng.normal(size=(b - a, d))
        out[a:b] = x * rng.uniform(0.5, 2.0, size=(b - a, 1))
    return out


def recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(r)) / len(r) for g, r in zip(got, ref, strict=True)]))


def main() -> None:
    import faiss

    from lmrec.service.index import VectorIndex

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--kinds", default="ivf,hnsw")
    p.add_argument("--nprobe", default="", help="comma list of IVF nprobe values to sweep")
    p.add_argument("--ef", default="", help="comma list of HNSW efSearch values to sweep")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)
    x = clustered(args.n, args.dim, args.clusters, 0)
    q = clustered(args.queries, args.dim, args.clusters, 1)
    rows = []
    t0 = time.perf_counter()
    flat = VectorIndex(x, kind="flat")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref, _ = flat.search(q, args.k)
    exact_s = time.perf_counter() - t0
    rows.append(dict(kind="flat", build_s=build, ms_per_query=1000 * exact_s / len(q), recall=1.0))
    print(json.dumps(rows[-1]), flush=True)
    del flat
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        idx = VectorIndex(x, kind=kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
        build = time.perf_counter() - t0
        if kind == "ivf":
            sweep = [int(v) for v in args.nprobe.split(",") if v] or [idx.index.nprobe]
        else:
            sweep = [int(v) for v in args.ef.split(",") if v] or [idx.ef_search]
        for v in sweep:
            if kind == "ivf":
                idx.index.nprobe = v
            else:
                idx.ef_search = v
            t0 = time.perf_counter()
            got, _ = idx.search(q, args.k)
            s = time.perf_counter() - t0
            row = dict(
                kind=kind,
                param=("nprobe" if kind == "ivf" else "efSearch"),
                value=v,
                nlist=int(idx.index.nlist) if kind == "ivf" else None,
                build_s=round(build, 1),
                ms_per_query=round(1000 * s / len(q), 3),
                recall=round(recall(got, ref), 4),
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
        del idx


if __name__ == "__main__":
    main()
