"""Importers: CSV, TSV, Parquet and RecBole atomic files (.inter / .item / .user) into the store.

Every file is read and validated completely before anything is written. Problems name the
file, the line (the row, counted from 1, for Parquet), the column and what was expected. By
default one problem aborts the import and nothing is written; with `on_error="skip"` bad rows
are left out and listed in a CSV report. All files of one import are written in a single
transaction, so an import that fails or is killed leaves the store as it was. Interactions
already in the store (same user, item, event and time) are not added again.
"""

from __future__ import annotations

__all__ = [
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
from collections.abc import Mapping
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
_EVENT_RE = re.compile(r"^[a-z0-9_\-.:]{1,32}$")
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


# -- reading ---------------------------------------------------------------------------------


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


def _read_text_table(
    path: Path, sep: str, encoding: str
) -> tuple[list[str], list[list[str]], list[int], list[Problem]]:
    """Header, rows, the line number of each row, and rows with the wrong number of fields."""
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
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    problems: list[Problem] = []
    try:
        header = next(reader)
        while not header or not any(h.strip() for h in header):
            header = next(reader)
    except StopIteration:
        raise DataError(Problem(name, None, None, None, "the file is empty")) from None
    except csv.Error as exc:
        raise DataError(
            Problem(name, reader.line_num, None, None, f"cannot parse header: {exc}")
        ) from None
    header = [h.strip() for h in header]
    width = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(name, reader.line_num, None, None, f"malformed row: {exc}"))
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != width:
            problems.append(
                Problem(
                    name,
                    reader.line_num,
                    None,
                    None,
                    f"expected {width} fields separated by {sep!r}, found {len(row)}",
                )
            )
            continue
        rows.append(row)
        lines.append(reader.line_num)
    return header, rows, lines, problems


def _load_raw(
    path: Path, fmt: str, opts: ImportOptions
) -> tuple[pd.DataFrame, dict[str, str], list[Problem]]:
    """The file as a frame of strings with a `_line` column, atomic types, and row problems."""
    name = str(path)
    if not path.exists():
        raise LmrecError(f"{path}: no such file")
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
        frame["_line"] = np.arange(1, len(frame) + 1)
        return frame, types, []
    sep = opts.sep or ("," if fmt == "csv" else "\t")
    header, rows, lines, problems = _read_text_table(path, sep, opts.encoding)
    if fmt == "atomic":
        names = []
        for i, h in enumerate(header):
            col, _, typ = h.partition(":")
            if typ not in ("token", "token_seq", "float", "float_seq"):
                raise DataError(
                    Problem(
                        name,
                        1,
                        h or f"#{i + 1}",
                        None,
                        "RecBole atomic header fields must look like name:token, name:token_seq, "
                        "name:float or name:float_seq",
                    )
                )
            names.append(col)
            types[col] = typ
        header = names
    dup = {h for h in header if header.count(h) > 1}
    if dup:
        raise DataError(
            Problem(name, 1, ", ".join(sorted(dup)), None, "column name repeated in header")
        )
    frame = (
        pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header)
    )
    frame["_line"] = np.asarray(lines, dtype=np.int64)
    if not rows and not problems:
        raise DataError(Problem(name, None, None, None, "the file has a header but no data rows"))
    return frame, types, problems


def _resolve_columns(
    frame: pd.DataFrame, kind: Kind, mapping: Mapping[str, str], name: str
) -> dict[str, str]:
    """Canonical field -> column of the frame, from the explicit mapping or header aliases."""
    cols = [c for c in frame.columns if c != "_line"]
    lower = {c.lower(): c for c in cols}
    found: dict[str, str] = {}
    for fld, col in mapping.items():
        if fld not in ALIASES[kind]:
            continue
        if col not in frame.columns:
            raise DataError(
                Problem(
                    name, 1, col, None, f"mapped column for '{fld}' is not in the header {cols}"
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
                1,
                None,
                None,
                f"missing required column for '{missing[0]}' (expected a header named {want}, "
                f"or map one with {missing[0]}=COLUMN); header is {cols}",
            )
        )
    return found


def _parse_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Floats and a mask of entries that are present but not finite numbers."""
    if pd.api.types.is_numeric_dtype(s):
        v = s.to_numpy(np.float64)
        return v, ~np.isfinite(v) & ~np.isnan(v)
    txt = s.astype(str).str.strip()
    v = pd.to_numeric(txt, errors="coerce").to_numpy(np.float64)
    bad = (~np.isfinite(v)) & (txt != "").to_numpy()
    return v, bad


def _parse_times(s: pd.Series, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Seconds since the epoch and a mask of unparseable entries (numbers or ISO 8601 dates)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        dt = pd.to_datetime(s, utc=True)
        v = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        return v, np.isnan(v)
    scale = 1e-3 if unit == "ms" else 1.0
    if pd.api.types.is_numeric_dtype(s):
        v = s.to_numpy(np.float64) * scale
        return v, ~np.isfinite(v)
    txt = s.astype(str).str.strip()
    v = pd.to_numeric(txt, errors="coerce").to_numpy(np.float64) * scale
    need = ~np.isfinite(v)
    if need.any():
        dt = pd.to_datetime(txt[need], errors="coerce", utc=True, format="ISO8601")
        secs = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
        v[need] = secs
    return v, ~np.isfinite(v)


def _ids(s: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(s):  # parquet ids stored as floats: 12.0 -> "12"
        return s.map(
            lambda x: "" if pd.isna(x) else (str(int(x)) if float(x).is_integer() else str(x))
        )
    return s.map(
        lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x).strip()
    )


def _split_list(s: pd.Series, sep: str) -> list[list[str]]:
    out = []
    for x in s.tolist():
        if isinstance(x, list | tuple | np.ndarray):
            out.append([str(t).strip() for t in x if str(t).strip()])
        elif x is None or (isinstance(x, float) and math.isnan(x)):
            out.append([])
        else:
            out.append([t.strip() for t in str(x).split(sep) if t.strip()])
    return out


def _attribute_columns(
    frame: pd.DataFrame, skip: set[str], types: dict[str, str], sep: str
) -> list[dict[str, Any]]:
    """Remaining columns as per-row attribute dicts; numbers where a whole column is numeric."""
    cols = [c for c in frame.columns if c not in skip and c != "_line"]
    values: dict[str, list[Any]] = {}
    for c in cols:
        s = frame[c]
        typ = types.get(c)
        if typ == "token_seq":
            values[c] = _split_list(s, " ")
        elif typ == "float_seq":
            values[c] = [[float(t) for t in x] for x in _split_list(s, " ")]
        elif typ == "token":
            values[c] = ["" if x is None else str(x).strip() for x in s.tolist()]
        else:
            if pd.api.types.is_numeric_dtype(s):
                v = s.to_numpy(np.float64)
                ok = np.ones(len(v), bool)
            else:
                txt = s.astype(str).str.strip()
                v = pd.to_numeric(txt, errors="coerce").to_numpy(np.float64)
                ok = np.isfinite(v) | (txt == "").to_numpy()
            if typ == "float" or (ok.all() and np.isfinite(v).any()):
                values[c] = [
                    None if not np.isfinite(x) else (int(x) if float(x).is_integer() else float(x))
                    for x in v
                ]
            else:
                values[c] = [None if x is None else str(x).strip() for x in s.tolist()]
    out = []
    for i in range(len(frame)):
        d = {}
        for c in cols:
            x = values[c][i]
            if x not in (None, "", []):
                d[c] = x
        out.append(d)
    return out


def read_file(
    path: str | Path, kind: Kind | None = None, opts: ImportOptions | None = None
) -> ParsedFile:
    """Read and validate one file into canonical columns; nothing is written.

    Raises DataError (file, line, column) for a structural problem (empty file, missing
    column, wrong encoding); row problems are returned in `problems` for the caller to fail or
    skip on.
    """
    opts = opts or ImportOptions()
    path = Path(path)
    fmt = _detect_format(path, opts)
    if kind is None:
        kind = ATOMIC_SUFFIX.get(path.suffix.lower(), "interactions")
    frame, types, problems = _load_raw(path, fmt, opts)
    name = str(path)
    rows = len(frame) + len(problems)
    cols = _resolve_columns(frame, kind, opts.mapping, name)
    lines = frame["_line"].to_numpy(np.int64)
    bad = np.zeros(len(frame), dtype=bool)

    def flag(mask: np.ndarray, col: str, message: str) -> None:
        for i in np.flatnonzero(mask & ~bad):
            raw = frame[col].iloc[i]
            problems.append(
                Problem(name, int(lines[i]), col, None if raw is None else str(raw), message)
            )
        bad[:] |= mask

    id_fields = ("user", "item") if kind == "interactions" else ("ext_id",)
    out: dict[str, Any] = {}
    for f in id_fields:
        ids = _ids(frame[cols[f]])
        flag((ids == "").to_numpy(), cols[f], "expected an id, found an empty value")
        flag(
            (ids.str.len() > MAX_ID_LEN).to_numpy(),
            cols[f],
            f"id longer than {MAX_ID_LEN} characters",
        )
        out[f] = ids.to_numpy(dtype=object)

    if kind == "interactions":
        if "value" in cols:
            v, badv = _parse_numbers(frame[cols["value"]])
            flag(badv, cols["value"], "expected a number")
            out["value"] = v
        else:
            out["value"] = np.full(len(frame), np.nan)
        if "ts" in cols:
            t, badt = _parse_times(frame[cols["ts"]], opts.time_unit)
            flag(badt, cols["ts"], "expected a Unix time in seconds or an ISO 8601 date-time")
            out["ts"] = t
        else:
            out["ts"] = np.zeros(len(frame))
        default_event = opts.default_event or ("rating" if "value" in cols else "interaction")
        if "event" in cols:
            ev = frame[cols["event"]].map(lambda x: "" if x is None else str(x).strip().lower())
            ev = ev.where(ev != "", default_event)
            flag(
                ~ev.map(lambda x: bool(_EVENT_RE.match(x))).to_numpy(bool),
                cols["event"],
                "expected an event type of at most 32 letters, digits, '_', '-', '.' or ':'",
            )
            out["event"] = ev.to_numpy(dtype=object)
        else:
            if not _EVENT_RE.match(default_event):
                raise LmrecError(f"invalid default event type {default_event!r}")
            out["event"] = np.full(len(frame), default_event, dtype=object)
    else:
        sep = " " if fmt == "atomic" else opts.list_sep
        list_field = "categories" if kind == "items" else "tags"
        if list_field in cols:
            out[list_field] = _split_list(frame[cols[list_field]], sep)
        for f in ("title", "description"):
            if kind == "items" and f in cols:
                out[f] = [
                    " ".join(str(x).split()) if x is not None and str(x) != "nan" else ""
                    for x in frame[cols[f]].tolist()
                ]
        if "created_at" in cols:
            t, badt = _parse_times(frame[cols["created_at"]], opts.time_unit)
            empty = frame[cols["created_at"]].map(lambda x: x is None or str(x).strip() == "")
            flag(
                badt & ~empty.to_numpy(bool),
                cols["created_at"],
                "expected a Unix time or ISO 8601 date",
            )
            out["created_at"] = t
        out["attributes"] = _attribute_columns(frame, set(cols.values()), types, opts.list_sep)
        # The same id twice in one users/items file is ambiguous.
        ids = pd.Series(out["ext_id"])
        dup = ids.duplicated(keep="first").to_numpy() & ~bad
        flag(dup, cols["ext_id"], "id repeated in this file (an earlier line has it)")

    parsed = pd.DataFrame(
        {k: (v if not isinstance(v, list) else pd.Series(v, dtype=object)) for k, v in out.items()}
    )
    parsed["_line"] = lines
    parsed = parsed[~bad].reset_index(drop=True)
    duplicates = 0
    if kind == "interactions":
        key = ["user", "item", "event", "ts"]
        dmask = parsed.duplicated(subset=key, keep="first").to_numpy()
        duplicates = int(dmask.sum())
        parsed = parsed[~dmask].reset_index(drop=True)
    problems.sort(key=lambda p: p.line or 0)
    return ParsedFile(name, kind, parsed, problems, rows, duplicates)


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


def import_files(
    store: Store,
    *,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    users: str | Path | None = None,
    options: ImportOptions | None = None,
    item_options: ImportOptions | None = None,
    user_options: ImportOptions | None = None,
) -> ImportReport:
    """Validate the given files, then write them in one transaction.

    `item_options` / `user_options` override `options` for those files (their own column
    mapping or separator). Raises DataError and writes nothing when a row is bad and
    `on_error="fail"`.
    """
    opts = options or ImportOptions()
    if not (interactions or items or users):
        raise LmrecError("nothing to import: give an interactions, items or users file")
    parsed: list[ParsedFile] = []
    for path, kind, o in (
        (users, "users", user_options or opts),
        (items, "items", item_options or opts),
        (interactions, "interactions", opts),
    ):
        if path is not None:
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
            skipped=len(pf.problems),
            duplicates=pf.duplicates,
        )
        for pf in parsed
    }
    by_kind = {pf.kind: pf for pf in parsed}

    with store.begin() as conn:
        for kind, sk in (("users", "user"), ("items", "item")):
            if kind in by_kind:
                added, updated = store.upsert(conn, sk, _records(by_kind[kind]))
                reports[kind].added, reports[kind].updated = added, updated
        if "interactions" in by_kind:
            pf = by_kind["interactions"]
            f = pf.frame
            if opts.on_unknown == "error":
                unknown: list[Problem] = []
                for fld, sk in (("user", "user"), ("item", "item")):
                    known = store.id_map(conn, sk, pd.unique(f[fld]))
                    miss = ~f[fld].isin(known.keys()).to_numpy()
                    for i in np.flatnonzero(miss):
                        unknown.append(
                            Problem(
                                pf.path,
                                int(f["_line"].iloc[i]),
                                fld,
                                str(f[fld].iloc[i]),
                                f"unknown {fld}: import it first, or allow creating unknown ids",
                            )
                        )
                if unknown and opts.on_error == "fail":
                    raise DataError(unknown)
                if unknown:
                    bad_lines = {p.line for p in unknown}
                    f = f[~f["_line"].isin(bad_lines)].reset_index(drop=True)
                    problems.extend(unknown)
                    reports["interactions"].skipped += len(bad_lines)
            umap = store.ensure(conn, "user", pd.unique(f["user"]))
            imap = store.ensure(conn, "item", pd.unique(f["item"]))
            uid = f["user"].map(umap).to_numpy(np.int64)
            iid = f["item"].map(imap).to_numpy(np.int64)
            added = store.insert_interactions(
                conn,
                uid,
                iid,
                f["event"].to_numpy(dtype=object),
                f["value"].to_numpy(np.float64),
                f["ts"].to_numpy(np.float64),
            )
            reports["interactions"].added = added
            reports["interactions"].already_present = len(f) - added
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
        for p in problems:
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
