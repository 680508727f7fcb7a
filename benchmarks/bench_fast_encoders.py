"""Fast encoders side by side in one process: texts/s, agreement with fp32 and downstream NDCG.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/bench_fast_encoders.py \
        --encoders minilm,minilm-int8,minilm-onnx,minilm-onnx-int8,STUDENT,onnx-int8:STUDENT \
        --threads 2 --reps 3 [--db sqlite:///beauty.db --limit 3000] [--downstream]

STUDENT: a directory written by `lmrec distil` (`lmrec.text.distil`).

Texts: the ML-100K item texts (`lmrec.text.item_texts`; or the first `--limit` item texts of
the store `--db`). Each encoder is loaded and warmed up on 64 texts outside the timing; then
`--reps` rounds encode all texts once per encoder, the encoders interleaved inside a round
so that they share the machine's load; the ratio to the first encoder is taken per round.
ONNX encoders run with ONNX Runtime's intra-op threads = the machine's cores. Agreement: cosine of each text's vector with the first encoder's vector of it. Downstream
(`--downstream`, every item's text): each of `--models` with `encoder=SPEC`, everything
else default, fitted on the leave-one-out training part (settings such as ease-text's text
weight chosen on the valid part), test NDCG@10 / Recall@10 over the full catalogue, its
ratio to the first encoder's and a paired Wilcoxon test on per-user NDCG@10.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


#: Downstream labels that are not registry names: (model, parameters).
DOWNSTREAM = {"ease-text": ("ease", {"text_weight": None})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", default="minilm,minilm-int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, help="default: each encoder's own")
    ap.add_argument("--db", help="a store to take item texts from (default: ML-100K)")
    ap.add_argument("--limit", type=int, help="only the first N texts")
    ap.add_argument("--downstream", action="store_true", help="--models' test NDCG@10 (LOO)")
    ap.add_argument(
        "--models",
        default="lmcontent",
        help="text models for --downstream: registered names, or ease-text (EASE with the "
        "text vectors as side information, the text weight chosen on valid)",
    )
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from lmrec.data import Dataset
    from lmrec.store import Store
    from lmrec.text import item_texts, load_encoder

    tmp = Path(tempfile.mkdtemp(prefix="bench-fast-enc-"))
    if args.db:
        with Store(args.db) as s:
            ds = Dataset.from_store(s)
    else:
        from lmrec.io.sample import import_sample

        with Store(f"sqlite:///{tmp / 'ml.db'}") as s:
            import_sample(s)
            ds = Dataset.from_store(s, name="ml-100k")
    texts = item_texts(ds)[: args.limit or None]
    tok = load_encoder("minilm").model.tokenizer
    n_tok = np.array([len(x) for x in tok(texts)["input_ids"]])
    tokens = {q: int(np.percentile(n_tok, q)) for q in (50, 90, 99, 100)}
    print(f"{len(texts)} texts, word pieces: mean {n_tok.mean():.1f}, percentiles {tokens}")
    specs = [e.strip() for e in args.encoders.split(",") if e.strip()]
    encs = {}
    for spec in specs:
        t0 = time.perf_counter()
        encs[spec] = load_encoder(spec)
        encs[spec].encode(texts[:64])
        print(f"{spec}: {encs[spec].name} loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    rates: dict[str, list[float]] = {s: [] for s in specs}
    vecs = {}
    for rep in range(args.reps):
        for spec in specs:
            t0 = time.perf_counter()
            vecs[spec] = encs[spec].encode(texts, batch_size=args.batch_size)
            rates[spec].append(len(texts) / (time.perf_counter() - t0))
        print(
            f"round {rep}: "
            + ", ".join(f"{s} {rates[s][-1]:.1f}/s" for s in specs)
            + f"; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    ref = specs[0]
    rows = []
    for spec in specs:
        r = np.array(rates[spec])
        ratio = r / np.array(rates[ref])
        cos = (vecs[spec] * vecs[ref]).sum(axis=1) if vecs[spec].shape == vecs[ref].shape else None
        rows.append(
            {
                "spec": spec,
                "encoder": encs[spec].name,
                "dim": int(vecs[spec].shape[1]),
                "texts_per_second": [round(x, 1) for x in r],
                "median_texts_per_second": round(float(np.median(r)), 1),
                "ratio_to_ref": [round(x, 2) for x in ratio],
                "median_ratio": round(float(np.median(ratio)), 2),
                "cos_mean": None if cos is None else round(float(cos.mean()), 4),
                "cos_min": None if cos is None else round(float(cos.min()), 4),
            }
        )
    if args.downstream:
        from scipy.stats import wilcoxon

        from lmrec.data.split import leave_one_out
        from lmrec.evaluation import evaluate
        from lmrec.models import create_model
        from lmrec.text.cache import _remember, text_hash

        if args.limit:
            raise SystemExit("--downstream needs every item's vector: drop --limit")
        split = leave_one_out(ds)
        for spec in specs:  # the fit reuses the vectors just timed (the in-process memo)
            _remember(
                encs[spec].name, {text_hash(t): v for t, v in zip(texts, vecs[spec], strict=True)}
            )
        per_user: dict[tuple[str, str], np.ndarray] = {}
        for row in rows:
            for label in [m.strip() for m in args.models.split(",") if m.strip()]:
                name, params = DOWNSTREAM.get(label, (label, {}))
                t0 = time.perf_counter()
                model = create_model(name, **params, encoder=row["spec"])
                model.fit(split.train, valid=split.valid)  # models that do not tune ignore it
                res_t = evaluate(model, split, on="test", k=10, metrics=["ndcg", "recall"])
                nd = np.asarray(res_t.per_user["ndcg@10"], np.float64)
                per_user[(row["spec"], label)] = nd
                out = {
                    "ndcg@10": round(float(np.nanmean(nd)), 4),
                    "recall@10": round(float(np.nanmean(res_t.per_user["recall@10"])), 4),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "chosen": model.chosen(),
                }
                base = per_user.get((ref, label))
                if base is not None and row["spec"] != ref:
                    out["ratio_to_ref"] = round(float(np.nanmean(nd) / np.nanmean(base)), 4)
                    diff = nd - base
                    out["wilcoxon_p"] = (
                        float(wilcoxon(nd, base).pvalue) if np.any(diff != 0) else 1.0
                    )
                row[label] = out
                print(row["spec"], label, out, flush=True)
    res = {
        "texts": len(texts),
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        "mean_word_pieces": round(float(n_tok.mean()), 1),
        "word_piece_percentiles": tokens,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "rows": rows,
        "load_average_end": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
