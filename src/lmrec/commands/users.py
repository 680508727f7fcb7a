"""`lmrec users delete ID`: erase a user everywhere (`lmrec.erasure.erase_user`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from lmrec.errors import LmrecError


def cmd_users(args: argparse.Namespace) -> int:
    from lmrec.erasure import erase_user
    from lmrec.store import Store

    with Store(args.db) as store:
        report = erase_user(store, args.user, args.models or [], vacuum=not args.no_vacuum)
    if not report.found and not report.models:
        raise LmrecError(f"unknown user {args.user!r}")
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        s = report.store
        print(
            f"erased: {s.get('users', 0)} user, {s.get('events', 0)} events, "
            f"{s.get('text_vectors', 0)} cached text vectors; models rewritten: "
            f"{', '.join(report.models) or 'none'}"
        )
    return 0


def register(
    subparsers: Any,
    commands: dict[str, Callable[[argparse.Namespace], int]],
) -> None:
    """Add `users delete` to the `lmrec` command line."""
    s = subparsers.add_parser("users", help="manage users (erasure)")
    ops = s.add_subparsers(dest="users_command", required=True)
    d = ops.add_parser(
        "delete",
        help="erase a user: store rows, events, cached text vectors, saved models, free pages",
    )
    d.add_argument("user", help="the user's id")
    d.add_argument(
        "--models", nargs="*", help="model folders (or folders of them) to rewrite without them"
    )
    d.add_argument("--no-vacuum", action="store_true", help="SQLite: skip the VACUUM rebuild")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    commands["users"] = cmd_users
