"""`Store`: the only place in lmrec that speaks SQL.

Models never see the store; they get a `Dataset` snapshot (`Dataset.from_store`). Every write
method runs in one transaction, so a failed or killed write leaves the store as it was.
"""

from __future__ import annotations

__all__ = ["DEFAULT_URL", "Store", "resolve_url"]

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    make_url,
    select,
)
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from lmrec.errors import StoreError
from lmrec.store import mysql
from lmrec.store.schema import (
    SCHEMA_VERSION,
    erasure_log,
    experiments,
    exposures,
    interactions,
    items,
    meta,
    metadata,
    text_embeddings,
    users,
)

DEFAULT_URL = "sqlite:///lmrec.db"


def create_tables(conn: Connection, names: Sequence[str] | None = None) -> None:
    """Create the missing ones of these tables (all when None), in every dialect's form."""
    tables = [metadata.tables[n] for n in names] if names else list(metadata.sorted_tables)
    missing = [t for t in tables if not inspect(conn).has_table(t.name)]
    if conn.dialect.name == "mysql":
        mysql.create_tables(conn, missing)
    else:
        metadata.create_all(conn, tables=missing)


def _create_tables(*names: str) -> Callable[[Connection], None]:
    def step(conn: Connection) -> None:
        create_tables(conn, names)

    return step


def _add_consent(conn: Connection) -> None:
    yes = "1" if conn.dialect.name == "sqlite" else "TRUE"
    have = {c["name"] for c in inspect(conn).get_columns("users")}
    for col in ("consent_personal", "consent_training"):
        if col in have:
            continue
        conn.exec_driver_sql(f"ALTER TABLE users ADD COLUMN {col} BOOLEAN NOT NULL DEFAULT {yes}")


# version -> the step that brings a store from version-1 to version.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _create_tables("text_embeddings"),
    3: _create_tables("experiments", "exposures"),
    4: lambda conn: (_create_tables("erasure_log")(conn), _add_consent(conn)),
}


def resolve_url(url: str | None = None) -> str:
    """The store URL: the argument, else $LMREC_DB, else the embedded SQLite file lmrec.db."""
    return url or os.environ.get("LMREC_DB") or DEFAULT_URL


def _sqlite_pragmas(busy_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's own transaction handling is off: SQLAlchemy's "begin" event below emits
        # BEGIN, so reads, writes and DDL of one `Store.begin()` block are one transaction.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.execute("PRAGMA cache_size=-65536")  # up to 64 MiB of page cache per connection
        # Deleted rows are overwritten with zeros, not left in free pages (erasure).
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    return on_connect


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock at BEGIN (IMMEDIATE), so that two writers wait on
    # busy_timeout instead of failing when a read transaction would have to be upgraded.
    mode = conn.get_execution_options().get("lmrec_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


#: URL schemes that name a driver by default.
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
}


def _normalise(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return _DRIVERS.get(scheme, scheme) + sep + rest if sep else url


#: Interactions written in one call from which the secondary indexes are rebuilt after the
#: insert instead of updated row by row (when they are also at least half the table).
BULK_REBUILD_ROWS = 100_000


def _table(kind: str) -> Any:
    if kind not in ("user", "item"):
        raise ValueError(f"kind must be 'user' or 'item', not {kind!r}")
    return users if kind == "user" else items


@dataclass(frozen=True)
class InteractionArrays:
    """Interactions read from the store, as parallel arrays in storage order (row id)."""

    row_id: np.ndarray  # int64
    user_id: np.ndarray  # int64, store ids
    item_id: np.ndarray  # int64, store ids
    event: np.ndarray  # str
    value: np.ndarray  # float64, NaN where absent
    ts: np.ndarray  # float64, seconds since the epoch


class Store:
    """A SQL store of users, items and interactions, chosen by URL.

    `Store()` opens `$LMREC_DB` or `sqlite:///lmrec.db`; `Store("postgresql://...")` opens
    PostgreSQL (psycopg) and `Store("mysql://...")` MySQL or MariaDB (PyMySQL). The schema is
    created on first use and migrated when older.
    """

    def __init__(
        self, url: str | None = None, *, create: bool = True, busy_timeout_s: float = 30.0
    ):
        """`busy_timeout_s`: how long a SQLite write waits for another process's lock."""
        self.url = _normalise(resolve_url(url))
        try:
            parsed = make_url(self.url)
            backend = parsed.get_backend_name()
        except ArgumentError as exc:
            raise StoreError(f"cannot use store URL {self.url!r}: {exc}") from exc
        if backend not in ("sqlite", "postgresql", "mysql"):
            raise StoreError(
                f"unsupported database {backend!r}: use sqlite:///, postgresql:// or mysql://"
            )
        options: dict[str, Any] = {}
        if backend == "mysql":
            parsed, options = mysql.engine_options(parsed)
        try:
            self.engine: Engine = create_engine(parsed, future=True, **options)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use store URL {self.url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        if self.dialect == "mysql":
            event.listen(self.engine, "do_connect", mysql.on_do_connect)
            event.listen(self.engine, "connect", mysql.on_connect)
        if self.dialect == "sqlite":
            db = self.engine.url.database
            if db and db != ":memory:":
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            event.listen(self.engine, "connect", _sqlite_pragmas(int(busy_timeout_s * 1000)))
            event.listen(self.engine, "begin", _sqlite_begin)
        try:
            self._init_schema(create)
        except OperationalError as exc:
            raise StoreError(f"cannot open store {self.engine.url!r}: {exc.orig}") from exc

    # -- schema ------------------------------------------------------------------------------

    @contextmanager
    def _schema_transaction(self) -> Iterator[Connection]:
        """The transaction that creates or migrates the schema, serialised between processes
        opening one store. MySQL's named lock is held on a connection of its own until after
        the commit (GET_LOCK belongs to a session; released before the commit, it let a second
        process read no version row yet and insert its own: "Duplicate entry
        'schema_version'"); PostgreSQL's advisory lock is released at commit; SQLite's BEGIN
        IMMEDIATE of the first write already serialises."""
        if self.dialect == "mysql":
            with (
                self.engine.connect() as lock_conn,
                mysql.schema_lock(lock_conn),
                self.engine.begin() as conn,  # commits before the lock is released
            ):
                yield conn
            return
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7120190019)")
            yield conn

    def _init_schema(self, create: bool) -> None:
        with self._schema_transaction() as conn:
            names = set(inspect(conn).get_table_names())
            if "lmrec_meta" not in names:
                if names & {"users", "items", "interactions"}:
                    raise StoreError(
                        f"{self.engine.url!r} has tables named users/items/interactions but no "
                        "lmrec_meta table: it is not an lmrec store"
                    )
                if not create:
                    raise StoreError(f"{self.engine.url!r} is not an lmrec store (no schema)")
            found = None
            if "lmrec_meta" in names:
                found = conn.execute(
                    select(meta.c.value).where(meta.c.key == "schema_version")
                ).scalar_one_or_none()
            if found is None:
                # A new store, or (MySQL, where DDL commits at once) a creation that was
                # killed before its version row: create what is missing, then the row.
                create_tables(conn)
                conn.execute(
                    meta.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}]
                )
                return
            version = int(found)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema version {version} is newer than this lmrec ({SCHEMA_VERSION}); "
                    "upgrade lmrec"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](conn)
                conn.execute(
                    meta.update().where(meta.c.key == "schema_version").values(value=str(v))
                )

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(meta.c.value).where(meta.c.key == "schema_version")
                ).scalar_one()
            )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def begin(self, *, foreign_keys: bool = True) -> Iterator[Connection]:
        """One transaction: everything written inside commits together or not at all.

        `foreign_keys=False` skips SQLite's and MySQL's per-row reference checks (and
        SQLite's cascades) for bulk loads whose user and item ids were all looked up inside
        this same transaction.
        """
        with self.engine.connect() as conn:
            raw = None
            if self.dialect == "sqlite":
                conn.execution_options(lmrec_begin="IMMEDIATE")
                if not foreign_keys:
                    raw = conn.connection.driver_connection
                    raw.execute("PRAGMA foreign_keys=OFF")  # only outside a transaction
            elif self.dialect == "mysql" and not foreign_keys:
                raw = conn.connection.driver_connection
                with raw.cursor() as cur:
                    cur.execute("SET SESSION foreign_key_checks = 0")
            try:
                with conn.begin():
                    yield conn
            finally:
                if raw is not None:
                    self._foreign_keys_on(conn, raw)

    def _foreign_keys_on(self, conn: Connection, raw: Any) -> None:
        try:
            if self.dialect == "sqlite":
                raw.execute("PRAGMA foreign_keys=ON")
            else:
                with raw.cursor() as cur:
                    cur.execute("SET SESSION foreign_key_checks = 1")
        except Exception:
            # A connection that cannot be reset (killed, dropped) is not put back in the pool.
            conn.invalidate()
            raise

    # -- writes ------------------------------------------------------------------------------

    def id_map(self, conn: Connection, kind: str, ext_ids: Iterable[str]) -> dict[str, int]:
        """Store ids of the given external ids of users or items (those that exist)."""
        table = _table(kind)
        wanted = list(dict.fromkeys(ext_ids))
        out: dict[str, int] = {}
        if len(wanted) > 20_000:
            # One scan of the table beats many IN lists; the driver cursor skips row objects.
            cur = conn.connection.driver_connection.cursor()
            try:
                cur.execute(f"SELECT ext_id, id FROM {table.name}")
                every = dict(cur.fetchall())
            finally:
                cur.close()
            return {e: every[e] for e in wanted if e in every}
        # The driver directly: SQLAlchemy compiles an expanding IN anew for every list length
        # (about 3 ms a call, the feedback writer's largest cost).
        raw = conn.connection.driver_connection
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            if self.dialect == "sqlite":
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT ext_id, id FROM {table.name} WHERE ext_id IN ({marks})"
                out.update(raw.execute(sql, chunk).fetchall())
            elif self.dialect == "mysql":
                marks = ", ".join(["%s"] * len(chunk))
                with raw.cursor() as cur:
                    cur.execute(
                        f"SELECT ext_id, id FROM {table.name} WHERE ext_id IN ({marks})", chunk
                    )
                    out.update(cur.fetchall())
            else:
                sql = f"SELECT ext_id, id FROM {table.name} WHERE ext_id = ANY(%s)"
                with raw.cursor() as cur:
                    out.update(cur.execute(sql, (chunk,)).fetchall())
        return out

    def upsert(
        self, conn: Connection, kind: str, records: Sequence[dict[str, Any]]
    ) -> tuple[int, int]:
        """Insert new users or items and update the fields given for existing ones.

        Each record has `ext_id` and any of the table's columns. Returns (added, updated).
        """
        table = _table(kind)
        existing = self.id_map(conn, kind, (r["ext_id"] for r in records))
        now = time.time()
        new, old = [], []
        for r in records:
            if r["ext_id"] in existing:
                old.append({**r, "_id": existing[r["ext_id"]]})
            else:
                new.append(self._fill_defaults(kind, r, now))
        if new:
            conn.execute(table.insert(), new)
        # Update each distinct set of given columns in one executemany.
        by_cols: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in old:
            cols = tuple(sorted(k for k in r if k not in ("ext_id", "_id")))
            if cols:
                by_cols.setdefault(cols, []).append(r)
        for cols, rows in by_cols.items():
            stmt = (
                table.update()
                .where(table.c.id == bindparam("_id"))
                .values({c: bindparam(c) for c in cols})
            )
            conn.execute(stmt, rows)
        return len(new), len(old)

    @staticmethod
    def _fill_defaults(kind: str, r: dict[str, Any], now: float) -> dict[str, Any]:
        base: dict[str, Any] = {"attributes": {}, "created_at": now}
        if kind == "user":
            base.update(tags=[], consent_personal=True, consent_training=True)
        else:
            base.update(title="", description="", categories=[])
        base.update(r)
        return base

    def ensure(self, conn: Connection, kind: str, ext_ids: Iterable[str]) -> dict[str, int]:
        """Store ids for these external ids, creating bare users or items for unknown ones."""
        wanted = list(dict.fromkeys(ext_ids))
        known = self.id_map(conn, kind, wanted)
        missing = [e for e in wanted if e not in known]
        if missing:
            self._insert_bare(conn, kind, missing)
            known.update(self.id_map(conn, kind, missing))
        return known

    def _insert_bare(self, conn: Connection, kind: str, ext_ids: Sequence[str]) -> None:
        """Insert users or items that have only an external id (no existing ones among them)."""
        table = _table(kind)
        now = time.time()
        if kind == "user":
            cols, extra = "ext_id, attributes, tags, created_at", ("{}", "[]", now)
        else:
            cols = "ext_id, title, description, categories, attributes, created_at"
            extra = ("", "", "[]", "{}", now)
        rows = [(e, *extra) for e in ext_ids]
        if self.dialect == "sqlite":
            marks = ", ".join("?" * (len(extra) + 1))
            raw = conn.connection.driver_connection
            raw.executemany(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", rows)
        elif self.dialect == "mysql":
            # PyMySQL sends an executemany of INSERT ... VALUES as multi-row statements.
            marks = ", ".join(["%s"] * (len(extra) + 1))
            raw = conn.connection.driver_connection
            with raw.cursor() as cur:
                cur.executemany(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", rows)
        else:
            raw = conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)

    def insert_interactions(
        self,
        conn: Connection,
        user_id: np.ndarray,
        item_id: np.ndarray,
        event_: np.ndarray,
        value: np.ndarray,
        ts: np.ndarray,
    ) -> int:
        """Insert interaction rows (store ids); rows already present are skipped. Returns added.

        Rows are written ordered by (user, time), ties in the given order, so that row ids
        follow each user's history and the unique index is filled sequentially.
        """
        uid = np.asarray(user_id, dtype=np.int64)
        iid = np.asarray(item_id, dtype=np.int64)
        ev = np.asarray(event_, dtype=object)
        val = np.asarray(value, dtype=np.float64)
        t = np.asarray(ts, dtype=np.float64)
        n = len(uid)
        if not (len(iid) == len(ev) == len(val) == len(t) == n):
            raise ValueError("interaction arrays must have the same length")
        if n == 0:
            return 0
        order = np.lexsort((t, uid))
        uid, iid, ev, val, t = uid[order], iid[order], ev[order], val[order], t[order]
        if self.dialect == "sqlite":
            return self._sqlite_insert_interactions(conn, uid, iid, ev, val, t)
        if self.dialect == "mysql":
            return mysql.insert_interactions(conn, uid, iid, ev, val, t)
        return self._pg_copy_interactions(conn, uid, iid, ev, val, t)

    def add_events(
        self,
        conn: Connection,
        user_id: Sequence[int],
        item_id: Sequence[int],
        event_: Sequence[str],
        value: Sequence[float],
        ts: Sequence[float],
    ) -> np.ndarray:
        """Insert a few interaction rows (store ids; NaN value = none) with one statement and
        say which were new: a bool per row, False for a row already in the store or repeated
        earlier in these rows. For the service's small batches; use `insert_interactions` for
        imports."""
        n = len(user_id)
        new = np.zeros(n, bool)
        if n == 0:
            return new
        rows = [
            (int(u), int(i), str(e), None if v != v else float(v), float(t))
            for u, i, e, v, t in zip(user_id, item_id, event_, value, ts, strict=True)
        ]
        order = sorted(range(n), key=lambda j: (rows[j][0], rows[j][4]))
        if self.dialect == "mysql":
            return self._mysql_add_events(conn, rows, order)
        head = "INSERT INTO interactions (user_id, item_id, event, value, ts) VALUES "
        raw = conn.connection.driver_connection
        got: list[tuple] = []
        for lo in range(0, n, 150):  # at most 750 parameters a statement
            part = order[lo : lo + 150]
            flat = [x for j in part for x in rows[j]]
            if self.dialect == "sqlite":
                values = ", ".join(["(?, ?, ?, ?, ?)"] * len(part))
                sql = "INSERT OR IGNORE" + head[6:] + values
                sql += " RETURNING user_id, item_id, event, ts"
                got += raw.execute(sql, flat).fetchall()
            else:
                values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(part))
                sql = head + values + " ON CONFLICT ON CONSTRAINT uq_interaction DO NOTHING"
                sql += " RETURNING user_id, item_id, event, ts"
                with raw.cursor() as cur:
                    got += cur.execute(sql, flat).fetchall()
        fresh: dict[tuple, int] = {}
        for r in got:
            key = (int(r[0]), int(r[1]), str(r[2]), float(r[3]))
            fresh[key] = fresh.get(key, 0) + 1
        for j in range(n):  # the first of equal rows is the one that went in
            u, i, e, _, t = rows[j]
            key = (u, i, e, t)
            if fresh.get(key, 0) > 0:
                fresh[key] -= 1
                new[j] = True
        return new

    @staticmethod
    def _mysql_add_events(conn: Connection, rows: list[tuple], order: list[int]) -> np.ndarray:
        """MySQL has no RETURNING: the first of equal rows is tried, its row count says."""
        new = np.zeros(len(rows), bool)
        first: dict[tuple, int] = {}
        for j in order:
            u, i, e, _, t = rows[j]
            first.setdefault((u, i, e, t), j)
        todo = list(first.values())
        for lo in range(0, len(todo), 150):
            part = todo[lo : lo + 150]
            new[part] = mysql.add_events(conn, [rows[j] for j in part])
        return new

    @staticmethod
    def _sqlite_insert_interactions(
        conn: Connection,
        uid: np.ndarray,
        iid: np.ndarray,
        ev: np.ndarray,
        val: np.ndarray,
        t: np.ndarray,
    ) -> int:
        """executemany on the driver connection; secondary indexes rebuilt for big loads."""
        raw = conn.connection.driver_connection
        n = len(uid)
        rebuild: list[tuple[str, str]] = []
        if n >= BULK_REBUILD_ROWS:
            top = raw.execute("SELECT coalesce(max(id), 0) FROM interactions").fetchone()[0]
            if n >= top // 2:
                # Plain (non-unique, named) indexes only; the unique key stays and dedups.
                rebuild = raw.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = 'interactions' AND sql IS NOT NULL "
                    "AND sql NOT LIKE 'CREATE UNIQUE%'"
                ).fetchall()
        cache = raw.execute("PRAGMA cache_size").fetchone()[0]
        raw.execute("PRAGMA cache_size=-262144")  # 256 MiB while loading
        try:
            for name, _ in rebuild:
                raw.execute(f'DROP INDEX "{name}"')
            # Many rows per statement: the driver's per-row overhead, not SQLite, is what
            # costs in a row-per-statement executemany. NaN binds as NULL in SQLite.
            events = set(ev.tolist()) if n <= 10_000 else set(pd.unique(ev))
            if len(events) == 1 and isinstance(next(iter(events)), str):
                # One event type: a literal in the SQL, and every other column a float (integral
                # floats become integers in the INTEGER id columns), converted in one go.
                lit = "'" + str(next(iter(events))).replace("'", "''") + "'"
                row, arrays, dtype = f"(?, ?, {lit}, ?, ?)", (uid, iid, val, t), np.float64
            else:
                row, arrays, dtype = "(?, ?, ?, ?, ?)", (uid, iid, ev, val, t), object
            w = len(arrays)
            k = 150  # rows per statement: at most 750 parameters, under every SQLite's limit
            head = "INSERT OR IGNORE INTO interactions (user_id, item_id, event, value, ts) VALUES "
            added = 0
            step = 150_000
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                block = np.empty((hi - lo, w), dtype=dtype)
                for j, col in enumerate(arrays):
                    block[:, j] = col[lo:hi]
                flat = block.ravel().tolist()
                full = (hi - lo) // k * k
                if full:
                    cur = raw.executemany(
                        head + ", ".join([row] * k),
                        (flat[j : j + w * k] for j in range(0, w * full, w * k)),
                    )
                    added += cur.rowcount
                if full < hi - lo:
                    sql = head + ", ".join([row] * (hi - lo - full))
                    added += raw.execute(sql, flat[w * full :]).rowcount
            for _, ddl in rebuild:
                raw.execute(ddl)
        finally:
            raw.execute(f"PRAGMA cache_size={int(cache)}")
        return int(added)

    @staticmethod
    def _pg_copy_interactions(
        conn: Connection,
        uid: np.ndarray,
        iid: np.ndarray,
        ev: np.ndarray,
        val: np.ndarray,
        t: np.ndarray,
    ) -> int:
        """COPY (CSV made by Arrow) into a temporary table, then insert what is new."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        conn.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS _lmrec_import "
            "(user_id BIGINT, item_id BIGINT, event VARCHAR(32), value DOUBLE PRECISION, "
            "ts DOUBLE PRECISION, seq BIGSERIAL) ON COMMIT DROP"
        )
        table = pa.table(
            {
                "user_id": pa.array(uid),
                "item_id": pa.array(iid),
                "event": pa.array(ev.tolist(), type=pa.string()),
                "value": pa.array(val, mask=np.isnan(val)),
                "ts": pa.array(t),
            }
        )
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            with cur.copy(
                "COPY _lmrec_import (user_id, item_id, event, value, ts) FROM STDIN "
                "WITH (FORMAT csv)"
            ) as cp:
                step = 500_000
                for a in range(0, len(uid), step):
                    buf = pa.BufferOutputStream()
                    pacsv.write_csv(
                        table.slice(a, step), buf, pacsv.WriteOptions(include_header=False)
                    )
                    cp.write(buf.getvalue().to_pybytes())
            # Keep the given order (seq): row ids break timestamp ties in import order.
            cur.execute(
                "INSERT INTO interactions (user_id, item_id, event, value, ts) "
                "SELECT user_id, item_id, event, value, ts FROM _lmrec_import ORDER BY seq "
                "ON CONFLICT ON CONSTRAINT uq_interaction DO NOTHING"
            )
            added = cur.rowcount
            cur.execute("DROP TABLE _lmrec_import")
        return int(added)

    def delete(self, kind: str, ext_id: str) -> bool:
        """Delete a user or an item and all of its interactions. Returns whether it existed."""
        table = _table(kind)
        col = interactions.c.user_id if kind == "user" else interactions.c.item_id
        with self.begin() as conn:
            found = self.id_map(conn, kind, [ext_id])
            if not found:
                return False
            conn.execute(interactions.delete().where(col == found[ext_id]))
            conn.execute(table.delete().where(table.c.id == found[ext_id]))
            return True

    def erase_user(self, ext_id: str, text_hashes: Iterable[str] = ()) -> dict[str, int] | None:
        """Erase a user in one transaction: their row, their events and the cached text vectors
        of their profile texts (`text_hashes`), and log what was removed (counts only: the
        log names no id and holds no data). None when the user does not exist. Call `compact`
        afterwards so that no copy stays in free pages or the write-ahead log."""
        hashes = list(dict.fromkeys(text_hashes))
        with self.begin() as conn:
            found = self.id_map(conn, "user", [ext_id])
            if not found:
                return None
            uid = found[ext_id]
            events = conn.execute(
                interactions.delete().where(interactions.c.user_id == uid)
            ).rowcount
            conn.execute(users.delete().where(users.c.id == uid))
            vectors = 0
            if hashes:
                t = text_embeddings
                vectors = conn.execute(t.delete().where(t.c.text_hash.in_(hashes))).rowcount
            report = {"users": 1, "events": int(events), "text_vectors": int(vectors)}
            conn.execute(
                erasure_log.insert().values(erased_at=time.time(), kind="user", report=report)
            )
        return report

    def erasures(self) -> list[dict[str, Any]]:
        """The erasure log, oldest first: when, what kind, and the counts removed."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(erasure_log).order_by(erasure_log.c.id)).mappings()
            return [dict(r) for r in rows]

    def compact(self, vacuum: bool = True) -> None:
        """Leave no copy of deleted rows on disk. SQLite: deleted content is zeroed as it is
        deleted (secure_delete), the WAL is checkpointed and truncated and (`vacuum`) the file
        rebuilt, which also returns the space (VACUUM: a full copy, slow on a big store).
        PostgreSQL: VACUUM FULL rewrites each table and index into new files (the
        old ones are removed) and a CHECKPOINT flushes them; the server's WAL segments and any
        backups or replicas are the operator's to expire. MySQL / MariaDB: OPTIMIZE TABLE
        rebuilds each InnoDB table into a new file; the redo and undo logs (ib_logfile*,
        the system tablespace's undo) keep old rows until the server recycles them."""
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                if vacuum:
                    raw.execute("VACUUM")
                    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        tables = ("interactions", "users", "text_embeddings", "items")
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if self.dialect == "mysql":  # InnoDB: OPTIMIZE rebuilds each table into a new file
                conn.exec_driver_sql("OPTIMIZE TABLE " + ", ".join(tables)).fetchall()
                return
            for t in tables:
                conn.exec_driver_sql(f"VACUUM FULL {t}")
            conn.exec_driver_sql("CHECKPOINT")

    # -- reads -------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for name, t in (("users", users), ("items", items), ("interactions", interactions))
            }

    def read_interactions(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        events: Sequence[str] | None = None,
    ) -> InteractionArrays:
        """All interactions with since <= ts < until and event in events, in row-id order."""
        mark = "?" if self.dialect == "sqlite" else "%s"
        where, params = [], []
        if since is not None:
            where.append(f"ts >= {mark}")
            params.append(float(since))
        if until is not None:
            where.append(f"ts < {mark}")
            params.append(float(until))
        if events:
            evs = list(dict.fromkeys(events))
            where.append(f"event IN ({', '.join([mark] * len(evs))})")
            params.extend(evs)
        sql = "SELECT id, user_id, item_id, event, value, ts FROM interactions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with self.engine.connect() as conn:
            # The driver cursor directly: SQLAlchemy's row objects cost more than the query.
            raw = conn.connection.driver_connection
            cur = raw.cursor()
            try:
                cur.execute(sql, params)
                rows = cur.fetchall()
            finally:
                cur.close()
        n = len(rows)
        if not n:
            e = np.zeros(0, dtype=np.int64)
            return InteractionArrays(
                e, e, e, np.zeros(0, dtype=str), e.astype(float), e.astype(float)
            )
        rid, uid, iid, ev, val, ts = zip(*rows, strict=True)
        del rows
        return InteractionArrays(
            row_id=np.fromiter(rid, dtype=np.int64, count=n),
            user_id=np.fromiter(uid, dtype=np.int64, count=n),
            item_id=np.fromiter(iid, dtype=np.int64, count=n),
            event=np.asarray(ev, dtype=str),
            value=np.array(val, dtype=np.float64),  # None (NULL) becomes NaN
            ts=np.fromiter(ts, dtype=np.float64, count=n),
        )

    def last_event_id(self) -> int:
        """The highest interaction row id (0 for none): where a follower starts."""
        with self.engine.connect() as conn:
            top = conn.execute(select(func.max(interactions.c.id))).scalar()
        return int(top or 0)

    def events_after(
        self, after: int, also: Sequence[int] = (), limit: int = 50_000
    ) -> list[tuple[int, str, str, str, float | None, float]]:
        """Interactions with a row id above `after` or in `also` (at most `limit`, by id), as
        (id, user ext_id, item ext_id, event, value or None, ts): the shared event sequence
        that service processes poll (one primary-key range read, usually empty)."""
        mark = "?" if self.dialect == "sqlite" else "%s"
        where = f"x.id > {mark}"
        params: list[Any] = [int(after)]
        if also:
            where += f" OR x.id IN ({', '.join([mark] * len(also))})"
            params += [int(a) for a in also]
        sql = (
            "SELECT x.id, u.ext_id, i.ext_id, x.event, x.value, x.ts FROM interactions x "
            "JOIN users u ON u.id = x.user_id JOIN items i ON i.id = x.item_id "
            f"WHERE {where} ORDER BY x.id LIMIT {int(limit)}"
        )
        with self.engine.connect() as conn:
            cur = conn.connection.driver_connection.cursor()
            try:
                cur.execute(sql, params)
                return [tuple(r) for r in cur.fetchall()]
            finally:
                cur.close()

    def read_table(self, kind: str) -> list[dict[str, Any]]:
        """All users or items as dicts (store id in `id`), ordered by store id."""
        table = _table(kind)
        names = [c.name for c in table.columns]
        json_cols = [i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)]
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            cur = raw.cursor()
            try:
                cur.execute(f"SELECT {', '.join(names)} FROM {table.name} ORDER BY id")
                rows = cur.fetchall()
            finally:
                cur.close()
        empty = {"{}": dict, "[]": list}
        out = []
        for r in rows:
            d = dict(zip(names, r, strict=True))
            for i in json_cols:
                v = r[i]
                if isinstance(v, str):  # SQLite hands JSON back as text
                    d[names[i]] = empty[v]() if v in empty else json.loads(v)
                elif v is None:
                    d[names[i]] = None
            out.append(d)
        return out

    def get(self, kind: str, ext_id: str) -> dict[str, Any] | None:
        table = _table(kind)
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.ext_id == ext_id)).mappings().first()
        return dict(row) if row else None

    # -- text vector cache -------------------------------------------------------------------

    def get_vectors(self, encoder: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors of `encoder` for these text hashes (those present)."""
        t = text_embeddings
        out: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(hashes))
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                rows = conn.execute(
                    select(t.c.text_hash, t.c.vector).where(
                        (t.c.encoder == encoder) & t.c.text_hash.in_(chunk)
                    )
                )
                for h, blob in rows:
                    out[h] = np.frombuffer(blob, dtype="<f4").copy()
        return out

    def put_vectors(self, encoder: str, vectors: dict[str, np.ndarray]) -> int:
        """Store vectors of `encoder` by text hash (existing ones are kept). Returns added."""
        if not vectors:
            return 0
        t = text_embeddings
        now = time.time()
        with self.begin() as conn:
            have = set(self.get_vectors(encoder, list(vectors)))
            rows = [
                {
                    "encoder": encoder,
                    "text_hash": h,
                    "dim": int(v.shape[0]),
                    "vector": np.asarray(v, dtype="<f4").tobytes(),
                    "created_at": now,
                }
                for h, v in vectors.items()
                if h not in have
            ]
            if rows:
                conn.execute(t.insert(), rows)
        return len(rows)

    # -- experiments and exposures -------------------------------------------------------------

    def put_experiment(self, name: str, config: str, created_at: float) -> None:
        """Add an experiment (its config as JSON); a second one of the same name is refused."""
        with self.begin() as conn:
            found = conn.execute(
                select(experiments.c.name).where(experiments.c.name == name)
            ).first()
            if found is not None:
                raise StoreError(f"experiment {name!r} exists already")
            conn.execute(
                experiments.insert(),
                [{"name": name, "config": config, "created_at": created_at, "stopped_at": None}],
            )

    def read_experiments(self) -> list[dict[str, Any]]:
        """Every experiment: name, config (JSON text), created_at, stopped_at; by creation."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(experiments).order_by(experiments.c.created_at))
            return [dict(r) for r in rows.mappings()]

    def stop_experiment(self, name: str, at: float) -> bool:
        """Mark an experiment stopped (once); returns whether it was running."""
        t = experiments
        with self.begin() as conn:
            res = conn.execute(
                t.update()
                .where((t.c.name == name) & t.c.stopped_at.is_(None))
                .values(stopped_at=at)
            )
            return bool(res.rowcount)

    def add_exposures(self, rows: Sequence[dict[str, Any]]) -> int:
        """Write exposures ({experiment, arm, unit, items: JSON text, request_id, ts}) in one
        transaction; a request id already stored is skipped (a retried write adds nothing).
        Returns the rows added. One executemany on the driver: the exposure log writes from
        a thread beside the answers, so its CPU time (and GIL time) is kept small."""
        if not rows:
            return 0
        cols = ("experiment", "arm", "unit", "items", "request_id", "ts")
        data = [tuple(r[c] for c in cols) for r in rows]
        names = ", ".join(cols)
        with self.begin() as conn:
            raw = conn.connection.driver_connection
            if self.dialect == "sqlite":
                cur = raw.cursor()
                try:
                    cur.executemany(
                        f"INSERT OR IGNORE INTO exposures ({names}) VALUES (?, ?, ?, ?, ?, ?)",
                        data,
                    )
                    return int(cur.rowcount)
                finally:
                    cur.close()
            skip = (
                "ON DUPLICATE KEY UPDATE request_id = request_id"  # PyMySQL: one multi-row INSERT
                if self.dialect == "mysql"
                else "ON CONFLICT (request_id) DO NOTHING"  # psycopg 3: rowcount sums the rows
            )
            with raw.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO exposures ({names}) VALUES (%s, %s, %s, %s, %s, %s) {skip}",
                    data,
                )
                return int(cur.rowcount)

    def read_exposures(self, experiment: str) -> list[tuple[str, str, str, float, str]]:
        """(arm, unit, items JSON, ts, request_id) of an experiment's exposures, by time."""
        t = exposures
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.arm, t.c.unit, t.c["items"], t.c.ts, t.c.request_id)
                .where(t.c.experiment == experiment)
                .order_by(t.c.ts, t.c.id)
            )
            return [tuple(r) for r in rows]

    def count_exposures(self) -> dict[str, int]:
        """Exposures per experiment."""
        t = exposures
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.experiment, func.count()).group_by(t.c.experiment))
            return {name: int(n) for name, n in rows}

    def events_of(
        self, user_ids: Sequence[str], since: float, until: float | None = None
    ) -> list[tuple[str, str, str, float | None, float]]:
        """(user, item, event, value, ts) by external ids of these users' events in
        [since, until), by time: the feedback that experiments attribute to exposures."""
        u, i, x = users, items, interactions
        out: list[tuple[str, str, str, float | None, float]] = []
        wanted = list(dict.fromkeys(user_ids))
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                q = (
                    select(u.c.ext_id, i.c.ext_id, x.c.event, x.c.value, x.c.ts)
                    .select_from(x.join(u, u.c.id == x.c.user_id).join(i, i.c.id == x.c.item_id))
                    .where(u.c.ext_id.in_(chunk) & (x.c.ts >= since))
                )
                if until is not None:
                    q = q.where(x.c.ts < until)
                out.extend(tuple(r) for r in conn.execute(q))
        out.sort(key=lambda r: r[4])
        return out
