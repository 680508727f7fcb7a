"""Schema versioning: an older store is migrated in place, its data kept."""

from __future__ import annotations

import numpy as np
from sqlalchemy import inspect, text

from lmrec.store import SCHEMA_VERSION, Store
from lmrec.store.schema import meta


def test_version_1_store_is_migrated(store_url: str) -> None:
    s = Store(store_url)
    with s.begin() as conn:
        s.upsert(conn, "item", [{"ext_id": "i1", "title": "Alien"}])
    # Turn it back into a version-1 store: no text vector cache yet.
    with s.engine.begin() as conn:
        conn.execute(text("DROP TABLE text_embeddings"))
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="1"))
    s.close()

    migrated = Store(store_url)
    assert migrated.schema_version() == SCHEMA_VERSION
    assert "text_embeddings" in inspect(migrated.engine).get_table_names()
    assert migrated.get("item", "i1")["title"] == "Alien"
    assert migrated.put_vectors("enc", {"h": np.arange(3, dtype=np.float32)}) == 1
    migrated.close()


def test_interrupted_schema_creation_is_completed(store_url: str) -> None:
    # MySQL commits each CREATE TABLE at once: a creation killed before its version row
    # leaves some tables and an empty lmrec_meta. The next open finishes it.
    s = Store(store_url)
    with s.engine.begin() as conn:
        conn.execute(text("DROP TABLE text_embeddings"))
        conn.execute(meta.delete())
    s.close()
    again = Store(store_url)
    assert again.schema_version() == SCHEMA_VERSION
    assert "text_embeddings" in inspect(again.engine).get_table_names()
    again.close()


def test_vector_cache_round_trip(store: Store) -> None:
    v = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    assert store.put_vectors("enc@1", {"a": v, "b": -v}) == 2
    assert store.put_vectors("enc@1", {"a": v}) == 0  # already cached
    got = store.get_vectors("enc@1", ["a", "b", "missing"])
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["b"], -v)
    assert store.get_vectors("other-encoder", ["a"]) == {}
