"""Erasure leaves no trace: after `erase_user`, no file of the store (SQLite: the database,
its WAL and shared memory; PostgreSQL: the cluster's data files) or of the models directory
holds the erased user's id, attribute values or tags, in UTF-8 or in the UTF-32 of numpy
string arrays, compressed inside .npz files or not."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lmrec.data import Dataset
from lmrec.erasure import erase_user, profile_hashes
from lmrec.models import create_model
from lmrec.models.base import Query, Recommender
from lmrec.store import Store

WHO = "zq-alice-7741"
SECRETS = (WHO, "zq-nick-5521", "zq-tag-9931")
MODELS = {
    "itemknn": {},
    "userknn": {},
    "als": {"factors": 4, "iterations": 2},
    "popularity": {},
}


def fill(store: Store) -> None:
    with store.begin() as conn:
        store.upsert(conn, "item", [{"ext_id": f"i{i}", "title": f"t{i}"} for i in range(12)])
        people = [{"ext_id": f"u{u}", "attributes": {"age": 20 + u}} for u in range(8)]
        people.append(
            {"ext_id": WHO, "attributes": {"nickname": "zq-nick-5521"}, "tags": ["zq-tag-9931"]}
        )
        store.upsert(conn, "user", people)
        umap = store.id_map(conn, "user", [p["ext_id"] for p in people])
        imap = store.id_map(conn, "item", [f"i{i}" for i in range(12)])
        rows = [
            (umap[p["ext_id"]], imap[f"i{(k + j) % 12}"])
            for k, p in enumerate(people)
            for j in range(5)
        ]
        u, i = zip(*rows, strict=True)
        n = len(u)
        store.insert_interactions(
            conn,
            np.array(u),
            np.array(i),
            np.array(["view"] * n),
            np.full(n, np.nan),
            np.arange(n, dtype=float) + 1000.0,
        )
    row = store.get("user", WHO)
    vec = np.ones(4, np.float32)
    store.put_vectors("enc@1", {h: vec for h in profile_hashes(row["attributes"], row["tags"])})
    store.put_vectors("enc@1", {"0" * 64: vec})  # somebody else's text


def hits(paths: list[Path]) -> list[str]:
    """Where any secret occurs: file (and zip member) names."""
    needles = [s.encode(enc) for s in SECRETS for enc in ("utf-8", "utf-32-le")]
    found = []
    for p in paths:
        try:
            data = p.read_bytes()
        except FileNotFoundError:  # a server's temporary file, gone since the listing
            continue
        blobs = [(str(p), data)]
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                blobs += [(f"{p}:{m}", z.read(m)) for m in z.namelist()]
        found += [name for name, b in blobs if any(n in b for n in needles)]
    return found


def files(*roots: Path) -> list[Path]:
    return [p for r in roots for p in sorted(r.rglob("*")) if p.is_file()]


def store_files(store: Store, request: pytest.FixtureRequest) -> list[Path]:
    if store.dialect == "sqlite":
        return files(Path(store.engine.url.database).parent)
    if store.dialect == "mysql":
        db = request.getfixturevalue("mariadb")
        # Write InnoDB's dirty pages into the table files, so that the scan sees what is there.
        db.root_sql("SET GLOBAL innodb_max_dirty_pages_pct = 0; FLUSH TABLES;")
        time.sleep(1.0)
        # The server's files but its redo log and the system tablespace's undo log (recycled
        # by the server, as PostgreSQL's WAL below).
        logs = ("ib_logfile", "ibdata", "undo", "aria_log", "ib_buffer_pool")
        return [p for p in files(db.dir) if not p.name.startswith(logs)]
    pg = request.getfixturevalue("postgres")
    # The cluster's files but its WAL (pg_wal: recycled segments, the operator's to expire).
    return [p for p in files(pg.data) if "pg_wal" not in p.parts] + [pg.dir / "log"]


@pytest.mark.parametrize("vacuum", [True, False])
def test_erasure_leaves_no_trace(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest, vacuum: bool
) -> None:
    fill(store)
    models = tmp_path / "models"
    ds = Dataset.from_store(store)
    for name, params in MODELS.items():
        create_model(name, **params).fit(ds).save(models / name)
    if store.dialect == "postgresql":  # put the rows on disk, so that the scan can see them
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("CHECKPOINT")
    before = hits(store_files(store, request) + files(models))
    assert sum("models" in h for h in before) >= len(MODELS), before
    assert any("models" not in h for h in before), before  # the store's own files

    row = store.get("user", WHO)
    cached = len(set(profile_hashes(row["attributes"], row["tags"])))
    report = erase_user(store, WHO, [models], vacuum=vacuum)
    assert report.found and report.store == {"users": 1, "events": 5, "text_vectors": cached}
    assert sorted(report.models) == sorted(MODELS)
    assert hits(store_files(store, request) + files(models)) == []
    # The erasure log says what went, not who.
    log = store.erasures()
    assert len(log) == 1 and log[0]["report"] == report.store
    assert not any(s in str(log) for s in SECRETS)
    # Rewritten models answer the erased user as anybody unknown; others as before.
    assert store.get("user", WHO) is None and store.get_vectors("enc@1", ["0" * 64])
    for name in MODELS:
        m = Recommender.load(models / name)
        assert WHO not in m.users and "u3" in m.users
        gone = m.recommend(Query(user=WHO), n=5).items
        anon = m.recommend(Query(user="never-seen"), n=5).items
        assert gone == anon, name
    assert not erase_user(store, WHO, [models]).found


def test_delete_user_through_the_api_leaves_no_trace(tmp_path: Path) -> None:
    from lmrec.service import Settings
    from test_service import ADMIN, Server, fill_store, train

    url = f"sqlite:///{tmp_path / 'store.db'}"
    fill_store(url, n_users=8, n_items=28)
    models = tmp_path / "models"
    with Store(url) as store, store.begin() as conn:
        store.upsert(
            conn,
            "user",
            [{"ext_id": WHO, "attributes": {"nick": "zq-nick-5521"}, "tags": ["zq-tag-9931"]}],
        )
        umap, imap = store.id_map(conn, "user", [WHO]), store.id_map(conn, "item", ["i1", "i5"])
        store.insert_interactions(
            conn,
            np.array([umap[WHO]] * 2),
            np.array([imap["i1"], imap["i5"]]),
            np.array(["view", "view"]),
            np.full(2, np.nan),
            np.array([5.0, 6.0]),
        )
    train(url, "itemknn", models / "knn")
    train(url, "als", models / "als", factors=4, iterations=2)
    srv = Server(
        Settings(
            db=url,
            models=[f"knn={models / 'knn'}"],
            models_dir=str(models),
            api_keys={ADMIN: "admin"},
        )
    )
    try:
        with srv.client() as c:
            fb = {"user": WHO, "item": "i9", "ts": 7.0}
            assert c.post("/feedback", json=fb).status_code == 200
            assert hits(files(tmp_path))
            assert c.delete(f"/users/{WHO}").status_code == 200
            assert hits(files(tmp_path)) == []
            assert c.get(f"/users/{WHO}").status_code == 404
            r = c.get(f"/users/{WHO}/recommendations").json()
            assert r["fallback"] == "popularity"
    finally:
        srv.stop()
    assert hits(files(tmp_path)) == []
