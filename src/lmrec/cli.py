"""The `lmrec` command line: one entry point with subcommands.

Each subcommand is a function `cmd_NAME(args)` registered in `COMMANDS` by `_parser()`;
later features add their own subcommands the same way.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from lmrec.errors import DataError, LmrecError


def _store(args: argparse.Namespace):
    from lmrec.store import Store

    return Store(args.db)


def _parse_mapping(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or []:
        for part in p.split(","):
            if not part.strip():
                continue
            key, sep, val = part.partition("=")
            if not sep or not key.strip() or not val.strip():
                raise LmrecError(f"--map expects FIELD=COLUMN pairs, got {part!r}")
            out[key.strip()] = val.strip()
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    from lmrec.io.sample import import_sample

    t0 = time.perf_counter()
    with _store(args) as store:
        report = import_sample(store, args.name)
        print(report.summary())
        c = store.counts()
    print(
        f"{args.name} imported into {args.db_shown}: {c['users']} users, {c['items']} items, "
        f"{c['interactions']} interactions ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from lmrec.io.synthetic import synthetic_files

    t0 = time.perf_counter()
    files = synthetic_files(
        args.out, users=args.users, items=args.items, interactions=args.interactions,
        categories=args.categories, alpha=args.alpha, fmt=args.format, seed=args.seed,
    )  # fmt: skip
    print(
        f"wrote {files.n_users} users, {files.n_items} items, {files.n_interactions} "
        f"interactions under {args.out} ({time.perf_counter() - t0:.1f} s); import them with:\n"
        f"  lmrec import {' '.join(files.import_args())}"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lmrec.io.importers import ImportOptions, import_files

    opts = ImportOptions(
        on_error="skip" if args.skip_bad_rows else "fail",
        on_unknown="error" if args.refuse_unknown else "create",
        report=args.report,
        mapping=_parse_mapping(args.map),
        fmt=args.format,
        sep=args.sep,
        encoding=args.encoding,
        list_sep=args.list_sep,
        default_event=args.event,
        time_unit=args.time_unit,
    )
    item_opts = replace(opts, mapping=_parse_mapping(args.item_map)) if args.item_map else None
    user_opts = replace(opts, mapping=_parse_mapping(args.user_map)) if args.user_map else None

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"lmrec import: {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with _store(args) as store:
        report = import_files(
            store,
            interactions=args.interactions,
            items=args.items,
            users=args.users,
            options=opts,
            item_options=item_opts,
            user_options=user_opts,
            progress=progress,
        )
        c = store.counts()
    dt = time.perf_counter() - t0
    if args.json:
        print(
            json.dumps(
                {"files": [vars(f) for f in report.files], "store": c, "seconds": dt}, indent=2
            )
        )
    else:
        print(report.summary())
        print(
            f"store now holds {c['users']} users, {c['items']} items, {c['interactions']} interactions"
        )
    return 0


def _fmt_dist(d: dict[str, float]) -> str:
    if not d:
        return "-"
    return (
        f"min {d['min']:g}  median {d['median']:g}  mean {d['mean']:.1f}  "
        f"p90 {d['p90']:g}  max {d['max']:g}"
    )


def cmd_stats(args: argparse.Namespace) -> int:
    from lmrec.data import Dataset

    with _store(args) as store:
        t0 = time.perf_counter()
        ds = Dataset.from_store(store, events=args.events)
        s: dict[str, Any] = ds.stats()
        s["snapshot_seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"store        {args.db_shown}")
    print(f"users        {s['users']}")
    print(f"items        {s['items']}")
    print(f"interactions {s['interactions']}  ({s['user_item_pairs']} distinct user-item pairs)")
    print(f"sparsity     {s['sparsity']:.4%}")
    print("events       " + ", ".join(f"{k}: {v}" for k, v in s["events"].items()))
    print(f"per user     {_fmt_dist(s['interactions_per_user'])}")
    print(f"per item     {_fmt_dist(s['interactions_per_item'])}")
    if "time_range" in s:
        lo, hi = (time.strftime("%Y-%m-%d", time.gmtime(t)) for t in s["time_range"])
        print(f"time         {lo} .. {hi}")
    return 0


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    p = argparse.ArgumentParser(
        prog="lmrec",
        description="Recommender system with language models, collaborative filtering and "
        "sequence models over a SQL store.",
    )
    p.add_argument("--db", default=None, help=DB_HELP)
    from lmrec import __version__

    p.add_argument("--version", action="version", version=f"lmrec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    cmds: dict[str, Callable[[argparse.Namespace], int]] = {}

    s = sub.add_parser("sample", help="fetch a sample dataset and import it into the store")
    s.add_argument("name", choices=["ml-100k"], help="which sample")
    cmds["sample"] = cmd_sample

    s = sub.add_parser(
        "synth",
        help="write a synthetic shop of any size (power-law popularity, sessions, item text)",
        description="Writes interactions, items and users files that `lmrec import` reads "
        "(lmrec.io.synthetic); the same arguments and seed give the same files.",
    )
    s.add_argument("--out", required=True, help="folder for the three files")
    s.add_argument("--users", type=int, default=10_000)
    s.add_argument("--items", type=int, default=5_000)
    s.add_argument("--interactions", type=int, default=100_000)
    s.add_argument("--categories", type=int, help="default: about sqrt(items) / 2")
    s.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent of popularity")
    s.add_argument("--format", choices=["csv", "parquet"], default="csv")
    s.add_argument("--seed", type=int, default=0)
    cmds["synth"] = cmd_synth

    s = sub.add_parser(
        "import",
        help="import interactions, items and users from CSV, TSV, Parquet or RecBole atomic files",
        description="All files are validated first and written in one transaction: on a bad "
        "row nothing is written (or, with --skip-bad-rows, bad rows are listed in a report).",
    )
    s.add_argument(
        "--interactions", help="interactions file (user, item, [event], [rating], [time])"
    )
    s.add_argument("--items", help="items file (id, [title], [description], [categories], ...)")
    s.add_argument("--users", help="users file (id, [tags], attributes ...)")
    s.add_argument(
        "--map",
        action="append",
        metavar="FIELD=COLUMN",
        help="column names, e.g. user=visitorid,item=itemid,value=stars,ts=time",
    )
    s.add_argument(
        "--item-map",
        action="append",
        metavar="FIELD=COLUMN",
        help="column names of the items file, e.g. ext_id=sku,title=name (default: --map)",
    )
    s.add_argument(
        "--user-map",
        action="append",
        metavar="FIELD=COLUMN",
        help="column names of the users file, e.g. ext_id=customer,tags=likes (default: --map)",
    )
    s.add_argument(
        "--format", choices=["csv", "tsv", "parquet", "atomic"], help="default: from the extension"
    )
    s.add_argument("--sep", help="field separator of text files")
    s.add_argument("--encoding", default="utf-8", help="text encoding (default utf-8)")
    s.add_argument(
        "--list-sep", default="|", help="separator inside categories and tags (default '|')"
    )
    s.add_argument("--event", help="event type for files without an event column")
    s.add_argument(
        "--time-unit", choices=["s", "ms"], default="s", help="unit of numeric timestamps"
    )
    s.add_argument(
        "--skip-bad-rows", action="store_true", help="leave bad rows out instead of failing"
    )
    s.add_argument("--report", help="CSV report of skipped rows (default lmrec-import-report.csv)")
    s.add_argument(
        "--refuse-unknown",
        action="store_true",
        help="fail on interactions naming unknown users or items (default: create them)",
    )
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    cmds["import"] = cmd_import

    s = sub.add_parser("stats", help="counts, sparsity and distributions of the stored data")
    s.add_argument("--events", nargs="*", help="only these event types")
    s.add_argument("--json", action="store_true", help="print JSON")
    cmds["stats"] = cmd_stats

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, cmds)
    _global_options_after_command(sub)
    return p, cmds


DB_HELP = (
    "store URL (default: $LMREC_DB, else sqlite:///lmrec.db); e.g. postgresql://user:pass@host/db "
    "or mysql://user:pass@host/db (MySQL or MariaDB)"
)


def _global_options_after_command(sub: argparse._SubParsersAction) -> None:
    """Accept `--db` after the subcommand too (`lmrec import --db URL ...`). The subcommand's
    option has no default (SUPPRESS), so it replaces the one given before the subcommand only
    when it is given itself: the later one wins."""
    seen: set[int] = set()
    for parser in sub.choices.values():
        if id(parser) in seen:  # aliases share one parser
            continue
        seen.add(id(parser))
        parser.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)


#: Modules with `register(subparsers, commands)` that add more subcommands (lmrec.commands).
COMMAND_MODULES: list[str] = [
    "lmrec.commands.models",
    "lmrec.commands.evaluate",
    "lmrec.commands.experiment",
    "lmrec.commands.serve",
    "lmrec.commands.text",
    "lmrec.commands.users",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser, cmds = _parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if not args.command:
        parser.print_help()
        return 2
    from lmrec.store import resolve_url

    args.db = resolve_url(args.db)
    args.db_shown = args.db.split("@")[-1] if "@" in args.db else args.db
    try:
        return cmds[args.command](args)
    except DataError as exc:
        print(f"lmrec {args.command}: {exc}", file=sys.stderr)
        return 1
    except LmrecError as exc:
        print(f"lmrec {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"lmrec {args.command}: interrupted; the store is unchanged by the unfinished step",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        # The reader went away (`lmrec stats | head`): not an error of ours. Point stdout at
        # devnull so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
