"""Tables of the store (SQLAlchemy Core) and the schema version with its migrations."""

from __future__ import annotations

__all__ = [
    "MYSQL_TABLE",
    "SCHEMA_VERSION",
    "experiments",
    "exposures",
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
from sqlalchemy.dialects import mysql

#: Bump when the tables change and add a step to `MIGRATIONS` in store.py.
SCHEMA_VERSION = 4

metadata = MetaData()

# BigInteger primary keys become plain INTEGER on SQLite so that they stay rowid aliases.
_Id = BigInteger().with_variant(Integer(), "sqlite")
# MySQL's FLOAT is single precision: timestamps and values are DOUBLE there (FLOAT is already
# double precision on PostgreSQL and REAL on SQLite, so their DDL is unchanged).
_Double = Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")
# MySQL's TEXT and BLOB hold 64 KiB; descriptions and vectors may be longer.
_LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
_Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

#: MySQL/MariaDB tables: InnoDB (transactions, foreign keys) in utf8mb4. The collation is made
#: binary and no-pad when the tables are created (`Store`), so that external ids compare as
#: they do on SQLite and PostgreSQL ("a", "A" and "a " are three users).
MYSQL_TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

meta = Table(
    "lmrec_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    **MYSQL_TABLE,
)

users = Table(
    "users",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("ext_id", String(255), nullable=False, unique=True),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("tags", JSON, nullable=False, default=list),
    Column("created_at", _Double, nullable=False),
    # Version 4: consent. Opted out of personalisation: answered as anybody unknown; of
    # training: left out of every snapshot (`Dataset.from_store`).
    Column("consent_personal", Boolean, nullable=False, default=True, server_default=true()),
    Column("consent_training", Boolean, nullable=False, default=True, server_default=true()),
    **MYSQL_TABLE,
)

items = Table(
    "items",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("ext_id", String(255), nullable=False, unique=True),
    Column("title", _LongText, nullable=False, default=""),
    Column("description", _LongText, nullable=False, default=""),
    Column("categories", JSON, nullable=False, default=list),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("created_at", _Double, nullable=False),
    **MYSQL_TABLE,
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("user_id", _Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", _Id, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(32), nullable=False),
    Column("value", _Double, nullable=True),
    Column("ts", _Double, nullable=False),
    # The natural key: importing the same event twice adds nothing. Its column order also
    # serves "a user's history by time", so no separate (user_id, ts) index is kept.
    UniqueConstraint("user_id", "ts", "item_id", "event", name="uq_interaction"),
    Index("ix_interactions_item", "item_id"),
    **MYSQL_TABLE,
)

# Version 2: cached text vectors, keyed by encoder version and the hash of the encoded text, so
# that a second run encodes only new or changed texts.
text_embeddings = Table(
    "text_embeddings",
    metadata,
    Column("encoder", String(255), primary_key=True),
    Column("text_hash", String(64), primary_key=True),
    Column("dim", Integer, nullable=False),
    Column("vector", _Blob, nullable=False),  # float32, little-endian
    Column("created_at", _Double, nullable=False),
    **MYSQL_TABLE,
)

# Version 3: A/B experiments (their `ExperimentConfig` as JSON) and the exposure log: one row per
# answer served inside an experiment, with the arm, the user (or session) and the items shown.
experiments = Table(
    "experiments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("config", Text, nullable=False),
    Column("created_at", _Double, nullable=False),
    Column("stopped_at", _Double, nullable=True),
    **MYSQL_TABLE,
)

exposures = Table(
    "exposures",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("experiment", String(64), nullable=False),
    Column("arm", String(64), nullable=False),
    Column("unit", String(255), nullable=False),  # user id, or session id of anonymous requests
    Column("items", Text, nullable=False),  # JSON list of the item ids shown, in rank order
    Column("request_id", String(64), nullable=False, unique=True),
    Column("ts", _Double, nullable=False),
    Index("ix_exposures_experiment", "experiment", "ts"),
    **MYSQL_TABLE,
)

# Version 4: the erasure log: what each erasure removed (counts, never the data or the id).
erasure_log = Table(
    "erasure_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("erased_at", _Double, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("report", JSON, nullable=False),
    **MYSQL_TABLE,
)
