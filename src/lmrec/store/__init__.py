"""The SQL store: users, items and interactions in SQLite (default) or PostgreSQL."""

from lmrec.store.schema import SCHEMA_VERSION
from lmrec.store.store import DEFAULT_URL, Store, resolve_url

__all__ = ["DEFAULT_URL", "SCHEMA_VERSION", "Store", "resolve_url"]
