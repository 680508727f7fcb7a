"""Consent: a user may opt out of personalisation (answered with what anybody unknown gets)
and out of training (left out of every snapshot a model learns from), through the API and the
importer; both are honoured by the store, `Dataset.from_store`, retraining and the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmrec.data import Dataset
from lmrec.io import import_files
from lmrec.service import Settings
from lmrec.store import Store
from test_service import ADMIN, Server, fill_store, train


def test_training_opt_out_leaves_snapshots(store: Store, tmp_path: Path) -> None:
    inter = tmp_path / "i.csv"
    inter.write_text("user,item\na,x\na,y\nb,x\nc,y\n")
    people = tmp_path / "u.csv"
    people.write_text("user_id,consent_training,consent_personal,age\na,true,true,3\nb,no,1,4\n")
    import_files(store, interactions=inter, users=people)
    assert store.get("user", "b")["consent_training"] in (False, 0)
    assert store.get("user", "c")["consent_training"] in (True, 1)  # default: consent
    ds = Dataset.from_store(store)
    assert "b" not in ds.users and "a" in ds.users and ds.n_interactions == 3
    assert "age" in ds.user_features.attributes[ds.users.index("a")]
    everyone = Dataset.from_store(store, consent=False)
    assert "b" in everyone.users and everyone.n_interactions == 4
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,consent_training\nd,maybe\n")
    with pytest.raises(Exception, match="consent_training"):
        import_files(store, users=bad)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("consent")
    url = f"sqlite:///{tmp / 'store.db'}"
    fill_store(url, n_users=12, n_items=28)
    models = tmp / "models"
    train(url, "itemknn", models / "knn")
    s = Server(
        Settings(
            db=url,
            models=[f"knn={models / 'knn'}"],
            models_dir=str(models),
            api_keys={ADMIN: "admin"},
        )
    )
    yield s
    s.stop()


def test_personalisation_opt_out_through_the_api(srv: Server) -> None:
    with srv.client() as c:
        anon = c.get("/users/nobody/recommendations", params={"n": 5}).json()["items"]
        mine = c.get("/users/u3/recommendations", params={"n": 5}).json()
        assert mine["items"] != anon
        r = c.put("/users/u3", json={"consent_personal": False})
        assert r.status_code == 200, r.text
        assert c.get("/users/u3").json()["consent_personal"] is False
        for params in ({"n": 5}, {"n": 5, "explain": "true"}):  # fast path, then FastAPI
            got = c.get("/users/u3/recommendations", params=params).json()
            assert [x["item"] for x in got["items"]] == [x["item"] for x in anon]
            assert got["fallback"] == "no consent to personalisation"
        q = c.post("/recommendations", json={"user": "u3", "n": 5}).json()
        assert [x["item"] for x in q["items"]] == [x["item"] for x in anon]
        assert c.put("/users/u3", json={"consent_personal": True}).status_code == 200
        assert c.get("/users/u3/recommendations", params={"n": 5}).json()["items"] == mine["items"]


def test_training_opt_out_through_the_api(srv: Server) -> None:
    with srv.client() as c:
        assert c.put("/users/u5", json={"consent_training": False}).status_code == 200
        assert c.get("/users/u5").json()["consent_training"] is False
    with Store(srv.service.settings.db) as store:
        ds = Dataset.from_store(store)
    assert "u5" not in ds.users and "u4" in ds.users
