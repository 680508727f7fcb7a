"""The re-ranking options of `lmrec recommend` and `lmrec evaluate`, generated from the fields of
`lmrec.rerank.RerankConfig` (and its `Filters`), and the config they build."""

from __future__ import annotations

__all__ = ["add_rerank_options", "rerank_config"]

import argparse
import types
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmrec.rerank import RerankConfig

#: Prefix of the argparse destinations, so that no other option of a command can clash.
DEST = "rerank_"


def _plain(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in _csv(text):
        key, sep, val = part.rpartition("=")
        if not sep or not key.strip() or not val.strip().lstrip("-").isdigit():
            raise argparse.ArgumentTypeError(f"expected CATEGORY=COUNT,..., got {part!r}")
        out[key.strip()] = int(val)
    return out


def _fields() -> Iterable[tuple[str, Any, bool]]:
    """(name, pydantic field, is a `Filters` field) for every option."""
    from lmrec.rerank import Filters, RerankConfig

    for name, f in RerankConfig.model_fields.items():
        if name != "filters":
            yield name, f, False
    for name, f in Filters.model_fields.items():
        yield name, f, True


def add_rerank_options(s: argparse.ArgumentParser, *, skip: Iterable[str] = ()) -> None:
    """One option per field of `RerankConfig` and of its `Filters` (`--max-per-category`,
    `--exclude-items A,B`, ...), with the field's choices, type and docstring; an option not
    given keeps the config's default, so the CLI and the other callers share it. `skip` names
    fields the command sets itself."""
    from lmrec.rerank import RerankConfig

    defaults = RerankConfig().model_dump()
    skipped = set(skip)
    for name, f, in_filters in _fields():
        if name in skipped:
            continue
        flag = "--" + name.replace("_", "-")
        kind = _plain(f.annotation)
        default = defaults["filters" if in_filters else name]
        default = default.get(name) if in_filters else default
        doc = " ".join((f.description or "").split())
        shown = "" if default in (None, (), {}) else f" (default {str(default).lower()})"
        kw: dict[str, Any] = {"dest": DEST + name, "default": None, "help": doc + shown}
        if typing.get_origin(kind) is typing.Literal:
            kw["choices"] = list(typing.get_args(kind))
        elif kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float):
            kw.update(type=kind, metavar="N" if kind is int else "X")
        elif typing.get_origin(kind) is tuple:
            kw.update(type=_csv, metavar="A,B")
        elif typing.get_origin(kind) is dict:
            kw.update(type=_counts, metavar="C=N,D=M")
        else:  # pragma: no cover - a new field type needs a parser here
            raise TypeError(f"RerankConfig.{name}: no command-line form for {kind!r}")
        s.add_argument(flag, **kw)


def rerank_config(args: argparse.Namespace, **fixed: Any) -> RerankConfig:
    """The `RerankConfig` of the options given (the others keep its defaults) and `fixed`
    fields; invalid values raise `LmrecError` naming the field."""
    from lmrec.rerank import RerankConfig

    top: dict[str, Any] = {}
    filters: dict[str, Any] = {}
    for name, _, in_filters in _fields():
        value = getattr(args, DEST + name, None)
        if value is not None:
            (filters if in_filters else top)[name] = value
    if filters:
        top["filters"] = filters
    return RerankConfig.of(**top, **fixed)
