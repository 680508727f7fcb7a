"""Importers: every kind of bad input names file, line and column, and leaves the store as it
was; good files in every supported format land in the store (SQLite, PostgreSQL and MariaDB)."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset
from lmrec.errors import DataError, LmrecError
from lmrec.io import ImportOptions, import_files, read_file
from lmrec.store import Store

GOOD = "user_id,item_id,rating,timestamp\nu1,i1,4,100\nu1,i2,3,200\nu2,i1,5,300\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def seeded(store: Store, tmp_path: Path) -> dict[str, int]:
    """Put a little data in the store first, so that "unchanged" means something."""
    import_files(store, interactions=write(tmp_path / "seed.csv", GOOD))
    counts = store.counts()
    assert counts == {"users": 2, "items": 2, "interactions": 3}
    return counts


def fails(store: Store, match: str, **files: Path | ImportOptions) -> DataError:
    with pytest.raises(DataError) as info:
        import_files(store, **files)  # type: ignore[arg-type]
    msg = str(info.value)
    assert match in msg, msg
    assert "nothing was written" in msg
    return info.value


# -- bad input: message names file:line and column, store unchanged --------------------------


def test_non_numeric_rating_names_line_and_column(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    f = write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\na,x,4,1\nb,y,high,2\n")
    err = fails(store, f"{f}:3: column 'rating': expected a number (got 'high')", interactions=f)
    assert [(p.line, p.column) for p in err.problems] == [(3, "rating")]
    assert store.counts() == before
    assert store.get("user", "a") is None


def test_unparseable_timestamp(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    f = write(tmp_path / "t.csv", "user,item,time\na,x,2020-01-01T10:00:00Z\nb,y,yesterday\n")
    fails(store, f"{f}:3: column 'time': expected a Unix time", interactions=f)
    assert store.counts() == before


def test_milliseconds_read_as_seconds_are_refused(tmp_path: Path) -> None:
    f = write(tmp_path / "ms.csv", "user,item,ts\na,x,1600000000000\n")
    pf = read_file(f, "interactions")
    assert [(p.line, p.column) for p in pf.problems] == [(2, "ts")]
    assert "--time-unit ms" in pf.problems[0].message
    ok = read_file(f, "interactions", ImportOptions(time_unit="ms"))
    assert not ok.problems and ok.frame["ts"].tolist() == [1.6e9]


def test_malformed_row_wrong_number_of_fields(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    f = write(tmp_path / "m.csv", "user,item,rating\na,x,1\nb,y,2,extra\nc,z\n")
    err = fails(store, f"{f}:3: expected 3 fields separated by ',', found 4", interactions=f)
    assert f"{f}:4: expected 3 fields separated by ',', found 2" in str(err)
    assert store.counts() == before


def test_missing_required_column(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    f = write(tmp_path / "h.csv", "\nuser_id,product,rating\na,x,1\n")
    # The header is on line 2 (a blank line comes first).
    fails(store, f"{f}:2: column 'item': missing required column", interactions=f)
    assert store.counts() == before


def test_unknown_users_and_items_created_by_default(store: Store, tmp_path: Path) -> None:
    f = write(tmp_path / "u.csv", GOOD)
    rep = import_files(store, interactions=f)
    assert rep.files[0].added == 3
    assert store.counts() == {"users": 2, "items": 2, "interactions": 3}
    assert store.get("item", "i2")["title"] == ""


def test_unknown_item_refused_on_request(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)  # knows u1, u2, i1, i2
    f = write(tmp_path / "u.csv", "user_id,item_id,timestamp\nu1,i1,7\nu2,i9,8\nu3,i2,9\n")
    opts = ImportOptions(on_unknown="error")
    err = fails(store, f"{f}:3: column 'item_id': unknown item", interactions=f, options=opts)
    assert f"{f}:4: column 'user_id': unknown user" in str(err)
    assert "(got 'u3')" in str(err)
    assert store.counts() == before
    # Skipping instead: the known row goes in, both unknown ones are reported.
    report = tmp_path / "rep.csv"
    opts = ImportOptions(on_unknown="error", on_error="skip", report=report)
    rep = import_files(store, interactions=f, options=opts)
    assert rep.files[0].added == 1 and rep.files[0].skipped == 2
    assert [r["line"] for r in csv.DictReader(report.open())] == ["3", "4"]
    assert store.counts() == {**before, "interactions": 4}


def test_empty_files(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    empty = write(tmp_path / "e.csv", "")
    fails(store, f"{empty}: the file is empty", interactions=empty)
    blank = write(tmp_path / "b.csv", "\n  \n\n")
    fails(store, f"{blank}: the file is empty", interactions=blank)
    header = write(tmp_path / "h.csv", "user,item\n\n")
    fails(store, f"{header}:1: the file has a header but no data rows", interactions=header)
    assert store.counts() == before


def test_wrong_encoding_names_the_line(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    f = write(tmp_path / "l1.csv", "user,item,rating\nanna,x,1\nbjörn,café,2\n", "latin-1")
    fails(store, f"{f}:3: is not valid utf-8 text (byte 0xf6)", interactions=f)
    assert store.counts() == before
    import_files(store, interactions=f, options=ImportOptions(encoding="latin-1"))
    assert store.get("user", "björn") is not None and store.get("item", "café") is not None


def test_bad_event_and_empty_id(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    f = write(tmp_path / "e.csv", "user,item,event\na,x,view\n,y,view\nb,z,add to cart\n")
    err = fails(
        store, f"{f}:3: column 'user': expected an id, found an empty value", interactions=f
    )
    assert f"{f}:4: column 'event': expected an event type" in str(err)
    assert store.counts() == before


def test_duplicated_rows_written_once(store: Store, tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", GOOD + "u1,i1,4,100\nu1,i1,4,100\n")
    rep = import_files(store, interactions=f)
    assert (rep.files[0].rows, rep.files[0].duplicates, rep.files[0].added) == (5, 2, 3)
    assert store.counts()["interactions"] == 3


def test_same_file_twice_adds_nothing(store: Store, tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", "item_id,title,genres\ni1,Alien,sci-fi|horror\n")
    inter = write(tmp_path / "i.csv", GOOD)
    import_files(store, interactions=inter, items=items)
    first = store.counts()
    rep = import_files(store, interactions=inter, items=items)
    assert store.counts() == first == {"users": 2, "items": 2, "interactions": 3}
    by_kind = {f.kind: f for f in rep.files}
    assert by_kind["interactions"].added == 0
    assert by_kind["interactions"].already_present == 3
    assert (by_kind["items"].added, by_kind["items"].updated) == (0, 1)


def test_skip_mode_writes_good_rows_and_reports_bad_ones(store: Store, tmp_path: Path) -> None:
    f = write(
        tmp_path / "s.csv",
        "user,item,rating,ts\na,x,1,10\nb,y,oops,20\n\nc,z,3,30\nd,w,4,soon\ne,v\n",
    )
    report = tmp_path / "out" / "report.csv"
    rep = import_files(store, interactions=f, options=ImportOptions(on_error="skip", report=report))
    assert rep.report_path == str(report)
    assert rep.files[0].added == 2 and rep.files[0].skipped == 3
    assert store.counts() == {"users": 2, "items": 2, "interactions": 2}
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    assert [(r["line"], r["column"], r["value"]) for r in rows] == [
        ("3", "rating", "oops"),
        ("6", "ts", "soon"),
        ("7", "", ""),
    ]
    assert all(r["file"] == str(f) for r in rows)


def test_multi_file_import_is_atomic(store: Store, tmp_path: Path) -> None:
    before = seeded(store, tmp_path)
    items = write(tmp_path / "items.csv", "item_id,title\nnew1,Good item\nnew2,Another\n")
    users = write(tmp_path / "users.csv", "user_id,tags\nnewu,jazz|rock\n")
    inter = write(tmp_path / "bad.csv", "user,item,rating\nnewu,new1,5\nnewu,new2,five\n")
    fails(store, f"{inter}:3: column 'rating'", interactions=inter, items=items, users=users)
    assert store.counts() == before
    assert store.get("item", "new1") is None and store.get("user", "newu") is None


def test_failure_inside_the_write_rolls_back(store: Store, tmp_path: Path) -> None:
    """An error after rows were written (unknown ids found in the transaction) undoes them."""
    before = seeded(store, tmp_path)
    items = write(tmp_path / "items.csv", "item_id,title\nnew1,Good item\n")
    inter = write(tmp_path / "i.csv", "user,item\nu1,new1\nghost,new1\n")
    opts = ImportOptions(on_unknown="error")
    fails(
        store,
        f"{inter}:3: column 'user': unknown user",
        interactions=inter,
        items=items,
        options=opts,
    )
    assert store.counts() == before and store.get("item", "new1") is None


# -- formats and details of text files -------------------------------------------------------


def test_items_and_users_files(store: Store, tmp_path: Path) -> None:
    items = write(
        tmp_path / "items.csv",
        "item_id,title,description,genres,year,studio\n"
        'i1,Alien,"In space, no one can hear you scream",sci-fi|horror,1979,Fox\n'
        "i2,  Heat  ,,crime,1995,\n",
    )
    users = write(tmp_path / "users.csv", "user_id,interests,age,zip\nu1,jazz|rock,31,00501\n")
    rep = import_files(store, items=items, users=users)
    assert {f.kind: f.added for f in rep.files} == {"items": 2, "users": 1}
    i1 = store.get("item", "i1")
    assert i1["title"] == "Alien" and i1["description"].startswith("In space, no one")
    assert i1["categories"] == ["sci-fi", "horror"]
    assert i1["attributes"] == {"year": 1979, "studio": "Fox"}
    i2 = store.get("item", "i2")
    assert i2["title"] == "Heat" and i2["attributes"] == {"year": 1995}
    u1 = store.get("user", "u1")
    assert u1["tags"] == ["jazz", "rock"] and u1["attributes"] == {"age": 31, "zip": 501}


def test_repeated_id_in_items_file(tmp_path: Path) -> None:
    f = write(tmp_path / "items.csv", "item_id,title\ni1,A\ni2,B\ni1,C\n")
    pf = read_file(f, "items")
    assert [(p.line, p.column) for p in pf.problems] == [(4, "item_id")]
    assert "repeated" in pf.problems[0].message


def test_recbole_atomic_files(store: Store, tmp_path: Path) -> None:
    item = write(
        tmp_path / "m.item",
        "item_id:token\tmovie_title:token_seq\tclass:token_seq\tyear:token\tscore:float\n"
        "1\tToy Story\tAnimation Comedy\t1995\t8.3\n2\tHeat\tCrime\t1995\t\n",
    )
    user = write(tmp_path / "m.user", "user_id:token\tage:token\n7\t24\n")
    inter = write(
        tmp_path / "m.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "7\t1\t5\t881250949\n7\t2\t3\t881250950\n",
    )
    rep = import_files(store, interactions=inter, items=item, users=user)
    assert {f.kind: f.added for f in rep.files} == {"users": 1, "items": 2, "interactions": 2}
    toy = store.get("item", "1")
    assert toy["title"] == "Toy Story" and toy["categories"] == ["Animation", "Comedy"]
    assert toy["attributes"] == {"year": "1995", "score": 8.3}
    assert store.get("user", "7")["attributes"] == {"age": "24"}
    arr = store.read_interactions()
    assert sorted(arr.event.tolist()) == ["rating", "rating"] and arr.value.tolist() == [5, 3]


def test_atomic_bad_header_and_bad_float(tmp_path: Path) -> None:
    f = write(tmp_path / "x.inter", "user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match=rf"{f}:1: column 'user_id': RecBole atomic header"):
        read_file(f)
    g = write(tmp_path / "x.item", "item_id:token\tscore:float\n1\t2.5\n2\tgood\n")
    pf = read_file(g)
    assert [(p.line, p.column, p.value) for p in pf.problems] == [(3, "score", "good")]


def test_tsv_iso_dates_mapping_and_bom(store: Store, tmp_path: Path) -> None:
    f = write(
        tmp_path / "v.tsv",
        "\ufeffvisitor\tsku\tstars\twhen\tkind\n"
        "a\tx\t4.5\t2020-01-02T03:04:05Z\tView\n"
        "a\ty\t\t2020-01-02 03:04:06+01:00\tpurchase\n",
    )
    opts = ImportOptions(
        mapping={"user": "visitor", "item": "sku", "value": "stars", "ts": "when", "event": "kind"}
    )
    rep = import_files(store, interactions=f, options=opts)
    assert rep.files[0].added == 2
    arr = store.read_interactions()
    order = np.argsort(arr.ts)
    assert arr.ts[order].tolist() == [1577934246.0 - 3600, 1577934245.0]
    assert arr.event[order].tolist() == ["purchase", "view"]
    v = arr.value[order]
    assert np.isnan(v[0]) and v[1] == 4.5


def test_mapping_errors(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match=rf"{f}:1: column 'nope': mapped column for 'user'"):
        read_file(f, "interactions", ImportOptions(mapping={"user": "nope", "item": "b"}))
    with pytest.raises(LmrecError, match="unknown field 'usr'"):
        read_file(f, "interactions", ImportOptions(mapping={"usr": "a", "item": "b"}))


def test_quoted_fields_keep_line_numbers_right(tmp_path: Path) -> None:
    f = write(
        tmp_path / "q.csv",
        "user,item,note,rating\r\n"
        'a,x,"two\r\nlines",1\r\n'  # lines 2-3
        "\r\n"  # 4: blank
        'b,"y, with comma","",2\r\n'  # 5
        'c,z,"""quoted""",bad\r\n'  # 6
        'd,w,"three\nline\nnote",nope\r\n'  # 7-9
        "e,v,,5\r\n",  # 10
    )
    pf = read_file(f, "interactions")
    assert [(p.line, p.column, p.value) for p in pf.problems] == [
        (6, "rating", "bad"),
        (7, "rating", "nope"),
    ]
    assert pf.frame["_line"].tolist() == [2, 5, 10]
    assert pf.frame["item"].tolist() == ["x", "y, with comma", "v"]


def test_unquoted_fast_path_matches_csv_module(tmp_path: Path) -> None:
    """Files without quotes take a faster reader; both readers must agree exactly."""
    body = "user,item,rating,ts\n\n a ,x,1,10\nb,y,2\n  \nc,z,bad,30\r\nd,w,4,40"
    plain = read_file(write(tmp_path / "p.csv", body), "interactions")
    quoted = read_file(write(tmp_path / "q.csv", body.replace("a ,x", 'a ,"x"')), "interactions")
    for pf in (plain, quoted):
        assert [(p.line, p.column) for p in pf.problems] == [(4, None), (6, "rating")]
        assert pf.frame["_line"].tolist() == [3, 7]
        assert pf.frame["user"].tolist() == ["a", "d"]
    pd.testing.assert_frame_equal(plain.frame, quoted.frame)


def test_parquet_with_int_ids_and_datetimes(store: Store, tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "user_id": np.array([1, 1, 2], dtype=np.int64),
            "item_id": np.array([10.0, 11.0, 10.0]),
            "rating": [4.0, np.nan, 2.0],
            "timestamp": pd.to_datetime(["2021-01-01", "2021-01-02", "2021-01-03"]),
        }
    )
    f = tmp_path / "i.parquet"
    df.to_parquet(f)
    rep = import_files(store, interactions=f)
    assert rep.files[0].added == 3
    ds = Dataset.from_store(store)
    assert sorted(ds.users.ids_of(range(ds.n_users))) == ["1", "2"]
    assert sorted(ds.items.ids_of(range(ds.n_items))) == ["10", "11"]
    assert sorted(ds.ts.tolist()) == [1609459200.0, 1609545600.0, 1609632000.0]


def test_parquet_bad_value_names_row(tmp_path: Path) -> None:
    f = tmp_path / "b.parquet"
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "rating": ["1", "lots"]}).to_parquet(f)
    pf = read_file(f, "interactions")
    assert [(p.file, p.line, p.column, p.value) for p in pf.problems] == [
        (str(f), 2, "rating", "lots")
    ]


def test_not_a_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(LmrecError, match="no such file"):
        read_file(tmp_path / "missing.csv")
    with pytest.raises(LmrecError, match=r"unknown file type '\.xlsx'"):
        read_file(write(tmp_path / "a.xlsx", "x"))


def test_ml100k_sample_counts(ml100k: Dataset) -> None:
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1682, 100_000)


# -- a process killed in the middle of an import ---------------------------------------------


def _big_csv(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(7)
    table = pa.table(
        {
            "user_id": rng.integers(0, 60_000, n),
            "item_id": rng.integers(0, 30_000, n),
            "rating": rng.integers(1, 6, n),
            "timestamp": 1_500_000_000 + np.arange(n),
        }
    )
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))


@pytest.mark.slow
def test_killed_import_leaves_store_as_it_was(store_url: str, tmp_path: Path) -> None:
    url = store_url
    with Store(url) as s:
        before = seeded(s, tmp_path)
    big = tmp_path / "big.csv"
    _big_csv(big, 1_500_000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmrec.cli", "--db", url, "import", "--interactions", str(big)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "writing" in line:
                break
        else:
            pytest.fail(f"import ended (rc={proc.wait()}) before its write phase")
        # Inside the write transaction now: let it write for a while, then kill it.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            assert proc.poll() is None, "the import finished before it could be killed"
        assert proc.poll() is None, "the import finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Store(url) as s:
        assert s.counts() == before
        db = s.engine.url.database if s.dialect == "sqlite" else None
    if db is not None:
        con = sqlite3.connect(db)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            indexes = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")
            }
            assert "ix_interactions_item" in indexes  # dropped for the bulk load, back now
            assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            con.close()
    # The store is still usable: a new import completes.
    with Store(url) as s:
        more = write(tmp_path / "more.csv", "user_id,item_id,rating,timestamp\nz1,z2,1,5\n")
        assert import_files(s, interactions=more).files[0].added == 1
        assert s.counts()["interactions"] == before["interactions"] + 1
