"""The import configuration: what kind of records a file holds and how to read and write it."""

from __future__ import annotations

__all__ = ["ImportOptions", "Kind"]

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["interactions", "items", "users"]


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
    """Text encoding of CSV, TSV and atomic files."""
    list_sep: str = "|"
    """Separator inside list fields (categories, tags) of CSV/TSV files; atomic files use ' '."""
    default_event: str | None = None
    """Event type when the file has no event column: 'rating' if it has values, else 'interaction'."""
    time_unit: Literal["s", "ms"] = "s"
    """Unit of numeric timestamps."""
