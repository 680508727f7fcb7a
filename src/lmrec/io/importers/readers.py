"""Readers: a CSV, TSV, Parquet or RecBole atomic file as a frame of raw values, each row with
the line it starts on (the row number, from 1, for Parquet).

Text files are split by a fast path (numpy line counting, Arrow field parsing) when the body
has no quotes, and by the csv module otherwise; both give the same rows and line numbers. Only
the file's structure is checked here (encoding, header, field counts); values are checked in
`lmrec.io.importers.validation`.
"""

from __future__ import annotations

__all__ = ["ATOMIC_SUFFIX", "RawFile", "TextTable", "detect_format", "read_raw", "read_text_table"]

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.errors import DataError, LmrecError, Problem
from lmrec.io.importers.options import Kind

ATOMIC_SUFFIX: dict[str, Kind] = {".inter": "interactions", ".item": "items", ".user": "users"}


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The format of a file: `fmt` when given, else from the extension."""
    if fmt:
        return fmt
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
class TextTable:
    """A text table: header fields, the header's line, rows as a frame of strings with
    positional columns, the line where each row starts, and rows that could not be split."""

    header: list[str]
    header_line: int
    frame: pd.DataFrame
    lines: np.ndarray
    problems: list[Problem]


def read_text_table(path: Path, sep: str, encoding: str) -> TextTable:
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


def _split_unquoted(name: str, text: str, sep: str) -> TextTable:
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
            # A block must hold the longest line, else Arrow fails ("straddling object").
            read_options=pacsv.ReadOptions(
                column_names=names, block_size=max(1 << 20, int((ends - starts).max()) + 2)
            ),
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
    return TextTable(header, h + 1, frame, good.astype(np.int64) + 1, problems)


def _split_csv(name: str, text: str, sep: str) -> TextTable:
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
    return TextTable(header, header_line, frame, np.asarray(lines, dtype=np.int64), problems)


@dataclass
class RawFile:
    """A file's rows as raw values: the columns of the header plus `_line`, the RecBole types
    of an atomic header, rows that could not be split, and the header's line (0: none)."""

    frame: pd.DataFrame
    types: dict[str, str]
    problems: list[Problem]
    header_line: int


def read_raw(path: Path, fmt: str, sep: str | None = None, encoding: str = "utf-8") -> RawFile:
    """Read one file of format `fmt` (csv, tsv, parquet or atomic) into a RawFile.

    `sep` defaults to ',' for CSV and tab for TSV and atomic files. Raises DataError naming the
    file (and line) for an unreadable or empty file or a bad header.
    """
    name = str(path)
    if not path.exists():
        raise LmrecError(f"{path}: no such file")
    if path.is_dir():
        raise LmrecError(f"{path}: is a directory, not a file")
    if fmt == "parquet":
        return _read_parquet(path)
    t = read_text_table(path, sep or ("," if fmt == "csv" else "\t"), encoding)
    header, types = t.header, {}
    if fmt == "atomic":
        header, types = _atomic_header(name, t)
    _check_header(name, header, t.header_line)
    frame = t.frame
    frame.columns = header
    frame["_line"] = t.lines
    if frame.empty and not t.problems:
        raise DataError(
            Problem(name, t.header_line, None, None, "the file has a header but no data rows")
        )
    return RawFile(frame, types, t.problems, t.header_line)


def _read_parquet(path: Path) -> RawFile:
    name = str(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a broken file
        raise DataError(Problem(name, None, None, None, f"cannot read Parquet: {exc}")) from None
    if frame.empty:
        raise DataError(Problem(name, None, None, None, "the file has no rows"))
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_header(name, list(frame.columns), None)
    for c in frame.columns:
        frame[c] = _parquet_values(frame[c], path, c)
    frame["_line"] = np.arange(1, len(frame) + 1)
    return RawFile(frame, {}, [], 0)


def _parquet_values(s: pd.Series, path: Path, column: str) -> pd.Series:
    """A Parquet column's values as a CSV file would give them: binary values as UTF-8 text
    (not "b'...'"), and a float NaN that is a value, not a null, as the text "NaN" (refused
    where a number is expected, as in CSV; a null stays missing)."""
    if pd.api.types.is_float_dtype(s) and s.isna().any():
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        col = pq.read_table(path, columns=[column]).column(0)
        nan = pc.and_(pc.is_nan(col), pc.is_valid(col)).to_numpy(zero_copy_only=False)
        if nan.any():
            out = s.astype(object)
            out[nan] = "NaN"
            return out
        return s
    if pd.api.types.is_object_dtype(s) and s.map(lambda x: isinstance(x, bytes)).any():
        return s.map(lambda x: _utf8(x) if isinstance(x, bytes) else x)
    return s


def _utf8(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b  # left as bytes: refused where an id or text is expected


def _atomic_header(name: str, t: TextTable) -> tuple[list[str], dict[str, str]]:
    """Column names and RecBole types of an atomic header (`name:token`, `name:float`, ...)."""
    names, types = [], {}
    for i, h in enumerate(t.header):
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
    return names, types


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
