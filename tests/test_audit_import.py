"""Importer defects of the 2026-12-01 audit (issue 18): each input here used to end in a
traceback or to be stored although the API refuses it; now each is a `DataError` naming the
file, line and column, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet
import pytest

from lmrec.errors import DataError
from lmrec.io import import_files, read_file
from lmrec.store import Store


def problems(path: Path) -> list[tuple[int | None, str | None, str]]:
    pf = read_file(path, "interactions")
    return [(p.line, p.column, p.message) for p in pf.problems]


def test_unquoted_field_over_a_mebibyte_is_read(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    long = "x" * (3 << 20)
    f.write_text(f"user_id,item_id,rating,title\nu1,i1,4,{long}\nu2,i2,3,short\n")
    pf = read_file(f, "interactions")
    assert pf.problems == [] and pf.frame["user"].tolist() == ["u1", "u2"]


@pytest.mark.parametrize("when", ["1500-01-01T00:00:00", "2300-01-01", "9999-12-31T23:59:59Z"])
def test_dates_outside_pandas_range_are_problems(tmp_path: Path, when: str) -> None:
    f = tmp_path / "d.csv"
    f.write_text(f"user_id,item_id,timestamp\nu1,i1,2020-01-01\nu2,i2,{when}\n")
    got = problems(f)
    assert [(line, col) for line, col, _ in got] == [(3, "timestamp")], got


@pytest.mark.parametrize("ts", ["-5", "-1e9", "9e10", "2201-01-01"])
def test_times_the_api_refuses_are_refused(tmp_path: Path, ts: str) -> None:
    f = tmp_path / "t.csv"
    f.write_text(f"user_id,item_id,timestamp\nu1,i1,100\nu2,i2,{ts}\n")
    got = problems(f)
    assert [(line, col) for line, col, _ in got] == [(3, "timestamp")], got


def test_control_characters_in_ids_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_bytes(b"user_id,item_id\nu1,i1\nu\x002,i2\nu3,i\x1b3\nu4,i\x7f4\n")
    got = problems(f)
    assert [(line, col) for line, col, _ in got] == [(3, "user_id"), (4, "item_id"), (5, "item_id")]


def test_parquet_binary_ids_are_text(tmp_path: Path, store: Store) -> None:
    f = tmp_path / "b.parquet"
    pd.DataFrame({"user": [b"alice", b"bob"], "item": [b"x", b"y"]}).to_parquet(f)
    import_files(store, interactions=f)
    assert store.get("user", "alice") is not None and store.get("user", "b'alice'") is None


def test_parquet_list_ids_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "l.parquet"
    pd.DataFrame({"user": [[1, 2], [3]], "item": ["x", "y"]}).to_parquet(f)
    got = problems(f)
    assert [(line, col) for line, col, _ in got] == [(1, "user"), (2, "user")], got


def test_parquet_nan_rating_is_refused_like_csv(tmp_path: Path, store: Store) -> None:
    csv = tmp_path / "n.csv"
    csv.write_text("user,item,rating\na,x,4\nb,y,NaN\n")
    pq = tmp_path / "n.parquet"  # a real NaN (pandas' to_parquet would write a null)
    table = pa.table({"user": ["a", "b"], "item": ["x", "y"], "rating": pa.array([4.0, np.nan])})
    pa.parquet.write_table(table, pq)
    assert [(line, col) for line, col, _ in problems(csv)] == [(3, "rating")]
    assert [(line, col) for line, col, _ in problems(pq)] == [(2, "rating")]
    with pytest.raises(DataError):
        import_files(store, interactions=pq)
    # A missing rating (null) is still an event without a value.
    ok = tmp_path / "null.parquet"
    pd.DataFrame(
        {"user": ["a", "b"], "item": ["x", "y"], "rating": pd.array([4.0, None], "Float64")}
    ).to_parquet(ok)
    assert problems(ok) == []
