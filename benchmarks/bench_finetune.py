"""Cost and effect of fine-tuning the text encoder itself (`lmrec.text.finetune`, modes top,
lora and full) on a store's item -> next-item pairs of the leave-one-out training part.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finetune.py \
        --db sqlite:////work/artifacts/beauty-enc.db --modes top,lora,full --steps 40

For each mode: seconds per step and per 1,000 pairs (batch 32 by default, 1 torch thread), and
a quick held-out check: for `--eval-users` users, the last training item is the query and the
validation item the answer, ranked by cosine among the validation items of those users (MRR
and hit@10 of a 512-way ranking), before (the base encoder) and after fine-tuning.
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


def heldout(enc, texts, q_items, a_items) -> dict[str, float]:
    """MRR and hit@10 of each answer among all answers, by cosine to its query's vector."""
    import numpy as np

    if not q_items:
        return {}

    uq = sorted(set(q_items) | set(a_items))
    pos = {j: i for i, j in enumerate(uq)}
    v = enc.encode([texts[j] for j in uq], batch_size=64)
    q = v[[pos[j] for j in q_items]]
    a = v[[pos[j] for j in a_items]]
    s = q @ a.T  # (U, U); answer u is column u
    rank = (s > s[np.arange(len(s)), np.arange(len(s))][:, None]).sum(1)  # 0 = first
    return {"mrr": float(np.mean(1.0 / (rank + 1))), "hit10": float(np.mean(rank < 10))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True, help="store URL (read only)")
    ap.add_argument("--modes", default="top,lora,full")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-users", type=int, default=512, help="0: no held-out check")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from lmrec import Dataset, Store
    from lmrec.data.split import leave_one_out
    from lmrec.text import load_encoder
    from lmrec.text.finetune import finetune, item_pairs
    from lmrec.text.templates import item_texts

    with Store(args.db) as store:
        ds = Dataset.from_store(store)
    split = leave_one_out(ds)
    train = split.train
    texts = item_texts(ds)
    a, _b = item_pairs(train)
    rng = np.random.default_rng(0)
    users = np.unique(split.valid.user)
    users = rng.choice(users, size=min(args.eval_users, len(users)), replace=False)
    users = users[: args.eval_users]
    last_train = {int(u): int(train.item[train.user_ptr[u + 1] - 1]) for u in users}
    valid_item = dict(zip(split.valid.user.tolist(), split.valid.item.tolist(), strict=True))
    q_items = [last_train[int(u)] for u in users]
    a_items = [valid_item[int(u)] for u in users]
    rows = []
    base = load_encoder("minilm")
    rows.append({"mode": "base", **heldout(base, texts, q_items, a_items)})
    print(json.dumps(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            t0 = time.perf_counter()
            res = finetune(train, Path(tmp) / mode, mode=mode, pairs="item", steps=args.steps,
                           batch_size=args.batch_size, device="cpu")  # fmt: skip
            wall = time.perf_counter() - t0
            meta = json.loads((Path(tmp) / mode / "lmrec_encoder.json").read_text())
            tr = meta["training"]
            sps = tr["seconds_per_step"]
            row = {
                "mode": mode,
                "steps": res.steps,
                "batch_size": args.batch_size,
                "learning_rate": meta["config"]["learning_rate"],
                "trainable_parameters": tr["trainable_parameters"],
                "parameters": tr["parameters"],
                "seconds_per_step": sps,
                "seconds_per_1000_pairs": round(sps / args.batch_size * 1000, 1),
                "run_seconds": round(wall, 1),
                "loss_first5": round(float(np.mean(res.losses[:5])), 3),
                "loss_last5": round(float(np.mean(res.losses[-5:])), 3),
                **heldout(load_encoder(str(Path(tmp) / mode)), texts, q_items, a_items),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "db": args.db,
        "pairs": len(a),
        "train_interactions": train.n_interactions,
        "threads": args.threads,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
