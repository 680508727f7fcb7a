"""`lmrec serve`: the REST recommendation service (FastAPI on uvicorn; docs at /docs)."""

from __future__ import annotations

__all__ = ["app_from_env", "parse_keys", "register"]

import argparse
import os
from collections.abc import Callable, Sequence

from lmrec.errors import LmrecError


def parse_keys(specs: Sequence[str]) -> dict[str, str]:
    """'SCOPE:KEY' strings (also comma-separated) -> {key: scope}."""
    out: dict[str, str] = {}
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            scope, sep, key = part.partition(":")
            if not sep or scope not in ("read", "write", "admin") or not key:
                raise LmrecError(
                    f"API key {part[:12]!r}...: expected SCOPE:KEY with SCOPE read, write or admin"
                )
            out[key] = scope
    return out


#: The settings of `lmrec serve --workers N`, as JSON, for the worker processes.
SETTINGS_ENV = "LMREC_SERVE_SETTINGS"


def app_from_env() -> object:
    """The app of one worker of `lmrec serve --workers N` (uvicorn calls this in each)."""
    from lmrec.service import Settings, create_app

    return create_app(Settings.model_validate_json(os.environ[SETTINGS_ENV]))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from lmrec.service import Settings, create_app

    keys = parse_keys([os.environ.get("LMREC_API_KEYS", ""), *(args.api_key or [])])
    try:
        settings = Settings(
            db=args.db,
            models=args.model or [],
            models_dir=args.models_dir,
            active=args.active,
            api_keys=keys,
            auth=not args.no_auth,
            cors_origins=args.cors or [],
            max_body_bytes=args.max_body,
            index=args.index,
            search_encoder=args.search_encoder,
            threads=args.threads,
            group_threads=args.group_threads,
            **({} if args.batch_threads is None else {"batch_threads": args.batch_threads}),
            follow_store=args.follow_store or args.workers > 1,
        )
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise LmrecError(f"invalid settings: {why}") from None
    settings.check()
    if not settings.auth and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"lmrec serve: warning: serving without API keys on {args.host}", flush=True)
    if args.workers < 1:
        raise LmrecError(f"--workers must be at least 1, got {args.workers}")
    # Keep idle connections longer than uvicorn's 5 s: closing one while a client reuses it
    # makes that request fail (seen under load as "server disconnected").
    # No access log unless asked for (one log call per request); uvicorn picks uvloop and
    # httptools, both lmrec dependencies, when they are installed.
    run = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "timeout_keep_alive": 75,
        "access_log": args.access_log,
    }
    if args.workers == 1:
        uvicorn.run(create_app(settings), **run)
        return 0
    # Several processes, each on its own SO_REUSEPORT socket (lmrec.service.workers); each
    # builds its app from the settings in the environment and follows the store for the
    # others' feedback. The schema is created here first, so that the workers only open it.
    from lmrec.service.workers import serve_workers
    from lmrec.store import Store

    Store(settings.db).close()
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    return serve_workers("lmrec.commands.serve:app_from_env", args.workers, run)


def register(
    sub: argparse._SubParsersAction, cmds: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    """Add `serve` to the `lmrec` parser."""
    s = sub.add_parser(
        "serve",
        help="run the REST recommendation service (OpenAPI docs at /docs)",
        description="Serve saved models over HTTP: recommendations, similar items, search, "
        "feedback (live, no retraining), items, users and model versions with hot swap.",
    )
    s.add_argument(
        "--model", action="append", metavar="[NAME=]DIR", help="a saved model to load (repeat)"
    )
    s.add_argument("--models-dir", help="folder of model versions; retrained versions go here")
    s.add_argument("--active", help="version answering by default (default: the first --model)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument(
        "--api-key",
        action="append",
        metavar="SCOPE:KEY",
        help="an API key with scope read, write or admin (repeat; also $LMREC_API_KEYS)",
    )
    s.add_argument("--no-auth", action="store_true", help="serve without API keys (local use only)")
    s.add_argument("--cors", action="append", metavar="ORIGIN", help="allow a CORS origin")
    s.add_argument(
        "--max-body", type=int, default=1 << 20, help="largest request body in bytes (1 MiB)"
    )
    s.add_argument(
        "--index",
        choices=["auto", "flat", "hnsw", "ivf", "off"],
        default="auto",
        help="retrieval index of embedding models and search (auto: exact up to 50,000 items)",
    )
    s.add_argument("--search-encoder", help="text encoder of /search (default: the model's)")
    s.add_argument("--threads", type=int, default=0, help="cap on BLAS/FAISS threads")
    s.add_argument(
        "--group-threads",
        type=int,
        default=1,
        help="model calls of one batch that run side by side (an A/B experiment's arms; "
        "default 1: one after the other)",
    )
    s.add_argument(
        "--batch-threads",
        type=int,
        help="parts of a slow batch of user requests answered side by side on threads "
        "(default: the service's batch_threads setting, 2; 1: one call per batch)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1); with more, each follows the store for the "
        "feedback the others write",
    )
    s.add_argument(
        "--follow-store",
        action="store_true",
        help="read feedback other processes wrote to the store before each answer (several "
        "hosts on one store; on by itself with --workers > 1)",
    )
    s.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    s.add_argument("--access-log", action="store_true", help="log every request (slower)")
    cmds["serve"] = cmd_serve
