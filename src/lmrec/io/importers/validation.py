"""Validation: a raw file's columns mapped to canonical fields (explicit mapping or header
aliases), values parsed and type-checked, and every bad row collected as a Problem with its
file, line, column and value. Nothing is written here."""

from __future__ import annotations

__all__ = [
    "ALIASES",
    "MAX_ID_LEN",
    "REQUIRED",
    "ParsedFile",
    "check_mapping",
    "read_file",
    "resolve_columns",
]

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmrec.errors import DataError, LmrecError, Problem
from lmrec.ids import CONTROL
from lmrec.io.importers.options import ImportOptions, Kind
from lmrec.io.importers.readers import ATOMIC_SUFFIX, detect_format, read_raw

# Canonical field -> names recognised in headers (case-insensitive), first match wins.
ALIASES: dict[Kind, dict[str, tuple[str, ...]]] = {
    "interactions": {
        "user": ("user_id", "user", "userid", "uid", "customer_id", "visitorid"),
        "item": (
            "item_id",
            "item",
            "itemid",
            "iid",
            "movieid",
            "movie_id",
            "product_id",
            "track_id",
        ),
        "event": ("event", "event_type", "type", "action", "behavior", "behaviour"),
        "value": ("rating", "value", "score", "weight"),
        "ts": ("timestamp", "ts", "time", "datetime", "date", "event_time"),
    },
    "items": {
        "ext_id": ("item_id", "item", "itemid", "iid", "movieid", "movie_id", "product_id", "id"),
        "title": ("title", "movie_title", "name", "item_name"),
        "description": ("description", "overview", "plot", "summary", "text", "desc"),
        "categories": ("categories", "category", "genres", "genre", "class", "tags"),
        "created_at": ("created_at", "created", "publish_time", "added"),
    },
    "users": {
        "ext_id": ("user_id", "user", "userid", "uid", "customer_id", "id"),
        "tags": ("tags", "interests", "interest_tags", "interest"),
        "consent_personal": ("consent_personal", "consent_personalisation"),
        "consent_training": ("consent_training",),
    },
}
REQUIRED: dict[Kind, tuple[str, ...]] = {
    "interactions": ("user", "item"),
    "items": ("ext_id",),
    "users": ("ext_id",),
}
_EVENT_PATTERN = r"[a-z0-9_\-.:]{1,32}"
MAX_ID_LEN = 255


@dataclass
class ParsedFile:
    """A validated file: canonical columns plus `_line` (where each row came from)."""

    path: str
    kind: Kind
    frame: pd.DataFrame
    problems: list[Problem]
    rows: int
    duplicates: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    """Canonical field -> the file's column it was read from."""


# -- reading ---------------------------------------------------------------------------------

#: Numeric timestamps above this, read as seconds, are after the year 5000: milliseconds.
_MAX_SECONDS = 1e11
#: Latest time an event may have (2200-01-01, as `lmrec.service.schemas.Timestamp`).
MAX_TS = 7_258_118_400


#: Spellings of a consent flag (an empty value: consent, the default).
_CONSENT = {"true": True, "yes": True, "1": True, "": True, "false": False, "no": False, "0": False}


def check_mapping(mapping: Mapping[str, str]) -> None:
    """LmrecError unless every key of a column mapping is a known canonical field."""
    known = sorted({f for a in ALIASES.values() for f in a})
    for fld in mapping:
        if fld not in known:
            raise LmrecError(f"unknown field {fld!r} in the column mapping; fields are {known}")


def resolve_columns(
    frame: pd.DataFrame, kind: Kind, mapping: Mapping[str, str], name: str, header_line: int
) -> dict[str, str]:
    """Canonical field -> column of the frame, from the explicit mapping or header aliases."""
    cols = [c for c in frame.columns if c != "_line"]
    lower = {c.lower(): c for c in reversed(cols)}
    line = header_line or None
    found: dict[str, str] = {}
    for fld, col in mapping.items():
        if fld not in ALIASES[kind]:
            continue
        if col not in cols:
            raise DataError(
                Problem(
                    name, line, col, None, f"mapped column for '{fld}' is not in the header {cols}"
                )
            )
        found[fld] = col
    used = set(found.values())
    for fld, names in ALIASES[kind].items():
        if fld in found:
            continue
        for n in names:
            if n in lower and lower[n] not in used:
                found[fld] = lower[n]
                used.add(lower[n])
                break
    missing = [f for f in REQUIRED[kind] if f not in found]
    if missing:
        want = " or ".join(ALIASES[kind][missing[0]][:4])
        raise DataError(
            Problem(
                name,
                line,
                missing[0],
                None,
                f"missing required column (expected a header named {want}, or map one with "
                f"{missing[0]}=COLUMN); header is {cols}",
            )
        )
    return found


def _missing(x: Any) -> bool:
    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, float) and math.isnan(x))


def _text(s: pd.Series) -> pd.Series:
    """Values as stripped strings ("" where missing); integral floats lose their '.0'."""
    if pd.api.types.is_float_dtype(s):
        return s.map(lambda x: "" if _missing(x) else (str(int(x)) if x.is_integer() else str(x)))
    if pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s):
        return s.fillna("").str.strip()
    if pd.api.types.is_object_dtype(s):
        s = s.map(lambda x: "" if _missing(x) else str(x))
    return s.astype("str").fillna("").str.strip()


def _to_float(txt: pd.Series) -> np.ndarray:
    """Numbers of stripped strings; NaN where empty or not a number."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.array(txt.array)
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    except Exception:  # any string Arrow cannot cast: let pandas find which
        return pd.to_numeric(txt.where(txt != ""), errors="coerce").to_numpy(np.float64)


def _parse_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Floats (NaN where empty) and a mask of entries present but not finite numbers."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        v = s.to_numpy(np.float64, na_value=np.nan)
        return v, np.isinf(v)
    txt = _text(s)
    v = _to_float(txt)
    return v, ~np.isfinite(v) & (txt != "").to_numpy(bool)


def _parse_times(s: pd.Series, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seconds since the epoch, a mask of unparseable entries, and a mask of numbers too large
    to be seconds (milliseconds read with unit 's'). Numbers or ISO 8601 dates."""
    scale = 1e-3 if unit == "ms" else 1.0
    if pd.api.types.is_datetime64_any_dtype(s):
        dt = pd.to_datetime(s, utc=True)
        v = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        return v, np.isnan(v), np.zeros(len(v), bool)
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        raw = s.to_numpy(np.float64, na_value=np.nan)
        v = raw * scale
        return v, ~np.isfinite(v), np.isfinite(v) & (np.abs(v) > _MAX_SECONDS)
    txt = _text(s)
    raw = _to_float(txt)
    v = raw * scale
    too_big = np.isfinite(v) & (np.abs(v) > _MAX_SECONDS)
    need = ~np.isfinite(v) & (txt != "").to_numpy(bool)
    if need.any():
        v[need] = _iso_seconds(txt[need])
    return v, ~np.isfinite(v), too_big


def _iso_seconds(txt: pd.Series) -> np.ndarray:
    """Seconds of ISO 8601 dates; NaN where not one. Dates outside pandas' nanosecond range
    (1677-2262) are read by `datetime` instead, so they are values (refused later as outside
    1970-2200 where that matters), never an OutOfBoundsDatetime traceback."""
    try:
        dt = pd.to_datetime(txt, errors="coerce", utc=True, format="ISO8601")
        return (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
        return np.array([_one_iso(x) for x in txt.tolist()], np.float64)


def _one_iso(x: str) -> float:
    try:
        d = datetime.datetime.fromisoformat(x.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float((pd.Timestamp(x, tz=None) - pd.Timestamp(0)).total_seconds())
        except (ValueError, pd.errors.OutOfBoundsDatetime, OverflowError):
            return math.nan
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.UTC)
    return (d - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)).total_seconds()


def _split_list(s: pd.Series, sep: str) -> list[list[str]]:
    out = []
    for x in s.tolist():
        if isinstance(x, list | tuple | np.ndarray):
            out.append([str(t).strip() for t in x if not _missing(t) and str(t).strip()])
        elif _missing(x):
            out.append([])
        else:
            out.append([t.strip() for t in str(x).split(sep) if t.strip()])
    return out


def _attribute_columns(
    frame: pd.DataFrame, skip: set[str], types: dict[str, str], sep: str
) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    """Remaining columns as per-row attribute dicts (numbers where a whole column is numeric),
    and (row, column, value) of atomic float fields that are not numbers."""
    cols = [c for c in frame.columns if c not in skip and c != "_line"]
    values: dict[str, list[Any]] = {}
    bad: list[tuple[int, str, str]] = []
    for c in cols:
        s = frame[c]
        typ = types.get(c)
        if typ == "token_seq":
            values[c] = _split_list(s, " ")
        elif typ == "float_seq":
            seqs = _split_list(s, " ")
            vals: list[Any] = []
            for i, x in enumerate(seqs):
                try:
                    vals.append([float(t) for t in x])
                except ValueError:
                    bad.append((i, c, " ".join(x)))
                    vals.append(None)
            values[c] = vals
        elif typ == "token":
            values[c] = _text(s).tolist()
        else:
            txt = _text(s)
            v, nonnum = _parse_numbers(s)
            if typ == "float":
                bad.extend((int(i), c, str(txt.iloc[i])) for i in np.flatnonzero(nonnum))
            if typ == "float" or (not nonnum.any() and np.isfinite(v).any()):
                values[c] = [
                    None if not np.isfinite(x) else (int(x) if float(x).is_integer() else float(x))
                    for x in v
                ]
            else:
                values[c] = txt.tolist()
    out = []
    for i in range(len(frame)):
        d = {}
        for c in cols:
            x = values[c][i]
            if x is not None and x != "" and x != []:
                d[c] = x
        out.append(d)
    return out, bad


class _RowProblems:
    """The problems of one file's rows: a row is reported once, at its first bad field, and
    left out of the parsed frame."""

    def __init__(self, name: str, frame: pd.DataFrame, problems: list[Problem]) -> None:
        self.name = name
        self.frame = frame
        self.lines = frame["_line"].to_numpy(np.int64)
        self.bad = np.zeros(len(frame), dtype=bool)
        self.problems = problems

    def flag(self, mask: np.ndarray, col: str, message: str) -> None:
        """Report the rows of `mask` not reported yet, naming column `col`."""
        for i in np.flatnonzero(mask & ~self.bad):
            raw = self.frame[col].iloc[i]
            self.problems.append(
                Problem(
                    self.name, int(self.lines[i]), col, None if _missing(raw) else str(raw), message
                )
            )
        self.bad |= mask


def read_file(
    path: str | Path, kind: Kind | None = None, opts: ImportOptions | None = None
) -> ParsedFile:
    """Read and validate one file into canonical columns; nothing is written.

    Raises DataError (file, line, column) for a structural problem (empty file, missing
    column, wrong encoding); row problems are returned in `problems` for the caller to fail or
    skip on.
    """
    opts = opts or ImportOptions()
    check_mapping(opts.mapping)
    path = Path(path)
    fmt = detect_format(path, opts.fmt)
    if kind is None:
        kind = ATOMIC_SUFFIX.get(path.suffix.lower(), "interactions")
    if kind not in ALIASES:
        raise LmrecError(f"kind must be interactions, items or users, not {kind!r}")
    raw = read_raw(path, fmt, opts.sep, opts.encoding)
    frame, name = raw.frame, str(path)
    rows = len(frame) + len(raw.problems)
    cols = resolve_columns(frame, kind, opts.mapping, name, raw.header_line)
    check = _RowProblems(name, frame, raw.problems)
    out = _id_fields(frame, cols, kind, check)
    if kind == "interactions":
        out.update(_interaction_fields(frame, cols, opts, check))
    else:
        list_sep = " " if fmt == "atomic" else opts.list_sep
        out.update(_entity_fields(frame, cols, kind, raw.types, list_sep, opts, check))
        # The same id twice in one users/items file is ambiguous.
        dup = out["ext_id"].duplicated(keep="first").to_numpy() & ~check.bad
        check.flag(dup, cols["ext_id"], "id repeated in this file (an earlier line has it)")

    parsed = pd.DataFrame(
        {k: (pd.Series(v, dtype=object) if isinstance(v, list) else v) for k, v in out.items()},
        index=frame.index,
    )
    parsed["_line"] = check.lines
    if check.bad.any():
        parsed = parsed[~check.bad].reset_index(drop=True)
    duplicates = 0
    if kind == "interactions":
        parsed, duplicates = _drop_repeated_interactions(parsed)
    problems = sorted(check.problems, key=lambda p: p.line or 0)
    return ParsedFile(name, kind, parsed, problems, rows, duplicates, cols)


def _id_fields(
    frame: pd.DataFrame, cols: dict[str, str], kind: Kind, check: _RowProblems
) -> dict[str, Any]:
    """The id columns (user and item, or ext_id) as stripped strings; empty or long ids flagged."""
    out: dict[str, Any] = {}
    for f in ("user", "item") if kind == "interactions" else ("ext_id",):
        raw = frame[cols[f]]
        if pd.api.types.is_object_dtype(raw):
            check.flag(
                raw.map(lambda x: isinstance(x, list | tuple | dict | np.ndarray | bytes)).to_numpy(
                    bool
                ),
                cols[f],
                "expected an id (text or a number), found a list or binary value",
            )
        ids = _text(raw)
        check.flag(
            ids.str.contains(CONTROL.pattern, regex=True).to_numpy(bool),
            cols[f],
            "expected an id without control characters (NUL, newline, tab, ...)",
        )
        check.flag((ids == "").to_numpy(bool), cols[f], "expected an id, found an empty value")
        check.flag(
            (ids.str.len() > MAX_ID_LEN).to_numpy(bool),
            cols[f],
            f"expected an id of at most {MAX_ID_LEN} characters",
        )
        out[f] = ids
    return out


def _interaction_fields(
    frame: pd.DataFrame, cols: dict[str, str], opts: ImportOptions, check: _RowProblems
) -> dict[str, Any]:
    """value (NaN when absent), ts (seconds; 0 when absent) and event of interaction rows."""
    out: dict[str, Any] = {}
    if "value" in cols:
        v, badv = _parse_numbers(frame[cols["value"]])
        check.flag(badv, cols["value"], "expected a number")
        out["value"] = v
    else:
        out["value"] = np.full(len(frame), np.nan)
    if "ts" in cols:
        t, badt, too_big = _parse_times(frame[cols["ts"]], opts.time_unit)
        check.flag(badt, cols["ts"], "expected a Unix time in seconds or an ISO 8601 date-time")
        check.flag(
            too_big,
            cols["ts"],
            "expected a Unix time in seconds; this looks like milliseconds (pass --time-unit ms)",
        )
        check.flag(
            ~badt & ~too_big & ((t < 0) | (t > MAX_TS)),
            cols["ts"],
            "expected a time between 1970 and 2200 (as the API)",
        )
        out["ts"] = t
    else:
        out["ts"] = np.zeros(len(frame))
    default_event = opts.default_event or ("rating" if "value" in cols else "interaction")
    if "event" in cols:
        ev = _text(frame[cols["event"]]).str.lower()
        ev = ev.where(ev != "", default_event)
        check.flag(
            ~ev.str.fullmatch(_EVENT_PATTERN).to_numpy(bool),
            cols["event"],
            "expected an event type of at most 32 letters, digits, '_', '-', '.' or ':'",
        )
        out["event"] = ev
    else:
        if not pd.Series([default_event]).str.fullmatch(_EVENT_PATTERN).iloc[0]:
            raise LmrecError(f"invalid default event type {default_event!r}")
        out["event"] = pd.Series(default_event, index=frame.index, dtype="str")
    return out


def _entity_fields(
    frame: pd.DataFrame,
    cols: dict[str, str],
    kind: Kind,
    types: dict[str, str],
    list_sep: str,
    opts: ImportOptions,
    check: _RowProblems,
) -> dict[str, Any]:
    """Categories or tags, title and description (items), created_at, and the other columns
    as attributes, of item or user rows."""
    out: dict[str, Any] = {}
    for f in ("consent_personal", "consent_training"):
        if kind == "users" and f in cols:
            txt = _text(frame[cols[f]]).str.lower()
            flags = [_CONSENT.get(x) for x in txt.tolist()]
            check.flag(
                np.array([v is None for v in flags], bool),
                cols[f],
                "expected true or false (also yes/no, 1/0; empty: true)",
            )
            out[f] = [True if v is None else v for v in flags]
    list_field = "categories" if kind == "items" else "tags"
    if list_field in cols:
        out[list_field] = _split_list(frame[cols[list_field]], list_sep)
    for f in ("title", "description"):
        if kind == "items" and f in cols:
            out[f] = [" ".join(x.split()) for x in _text(frame[cols[f]]).tolist()]
    if "created_at" in cols:
        t, badt, _ = _parse_times(frame[cols["created_at"]], opts.time_unit)
        empty = (_text(frame[cols["created_at"]]) == "").to_numpy(bool)
        check.flag(badt & ~empty, cols["created_at"], "expected a Unix time or ISO 8601 date")
        out["created_at"] = t
    attrs, bad_attrs = _attribute_columns(frame, set(cols.values()), types, opts.list_sep)
    for i, c, _ in bad_attrs:
        mask = np.zeros(len(frame), bool)
        mask[i] = True
        check.flag(mask, c, "expected a number (the header declares it :float)")
    out["attributes"] = attrs
    return out


def _drop_repeated_interactions(parsed: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows with the (user, item, event, ts) of an earlier row left out, and how many."""
    if not len(parsed):
        return parsed, 0
    key = pd.DataFrame(
        {
            "u": pd.factorize(parsed["user"])[0],
            "i": pd.factorize(parsed["item"])[0],
            "e": pd.factorize(parsed["event"])[0],
            "t": parsed["ts"].to_numpy(),
        }
    )
    dmask = key.duplicated(keep="first").to_numpy()
    duplicates = int(dmask.sum())
    if duplicates:
        parsed = parsed[~dmask].reset_index(drop=True)
    return parsed, duplicates
