"""The optional model hooks, over every registered model, on the tiny synthetic catalogue of
`test_model_contract`: a new item added through the service (`Service.put_item`, what
`PUT /items` calls, and the extension of a model loaded after the item exists) leaves every
model answering, and explanations name only history items whose removal lowers the score.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lmrec.data import Dataset
from lmrec.explain import explain, score_margin
from lmrec.models import model_names
from lmrec.models.base import History, Query, Recommender
from lmrec.service import Settings
from lmrec.service.core import Service
from lmrec.store import Store
from test_model_contract import ITEMS_PER, _blocks, fit_on_blocks

NEW = "new_item"
NEW_FIELDS = {
    "title": "Item new_item",
    "description": "a story about theme0 and more theme0",
    "categories": ["genre0"],
    "attributes": {"cluster": 0},
}


def _fill(url: str, ds: Dataset) -> None:
    """The dataset's items (with their text), users and interactions, into the store."""
    f = ds.item_features
    with Store(url) as store, store.begin() as conn:
        store.upsert(
            conn,
            "item",
            [
                {
                    "ext_id": str(i),
                    "title": f.title[k],
                    "description": f.description[k],
                    "categories": list(f.categories[k]),
                    "attributes": dict(f.attributes[k]),
                }
                for k, i in enumerate(ds.items.ids)
            ],
        )
        store.upsert(conn, "user", [{"ext_id": str(u)} for u in ds.users.ids])
        umap = store.id_map(conn, "user", [str(u) for u in ds.users.ids])
        imap = store.id_map(conn, "item", [str(i) for i in ds.items.ids])
        store.insert_interactions(
            conn,
            np.array([umap[str(ds.users.ids[u])] for u in ds.user]),
            np.array([imap[str(ds.items.ids[i])] for i in ds.item]),
            np.asarray(ds.event_names, dtype=object)[ds.event],
            ds.value,
            ds.ts,
        )


@pytest.fixture(scope="module")
def store_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hooks") / "store.db"
    ds, _ = _blocks()
    _fill(f"sqlite:///{path}", ds)
    return path


@pytest.fixture(scope="module")
def rated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The blocks as star ratings, for the rating models (`_blocks(rated=True)`)."""
    path = tmp_path_factory.mktemp("hooks-rated") / "store.db"
    ds, _ = _blocks(rated=True)
    _fill(f"sqlite:///{path}", ds)
    return path


@pytest.fixture(scope="module", params=model_names())
def fitted(request: pytest.FixtureRequest, store_db: Path, rated_db: Path) -> Recommender:
    data = []
    for db in (store_db, rated_db):
        with Store(f"sqlite:///{db}") as store:
            data.append(Dataset.from_store(store))
    return fit_on_blocks(request.param, *data)


def _answers(svc: Service, accepts: bool) -> None:
    """Every kind of request is answered in full, the new item only by models that take it."""
    queries = [
        ("u0_0", None),
        ("someone_new", Query(items=["i1", "i2"])),
        (None, Query(items=[NEW, "i3"])),
    ]
    for user, extra in queries:
        out = svc.recommend(user, 5, model="m", explain=True, extra=extra)
        assert len(out["items"]) == 5, out
        assert all(r["score"] is not None for r in out["items"]), out
        assert all("why" in r for r in out["items"])
    # The 2 unseen items of u0_0's cluster, plus the new one where the model can score it.
    got = [r["item"] for r in svc.recommend("u0_0", 20, model="m", category="genre0")["items"]]
    assert (NEW in got) == accepts, got
    assert len(got) == ITEMS_PER - 8 + accepts, got


def test_every_model_answers_after_a_new_item(
    fitted: Recommender, store_db: Path, rated_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    shutil.copy(rated_db if fitted.predicts_ratings else store_db, db)
    fitted.save(tmp_path / "model")
    settings = Settings(
        db=f"sqlite:///{db}",
        models=[f"m={tmp_path / 'model'}"],
        auth=False,
        warm_search=False,
        index="flat",  # embedding models answer through the retrieval index
        exact_limit=1,
    )
    accepts = fitted.accepts_new_items
    svc = Service(settings)
    svc.start()
    try:
        assert svc.put_item(NEW, dict(NEW_FIELDS))["created"]
        model = svc.registry.slot("m").model
        assert (NEW in model.items) == accepts
        _answers(svc, accepts)
    finally:
        svc.stop()
    # A service started after the item exists extends the model as it loads it.
    svc = Service(settings)
    svc.start()
    try:
        _answers(svc, accepts)
    finally:
        svc.stop()


def _without(hist: History, j: int) -> History:
    m = sp.lil_matrix(hist.matrix)
    m[0, j] = 0
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    seq = hist.sequences[0]
    return History(hist.users, m, [seq[seq != j]], hist.queries)


QUERIES = [
    Query(user="u0_0"),
    Query(user="u2_5"),
    Query(user="u3_1", items=["i5"]),
    Query(items=["i11", "i12", "i25"]),
    Query(items=["i30", "i31", "i32", "i33"]),
]


def test_named_history_items_lower_the_score_when_removed(fitted: Recommender) -> None:
    n = 5
    for q in QUERIES:
        hist = fitted.history_of([q])
        scores = np.asarray(fitted.score(hist), np.float64)[0]
        tol = score_margin(scores, hist.matrix.indices, n)
        for e in explain(fitted, q, n=n):
            i = fitted.items.index(e.item)
            if fitted.personalized:
                assert e.reasons, (fitted.name, q, e)
            for r in e.reasons:
                if r.kind != "history":
                    continue
                assert r.items and set(r.items) <= set(fitted.items.ids_of(hist.matrix.indices))
                for x in r.items:
                    without = float(fitted.score(_without(hist, fitted.items.index(x)))[0, i])
                    assert scores[i] - without > tol, (fitted.name, q, e.item, x)
