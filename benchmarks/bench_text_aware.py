"""Language models on warm data: text-aware sequence models beside ID-only ones on a
text-rich catalogue (Amazon Beauty) and on ML-100K; leave-one-out by time, full ranking.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_text_aware.py run beauty \
        --models ease,itemknn,als,sasrec,hybrid,hybrid-text --seeds 0,1,2 --jobs 2
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_text_aware.py run ml100k \
        --models ease,sasrec,hybrid --seeds 0,1,2 --jobs 2
    .venv/bin/python benchmarks/bench_text_aware.py report beauty ml100k

`run` imports the data set into `artifacts/text_aware/DATA.db` through `lmrec import` (Amazon
Beauty from `../shared/data/amazon-beauty/`: title, category path and brand become the item
text, price and sales rank attributes; ML-100K through `lmrec sample`), fills the store's
text-vector cache once, then fits every (model, seed) in its own process (`--jobs` at a
time, one torch thread each) on the LOO train part with early stopping on the valid part,
and measures test NDCG@10 / Recall@10 with train + valid as history (history excluded, the
whole catalogue ranked), by item popularity third (`lmrec.evaluation.breakdown`), with time
to the best validation score and peak resident memory of the process. Each run writes
`artifacts/text_aware/DATA/LABEL-sSEED.json` and its per-user test NDCG@10 (`.npy`).
`report` prints markdown tables: mean +- std over seeds, ratios to the ID-only SASRec, and a
paired Wilcoxon test on per-user NDCG@10 averaged over the seeds both share.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.models.sequential import SHAPE_DENSE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts" / "text_aware"
BEAUTY = ROOT.parent / "shared" / "data" / "amazon-beauty"

#: SASRec's regularisation on Beauty before 2026-12-08, when `auto_shape`'s sparse shape took
#: the SASRec authors' block with item-vector dropout: pre-LN blocks, no item-vector dropout
#: and `auto_dropout`'s 0.5 (on Beauty; the labels below that reproduce older rows keep it).
LEGACY = {"block": "pre_ln", "item_dropout": 0.0, "dropout": 0.5}

#: The published SASRec-SS setting on this preprocessing (blondered/transformer_benchmark,
#: configs/paper/loo/s3_vanilla.yaml, on RecTools: 256 factors, 1 block, 1 head, dropout 0.2,
#: sampled softmax over 256 uniform negatives; RecTools' lr 1e-3 and batch 128).
PUBLISHED = {"embedding_size": 256, "layers": 1, "heads": 1, "dropout": 0.2, "loss": "sampled",
             "negatives": 256, "sampler": "uniform", "learning_rate": 1e-3,
             "batch_size": 128, "block": "pre_ln", "item_dropout": 0.0}  # fmt: skip

RECTOOLS = {"embedding_size": 64, "layers": 1, "heads": 1, "dropout": 0.2, "ffn_mult": 1,
            "loss": "sampled", "negatives": 256, "sampler": "uniform", "negatives_per": "token",
            "learning_rate": 1e-3, "batch_size": 128, "patience": 50, "block": "pre_ln",
            "item_dropout": 0.0}  # fmt: skip

#: RecTools' sampler: 256 fresh uniform negatives for every target.
PER_TARGET = {"loss": "sampled", "negatives": 256, "sampler": "uniform", "negatives_per": "token"}

#: 1,024 popularity-drawn negatives shared by the batch (SASRec's default sampler; its loss
#: on Beauty until 2026-12-07, when `full_softmax_items` went from 10,000 to 20,000).
SHARED = {"loss": "sampled", "negatives": 1024, "sampler": "popularity", "negatives_per": "batch"}

#: SASRec's defaults before 2026-12-05 (before `auto_shape`): the dense shape, SHARED.
OLD_SASREC = {**SHAPE_DENSE, **SHARED, **LEGACY}

#: The SASRec authors' block with RecTools' dropout (0.2 on everything, 0.2 on the item
#: vectors): the best ID-only SASRec on Beauty's valid part on 2026-12-07 (3 seeds); with
#: dropout 0.3 (`sasrec-block-d3`) the sparse shape's default since 2026-12-08.
BLOCK = {"block": "sasrec", "dropout": 0.2, "item_dropout": 0.2}

#: label -> (registered model, parameters); every other setting is the model's default.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "popularity": ("popularity", {}),
    "ease": ("ease", {}),
    "itemknn": ("itemknn", {}),
    "als": ("als", {}),
    "sasrec": ("sasrec", {}),
    "sasrec-fuse": ("sasrec", {"text": "fuse"}),
    # The text-aware hybrid (EASE with text + dualsasrec, blended on validation) and the
    # same architecture without the language model (EASE + SASRec, blended on validation).
    "hybrid": ("hybrid", {}),
    "blend": ("blend", {}),
    # The blend as measured on 2026-12-07 before SASRec's full softmax on Beauty.
    "blend-pertarget": ("blend", {"params": {"sasrec": {**PER_TARGET, **LEGACY}}}),
    # The blend as measured on 2026-12-07 with the full softmax (`blend` until 2026-12-08).
    "blend-legacy": ("blend", {"params": {"sasrec": LEGACY}}),
    # EASE with the items' text vectors as side information, the text weight chosen on valid.
    "ease-text": ("ease", {"text_weight": None}),
    # SASRec over dual-view items (frozen text view + id view), and its ablations.
    "dualsasrec": ("dualsasrec", {}),
    "dualsasrec-text": ("dualsasrec", {"views": "text"}),
    "dualsasrec-id": ("dualsasrec", {"views": "id"}),
    # MiniLM fine-tuned on the Beauty training part (benchmarks/encoders.md has the command).
    "dualsasrec-ft": (
        "dualsasrec",
        {"encoder": str(ROOT / "artifacts" / "encoders" / "beauty-ft")},
    ),
    # all-mpnet-base-v2 (`encoder=mpnet`: its five PyPI parts installed).
    "dualsasrec-mpnet": ("dualsasrec", {"encoder": "mpnet"}),
    # Text-aware EASE over all-mpnet-base-v2's vectors: the encoder table's downstream row
    # that fits in one core-hour (a dualsasrec run is about an hour more).
    "ease-text-mpnet": ("ease", {"text_weight": None, "encoder": "mpnet"}),
    "sasrec-pub": ("sasrec", PUBLISHED),
    "dualsasrec-pub": ("dualsasrec", PUBLISHED),
    # Early stopping's patience (10 by default): Beauty's curves plateau for 10+ epochs.
    "dualsasrec-p20": ("dualsasrec", {"patience": 20}),
    # The published setting trained to convergence (patience 20), and with lmrec's
    # popularity-sampled negatives in place of uniform ones.
    "sasrec-pub-p20": ("sasrec", {**PUBLISHED, "patience": 20}),
    "sasrec-pub-pop": ("sasrec", {**PUBLISHED, "patience": 20, "sampler": "popularity"}),
    # Fresh negatives for every target, as RecTools draws them, and the full softmax.
    "sasrec-pub-tok": ("sasrec", {**PUBLISHED, "patience": 20, "negatives_per": "token"}),
    "sasrec-pub-ce": ("sasrec", {**PUBLISHED, "patience": 20, "loss": "ce"}),
    # The defaults before 2026-12-05 (the dense shape, 1,024 popularity-drawn negatives shared
    # by the batch) trained longer (the published runs had patience 50 over 200 epochs).
    "sasrec-p50": ("sasrec", {**OLD_SASREC, "patience": 50}),
    # The defaults with the full softmax (RecBole's SASRec loss) in place of the sampled one
    # that loss="auto" picks above 10,000 items.
    "sasrec-ce": ("sasrec", {**OLD_SASREC, "loss": "ce"}),
    # The Beauty row of the eSASRec paper's hyperparameter table (blondered/transformer_benchmark
    # README: 64 factors, 1 block, 1 head, dropout 0.2, 256 negatives, lr 1e-3, 200 epochs,
    # patience 50) with RecTools' sampler (fresh uniform negatives for every target) and its
    # SASRec feed-forward width (1x), and the same with RecTools' Xavier-normal item vectors.
    "sasrec-rt": ("sasrec", RECTOOLS),
    "sasrec-rt-xavier": ("sasrec", {**RECTOOLS, "init_std": 0.0128}),
    "sasrec-rt-d5": ("sasrec", {**RECTOOLS, "dropout": 0.5}),
    # The dense shape with RecTools' sampler (256 fresh uniform negatives for every target,
    # the default of 2026-12-05 to 07): the shape's share of the 2026-12-05 gain.
    "sasrec-tok": ("sasrec", {**SHAPE_DENSE, **PER_TARGET, **LEGACY}),
    # The sparse shape with SHARED (the sampler's share; Beauty's default for part of
    # 2026-12-07, before the full softmax), and the sparse shape 128 wide with PER_TARGET.
    "sasrec-shape-pop": ("sasrec", {**SHARED, **LEGACY}),
    "sasrec-w128": ("sasrec", {"embedding_size": 128, **PER_TARGET, **LEGACY}),
    # 2026-12-07 (evening), today's defaults varied one at a time: 128 wide; 4,096 shared
    # negatives.
    "sasrec-w128-pop": ("sasrec", {**SHARED, **LEGACY, "embedding_size": 128}),
    "sasrec-neg4k": ("sasrec", {**SHARED, **LEGACY, "negatives": 4096}),
    # Dropout on the item vectors too (input and softmax), as RecTools' item network has.
    "sasrec-idrop2": ("sasrec", {**SHARED, **LEGACY, "item_dropout": 0.2}),
    # The sparse shape with the full softmax (SASRec's default on Beauty on 2026-12-07).
    "sasrec-shape-ce": ("sasrec", {**LEGACY, "loss": "ce"}),
    "sasrec-neg4k-idrop2": ("sasrec", {**SHARED, **LEGACY, "negatives": 4096, "item_dropout": 0.2}),
    # 2026-12-07 (night): the SASRec authors' block (RecTools' SASRecTransformerLayer) under
    # today's defaults; with RecTools' dropout 0.2; and with its item-vector dropout too.
    "sasrec-block": ("sasrec", {**LEGACY, "block": "sasrec"}),
    "sasrec-block-d2": ("sasrec", {**LEGACY, "block": "sasrec", "dropout": 0.2}),
    "sasrec-block-d2-idrop2": ("sasrec", BLOCK),
    # 2026-12-08: that setting with two blocks (the SASRec paper's depth for Beauty), and the
    # blend (EASE + SASRec) with it inside.
    "sasrec-block-l2": ("sasrec", {**BLOCK, "layers": 2}),
    "blend-block": ("blend", {"params": {"sasrec": BLOCK}}),
    # Its neighbours on the valid part: more dropout on the item vectors, or on the rest
    # (sasrec-block-d3 = `sasrec` since 2026-12-08).
    "sasrec-block-idrop3": ("sasrec", {**BLOCK, "item_dropout": 0.3}),
    "sasrec-block-d3": ("sasrec", {**BLOCK, "dropout": 0.3}),
}
NEURAL = ("sasrec", "dualsasrec", "bert4rec", "xlnet")
BLENDS = ("blend", "hybrid")


def store_url(data: str) -> str:
    return f"sqlite:///{OUT / (data + '.db')}"


def prepare(data: str) -> None:
    """Import the data set into its store (once) and fill the text-vector cache."""
    OUT.mkdir(parents=True, exist_ok=True)
    db = OUT / f"{data}.db"
    lmrec = [sys.executable, "-m", "lmrec.cli", "--db", store_url(data)]
    if not db.exists():
        if data == "beauty":
            cmd = [*lmrec, "import", "--interactions", str(BEAUTY / "interactions.csv"),
                   "--items", str(BEAUTY / "items.csv")]  # fmt: skip
        else:
            cmd = [*lmrec, "sample", "ml-100k"]
        subprocess.run(cmd, check=True)
    from lmrec import Dataset, Store
    from lmrec.text.cache import encode_cached
    from lmrec.text.encoders import load_encoder
    from lmrec.text.templates import item_texts

    with Store(store_url(data)) as store:
        ds = Dataset.from_store(store, name=data)
        st: dict[str, Any] = {}
        encode_cached(load_encoder("minilm"), item_texts(ds), store, stats=st)
        print(f"{data}: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} "
              f"interactions; text vectors: {st}", file=sys.stderr)  # fmt: skip


def fit_one(data: str, label: str, seed: int, threads: int, extra: dict[str, Any]) -> dict:
    """Fit and measure one (model, seed) in this process; returns the result row."""
    import torch

    from lmrec import Dataset, Store
    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import evaluate
    from lmrec.models import create_model
    from lmrec.text.cache import encode_cached
    from lmrec.text.encoders import load_encoder
    from lmrec.text.templates import item_texts

    torch.set_num_threads(threads)
    name, params = MODELS[label]
    params = {**params, **extra}
    if name in NEURAL:
        params = {"seed": seed, "num_threads": threads, **params}
    elif name in BLENDS:  # the seed reaches every component
        params = {"seed": seed, **params}
    model = create_model(name, **params)
    with Store(store_url(data)) as store:
        ds = Dataset.from_store(store, name=data)
        split = leave_one_out(ds)
        encoders = {"minilm", getattr(model.config, "encoder", None)}
        encoders |= {p.get("encoder", "minilm") for p in params.get("params", {}).values()}
        for spec in encoders - {None}:  # the text vectors from the store's cache, in memory
            encode_cached(load_encoder(spec), item_texts(split.train), store)
    t0 = time.perf_counter()
    model.fit(split.train, valid=split.valid)  # models that do not tune on it ignore it
    fit_s = time.perf_counter() - t0
    valid = evaluate(model, split, on="valid", k=10, metrics=["ndcg", "recall"])
    test = evaluate(model, split, on="test", k=10, metrics=["ndcg", "recall"],
                    breakdown=("popularity", "history"))  # fmt: skip
    tr = getattr(model, "train_result", None)
    row = {
        "data": data, "label": label, "model": name, "params": params, "seed": seed,
        "valid_ndcg": float(np.nanmean(valid.per_user["ndcg@10"])),
        "test_ndcg": float(np.nanmean(test.per_user["ndcg@10"])),
        "test_recall": float(np.nanmean(test.per_user["recall@10"])),
        "by_popularity": test.breakdown["popularity"].summary(),
        "by_history": test.breakdown["history"].summary(),
        "fit_s": round(fit_s, 1),
        "best_epoch": getattr(tr, "best_epoch", None),
        "epochs": getattr(tr, "epochs_run", None),
        "to_best_s": round(getattr(tr, "seconds_to_best", fit_s), 1),
        "dropout": getattr(model, "dropout_", None),
        "text_weight": getattr(model, "text_weight_", None),
        "chosen": model.chosen(),
        "blend_weights": getattr(model, "weights_", np.zeros(0)).tolist() or None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "threads": threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    out = OUT / data
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{label}-s{seed}"
    np.save(out / f"{stem}.npy", np.asarray(test.per_user["ndcg@10"], np.float32))
    np.save(out / f"{stem}.users.npy", np.asarray(test.users))
    (out / f"{stem}.json").write_text(json.dumps(row, indent=1))
    return row


def run(args: argparse.Namespace) -> None:
    prepare(args.data)
    extra = [f"--param={p}" for p in args.param]
    jobs = []
    for seed in args.seeds:
        for label in args.models:
            if label not in MODELS:
                raise SystemExit(f"unknown label {label!r}; known: {', '.join(MODELS)}")
            if MODELS[label][0] not in NEURAL + BLENDS and seed != args.seeds[0]:
                continue  # deterministic models: one run
            jobs.append([sys.executable, __file__, "one", args.data, label, str(seed),
                         "--threads", str(args.threads), *extra])  # fmt: skip
    running: list[subprocess.Popen] = []
    while jobs or running:
        while jobs and len(running) < args.jobs:
            print("start:", " ".join(jobs[0][2:]), file=sys.stderr, flush=True)
            running.append(subprocess.Popen(jobs.pop(0)))
        time.sleep(2)
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            if p.returncode:
                print(f"failed ({p.returncode}): {' '.join(p.args[2:])}", file=sys.stderr)


def _rows(data: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted((OUT / data).glob("*-s*.json"))]


def _per_user(data: str, label: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    vals = [np.load(OUT / data / f"{label}-s{s}.npy") for s in seeds]
    users = np.load(OUT / data / f"{label}-s{seeds[0]}.users.npy")
    return users, np.mean(vals, axis=0)


#: Each text-aware model and its ID-only ablation (the same model without the language model).
ABLATIONS = {"hybrid": "blend", "ease-text": "ease", "dualsasrec": "dualsasrec-id",
             "dualsasrec-p20": "dualsasrec-id", "sasrec-fuse": "sasrec"}  # fmt: skip


def _paired_p(data: str, label: str, ref: str, by: dict[str, list[dict]]) -> str:
    """Wilcoxon p of per-user test NDCG@10 (each user's mean over the seeds both share)."""
    from scipy import stats

    seeds = sorted({r["seed"] for r in by[label]} & {r["seed"] for r in by[ref]})
    ua, a = _per_user(data, ref, seeds)
    ub, b = _per_user(data, label, seeds)
    if not (np.array_equal(ua, ub) and np.any(a != b)):
        return ""
    pv = stats.wilcoxon(b, a).pvalue
    return f"{pv:.1e}" if pv > 0 else "< 1e-300"


def _ablation_table(data: str, by: dict[str, list[dict]]) -> None:
    pairs = [(t, i) for t, i in ABLATIONS.items() if t in by and i in by]
    if not pairs:
        return
    print("\n| text-aware | ID-only ablation | test NDCG@10 | ablation | ratio | tail ratio | "
          "Wilcoxon p |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for t, i in pairs:
        mt, mi = (np.mean([r["test_ndcg"] for r in by[x]]) for x in (t, i))
        tt, ti = (np.mean([r["by_popularity"]["tail"]["ndcg@10"] for r in by[x]]) for x in (t, i))
        tail = f"{tt / ti:.2f}" if ti > 0 else "inf"
        print(f"| {t} | {i} | {mt:.4f} | {mi:.4f} | {mt / mi:.3f} | {tail} | "
              f"{_paired_p(data, t, i, by)} |")  # fmt: skip


def report(args: argparse.Namespace) -> None:
    for data in args.data:
        rows = _rows(data)
        if not rows:
            continue
        by: dict[str, list[dict]] = {}
        for r in rows:
            by.setdefault(r["label"], []).append(r)
        ref = "sasrec" if "sasrec" in by else None
        print(f"\n### {data}\n")
        print("| model | seeds | test NDCG@10 | Recall@10 | valid NDCG@10 | tail NDCG@10 | "
              "torso | head | x SASRec | tail x SASRec | Wilcoxon p vs SASRec | best epoch | "
              "to best (min) | peak RSS GiB |")  # fmt: skip
        print("|" + "---|" * 14)
        ref_tail = None
        if ref:
            ref_tail = np.mean([r["by_popularity"]["tail"]["ndcg@10"] for r in by[ref]])
        ref_mean = np.mean([r["test_ndcg"] for r in by[ref]]) if ref else None
        for label, rs in by.items():
            rs.sort(key=lambda r: r["seed"])

            def ms(key: str, rs: list[dict] = rs) -> str:
                v = [r[key] for r in rs]
                return f"{np.mean(v):.4f}" + (f" +- {np.std(v):.4f}" if len(v) > 1 else "")

            pop = {b: np.mean([r["by_popularity"][b]["ndcg@10"] for r in rs])
                   for b in ("tail", "torso", "head")}  # fmt: skip
            ratio = tail_ratio = p = ""
            if ref and label != ref:
                ratio = f"{np.mean([r['test_ndcg'] for r in rs]) / ref_mean:.3f}"
                tail_ratio = f"{pop['tail'] / ref_tail:.2f}" if ref_tail else "inf"
                p = _paired_p(data, label, ref, by)
            best = "/".join(str(r["best_epoch"]) for r in rs if r["best_epoch"] is not None)
            mins = "/".join(f"{r['to_best_s'] / 60:.1f}" for r in rs)
            rss = max(r["peak_rss_gib"] for r in rs)
            print(f"| {label} | {len(rs)} | {ms('test_ndcg')} | {ms('test_recall')} | "
                  f"{ms('valid_ndcg')} | {pop['tail']:.4f} | {pop['torso']:.4f} | "
                  f"{pop['head']:.4f} | {ratio} | {tail_ratio} | {p} | {best} | {mins} | "
                  f"{rss:.2f} |")  # fmt: skip
        _ablation_table(data, by)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("data", choices=["beauty", "ml100k"])
    r.add_argument("--models", type=lambda s: s.split(","), default=["ease", "sasrec", "hybrid"])
    r.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--param", action="append", default=[], help="NAME=VALUE for every model")
    o = sub.add_parser("one")
    o.add_argument("data")
    o.add_argument("label")
    o.add_argument("seed", type=int)
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--param", action="append", default=[])
    rep = sub.add_parser("report")
    rep.add_argument("data", nargs="+")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args)
    elif args.cmd == "one":
        from lmrec.commands.models import parse_params

        row = fit_one(args.data, args.label, args.seed, args.threads, parse_params(args.param))
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("by_")}))
    else:
        report(args)


if __name__ == "__main__":
    main()
