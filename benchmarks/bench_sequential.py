"""Transformer sequence models on ML-100K (leave-one-out by time, full ranking) and training
cost on a synthetic set the size of MovieLens-1M.

    .venv/bin/python benchmarks/bench_sequential.py ml100k [--threads 2] [--json out.json]
    .venv/bin/python benchmarks/bench_sequential.py cold   [--threads 2]
    .venv/bin/python benchmarks/bench_sequential.py ml1m   [--threads 2] [--epochs N]
        [--loss ce|sampled] [--param NAME=VALUE ...]
    OMP_NUM_THREADS=1 .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node=2 \
        benchmarks/bench_sequential.py ml1m --threads 1 ...   # 2 processes x 1 thread (DDP)

ml100k: EASE (the best classic model) and each sequence model with its tuned defaults, side by
side in one run: fit on the LOO train part with early stopping on the valid part (the
literature's protocol, as RecBole runs it), then test NDCG@10 / Recall@10 with train + valid
as history; also SASRec fitted the way `lmrec train` does (validation carved from the
training sequences). cold: item cold start (`cold_start_items`, 10% of the items held out),
ranking only among the held-out items, SASRec with and without text, and LM content.
ml1m: 6,040 users, 3,400 items, 1,000,000 interactions drawn from a clustered Markov process;
wall time, CPU time, time per epoch, the validation curve and peak resident memory of SASRec
training (its own process; under torchrun, process 0 evaluates and reports, its peak memory
is per process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Tuned defaults are the models' defaults; extra rows are listed here.
ML100K_RUNS: list[tuple[str, str, dict[str, Any], bool]] = [
    # (label, model, params, early stopping on split.valid)
    ("ease (defaults)", "ease", {}, False),
    ("sasrec", "sasrec", {}, True),
    ("sasrec, validation carved (lmrec train)", "sasrec", {}, False),
    ("sasrec text=fuse", "sasrec", {"text": "fuse"}, True),
    ("bert4rec", "bert4rec", {}, True),
    ("xlnet", "xlnet", {}, True),
]


def ml100k_dataset():
    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.store import Store

    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{tmp}/ml.db") as store:
        import_sample(store)
        return Dataset.from_store(store, name="ml-100k")


def run_ml100k(threads: int, only: list[str] | None) -> list[dict[str, Any]]:
    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import evaluate
    from lmrec.models import create_model

    split = leave_one_out(ml100k_dataset())
    rows = []
    for label, name, params, use_valid in ML100K_RUNS:
        if only and name not in only:
            continue
        neural = name in ("sasrec", "bert4rec", "xlnet")
        if neural:
            params = {"num_threads": threads, **params}
        model = create_model(name, **params)
        t0 = time.perf_counter()
        if neural:
            model.fit(split.train, valid=split.valid if use_valid else None)
        else:
            model.fit(split.train)
        fit_s = time.perf_counter() - t0
        test = evaluate(model, split, on="test", k=10).summary()
        row: dict[str, Any] = {
            "label": label,
            "fit_s": round(fit_s, 1),
            "test_ndcg@10": round(test["ndcg@10"], 4),
            "test_recall@10": round(test["recall@10"], 4),
        }
        if neural:
            r = model.train_result
            row.update(
                to_best_s=round(r.seconds_to_best, 1),
                best_epoch=r.best_epoch,
                epochs=r.epochs_run,
                valid_ndcg=round(r.best_score, 4),
                epoch_s=round(r.seconds / max(r.epochs_run, 1), 2),
            )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def run_cold(threads: int) -> list[dict[str, Any]]:
    from lmrec.data.split import cold_start_items
    from lmrec.evaluation import evaluate
    from lmrec.models import create_model

    split = cold_start_items(ml100k_dataset(), 0.1, seed=0)
    rows = []
    runs = [
        ("sasrec", "sasrec", {"num_threads": threads}),
        ("sasrec text=fuse", "sasrec", {"num_threads": threads, "text": "fuse"}),
        ("lmcontent", "lmcontent", {}),
        ("popularity", "popularity", {}),
    ]
    for label, name, params in runs:
        t0 = time.perf_counter()
        model = create_model(name, **params).fit(split.train)
        fit_s = time.perf_counter() - t0
        res = evaluate(model, split, on="test", k=10, candidates="cold").summary()
        row = {
            "label": label,
            "fit_s": round(fit_s, 1),
            "cold_ndcg@10": round(res["ndcg@10"], 4),
            "cold_recall@10": round(res["recall@10"], 4),
            "cold_hr@10": round(res["hr@10"], 4),
            "users": res["users"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def synthetic_ml1m(seed: int = 0, users: int = 6040, items: int = 3400, total: int = 1_000_000):
    """Users in 30 taste clusters; each step moves to one of the 8 items after the current one
    in the cluster's own item order (70%) or to a popular item of the cluster (30%)."""
    import pandas as pd

    from lmrec.data import Dataset

    rng = np.random.default_rng(seed)
    lengths = np.maximum(20, rng.lognormal(4.6, 0.9, users)).astype(np.int64)
    lengths = np.maximum(20, (lengths * total / lengths.sum()).astype(np.int64))
    lengths[: total - lengths.sum()] += 1
    lengths[np.argmax(lengths)] += total - lengths.sum()
    n_clusters = 30
    orders = [rng.permutation(items) for _ in range(n_clusters)]
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    pop /= pop.sum()
    cluster = rng.integers(n_clusters, size=users)
    item_col = np.empty(total, np.int64)
    pos = 0
    for u in range(users):
        order = orders[cluster[u]]
        n = lengths[u]
        steps = rng.integers(1, 9, size=n)
        jump = rng.random(n) < 0.3
        jumps = rng.choice(items, size=n, p=pop)
        p = int(rng.integers(items))
        for t in range(n):
            p = jumps[t] if jump[t] else (p + steps[t]) % items
            item_col[pos + t] = order[p]
        pos += n
    user_col = np.repeat(np.arange(users), lengths)
    ts = np.concatenate([np.arange(n) for n in lengths]).astype(np.float64)
    frame = pd.DataFrame({"user": user_col, "item": item_col, "ts": ts})
    return Dataset.from_frame(frame, name="synthetic-ml1m")


def run_ml1m(
    threads: int, epochs: int | None, loss: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import evaluate
    from lmrec.models import create_model
    from lmrec.nn import is_main_process

    t0 = time.perf_counter()
    ds = synthetic_ml1m()
    split = leave_one_out(ds)
    gen_s = time.perf_counter() - t0
    params: dict[str, Any] = {"num_threads": threads, "loss": loss, **(extra or {})}
    if epochs:
        params["epochs"] = epochs
    if is_main_process():
        print(json.dumps({"params": params}), flush=True)
    model = create_model("sasrec", **params)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model.fit(split.train, valid=split.valid)
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    r = model.train_result
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not is_main_process():
        return {}  # under torchrun: process 0 reports
    test = evaluate(model, split, on="test", k=10).summary()
    row = {
        "data": f"{ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions",
        "processes": world,
        "loss": loss,
        "generate_s": round(gen_s, 1),
        "fit_s": round(fit_s, 1),
        "fit_cpu_s": round(fit_cpu_s, 1),
        "to_best_s": round(r.seconds_to_best, 1),
        "epochs": r.epochs_run,
        "best_epoch": r.best_epoch,
        "epoch_s": round(r.seconds / max(r.epochs_run, 1), 1),
        "valid_ndcg": round(r.best_score, 4),
        "test_ndcg@10": round(test["ndcg@10"], 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "params": params,
        "history": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in r.history
        ],
    }
    print(json.dumps(row), flush=True)
    return row


def _params(pairs: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs, the value read as JSON (else as a string)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise SystemExit(f"--param {pair!r}: expected NAME=VALUE, e.g. negatives=1024")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=["ml100k", "cold", "ml1m"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--only", nargs="*", help="ml100k: only these model names")
    ap.add_argument("--epochs", type=int, help="ml1m: most epochs (default: the model's)")
    ap.add_argument("--loss", default="ce", choices=["ce", "sampled"], help="ml1m: SASRec loss")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="ml1m: another SASRec parameter (JSON value), e.g. --param negatives=1024",
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.part == "ml100k":
        out: Any = run_ml100k(args.threads, args.only)
    elif args.part == "cold":
        out = run_cold(args.threads)
    else:
        out = run_ml1m(args.threads, args.epochs, args.loss, _params(args.param))
    if args.json and out:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
