"""Importers: CSV, TSV, Parquet and RecBole atomic files (.inter / .item / .user) into the store.

Every file is read and validated completely before anything is written. Problems name the
file, the line (where the row starts; the row, counted from 1, for Parquet), the column and
what was expected. By default one problem aborts the import and nothing is written; with
`on_error="skip"` bad rows are left out and listed in a CSV report. All files of one import are
written in a single transaction, so an import that fails or is killed leaves the store as it
was. Interactions already in the store (same user, item, event and time) are not added again.
"""

from __future__ import annotations

__all__ = [
    "FileReport",
    "ImportOptions",
    "ImportReport",
    "ParsedFile",
    "import_files",
    "read_file",
]

import csv
import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lmrec.errors import DataError, LmrecError, Problem
from lmrec.store import Store

Kind = Literal["interactions", "items", "users"]


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
    },
}
REQUIRED: dict[Kind, tuple[str, ...]] = {
    "interactions": ("user", "item"),
    "items": ("ext_id",),
    "users": ("ext_id",),
}
ATOMIC_SUFFIX: dict[str, Kind] = {".inter": "interactions", ".item": "items", ".user": "users"}
_EVENT_PATTERN = r"[a-z0-9_\-.:]{1,32}"
MAX_ID_LEN = 255


@dataclass
class ImportOptions:
    """How to read and write: formats, column names, and what to do with bad rows."""

    on_error: Literal["fail", "skip"] = "fail"
    """fail: any bad row aborts the import (nothing written); skip: leave bad rows out."""
    on_unknown: Literal["create", "error"] = "create"
    """An interaction naming a user or item the store does not know: create it, or refuse."""
    report: str | Path | None = None
    """With on_error="skip": CSV file listing each skipped row (file, line, column, problem)."""
    mapping: Mapping[str, str] = field(default_factory=dict)
    """Canonical field -> column name, e.g. {"user": "visitorid", "value": "stars"}."""
    fmt: Literal["csv", "tsv", "parquet", "atomic"] | None = None
    """File format; by default from the extension (.csv, .tsv/.tab, .parquet, .inter/.item/.user)."""
    sep: str | None = None
    """Field separator for text files (default: ',' for CSV, tab for TSV and atomic files)."""
    encoding: str = "utf-8"
    list_sep: str = "|"
    """Separator inside list fields (categories, tags) of CSV/TSV files; atomic files use ' '."""
    default_event: str | None = None
    """Event type when the file has no event column: 'rating' if it has values, else 'interaction'."""
    time_unit: Literal["s", "ms"] = "s"
    """Unit of numeric timestamps."""


@dataclass
class FileReport:
    """What one file contributed: rows read, valid, skipped, duplicate, added, updated."""

    path: str
    kind: Kind
    rows: int = 0
    valid: int = 0
    skipped: int = 0
    duplicates: int = 0
    added: int = 0
    updated: int = 0
    already_present: int = 0


@dataclass
class ImportReport:
    """The result of `import_files`: one FileReport per file and the problems skipped."""

    files: list[FileReport]
    problems: list[Problem]
    report_path: str | None = None

    def summary(self) -> str:
        lines = []
        for f in self.files:
            s = f"{f.path}: {f.rows} rows, {f.added} added"
            if f.kind != "interactions":
                s += f", {f.updated} updated"
            else:
                s += f", {f.already_present} already in the store"
            if f.duplicates:
                s += f", {f.duplicates} duplicate rows ignored"
            if f.skipped:
                s += f", {f.skipped} bad rows skipped"
            lines.append(s)
        if self.report_path:
            lines.append(f"skipped rows are listed in {self.report_path}")
        return "\n".join(lines)


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


def _detect_format(path: Path, opts: ImportOptions) -> str:
    if opts.fmt:
        return opts.fmt
    suf = path.suffix.lower()
    if suf in ATOMIC_SUFFIX:
        return "atomic"
    if suf in (".tsv", ".tab"):
        return "tsv"
    if suf in (".parquet", ".pq"):
        return "parquet"
    if suf in (".csv", ".txt", ""):
        return "csv"
    raise LmrecError(
        f"{path}: unknown file type {suf!r}; expected .csv, .tsv, .parquet, .inter, .item or "
        ".user (or pass a format)"
    )


def _decode(path: Path, encoding: str) -> str:
    """The file's text; DataError naming the line of the first byte that is not `encoding`."""
    name = str(path)
    data = path.read_bytes()
    if not data.strip():
        raise DataError(Problem(name, None, None, None, "the file is empty"))
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            Problem(
                name,
                line,
                None,
                None,
                f"is not valid {encoding} text (byte 0x{data[exc.start]:02x}); pass the file's "
                "encoding (--encoding latin-1, for example)",
            )
        ) from None
    except LookupError:
        raise LmrecError(f"unknown text encoding {encoding!r}") from None
    return text.removeprefix("\ufeff")


@dataclass
class _Table:
    """A text table: header fields, the header's line, rows as a frame of strings with
    positional columns, the line where each row starts, and rows that could not be split."""

    header: list[str]
    header_line: int
    frame: pd.DataFrame
    lines: np.ndarray
    problems: list[Problem]


def _read_text_table(path: Path, sep: str, encoding: str) -> _Table:
    """Split a CSV/TSV file into rows, keeping each row's line number; blank lines are skipped."""
    text = _decode(path, encoding)
    if len(sep) == 1 and sep.isascii() and sep != '"':
        flat = text.replace("\r\n", "\n")
        first = re.search(r"\S", flat)
        if "\r" not in flat and first:
            # A quoted header is common (Arrow, some exporters) and fine; the body must have
            # no quotes at all for the fast reader.
            end = flat.find("\n", first.start())
            end = len(flat) if end < 0 else end
            start = flat.rfind("\n", 0, first.start()) + 1
            if flat.count('"', start, end) % 2 == 0 and flat.find('"', end) < 0:
                return _split_unquoted(str(path), flat, sep)
    return _split_csv(str(path), text, sep)


def _width_problem(name: str, line: int, width: int, found: int, sep: str) -> Problem:
    return Problem(
        name, line, None, None, f"expected {width} fields separated by {sep!r}, found {found}"
    )


def _split_unquoted(name: str, text: str, sep: str) -> _Table:
    """Fast path for text without quotes: one row per line, counted with numpy, fields parsed
    by Arrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = text.encode("utf-8")
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if not len(ends) or ends[-1] != len(data) - 1:
        ends = np.append(ends, len(data))  # last line without a newline
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    seppos = np.flatnonzero(buf == ord(sep))
    seps = np.diff(np.searchsorted(seppos, np.concatenate([[0], ends])))
    # Lines without separators may be blank (only whitespace): look at those few in Python,
    # with str's idea of whitespace (as the csv path's strip), which bytes' lacks for \x1c-\x1f.
    blank = ends == starts
    for i in np.flatnonzero((seps == 0) & ~blank):
        blank[i] = data[starts[i] : ends[i]].decode("utf-8").isspace()
    nonblank = np.flatnonzero(~blank)
    if not len(nonblank):
        raise DataError(Problem(name, None, None, None, "the file is empty"))
    h = int(nonblank[0])
    line = data[starts[h] : ends[h]].decode("utf-8")
    header = [x.strip() for x in next(csv.reader([line], delimiter=sep))]
    if len(header) != seps[h] + 1:  # a separator inside a quoted header name
        return _split_csv(name, text, sep)
    width = len(header)
    rows = nonblank[1:]
    ok = seps[rows] == width - 1
    problems = [
        _width_problem(name, int(i) + 1, width, int(k) + 1, sep)
        for i, k in zip(rows[~ok], seps[rows][~ok], strict=True)
    ]
    good = rows[ok]
    names = [f"f{j}" for j in range(width)]
    if len(good):
        if len(good) == len(ends) - h - 1:  # every line after the header is a good row
            body = data[ends[h] + 1 :]
        else:
            body = b"\n".join([data[starts[i] : ends[i]] for i in good.tolist()])
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, quote_char=False, double_quote=False, escape_char=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        frame = table.to_pandas()
        frame.columns = list(range(width))
    else:
        frame = pd.DataFrame({j: pd.Series([], dtype="str") for j in range(width)})
    return _Table(header, h + 1, frame, good.astype(np.int64) + 1, problems)


def _split_csv(name: str, text: str, sep: str) -> _Table:
    """General path (quoted fields, fields with newlines): the csv module, row by row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    problems: list[Problem] = []
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    width = 0
    while True:
        start = reader.line_num + 1  # a row that spans lines is reported where it starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if header is None:
                raise DataError(
                    Problem(name, start, None, None, f"cannot parse header: {exc}")
                ) from None
            problems.append(Problem(name, start, None, None, f"malformed row: {exc}"))
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if header is None:
            header, header_line, width = [h.strip() for h in row], start, len(row)
            continue
        if len(row) != width:
            problems.append(_width_problem(name, start, width, len(row), sep))
            continue
        rows.append(row)
        lines.append(start)
    if header is None:
        raise DataError(Problem(name, None, None, None, "the file is empty"))
    frame = pd.DataFrame(rows, columns=list(range(width)), dtype="str")
    return _Table(header, header_line, frame, np.asarray(lines, dtype=np.int64), problems)


def _load_raw(
    path: Path, fmt: str, opts: ImportOptions
) -> tuple[pd.DataFrame, dict[str, str], list[Problem], int]:
    """The file as a frame with a `_line` column, atomic types, row problems, header line."""
    name = str(path)
    if not path.exists():
        raise LmrecError(f"{path}: no such file")
    if path.is_dir():
        raise LmrecError(f"{path}: is a directory, not a file")
    types: dict[str, str] = {}
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a broken file
            raise DataError(
                Problem(name, None, None, None, f"cannot read Parquet: {exc}")
            ) from None
        if frame.empty:
            raise DataError(Problem(name, None, None, None, "the file has no rows"))
        frame = frame.reset_index(drop=True)
        frame.columns = [str(c).strip() for c in frame.columns]
        _check_header(name, list(frame.columns), None)
        frame["_line"] = np.arange(1, len(frame) + 1)
        return frame, types, [], 0
    sep = opts.sep or ("," if fmt == "csv" else "\t")
    t = _read_text_table(path, sep, opts.encoding)
    header = t.header
    if fmt == "atomic":
        names = []
        for i, h in enumerate(header):
            col, _, typ = h.partition(":")
            if typ not in ("token", "token_seq", "float", "float_seq"):
                raise DataError(
                    Problem(
                        name,
                        t.header_line,
                        h or f"#{i + 1}",
                        None,
                        "RecBole atomic header fields must look like name:token, name:token_seq, "
                        "name:float or name:float_seq",
                    )
                )
            names.append(col.strip())
            types[col.strip()] = typ
        header = names
    _check_header(name, header, t.header_line)
    frame = t.frame
    frame.columns = header
    frame["_line"] = t.lines
    if frame.empty and not t.problems:
        raise DataError(
            Problem(name, t.header_line, None, None, "the file has a header but no data rows")
        )
    return frame, types, t.problems, t.header_line


def _check_header(name: str, header: list[str], line: int | None) -> None:
    empty = [i + 1 for i, h in enumerate(header) if not h]
    if empty:
        raise DataError(
            Problem(name, line, f"#{empty[0]}", None, "column without a name in the header")
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(Problem(name, line, ", ".join(dup), None, "column name repeated in header"))
    if "_line" in header:
        raise DataError(Problem(name, line, "_line", None, "column name reserved by lmrec"))


def _check_mapping(mapping: Mapping[str, str]) -> None:
    known = sorted({f for a in ALIASES.values() for f in a})
    for fld in mapping:
        if fld not in known:
            raise LmrecError(f"unknown field {fld!r} in the column mapping; fields are {known}")


def _resolve_columns(
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
        dt = pd.to_datetime(txt[need], errors="coerce", utc=True, format="ISO8601")
        secs = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        v[need] = secs
    return v, ~np.isfinite(v), too_big


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


def read_file(
    path: str | Path, kind: Kind | None = None, opts: ImportOptions | None = None
) -> ParsedFile:
    """Read and validate one file into canonical columns; nothing is written.

    Raises DataError (file, line, column) for a structural problem (empty file, missing
    column, wrong encoding); row problems are returned in `problems` for the caller to fail or
    skip on.
    """
    opts = opts or ImportOptions()
    _check_mapping(opts.mapping)
    path = Path(path)
    fmt = _detect_format(path, opts)
    if kind is None:
        kind = ATOMIC_SUFFIX.get(path.suffix.lower(), "interactions")
    if kind not in ALIASES:
        raise LmrecError(f"kind must be interactions, items or users, not {kind!r}")
    frame, types, problems, header_line = _load_raw(path, fmt, opts)
    name = str(path)
    rows = len(frame) + len(problems)
    cols = _resolve_columns(frame, kind, opts.mapping, name, header_line)
    lines = frame["_line"].to_numpy(np.int64)
    bad = np.zeros(len(frame), dtype=bool)

    def flag(mask: np.ndarray, col: str, message: str) -> None:
        for i in np.flatnonzero(mask & ~bad):
            raw = frame[col].iloc[i]
            problems.append(
                Problem(name, int(lines[i]), col, None if _missing(raw) else str(raw), message)
            )
        bad[:] |= mask

    id_fields = ("user", "item") if kind == "interactions" else ("ext_id",)
    out: dict[str, Any] = {}
    for f in id_fields:
        ids = _text(frame[cols[f]])
        flag((ids == "").to_numpy(bool), cols[f], "expected an id, found an empty value")
        flag(
            (ids.str.len() > MAX_ID_LEN).to_numpy(bool),
            cols[f],
            f"expected an id of at most {MAX_ID_LEN} characters",
        )
        out[f] = ids

    if kind == "interactions":
        if "value" in cols:
            v, badv = _parse_numbers(frame[cols["value"]])
            flag(badv, cols["value"], "expected a number")
            out["value"] = v
        else:
            out["value"] = np.full(len(frame), np.nan)
        if "ts" in cols:
            t, badt, too_big = _parse_times(frame[cols["ts"]], opts.time_unit)
            flag(badt, cols["ts"], "expected a Unix time in seconds or an ISO 8601 date-time")
            flag(
                too_big,
                cols["ts"],
                "expected a Unix time in seconds; this looks like milliseconds "
                "(pass --time-unit ms)",
            )
            out["ts"] = t
        else:
            out["ts"] = np.zeros(len(frame))
        default_event = opts.default_event or ("rating" if "value" in cols else "interaction")
        if "event" in cols:
            ev = _text(frame[cols["event"]]).str.lower()
            ev = ev.where(ev != "", default_event)
            flag(
                ~ev.str.fullmatch(_EVENT_PATTERN).to_numpy(bool),
                cols["event"],
                "expected an event type of at most 32 letters, digits, '_', '-', '.' or ':'",
            )
            out["event"] = ev
        else:
            if not pd.Series([default_event]).str.fullmatch(_EVENT_PATTERN).iloc[0]:
                raise LmrecError(f"invalid default event type {default_event!r}")
            out["event"] = pd.Series(default_event, index=frame.index, dtype="str")
    else:
        sep = " " if fmt == "atomic" else opts.list_sep
        list_field = "categories" if kind == "items" else "tags"
        if list_field in cols:
            out[list_field] = _split_list(frame[cols[list_field]], sep)
        for f in ("title", "description"):
            if kind == "items" and f in cols:
                out[f] = [" ".join(x.split()) for x in _text(frame[cols[f]]).tolist()]
        if "created_at" in cols:
            t, badt, _ = _parse_times(frame[cols["created_at"]], opts.time_unit)
            empty = (_text(frame[cols["created_at"]]) == "").to_numpy(bool)
            flag(
                badt & ~empty,
                cols["created_at"],
                "expected a Unix time or ISO 8601 date",
            )
            out["created_at"] = t
        attrs, bad_attrs = _attribute_columns(frame, set(cols.values()), types, opts.list_sep)
        for i, c, _ in bad_attrs:
            mask = np.zeros(len(frame), bool)
            mask[i] = True
            flag(mask, c, "expected a number (the header declares it :float)")
        out["attributes"] = attrs
        # The same id twice in one users/items file is ambiguous.
        dup = out["ext_id"].duplicated(keep="first").to_numpy() & ~bad
        flag(dup, cols["ext_id"], "id repeated in this file (an earlier line has it)")

    parsed = pd.DataFrame(
        {k: (pd.Series(v, dtype=object) if isinstance(v, list) else v) for k, v in out.items()},
        index=frame.index,
    )
    parsed["_line"] = lines
    if bad.any():
        parsed = parsed[~bad].reset_index(drop=True)
    duplicates = 0
    if kind == "interactions" and len(parsed):
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
    problems.sort(key=lambda p: p.line or 0)
    return ParsedFile(name, kind, parsed, problems, rows, duplicates, cols)


# -- writing ---------------------------------------------------------------------------------


def _records(parsed: ParsedFile) -> list[dict[str, Any]]:
    f = parsed.frame
    fields = [c for c in f.columns if c not in ("_line",)]
    recs = []
    cols = {c: f[c].tolist() for c in fields}
    for i in range(len(f)):
        r = {c: cols[c][i] for c in fields}
        if "created_at" in r and (r["created_at"] is None or not np.isfinite(r["created_at"])):
            del r["created_at"]
        recs.append(r)
    return recs


def _store_ids(store: Store, conn: Any, kind: str, ext: pd.Series) -> np.ndarray:
    """Store ids for a column of external ids, creating the unknown ones."""
    codes, uniq = pd.factorize(ext)
    known = store.ensure(conn, kind, uniq.tolist())
    return np.fromiter((known[e] for e in uniq), np.int64, len(uniq))[codes]


def _shared_strings(s: pd.Series) -> np.ndarray:
    """An object array of the column's strings, one Python object per distinct value."""
    codes, uniq = pd.factorize(s)
    return np.asarray(uniq.tolist(), dtype=object)[codes]


def import_files(
    store: Store,
    *,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    users: str | Path | None = None,
    options: ImportOptions | None = None,
    item_options: ImportOptions | None = None,
    user_options: ImportOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Validate the given files, then write them in one transaction.

    `item_options` / `user_options` override `options` for those files (their own column
    mapping or separator). Raises DataError and writes nothing when a row is bad and
    `on_error="fail"`. `progress` receives a line at each phase (reading, writing, done).
    """
    opts = options or ImportOptions()
    say = progress or (lambda _msg: None)
    if not (interactions or items or users):
        raise LmrecError("nothing to import: give an interactions, items or users file")
    if opts.on_error not in ("fail", "skip"):
        raise LmrecError(f"on_error must be 'fail' or 'skip', not {opts.on_error!r}")
    if opts.on_unknown not in ("create", "error"):
        raise LmrecError(f"on_unknown must be 'create' or 'error', not {opts.on_unknown!r}")
    parsed: list[ParsedFile] = []
    for path, kind, o in (
        (users, "users", user_options or opts),
        (items, "items", item_options or opts),
        (interactions, "interactions", opts),
    ):
        if path is not None:
            say(f"reading {kind} from {path}")
            parsed.append(read_file(path, kind, o))  # type: ignore[arg-type]
    problems = [p for pf in parsed for p in pf.problems]
    if problems and opts.on_error == "fail":
        raise DataError(problems)
    reports = {
        pf.kind: FileReport(
            pf.path,
            pf.kind,
            rows=pf.rows,
            valid=len(pf.frame),
            skipped=len({p.line for p in pf.problems}),
            duplicates=pf.duplicates,
        )
        for pf in parsed
    }
    by_kind = {pf.kind: pf for pf in parsed}
    say(f"validated {sum(len(pf.frame) for pf in parsed)} rows; writing")

    # Every interaction's user and item id is resolved (or created) in this transaction,
    # so SQLite's per-row foreign-key check cannot fail and is skipped.
    with store.begin(foreign_keys=False) as conn:
        for kind, sk in (("users", "user"), ("items", "item")):
            if kind in by_kind:
                added, updated = store.upsert(conn, sk, _records(by_kind[kind]))
                reports[kind].added, reports[kind].updated = added, updated
        if "interactions" in by_kind:
            pf = by_kind["interactions"]
            f = pf.frame
            if opts.on_unknown == "error":
                unknown: list[Problem] = []
                miss_any = np.zeros(len(f), bool)
                for fld in ("user", "item"):
                    known = store.id_map(conn, fld, pd.unique(f[fld]))
                    miss = ~f[fld].isin(list(known)).to_numpy(bool)
                    for i in np.flatnonzero(miss & ~miss_any):
                        unknown.append(
                            Problem(
                                pf.path,
                                int(f["_line"].iloc[i]),
                                pf.columns.get(fld, fld),
                                str(f[fld].iloc[i]),
                                f"unknown {fld}: import it first, or allow creating unknown ids",
                            )
                        )
                    miss_any |= miss
                if unknown and opts.on_error == "fail":
                    raise DataError(sorted(unknown, key=lambda p: p.line or 0))
                if unknown:
                    f = f[~miss_any].reset_index(drop=True)
                    problems.extend(unknown)
                    reports["interactions"].skipped += len(unknown)
            uid = _store_ids(store, conn, "user", f["user"])
            iid = _store_ids(store, conn, "item", f["item"])
            added = store.insert_interactions(
                conn,
                uid,
                iid,
                _shared_strings(f["event"]),
                f["value"].to_numpy(np.float64),
                f["ts"].to_numpy(np.float64),
            )
            reports["interactions"].added = added
            reports["interactions"].already_present = len(f) - added
        say("committing")
    report_path = None
    if problems:
        report_path = str(opts.report or "lmrec-import-report.csv")
        _write_report(Path(report_path), problems)
    return ImportReport([reports[pf.kind] for pf in parsed], problems, report_path)


def _write_report(path: Path, problems: list[Problem]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "line", "column", "value", "problem"])
        for p in sorted(problems, key=lambda p: (p.file, p.line or 0)):
            w.writerow(
                [
                    p.file,
                    p.line if p.line is not None else "",
                    p.column or "",
                    p.value or "",
                    p.message,
                ]
            )
    tmp.replace(path)
