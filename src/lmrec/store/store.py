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
from sqlalchemy import (
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
from lmrec.store.schema import (
    SCHEMA_VERSION,
    interactions,
    items,
    meta,
    metadata,
    text_embeddings,
    users,
)

DEFAULT_URL = "sqlite:///lmrec.db"

def _create_tables(*names: str) -> Callable[[Connection], None]:
    def step(conn: Connection) -> None:
        metadata.create_all(conn, tables=[metadata.tables[n] for n in names])

    return step


# version -> the step that brings a store from version-1 to version.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _create_tables("text_embeddings"),
}


def resolve_url(url: str | None = None) -> str:
    """The store URL: the argument, else $LMREC_DB, else the embedded SQLite file lmrec.db."""
    return url or os.environ.get("LMREC_DB") or DEFAULT_URL


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


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

    `Store()` opens `$LMREC_DB` or `sqlite:///lmrec.db`; `Store("postgresql+psycopg://...")`
    opens PostgreSQL. The schema is created on first use and migrated when older.
    """

    def __init__(self, url: str | None = None, *, create: bool = True):
        self.url = resolve_url(url)
        if self.url.startswith("postgresql://"):
            self.url = "postgresql+psycopg://" + self.url[len("postgresql://") :]
        try:
            backend = make_url(self.url).get_backend_name()
        except ArgumentError as exc:
            raise StoreError(f"cannot use store URL {self.url!r}: {exc}") from exc
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
        try:
            self.engine: Engine = create_engine(self.url, future=True)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use store URL {self.url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            db = self.engine.url.database
            if db and db != ":memory:":
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._init_schema(create)
        except OperationalError as exc:
            raise StoreError(f"cannot open store {self.engine.url!r}: {exc.orig}") from exc

    # -- schema ------------------------------------------------------------------------------

    def _init_schema(self, create: bool) -> None:
        with self.engine.begin() as conn:
            names = set(inspect(conn).get_table_names())
            if "lmrec_meta" not in names:
                if names & {"users", "items", "interactions"}:
                    raise StoreError(
                        f"{self.engine.url!r} has tables named users/items/interactions but no "
                        "lmrec_meta table: it is not an lmrec store"
                    )
                if not create:
                    raise StoreError(f"{self.engine.url!r} is not an lmrec store (no schema)")
                metadata.create_all(conn)
                conn.execute(
                    meta.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}]
                )
                return
            version = int(
                conn.execute(
                    select(meta.c.value).where(meta.c.key == "schema_version")
                ).scalar_one()
            )
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
    def begin(self) -> Iterator[Connection]:
        """One transaction: everything written inside commits together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    # -- writes ------------------------------------------------------------------------------

    def id_map(self, conn: Connection, kind: str, ext_ids: Iterable[str]) -> dict[str, int]:
        """Store ids of the given external ids of users or items (those that exist)."""
        table = users if kind == "user" else items
        wanted = list(dict.fromkeys(ext_ids))
        out: dict[str, int] = {}
        if len(wanted) > 20_000:
            rows = conn.execute(select(table.c.ext_id, table.c.id)).all()
            want = set(wanted)
            return {e: i for e, i in rows if e in want}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            rows = conn.execute(select(table.c.ext_id, table.c.id).where(table.c.ext_id.in_(chunk)))
            out.update(dict(rows.all()))
        return out

    def upsert(
        self, conn: Connection, kind: str, records: Sequence[dict[str, Any]]
    ) -> tuple[int, int]:
        """Insert new users or items and update the fields given for existing ones.

        Each record has `ext_id` and any of the table's columns. Returns (added, updated).
        """
        table = users if kind == "user" else items
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
            base["tags"] = []
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
            self.upsert(conn, kind, [{"ext_id": e} for e in missing])
            known.update(self.id_map(conn, kind, missing))
        return known

    def insert_interactions(
        self,
        conn: Connection,
        user_id: np.ndarray,
        item_id: np.ndarray,
        event_: np.ndarray,
        value: np.ndarray,
        ts: np.ndarray,
    ) -> int:
        """Insert interaction rows (store ids); rows already present are skipped. Returns added."""
        n_before = conn.execute(select(func.count()).select_from(interactions)).scalar_one()
        vals = [None if np.isnan(v) else float(v) for v in np.asarray(value, dtype=np.float64)]
        rows = zip(
            np.asarray(user_id).tolist(),
            np.asarray(item_id).tolist(),
            np.asarray(event_).tolist(),
            vals,
            np.asarray(ts, dtype=np.float64).tolist(),
            strict=True,
        )
        if self.dialect == "sqlite":
            conn.exec_driver_sql(
                "INSERT OR IGNORE INTO interactions (user_id, item_id, event, value, ts) "
                "VALUES (?, ?, ?, ?, ?)",
                list(rows),
            )
        else:
            self._pg_copy_interactions(conn, rows)
        n_after = conn.execute(select(func.count()).select_from(interactions)).scalar_one()
        return int(n_after - n_before)

    @staticmethod
    def _pg_copy_interactions(conn: Connection, rows: Iterable[tuple]) -> None:
        """COPY into a temporary table, then insert what is not there yet (ON CONFLICT)."""
        conn.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS _lmrec_import "
            "(user_id BIGINT, item_id BIGINT, event VARCHAR(32), value DOUBLE PRECISION, "
            "ts DOUBLE PRECISION, seq BIGSERIAL) ON COMMIT DROP"
        )
        raw = conn.connection.driver_connection
        with (
            raw.cursor() as cur,
            cur.copy("COPY _lmrec_import (user_id, item_id, event, value, ts) FROM STDIN") as cp,
        ):
            for row in rows:
                cp.write_row(row)
        # Keep file order (seq) so that row ids break timestamp ties in import order.
        conn.exec_driver_sql(
            "INSERT INTO interactions (user_id, item_id, event, value, ts) "
            "SELECT user_id, item_id, event, value, ts FROM _lmrec_import ORDER BY seq "
            "ON CONFLICT ON CONSTRAINT uq_interaction DO NOTHING"
        )
        conn.exec_driver_sql("DROP TABLE _lmrec_import")

    def delete(self, kind: str, ext_id: str) -> bool:
        """Delete a user or an item and all of its interactions. Returns whether it existed."""
        table = users if kind == "user" else items
        col = interactions.c.user_id if kind == "user" else interactions.c.item_id
        with self.begin() as conn:
            found = self.id_map(conn, kind, [ext_id])
            if not found:
                return False
            conn.execute(interactions.delete().where(col == found[ext_id]))
            conn.execute(table.delete().where(table.c.id == found[ext_id]))
            return True

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
        q = select(
            interactions.c.id,
            interactions.c.user_id,
            interactions.c.item_id,
            interactions.c.event,
            interactions.c.value,
            interactions.c.ts,
        ).order_by(interactions.c.id)
        if since is not None:
            q = q.where(interactions.c.ts >= since)
        if until is not None:
            q = q.where(interactions.c.ts < until)
        if events:
            q = q.where(interactions.c.event.in_(list(events)))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            e = np.zeros(0, dtype=np.int64)
            return InteractionArrays(
                e, e, e, np.zeros(0, dtype=str), e.astype(float), e.astype(float)
            )
        rid, uid, iid, ev, val, ts = zip(*rows, strict=True)
        return InteractionArrays(
            row_id=np.fromiter(rid, dtype=np.int64, count=len(rows)),
            user_id=np.fromiter(uid, dtype=np.int64, count=len(rows)),
            item_id=np.fromiter(iid, dtype=np.int64, count=len(rows)),
            event=np.asarray(ev, dtype=str),
            value=np.array([np.nan if v is None else v for v in val], dtype=np.float64),
            ts=np.fromiter(ts, dtype=np.float64, count=len(rows)),
        )

    def read_table(self, kind: str) -> list[dict[str, Any]]:
        """All users or items as dicts (store id in `id`), ordered by store id."""
        table = users if kind == "user" else items
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).order_by(table.c.id)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("attributes", "tags", "categories"):
                if isinstance(d.get(k), str):  # some drivers hand JSON back as text
                    d[k] = json.loads(d[k])
            out.append(d)
        return out

    def get(self, kind: str, ext_id: str) -> dict[str, Any] | None:
        table = users if kind == "user" else items
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
