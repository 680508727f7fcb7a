"""Importers: CSV, TSV, Parquet and RecBole atomic files (.inter / .item / .user) into the store.

Every file is read and validated completely before anything is written. Problems name the
file, the line (where the row starts; the row, counted from 1, for Parquet), the column and
what was expected. By default one problem aborts the import and nothing is written; with
`on_error="skip"` bad rows are left out and listed in a CSV report. All files of one import are
written in a single transaction, so an import that fails or is killed leaves the store as it
was. Interactions already in the store (same user, item, event and time) are not added again.

The package has three parts: `readers` (files to raw rows with their lines, the fast
splitter), `validation` (column mapping, value types, problems with file, line and column)
and `transaction` (the write to the store and the report); `options` holds `ImportOptions`.
"""

from __future__ import annotations

__all__ = [
    "ALIASES",
    "ATOMIC_SUFFIX",
    "MAX_ID_LEN",
    "REQUIRED",
    "FileReport",
    "ImportOptions",
    "ImportReport",
    "Kind",
    "ParsedFile",
    "import_files",
    "read_file",
]

from lmrec.io.importers.options import ImportOptions, Kind
from lmrec.io.importers.readers import (  # noqa: F401  (pinned by tests/test_fast_paths.py)
    ATOMIC_SUFFIX,
    _split_csv,
    _split_unquoted,
)
from lmrec.io.importers.transaction import FileReport, ImportReport, import_files
from lmrec.io.importers.validation import ALIASES, MAX_ID_LEN, REQUIRED, ParsedFile, read_file
