"""Tables of the store (SQLAlchemy Core) and the schema version with its migrations."""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "interactions",
    "items",
    "meta",
    "metadata",
    "text_embeddings",
    "users",
]

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

#: Bump when the tables change and add a step to `MIGRATIONS` in store.py.
SCHEMA_VERSION = 3

metadata = MetaData()

# BigInteger primary keys become plain INTEGER on SQLite so that they stay rowid aliases.
_Id = BigInteger().with_variant(Integer(), "sqlite")

meta = Table(
    "lmrec_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("ext_id", String(255), nullable=False, unique=True),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("tags", JSON, nullable=False, default=list),
    Column("created_at", Float, nullable=False),
    # Version 3: consent. Opted out of personalisation: answered as anybody unknown; of
    # training: left out of every snapshot (`Dataset.from_store`).
    Column("consent_personal", Boolean, nullable=False, default=True, server_default=true()),
    Column("consent_training", Boolean, nullable=False, default=True, server_default=true()),
)

items = Table(
    "items",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("ext_id", String(255), nullable=False, unique=True),
    Column("title", Text, nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("categories", JSON, nullable=False, default=list),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("created_at", Float, nullable=False),
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("user_id", _Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", _Id, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(32), nullable=False),
    Column("value", Float, nullable=True),
    Column("ts", Float, nullable=False),
    # The natural key: importing the same event twice adds nothing. Its column order also
    # serves "a user's history by time", so no separate (user_id, ts) index is kept.
    UniqueConstraint("user_id", "ts", "item_id", "event", name="uq_interaction"),
    Index("ix_interactions_item", "item_id"),
)

# Version 2: cached text vectors, keyed by encoder version and the hash of the encoded text, so
# that a second run encodes only new or changed texts.
text_embeddings = Table(
    "text_embeddings",
    metadata,
    Column("encoder", String(255), primary_key=True),
    Column("text_hash", String(64), primary_key=True),
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian
    Column("created_at", Float, nullable=False),
)

# Version 3: the erasure log: what each erasure removed (counts, never the data or the id).
erasure_log = Table(
    "erasure_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("erased_at", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("report", JSON, nullable=False),
)
