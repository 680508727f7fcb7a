"""`lmrec encode` (fill the store's text-vector cache), `lmrec finetune` (a new encoder
version trained on the store's interactions) and `lmrec distil` (a smaller, faster student of
the encoder trained on the store's item texts)."""

from __future__ import annotations

__all__ = ["cmd_distil", "cmd_encode", "cmd_finetune", "register"]

import argparse
import json
from collections.abc import Callable
from typing import Any

from lmrec.errors import LmrecError
from lmrec.text.finetune import MODES, PAIRS

KINDS = ("items", "users", "behaviour")


def _kinds(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise LmrecError(f"--what takes a comma list of {', '.join(KINDS)}; got {value!r}")
    return kinds


def cmd_encode(args: argparse.Namespace) -> int:
    """Encode item, user and behaviour texts of the store, reusing cached vectors."""
    from lmrec.data import Dataset
    from lmrec.store import Store
    from lmrec.text import TfidfEncoder, encode_cached, load_encoder
    from lmrec.text.templates import behaviour_texts, item_texts, user_texts

    kinds = _kinds(args.what)
    with Store(args.db) as store:
        ds = Dataset.from_store(store)
        if ds.n_items == 0 and ds.n_users == 0:
            raise LmrecError(
                f"the store {args.db_shown} holds no items or users: import data first"
            )
        enc = load_encoder(args.encoder)
        items = item_texts(ds, template=args.item_template)
        if isinstance(enc, TfidfEncoder):
            enc.fit(items)
        report: dict[str, Any] = {"encoder": enc.name, "dim": enc.dim}
        for kind in kinds:
            if kind == "items":
                texts = items
            elif kind == "users":
                texts = [t for t in user_texts(ds) if t]
            else:
                texts = [t for t in behaviour_texts(ds, max_items=args.max_items) if t]
            stats: dict[str, Any] = {}
            encode_cached(
                enc,
                texts,
                store,
                batch_size=args.batch_size,
                progress=not args.quiet and not args.json,
                memo=False,
                stats=stats,
            )
            enc_s = stats.get("seconds", 0.0)
            stats["texts_per_second"] = (
                stats["encoded"] / enc_s if stats["encoded"] and enc_s else None
            )
            report[kind] = stats
            if not args.json:
                rate = stats["texts_per_second"]
                rate_s = f", {rate:.1f} texts/s" if rate else ""
                print(
                    f"{kind:9s} {stats['texts']} texts ({stats['unique']} distinct): "
                    f"{stats['store']} cached already, {stats['encoded']} encoded in "
                    f"{enc_s:.1f} s{rate_s}"
                )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"encoder {report['encoder']} (dim {report['dim']}), store {args.db_shown}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune the encoder on next-item prediction over the store's interactions."""
    from lmrec.data import Dataset
    from lmrec.data.split import leave_one_out
    from lmrec.store import Store
    from lmrec.text.finetune import finetune

    if args.holdout not in (0, 1, 2):
        raise LmrecError(f"--holdout must be 0, 1 or 2, got {args.holdout}")
    with Store(args.db) as store:
        ds = Dataset.from_store(store)
        if ds.n_interactions == 0:
            raise LmrecError(f"the store {args.db_shown} holds no interactions: import data first")
        if args.holdout:
            split = leave_one_out(ds)
            ds = split.train if args.holdout == 2 else split.train_valid()
        res = finetune(
            ds,
            args.out,
            encoder=args.encoder,
            mode=args.mode,
            pairs=args.pairs,
            negatives=args.negatives,
            epochs=args.epochs,
            steps=args.steps,
            max_seconds=args.max_seconds,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            temperature=args.temperature,
            layers=args.layers,
            lora_rank=args.lora_rank,
            lora_alpha=args.lora_alpha,
            device=args.device,
            mixed_precision=not args.no_mixed_precision,
            seed=args.seed,
            store=store,
            progress=not args.quiet,
        )
    print(
        f"encoder version {res.name} written to {res.path} ({res.mode}, {res.pairs} training "
        f"pairs, {res.steps} steps on {res.device}, {res.seconds:.1f} s; "
        f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f})"
    )
    print(f"use it with: --param encoder={res.path}")
    return 0


def cmd_distil(args: argparse.Namespace) -> int:
    """Distil a student with fewer layers of the encoder on the store's item texts."""
    from pathlib import Path

    from lmrec.data import Dataset
    from lmrec.store import Store
    from lmrec.text.distil import DistilConfig, distil

    given: dict[str, Any] = {}
    if args.layers is not None:  # else the config's default layers
        layers = [x.strip() for x in args.layers.split(",") if x.strip()]
        if not layers or not all(x.isdigit() for x in layers):
            raise LmrecError(
                f"--layers takes a comma list of layer indices such as 0,2,4; got {args.layers!r}"
            )
        given["layers"] = tuple(int(x) for x in layers)
    cfg = DistilConfig.of(
        teacher=args.encoder, **given, epochs=args.epochs,
        steps=args.steps, max_seconds=args.max_seconds, batch_size=args.batch_size,
        learning_rate=args.learning_rate, item_template=args.item_template, seed=args.seed,
    )  # fmt: skip
    extra: list[str] = []
    if args.texts:
        path = Path(args.texts)
        try:
            extra = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise LmrecError(f"--texts {path}: cannot read it as UTF-8 text ({exc})") from None
    with Store(args.db) as store:
        ds = Dataset.from_store(store)
        if ds.n_items == 0 and not extra:
            raise LmrecError(f"the store {args.db_shown} holds no items: import data first")
        res = distil(ds if ds.n_items else None, args.out, texts=extra, config=cfg, store=store,
                     progress=not args.quiet)  # fmt: skip
    print(
        f"student {res.name} written to {res.path} (layers {list(res.layers)}, {res.texts} texts, "
        f"{res.steps} steps, {res.seconds:.1f} s; cosine with the teacher {res.cos_before:.3f} "
        f"-> {res.cos_after:.3f})"
    )
    print(f"use it with: --param encoder={res.path}  (ONNX Runtime, int8: onnx-int8:{res.path})")
    return 0


def register(
    subparsers: argparse._SubParsersAction,
    commands: dict[str, Callable[[argparse.Namespace], int]],
) -> None:
    """Add `encode` and `finetune` to the `lmrec` command line."""
    s = subparsers.add_parser(
        "encode",
        help="encode item/user/behaviour texts into the store's vector cache",
        description="Texts whose vectors are cached already (same encoder, same text) are not "
        "encoded again.",
    )
    s.add_argument(
        "--encoder",
        default="minilm",
        help="minilm (default), minilm-onnx-int8, mpnet, tfidf[:DIM], st:PATH, onnx-int8:PATH "
        "or DIR",
    )
    s.add_argument("--what", default="items,users", help="comma list of items, users, behaviour")
    s.add_argument("--batch-size", type=int, default=64, help="texts per encoder batch")
    s.add_argument("--max-items", type=int, default=20, help="history items in behaviour text")
    s.add_argument("--item-template", help="str.format template of item text")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print JSON")
    commands["encode"] = cmd_encode

    s = subparsers.add_parser(
        "finetune",
        help="fine-tune the text encoder on next-item prediction; writes a new encoder version",
    )
    s.add_argument("--out", required=True, help="directory of the new encoder version")
    s.add_argument("--encoder", default="minilm", help="base encoder spec (default minilm)")
    s.add_argument("--mode", choices=list(MODES), default="head",
                   help="head: projection on frozen vectors (default); full: every weight; "
                   "top: the last --layers layers; lora: adapters on attention")  # fmt: skip
    s.add_argument("--pairs", choices=list(PAIRS), default="history",
                   help="history: recent history -> next item (default); item: item -> next "
                   "item of the same user (symmetric)")  # fmt: skip
    s.add_argument("--negatives", choices=["in_batch", "all"], default="in_batch")
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--steps", type=int, help="cap on gradient steps (default 50 but for head)")
    s.add_argument("--max-seconds", type=float,
                   help="full/top/lora: stop after the step that reaches this time")  # fmt: skip
    s.add_argument("--batch-size", type=int, help="default 256 for head, 32 otherwise")
    s.add_argument("--learning-rate", type=float,
                   help="default head 1e-3, full 2e-5, top 1e-4, lora 5e-4")  # fmt: skip
    s.add_argument("--temperature", type=float, help="default 0.02 for head, 0.05 otherwise")
    s.add_argument("--layers", type=int, default=2, help="top: transformer layers trained")
    s.add_argument("--lora-rank", type=int, default=8)
    s.add_argument("--lora-alpha", type=float, default=16.0)
    s.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    s.add_argument("--no-mixed-precision", action="store_true",
                   help="train in float32 on CUDA too")  # fmt: skip
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--holdout",
        type=int,
        default=2,
        help="leave out each user's last N interactions (default 2: the valid and test items "
        "of leave-one-out, so evaluation stays fair)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    commands["finetune"] = cmd_finetune

    s = subparsers.add_parser(
        "distil",
        help="distil a smaller student of the text encoder on the store's item texts",
        description="The student keeps --layers of the teacher's Transformer layers and learns "
        "to give each item text the teacher's vector; it is written as an encoder version.",
    )
    s.add_argument("--out", required=True, help="directory of the student (an encoder version)")
    s.add_argument("--encoder", default="minilm", help="teacher encoder spec (default minilm)")
    s.add_argument(
        "--layers", help="teacher layers kept, e.g. 0,2,4 (default: DistilConfig's, 0,2,4,5)"
    )
    s.add_argument("--texts", help="UTF-8 file of more training texts, one per line")
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--steps", type=int, help="cap on gradient steps")
    s.add_argument("--max-seconds", type=float, help="stop after the step that reaches this time")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--learning-rate", type=float, default=2e-4)
    s.add_argument("--item-template", help="str.format template of item text")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    commands["distil"] = cmd_distil
