"""A million items and ten million interactions on one machine: generation, import, snapshot,
training and answers of every scalable model, ANN recall against exact search.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_scale.py run \
        --users 500000 --items 1000000 --interactions 10000000 \
        --models popularity,itemknn,als,sasrec --out benchmarks/scale.json

Every step runs in its own process, so that its peak resident memory (`os.wait4`) is its
own: `gen` writes the synthetic shop (`lmrec.io.synthetic`, Parquet) under
artifacts/scale/, `import` runs `lmrec import` into a fresh SQLite store, `snapshot` reads
the store into a Dataset, and `model NAME` reads it, splits it leave-one-out by time, fits the
model on the training part, evaluates it on the test part with 100 sampled negatives per user
(every test user; only the targets and negatives are scored: `Recommender.rank_among`), and
answers: top-10 for 1,000 random users in batches of 100 (ms per user) and for 200 users
one at a time (p50 / p99 ms). For models with item vectors (ALS) `model` also measures
recall@100 of the FAISS index (`lmrec.service.index.VectorIndex`, kind auto = IVF here)
against exact search for those 1,000 users' vectors. EASE is not among the models: its
dense items x items inverse (8 TB at 1M items) is refused above `max_items`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "artifacts" / "scale"

#: Settings of the models at this scale (everything else is the model's default).
PARAMS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "itemknn": {},  # sparse co-occurrence blocks (auto above 50,000 items)
    "als": {"num_threads": 2},
    "bpr": {"num_threads": 2},
    # loss auto = sampled softmax above 20,000 items; one epoch, no validation
    "sasrec": {"epochs": 1, "patience": None, "num_threads": 2},
}


def _child(cmd: list[str]) -> dict[str, Any]:
    """Run one step as a child process: its wall seconds and peak RSS (GiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
        "exit": code,
    }


def _db() -> str:
    return f"sqlite:///{WORK / 'scale.db'}"


def step_gen(args: argparse.Namespace) -> None:
    from lmrec.io.synthetic import synthetic_files

    files = synthetic_files(
        WORK / "files", users=args.users, items=args.items,
        interactions=args.interactions, fmt="parquet", seed=0,
    )  # fmt: skip
    print(json.dumps({"interactions": files.n_interactions}))


def step_snapshot(args: argparse.Namespace) -> None:
    from lmrec import Dataset, Store

    t0 = time.perf_counter()
    with Store(_db()) as s:
        ds = Dataset.from_store(s)
    out = {"seconds": round(time.perf_counter() - t0, 1), "interactions": ds.n_interactions}
    (WORK / "snapshot.json").write_text(json.dumps(out))


def step_model(args: argparse.Namespace) -> None:
    import torch

    from lmrec import Dataset, Store
    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import evaluate
    from lmrec.models import create_model
    from lmrec.models.base import Query

    torch.set_num_threads(2)
    name = args.name
    with Store(_db()) as s:
        ds = Dataset.from_store(s)
    t0 = time.perf_counter()
    split = leave_one_out(ds)
    split_s = time.perf_counter() - t0
    del ds
    model = create_model(name, **PARAMS.get(name, {}))
    t0 = time.perf_counter()
    model.fit(split.train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate(model, split, on="test", k=10, sampled=100, metrics=["ndcg", "recall"])
    eval_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    users = split.train.users.ids[rng.choice(split.train.n_users, 1000, replace=False)].tolist()
    t0 = time.perf_counter()
    recs = model.recommend_many(users, 10, batch_size=100)
    batch_ms = (time.perf_counter() - t0) / len(users) * 1000
    lat = []
    for u in users[:200]:
        t1 = time.perf_counter()
        model.recommend(u, 10)
        lat.append((time.perf_counter() - t1) * 1000)
    out: dict[str, Any] = {
        "model": name,
        "params": PARAMS.get(name, {}),
        "split_s": round(split_s, 1),
        "fit_s": round(fit_s, 1),
        "sampled_eval": {
            "users": len(res.users),
            "label": res.sampled,
            "seconds": round(eval_s, 1),
            "ndcg@10": round(float(np.nanmean(res.per_user["ndcg@10"])), 4),
            "recall@10": round(float(np.nanmean(res.per_user["recall@10"])), 4),
        },
        "answers": sum(len(r.items) == 10 for r in recs),
        "batch_ms_per_user": round(batch_ms, 2),
        "single_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "single_p99_ms": round(float(np.percentile(lat, 99)), 2),
    }
    items = model.item_embeddings()
    if items is not None:
        from lmrec.service.index import VectorIndex

        q = model.query_embeddings(model.history_of([Query(user=u) for u in users]))
        t0 = time.perf_counter()
        index = VectorIndex(items, kind="auto")
        build_s = time.perf_counter() - t0
        exact = VectorIndex.exact(items, q, 100)
        t0 = time.perf_counter()
        got = index.search(q, 100)[0]
        search_ms = (time.perf_counter() - t0) / len(q) * 1000
        recall = np.mean(
            [len(np.intersect1d(a, b)) / 100 for a, b in zip(got, exact, strict=False)]
        )
        out["ann"] = {
            "kind": index.kind, "build_s": round(build_s, 1),
            "ms_per_query": round(search_ms, 2), "recall_at_100": round(float(recall), 4),
        }  # fmt: skip
    (WORK / f"model-{name}.json").write_text(json.dumps(out))


def run(args: argparse.Namespace) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    py, me = sys.executable, str(Path(__file__).resolve())
    size = ["--users", str(args.users), "--items", str(args.items),
            "--interactions", str(args.interactions)]  # fmt: skip
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores",
        "users": args.users, "items": args.items, "interactions": args.interactions,
    }  # fmt: skip
    res["gen"] = _child([py, me, "gen", *size])
    print("gen", res["gen"], flush=True)
    db = WORK / "scale.db"
    for f in WORK.glob("scale.db*"):
        f.unlink()
    files = WORK / "files"
    res["import"] = _child([
        py, "-m", "lmrec.cli", "--db", _db(), "import", "-q",
        "--interactions", str(files / "interactions.parquet"),
        "--items", str(files / "items.parquet"), "--users", str(files / "users.parquet"),
    ])  # fmt: skip
    res["import"]["db_gib"] = round(db.stat().st_size / 2**30, 2)
    print("import", res["import"], flush=True)
    res["snapshot"] = _child([py, me, "snapshot"])
    res["snapshot"].update(json.loads((WORK / "snapshot.json").read_text()))
    print("snapshot", res["snapshot"], flush=True)
    res["models"] = {}
    for name in args.models.split(","):
        r = _child([py, me, "model", name])
        f = WORK / f"model-{name}.json"
        if r["exit"] == 0 and f.exists():
            r.update(json.loads(f.read_text()))
        res["models"][name] = r
        print(name, r, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    for name in ("run", "gen"):
        s = sub.add_parser(name)
        s.add_argument("--users", type=int, default=500_000)
        s.add_argument("--items", type=int, default=1_000_000)
        s.add_argument("--interactions", type=int, default=10_000_000)
        if name == "run":
            s.add_argument("--models", default="popularity,itemknn,als,sasrec")
            s.add_argument("--out", help="write the results here (JSON)")
    sub.add_parser("snapshot")
    s = sub.add_parser("model")
    s.add_argument("name")
    args = ap.parse_args()
    {"run": run, "gen": step_gen, "snapshot": step_snapshot, "model": step_model}[args.step](args)


if __name__ == "__main__":
    main()
