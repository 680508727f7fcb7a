"""What the store does differently on MySQL and MariaDB (through PyMySQL).

- Connections are utf8mb4, strict (`STRICT_ALL_TABLES`: a too long value is an error, not
  silently cut), READ COMMITTED like PostgreSQL, and without `CLIENT.FOUND_ROWS`, which
  SQLAlchemy turns on: so that the row count of `INSERT ... ON DUPLICATE KEY UPDATE id = id`
  is the number of rows inserted (a duplicate counts 0), which is how the store learns what was
  new without PostgreSQL's `RETURNING`.
- DDL commits implicitly in MySQL, so creating or migrating the schema cannot be one
  transaction: it runs under a named lock (`GET_LOCK`), and every step is idempotent
  (`CREATE TABLE` only of missing tables), so a killed creation is completed on the next open.
- Bulk loads are multi-row `INSERT` statements of literal values (a few thousand rows each),
  the fastest path that needs nothing from the server. `LOAD DATA LOCAL INFILE` is not used:
  it must be enabled on both ends, and a client that enables it sends any file the server
  asks for.
"""

from __future__ import annotations

__all__ = [
    "ROWS_PER_STATEMENT",
    "add_events",
    "create_tables",
    "engine_options",
    "insert_interactions",
    "no_pad_collation",
    "on_connect",
    "on_do_connect",
    "schema_lock",
]

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import URL, Connection, Table
from sqlalchemy.schema import CreateIndex, CreateTable

#: Rows in one multi-row INSERT of a bulk load (about 80 bytes each: far under the 16 MiB
#: `max_allowed_packet` of MariaDB and 64 MiB of MySQL 8).
ROWS_PER_STATEMENT = 5000

_SQL_MODE = (
    "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,"
    "NO_ZERO_DATE,NO_ZERO_IN_DATE"
)


def engine_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """The URL with utf8mb4 unless a charset is given, and the engine's keyword arguments."""
    if "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    # The server closes idle connections (wait_timeout): check before use, recycle hourly.
    return url, {"pool_pre_ping": True, "pool_recycle": 3600, "isolation_level": "READ COMMITTED"}


def on_do_connect(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    from pymysql.constants import CLIENT

    cparams["client_flag"] = int(cparams.get("client_flag", 0)) & ~CLIENT.FOUND_ROWS


def on_connect(dbapi_conn: Any, _record: Any) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute(f"SET SESSION sql_mode = '{_SQL_MODE}'")


@contextmanager
def schema_lock(conn: Connection, timeout_s: int = 120) -> Iterator[None]:
    """Hold the server-wide named lock under which the schema is created or migrated."""
    got = conn.exec_driver_sql(f"SELECT GET_LOCK('lmrec_schema', {int(timeout_s)})").scalar()
    if got != 1:
        from lmrec.errors import StoreError

        raise StoreError(f"another process holds the schema lock for over {timeout_s} s")
    try:
        yield
    finally:
        conn.exec_driver_sql("SELECT RELEASE_LOCK('lmrec_schema')")


def no_pad_collation(conn: Connection) -> str:
    """Binary collation without trailing-space padding: MariaDB's, else MySQL 8's."""
    have = {
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT collation_name FROM information_schema.collations "
            "WHERE collation_name IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')"
        )
    }
    for name in ("utf8mb4_nopad_bin", "utf8mb4_0900_bin"):
        if name in have:
            return name
    return "utf8mb4_bin"


def create_tables(conn: Connection, tables: Sequence[Table]) -> None:
    """CREATE TABLE (and its indexes) in the no-pad binary collation, in the given order."""
    coll = no_pad_collation(conn)
    for t in tables:
        ddl = str(CreateTable(t).compile(dialect=conn.dialect))
        conn.exec_driver_sql(ddl.replace("COLLATE utf8mb4_bin", f"COLLATE {coll}"))
        for index in t.indexes:
            conn.execute(CreateIndex(index))


def _float(v: float) -> str:
    # A literal with an exponent is an approximate (double) value in MySQL, parsed exactly;
    # repr is the shortest string that reads back as the same double.
    if v != v:
        return "NULL"
    r = repr(v)
    return r if "e" in r else r + "e0"


def insert_interactions(
    conn: Connection,
    uid: np.ndarray,
    iid: np.ndarray,
    ev: np.ndarray,
    val: np.ndarray,
    t: np.ndarray,
) -> int:
    """Multi-row INSERTs of literal values; rows already stored add nothing. Returns added."""
    raw = conn.connection.driver_connection
    lit = {e: raw.escape(str(e)) for e in dict.fromkeys(ev.tolist())}
    head = "INSERT INTO interactions (user_id, item_id, event, value, ts) VALUES "
    tail = " ON DUPLICATE KEY UPDATE id = id"
    u_, i_, e_, t_ = uid.tolist(), iid.tolist(), ev.tolist(), t.tolist()
    v_ = val.tolist()
    added = 0
    with raw.cursor() as cur:
        for lo in range(0, len(u_), ROWS_PER_STATEMENT):
            hi = min(len(u_), lo + ROWS_PER_STATEMENT)
            values = ",".join(
                f"({u_[j]},{i_[j]},{lit[e_[j]]},{_float(v_[j])},{_float(t_[j])})"
                for j in range(lo, hi)
            )
            added += cur.execute(head + values + tail)
    return int(added)


def add_events(conn: Connection, rows: Sequence[tuple]) -> list[bool]:
    """Insert distinct (user, item, event, value-or-None, ts) rows; say which were new.

    One statement when all are new (the common case, checked by its row count); when some
    were already stored, the statement is rolled back to a savepoint and the rows go in one
    by one, each row count saying whether that row was new.
    """
    head = "INSERT INTO interactions (user_id, item_id, event, value, ts) VALUES "
    row, tail = "(%s, %s, %s, %s, %s)", " ON DUPLICATE KEY UPDATE id = id"
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT lmrec_events")
        many = head + ", ".join([row] * len(rows)) + tail
        if cur.execute(many, [x for r in rows for x in r]) == len(rows):
            cur.execute("RELEASE SAVEPOINT lmrec_events")
            return [True] * len(rows)
        cur.execute("ROLLBACK TO SAVEPOINT lmrec_events")
        out = [cur.execute(head + row + tail, r) == 1 for r in rows]
        cur.execute("RELEASE SAVEPOINT lmrec_events")
    return out
