"""The SQL store on SQLite and on real PostgreSQL and MariaDB servers."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select, text

from lmrec.data import Dataset
from lmrec.errors import StoreError
from lmrec.store import SCHEMA_VERSION, Store
from lmrec.store.schema import meta


def test_schema_created_and_versioned(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    assert store.counts() == {"users": 0, "items": 0, "interactions": 0}
    # Opening again finds the schema and keeps the data.
    with store.begin() as conn:
        store.upsert(conn, "user", [{"ext_id": "u1", "attributes": {"age": 30}, "tags": ["jazz"]}])
    again = Store(store.url)
    assert again.counts()["users"] == 1
    assert again.get("user", "u1")["tags"] == ["jazz"]
    again.close()


def test_upsert_updates_given_fields_only(store: Store) -> None:
    with store.begin() as conn:
        added, updated = store.upsert(
            conn, "item", [{"ext_id": "i1", "title": "Alien", "categories": ["sci-fi"]}]
        )
        assert (added, updated) == (1, 0)
        added, updated = store.upsert(conn, "item", [{"ext_id": "i1", "description": "In space"}])
        assert (added, updated) == (0, 1)
    row = store.get("item", "i1")
    assert row["title"] == "Alien" and row["description"] == "In space"
    assert row["categories"] == ["sci-fi"]


def test_interactions_are_idempotent_and_deletes_cascade(store: Store) -> None:
    with store.begin() as conn:
        u = store.ensure(conn, "user", ["a", "b"])
        i = store.ensure(conn, "item", ["x", "y"])
        args = (
            np.array([u["a"], u["a"], u["b"]]),
            np.array([i["x"], i["y"], i["x"]]),
            np.array(["view", "purchase", "view"], dtype=object),
            np.array([np.nan, 19.9, np.nan]),
            np.array([1.0, 2.0, 3.0]),
        )
        assert store.insert_interactions(conn, *args) == 3
        assert store.insert_interactions(conn, *args) == 0
    assert store.counts()["interactions"] == 3
    arr = store.read_interactions(events=["purchase"])
    assert arr.value.tolist() == [19.9]
    assert store.delete("user", "a") is True
    assert store.delete("user", "a") is False
    assert store.counts() == {"users": 1, "items": 2, "interactions": 1}


def test_failed_transaction_leaves_store_unchanged(store: Store) -> None:
    with store.begin() as conn:
        store.upsert(conn, "user", [{"ext_id": "keep"}])
    with pytest.raises(RuntimeError), store.begin() as conn:
        store.upsert(conn, "user", [{"ext_id": "gone"}])
        raise RuntimeError("boom")
    assert store.get("user", "gone") is None
    assert store.counts()["users"] == 1


def test_snapshot_round_trip(store: Store, tmp_path) -> None:
    with store.begin() as conn:
        store.upsert(conn, "user", [{"ext_id": "u1", "attributes": {"gender": "F"}}])
        store.upsert(conn, "item", [{"ext_id": "i1", "title": "A"}, {"ext_id": "i2", "title": "B"}])
        u = store.ensure(conn, "user", ["u1", "u2"])
        i = store.ensure(conn, "item", ["i1", "i2"])
        store.insert_interactions(
            conn,
            np.array([u["u1"], u["u1"], u["u2"]]),
            np.array([i["i2"], i["i1"], i["i1"]]),
            np.array(["click", "click", "view"], dtype=object),
            np.array([np.nan] * 3),
            np.array([5.0, 5.0, 1.0]),
        )
    ds = Dataset.from_store(store)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 3)
    # Equal timestamps keep storage order: u1 saw i2 then i1.
    assert ds.items.ids_of(ds.sequence(ds.users.index("u1"))) == ["i2", "i1"]
    assert ds.user_features.attributes[ds.users.index("u1")] == {"gender": "F"}
    assert ds.item_features.title == ["A", "B"]
    clicks = Dataset.from_store(store, events=["click"])
    assert clicks.n_interactions == 2


def test_not_an_lmrec_database(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    s = Store(url)
    with s.engine.begin() as conn:
        conn.execute(text("DROP TABLE lmrec_meta"))
    s.close()
    with pytest.raises(StoreError, match="not an lmrec store"):
        Store(url)


def test_newer_schema_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    s = Store(url)
    with s.engine.begin() as conn:
        conn.execute(text("UPDATE lmrec_meta SET value='999' WHERE key='schema_version'"))
    s.close()
    with pytest.raises(StoreError, match="newer"):
        Store(url)


def test_bad_urls_are_explained() -> None:
    with pytest.raises(StoreError, match=r"unsupported database|cannot use"):
        Store("oracle://x@localhost/db")
    with pytest.raises(StoreError, match="cannot open store"):
        Store("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="cannot open store"):
        Store("mysql://nobody@127.0.0.1:1/none")


def _ids(store: Store, conn, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    u = store.ensure(conn, "user", [f"u{k}" for k in range(n_users)])
    i = store.ensure(conn, "item", [f"i{k}" for k in range(n_items)])
    return (
        np.array([u[f"u{k}"] for k in range(n_users)]),
        np.array([i[f"i{k}"] for k in range(n_items)]),
    )


def test_ensure_creates_bare_rows_with_defaults(store: Store) -> None:
    with store.begin() as conn:
        ids = store.ensure(conn, "item", ["a", "b", "a"])
        assert sorted(ids) == ["a", "b"]
        assert store.ensure(conn, "item", ["b", "c"])["b"] == ids["b"]
        store.ensure(conn, "user", ["x"])
    item = store.get("item", "c")
    assert (item["title"], item["description"], item["categories"]) == ("", "", [])
    assert (
        store.read_table("user")[0]["tags"] == []
        and store.read_table("user")[0]["attributes"] == {}
    )
    with pytest.raises(ValueError, match="kind must be"), store.begin() as conn:
        store.ensure(conn, "users", ["x"])


def test_insert_interactions_events_values_and_filters(store: Store) -> None:
    with store.begin() as conn:
        u, i = _ids(store, conn, 3, 3)
        # One event type (written as an SQL literal, so a quote must survive) ...
        n = store.insert_interactions(
            conn,
            u[[0, 1]],
            i[[0, 1]],
            np.array(["it's", "it's"], dtype=object),
            np.array([np.nan, 2.5]),
            np.array([10.0, 20.0]),
        )
        assert n == 2
        # ... and several, in one call.
        n = store.insert_interactions(
            conn,
            u[[2, 2, 0]],
            i[[0, 1, 0]],
            np.array(["view", "buy", "it's"], dtype=object),
            np.array([1.0, np.nan, np.nan]),
            np.array([30.0, 40.0, 10.0]),
        )
        assert n == 2  # the last row is already there
    arr = store.read_interactions()
    assert sorted(arr.event.tolist()) == ["buy", "it's", "it's", "view"]
    got = store.read_interactions(since=20.0, until=40.0)
    assert sorted(got.ts.tolist()) == [20.0, 30.0]
    got = store.read_interactions(events=["buy", "it's"], since=15)
    assert sorted(got.ts.tolist()) == [20.0, 40.0]
    buy = store.read_interactions(events=["buy"])
    assert np.isnan(buy.value).all() and buy.user_id.tolist() == [u[2]]


def test_bulk_load_rebuilds_indexes_and_dedups(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmrec.store.store as store_module

    monkeypatch.setattr(store_module, "BULK_REBUILD_ROWS", 100)
    rng = np.random.default_rng(0)
    n = 2000
    with store.begin(foreign_keys=False) as conn:
        u, i = _ids(store, conn, 50, 40)
        uu, ii = u[rng.integers(0, 50, n)], i[rng.integers(0, 40, n)]
        ts = rng.integers(0, 5, n).astype(float)
        ev = np.full(n, "click", dtype=object)
        expected = len({(a, b, c) for a, b, c in zip(uu, ii, ts, strict=True)})
        assert store.insert_interactions(conn, uu, ii, ev, np.ones(n), ts) == expected
        assert store.insert_interactions(conn, uu, ii, ev, np.ones(n), ts) == 0
    assert store.counts()["interactions"] == expected
    ds = Dataset.from_store(store)
    assert ds.n_interactions == expected
    if store.dialect == "sqlite":
        with store.engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
            assert "ix_interactions_item" in names
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_failed_bulk_load_keeps_indexes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmrec.store.store as store_module

    monkeypatch.setattr(store_module, "BULK_REBUILD_ROWS", 10)
    with pytest.raises(RuntimeError), store.begin(foreign_keys=False) as conn:
        u, i = _ids(store, conn, 20, 20)
        store.insert_interactions(
            conn,
            np.repeat(u, 20),
            np.tile(i, 20),
            np.full(400, "v", dtype=object),
            np.full(400, np.nan),
            np.zeros(400),
        )
        raise RuntimeError("killed")
    assert store.counts() == {"users": 0, "items": 0, "interactions": 0}
    if store.dialect == "sqlite":
        with store.engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
        assert "ix_interactions_item" in names


def test_add_events_says_which_rows_were_new(store: Store) -> None:
    with store.begin() as conn:
        u, i = _ids(store, conn, 2, 2)
        store.insert_interactions(
            conn,
            u[[0]],
            i[[0]],
            np.array(["view"], dtype=object),
            np.array([np.nan]),
            np.array([5.0]),
        )
        new = store.add_events(
            conn,
            [u[0], u[1], u[1], u[0], u[1]],
            [i[0], i[1], i[1], i[1], i[0]],
            ["view", "click", "click", "view", "rating"],
            [np.nan, 1.0, 1.0, np.nan, 4.5],
            [5.0, 7.0, 7.0, 8.0, 1.0],
        )
        # Row 0 is already stored, row 2 repeats row 1 of the same call.
        assert new.tolist() == [False, True, False, True, True]
        assert store.add_events(conn, [], [], [], [], []).tolist() == []
    arr = store.read_interactions()
    assert len(arr.ts) == 4
    rated = store.read_interactions(events=["rating"])
    assert rated.value.tolist() == [4.5]
    assert np.isnan(store.read_interactions(events=["view"]).value).all()


def test_ids_compare_exactly_and_numbers_keep_full_precision(store: Store) -> None:
    # Case, trailing space, accents and 4-byte UTF-8 all make different ids (MySQL's default
    # collations would merge the first three and refuse the last).
    ids = ["a", "A", "a ", "ä", "\U0001f600"]
    with store.begin() as conn:
        got = store.ensure(conn, "user", ids)
        assert len(set(got.values())) == len(ids)
        assert store.ensure(conn, "user", list(reversed(ids))) == got
        store.upsert(conn, "item", [{"ext_id": "x", "title": "caf\u00e9 \U0001f3b5" * 8000}])
        i = store.ensure(conn, "item", ["x"])["x"]
        ts = np.array([1_700_000_000.000001, 1_700_000_000.000002, 0.1])
        val = np.array([0.1, np.nan, 1e300])
        uid = np.array([got["a"], got["a"], got["A"]])
        assert (
            store.insert_interactions(conn, uid, np.full(3, i), np.full(3, "v", object), val, ts)
            == 3
        )
        new = store.add_events(conn, [got["a "]], [i], ["v"], [1 / 3], [2.0 / 3.0])
        assert new.tolist() == [True]
    arr = store.read_interactions()
    assert arr.ts.tolist() == [*ts.tolist(), 2.0 / 3.0]  # bit for bit, not single precision
    assert arr.value[[0, 2, 3]].tolist() == [0.1, 1e300, 1 / 3]
    assert store.get("user", "\U0001f600")["ext_id"] == "\U0001f600"
    assert len(store.get("item", "x")["title"]) == 48_000  # 80 kB: over the 64 KiB of MySQL TEXT


def test_schema_creation_from_many_processes_at_once(store_url: str) -> None:
    """Servers: workers opening one new store together create its schema once."""
    if store_url.startswith("sqlite"):
        pytest.skip("SQLite stores are opened by one writer")
    from concurrent.futures import ThreadPoolExecutor

    def open_store(_: int) -> int:
        with Store(store_url) as s:
            return s.schema_version()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_store, range(4))) == [SCHEMA_VERSION] * 4
    with Store(store_url) as s, s.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(meta)).scalar() == 1
