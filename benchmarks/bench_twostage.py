"""Two-stage ranking against its own retrievers: leave-one-out by time, full ranking.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/bench_twostage.py run ml100k \
        --variants twostage,no-context,no-text,no-retrievers
    .venv/bin/python benchmarks/bench_twostage.py report ml100k
    .venv/bin/python benchmarks/bench_twostage.py latency ml100k --requests 2000

`run` imports the data set into `artifacts/twostage/DATA.db` (ML-100K through `lmrec
sample`; Amazon Beauty from a copy of `artifacts/text_aware/beauty.db`), fills the text
vector cache, splits leave-one-out by time, fits each variant on the train part (valid for
the retrievers that stop early on it) and measures test NDCG@10 / Recall@10 with train +
valid as history, history excluded, the whole catalogue ranked (items outside the candidate
list rank below every candidate, by the first retriever: "outside the candidates counts as
not retrieved" holds for k <= the candidate count). Each twostage variant is measured twice:
through `lmrec.evaluation.evaluate` (no request time: the ranker's context is the user's last
event) and with the request time of the test event in the query (`Query.time`, as a
service request carries it). Its retrievers (as fitted inside it, on the same data) are
measured alongside, and the candidate recall (test item among the C candidates). Per-user
NDCG@10 goes to `artifacts/twostage/DATA/LABEL.npy`, a row of numbers to `LABEL.json`.
`report` prints the tables with a paired Wilcoxon test against the best retriever. `choose`
picks among variants by valid NDCG@10 only (every setting of the model is chosen so: the
defaults, and the ranker, come from `choose`, never from test numbers).
`latency` fits the default model on all the data (once, saved as `DATA-serve`) and times
single-user answers (200 candidates, request time and event in the query), one request at a
time, in process; the service under 50 concurrent clients is `bench_service.py --models
twostage`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.models.twostage import FEATURE_GROUPS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts" / "twostage"

#: label -> parameters of `twostage` (everything else its defaults).
VARIANTS: dict[str, dict[str, Any]] = {
    "twostage": {},
    "targets1": {"targets": 1},
    "targets5": {"targets": 5},
    "targets15": {"targets": 15},
    "reg": {"min_data_in_leaf": 100, "num_leaves": 15},
    "ranker-refit": {"ranker_refit": True},
    "slow": {
        "learning_rate": 0.02,
        "epochs": 600,
        "ranker": {"feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1},
    },
    "slow-reg": {
        "learning_rate": 0.02,
        "epochs": 600,
        "min_data_in_leaf": 100,
        "num_leaves": 15,
        "ranker": {"feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1},
    },
    # Ablations: every feature group but one (the "attributes" group came on 2026-12-04;
    # earlier rows of twostage.md had no attributes group in either arm).
    **{
        f"no-{group}": {"features": [g for g in FEATURE_GROUPS if g != group]}
        for group in ("recent", "context", "text", "retrievers", "attributes")
    },
    "sasrec": {"retrievers": ["ease", "itemknn", "sasrec", "popularity"]},
    "no-sasrec": {"retrievers": ["ease", "itemknn", "popularity"]},
    "targets10": {"targets": 10},
    "dcn": {"ranker": "dcn"},
    "dcn-targets5": {"ranker": "dcn", "targets": 5},
    "dcn-targets10": {"ranker": "dcn", "targets": 10},
    "dcn-parallel": {"ranker": "dcn", "dcn": {"structure": "parallel"}},
    "dcn-pairwise": {"ranker": "dcn", "dcn": {"loss": "pairwise"}},
    "dcn-slow": {"ranker": "dcn", "dcn": {"learning_rate": 3e-4, "dropout": 0.3}},
}


def store_url(data: str) -> str:
    return f"sqlite:///{OUT / (data + '.db')}"


def prepare(data: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    db = OUT / f"{data}.db"
    if not db.exists():
        if data == "beauty":  # built by bench_text_aware (text vectors cached): copied, read
            shutil.copy(ROOT.parent / "main" / "artifacts" / "text_aware" / "beauty.db", db)
        else:
            cmd = [sys.executable, "-m", "lmrec.cli", "--db", store_url(data), "sample", "ml-100k"]
            subprocess.run(cmd, check=True)


def load(data: str):
    from lmrec import Dataset, Store
    from lmrec.text.cache import encode_cached
    from lmrec.text.encoders import load_encoder
    from lmrec.text.templates import item_texts

    with Store(store_url(data)) as store:
        ds = Dataset.from_store(store, name=data)
        encode_cached(load_encoder("minilm"), item_texts(ds), store)  # into the memo
    return ds


def _with_time(model, split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test NDCG@10 per test user with the test event's time in the query, and whether the
    test item was among the candidates; (users, ndcg, in_candidates)."""
    from lmrec.models.base import History, Query

    tv, test = split.train_valid(), split.test
    users = np.unique(test.user).astype(np.int64)
    tptr, vptr = test.user_ptr, split.valid.user_ptr
    ndcg, found = np.zeros(len(users)), np.zeros(len(users), bool)
    for s in range(0, len(users), 256):
        b = users[s : s + 256]
        h = History.from_dataset(tv, b)
        h.queries = [
            Query(
                time=float(test.ts[tptr[u]]),
                timestamps=split.valid.ts[vptr[u] : vptr[u + 1]].tolist() or None,
            )
            for u in b
        ]
        target = test.item[tptr[b]]
        cands = model.candidates_of(h)
        found[s : s + len(b)] = (cands == target[:, None]).any(axis=1)
        idx, _, _ = model.rank(h, 10)
        hit = idx == target[:, None]
        rank = np.argmax(hit, axis=1)
        ndcg[s : s + len(b)] = np.where(hit.any(axis=1), 1.0 / np.log2(rank + 2.0), 0.0)
    return users, ndcg, found


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _save(data: str, label: str, users, ndcg, row: dict) -> None:
    out = OUT / data
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{label}.npy", np.asarray(ndcg, np.float32))
    np.save(out / f"{label}.users.npy", np.asarray(users))
    (out / f"{label}.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row), file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> None:
    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import evaluate
    from lmrec.models import create_model

    prepare(args.data)
    ds = load(args.data)
    split = leave_one_out(ds)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    measured: set[str] = set()
    for label in args.variants:
        params = {
            **VARIANTS[label],
            **{k: _value(v) for k, v in (p.split("=", 1) for p in args.param)},
        }
        model = create_model("twostage", **params)
        t0 = time.perf_counter()
        model.fit(split.train, valid=split.valid)
        fit_s = time.perf_counter() - t0
        res = evaluate(model, split, on="test", k=10, metrics=["ndcg", "recall"])
        val = evaluate(model, split, on="valid", k=10, metrics=["ndcg"]) if args.valid else None
        users, nd, found = _with_time(model, split)
        base = {"data": args.data, "params": params, "fit_s": round(fit_s, 1), "date": date,
                "best_iteration": model.best_iteration_, "ranker_valid_ndcg": model.valid_ndcg_,
                "train_recall": model.train_recall_, "candidates": model.config.candidates,
                "valid_ndcg": float(np.nanmean(val.per_user["ndcg@10"])) if val else None}  # fmt: skip
        _save(args.data, label, res.users, res.per_user["ndcg@10"],
              {**base, "label": label, "test_ndcg": float(np.nanmean(res.per_user["ndcg@10"])),
               "test_recall": float(np.nanmean(res.per_user["recall@10"]))})  # fmt: skip
        _save(args.data, f"{label}+time", users, nd,
              {**base, "label": f"{label}+time", "test_ndcg": float(nd.mean()),
               "candidate_recall": float(found.mean())})  # fmt: skip
        if not args.retrievers:
            continue
        for r, m in zip(model.config.retrievers, model.models, strict=True):
            if r in measured:  # once per run: the same retriever fits alike in every variant
                continue
            measured.add(r)
            rr = evaluate(m, split, on="test", k=10, metrics=["ndcg", "recall"])
            _save(args.data, f"retriever-{r}", rr.users, rr.per_user["ndcg@10"],
                  {"data": args.data, "label": f"retriever-{r}", "date": date,
                   "test_ndcg": float(np.nanmean(rr.per_user["ndcg@10"])),
                   "test_recall": float(np.nanmean(rr.per_user["recall@10"]))})  # fmt: skip
        if args.save and label == "twostage":
            model.save(OUT / f"{args.data}-twostage")


def report(args: argparse.Namespace) -> None:
    from scipy.stats import wilcoxon

    for data in args.data_sets:
        d = OUT / data
        rows = {f.stem: json.loads(f.read_text()) for f in sorted(d.glob("*.json"))}
        nd = {k: np.load(d / f"{k}.npy") for k in rows}
        users = {k: np.load(d / f"{k}.users.npy") for k in rows}
        rets = [k for k in rows if k.startswith("retriever-")]
        best = max(rets, key=lambda k: rows[k]["test_ndcg"])
        print(f"\n### {data} (best retriever: {best})\n")
        print("| model | NDCG@10 | vs best retriever | Wilcoxon p | candidate recall | fit s |")
        print("|---|---|---|---|---|---|")
        for k, row in rows.items():
            assert np.array_equal(users[k], users[best]), k
            a, b = nd[k], nd[best]
            p = wilcoxon(a, b).pvalue if k != best and np.any(a != b) else float("nan")
            rel = row["test_ndcg"] / rows[best]["test_ndcg"] - 1
            cr = row.get("candidate_recall")
            print(f"| {k} | {row['test_ndcg']:.4f} | {rel:+.1%} | {p:.2g} | "
                  f"{'' if cr is None else f'{cr:.3f}'} | {row.get('fit_s', '')} |")  # fmt: skip


def choose(args: argparse.Namespace) -> None:
    """Pick one of several measured variants by valid NDCG@10 alone (their test numbers are
    printed beside, for the record, and play no part in the choice)."""
    d = OUT / args.data
    rows = {k: json.loads((d / f"{k}.json").read_text()) for k in args.variants}
    missing = [k for k, r in rows.items() if r.get("valid_ndcg") is None]
    if missing:
        raise SystemExit(f"no valid NDCG@10 for {missing}: run them without --no-valid")
    best = max(rows, key=lambda k: rows[k]["valid_ndcg"])
    print("| variant | params | valid NDCG@10 | test NDCG@10 |\n|---|---|---|---|")
    for k, r in rows.items():
        mark = " (chosen)" if k == best else ""
        print(f"| {k}{mark} | {json.dumps(r['params'])} | {r['valid_ndcg']:.4f} | "
              f"{r['test_ndcg']:.4f} |")  # fmt: skip
    print(f"chosen on valid: {best}")


def latency(args: argparse.Namespace) -> None:
    from lmrec.models import create_model
    from lmrec.models.base import Query, Recommender

    path = OUT / f"{args.data}-serve"
    if not path.exists():  # the served model: fitted on all the data
        t0 = time.perf_counter()
        create_model("twostage").fit(load(args.data)).save(path)
        print(f"fitted on all of {args.data} in {time.perf_counter() - t0:.0f} s", flush=True)
    model = Recommender.load(path)
    model.make_contiguous()
    users = model.users.ids
    rng = np.random.default_rng(0)
    pick = rng.choice(len(users), args.requests)
    now = float(model.history.ts.max())
    for u in pick[:50]:
        model.recommend(Query(user=str(users[u]), time=now), n=10)
    times, cpu = [], []
    for u in pick:
        t0, c0 = time.perf_counter(), time.process_time()
        model.recommend(Query(user=str(users[u]), time=now, context={"event": "rating"}), n=10)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ms, cms = np.asarray(times) * 1e3, np.asarray(cpu) * 1e3
    print(f"{args.data}: {args.requests} answers, {model.config.candidates} candidates: "
          f"wall p50 {np.percentile(ms, 50):.2f} ms, p90 {np.percentile(ms, 90):.2f} ms, "
          f"p99 {np.percentile(ms, 99):.2f} ms; process CPU p50 "
          f"{np.percentile(cms, 50):.2f} ms, p99 {np.percentile(cms, 99):.2f} ms")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("data", choices=["ml100k", "beauty"])
    r.add_argument("--variants", type=lambda s: s.split(","), default=["twostage"])
    r.add_argument("--param", action="append", default=[], help="NAME=VALUE (JSON, else a string)")
    r.add_argument("--save", action=argparse.BooleanOptionalAction, default=True)
    r.add_argument(
        "--valid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure NDCG@10 on the valid part",
    )
    r.add_argument(
        "--retrievers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the variants' retrievers on their own (each name once per run)",
    )
    rep = sub.add_parser("report")
    rep.add_argument("data_sets", nargs="+")
    ch = sub.add_parser("choose", help="pick one of several variants by valid NDCG@10")
    ch.add_argument("data")
    ch.add_argument("variants", type=lambda s: s.split(","))
    lat = sub.add_parser("latency")
    lat.add_argument("data")
    lat.add_argument("--requests", type=int, default=2000)
    args = p.parse_args()
    {"run": run, "report": report, "choose": choose, "latency": latency}[args.cmd](args)


if __name__ == "__main__":
    main()
