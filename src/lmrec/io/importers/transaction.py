"""The import transaction: validated files written to the store all together or not at all,
and the report of what each file contributed (and of the rows skipped)."""

from __future__ import annotations

__all__ = ["FileReport", "ImportReport", "import_files"]

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmrec.errors import DataError, LmrecError, Problem
from lmrec.io.importers.options import ImportOptions, Kind
from lmrec.io.importers.validation import ParsedFile, read_file
from lmrec.store import Store


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
        """One line per file (rows, added, updated or already present, skipped)."""
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
                f, unknown = _without_unknown_ids(store, conn, pf, opts)
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


def _without_unknown_ids(
    store: Store, conn: Any, pf: ParsedFile, opts: ImportOptions
) -> tuple[pd.DataFrame, list[Problem]]:
    """Interactions whose user and item the store knows, and a Problem for each other row;
    raises DataError for those rows instead when `on_error="fail"`."""
    f = pf.frame
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
    return f, unknown


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
