"""The REST service end to end: a real uvicorn server on loopback, real HTTP (httpx), a real
store (SQLite and PostgreSQL), real models trained on a small synthetic catalogue."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import STORE_BACKENDS, new_store_url
from lmrec.data import Dataset
from lmrec.models import create_model
from lmrec.models.base import Query, Recommender
from lmrec.service import Settings, create_app
from lmrec.store import Store

GENRES = {
    "Action": "explosions car chase hero fights villain",
    "Comedy": "funny jokes laughter silly family",
    "Drama": "tears family loss love story",
    "Horror": "ghost haunted house scream blood",
}
NAMES = list(GENRES)
READ, WRITE, ADMIN = "read-key-123", "write-key-123", "admin-key-123"


def genre(i: int) -> str:
    return NAMES[i % 4]


def fill_store(url: str, n_users: int = 40, n_items: int = 40, seed: int = 0) -> None:
    """Users u0.. each like one genre (u % 4): 6 items of it and 1 random other, in time order."""
    rng = np.random.default_rng(seed)
    with Store(url) as store, store.begin() as conn:
        store.upsert(
            conn,
            "item",
            [
                {
                    "ext_id": f"i{i}",
                    "title": f"{genre(i)} movie {i}",
                    "description": GENRES[genre(i)],
                    "categories": [genre(i)],
                }
                for i in range(n_items)
            ],
        )
        store.upsert(
            conn,
            "user",
            [{"ext_id": f"u{u}", "attributes": {"age": 20 + u}} for u in range(n_users)],
        )
        umap = store.id_map(conn, "user", [f"u{u}" for u in range(n_users)])
        imap = store.id_map(conn, "item", [f"i{i}" for i in range(n_items)])
        rows = []
        for u in range(n_users):
            same = [i for i in range(n_items) if i % 4 == u % 4]
            chosen = [*rng.choice(same, 6, replace=False).tolist(), int(rng.integers(n_items))]
            for t, i in enumerate(chosen):
                rows.append((umap[f"u{u}"], imap[f"i{i}"], "view", 1000.0 + 10 * t + u))
        uid, iid, ev, ts = zip(*rows, strict=True)
        store.insert_interactions(
            conn,
            np.array(uid),
            np.array(iid),
            np.array(ev),
            np.full(len(uid), np.nan),
            np.array(ts),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving `create_app(settings)` in a thread on a free loopback port."""

    def __init__(self, settings: Settings, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 60:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    @property
    def service(self):
        return self.app.state.service

    def client(self, key: str | None = ADMIN) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def train(url: str, name: str, out: Path, **params) -> Path:
    with Store(url) as store:
        ds = Dataset.from_store(store)
    create_model(name, **params).fit(ds).save(out)
    return out


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("service")
    url = new_store_url(request, request.param, tmp)
    fill_store(url)
    models = tmp / "models"
    models.mkdir()
    train(url, "itemknn", models / "knn")
    train(url, "lmcontent", models / "lmc", encoder="tfidf:32")
    train(url, "als", models / "als", factors=8, iterations=5)
    train(url, "popularity", models / "pop")
    settings = Settings(
        db=url,
        models=[f"knn={models / 'knn'}", f"lmc={models / 'lmc'}", f"als={models / 'als'}"],
        models_dir=str(models),
        api_keys={READ: "read", WRITE: "write", ADMIN: "admin"},
        index="flat",  # embedding models (als) retrieve through the FAISS index
        flush_ms=1.0,
    )
    srv = Server(settings)
    # Wait until the extra versions finish loading in the background.
    with srv.client() as c:
        for _ in range(200):
            if len(c.get("/health").json()["loaded"]) >= 3:
                break
            time.sleep(0.05)
    yield srv
    srv.stop()


def recs(c: httpx.Client, user: str, **params) -> list[str]:
    r = c.get(f"/users/{user}/recommendations", params=params)
    assert r.status_code == 200, r.text
    return [x["item"] for x in r.json()["items"]]


# -- basics ---------------------------------------------------------------------------------------


def test_health_docs_and_metrics(server: Server) -> None:
    with server.client(None) as c:
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["active"] == "knn"
        assert set(h["loaded"]) >= {"knn", "lmc", "als"}
        spec = c.get("/openapi.json").json()
        assert "/users/{user_id}/recommendations" in spec["paths"]
        assert c.get("/docs").status_code == 200
    with server.client(READ) as c:
        recs(c, "u1")
        text = c.get("/metrics").text
        assert (
            'lmrec_requests_total{method="GET",route="/users/{user_id}/recommendations",status="200"}'
            in text
        )
        assert "lmrec_request_seconds_bucket" in text and "lmrec_feedback_committed_total" in text


def test_api_keys_and_scopes(server: Server) -> None:
    with server.client(None) as c:
        r = c.get("/users/u1/recommendations")
        assert r.status_code == 401 and "API key" in r.json()["detail"]
    with server.client("not-a-key-at-all") as c:
        assert c.get("/users/u1/recommendations").status_code == 401
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {READ}"}) as c:
        assert c.get("/users/u1/recommendations").status_code == 200
    with server.client(READ) as c:
        r = c.post("/feedback", json={"user": "u1", "item": "i1"})
        assert r.status_code == 403 and "'write' is needed" in r.json()["detail"]
    with server.client(WRITE) as c:
        assert c.post("/models/knn/activate").status_code == 403


def test_recommendations_exclude_history_and_follow_taste(server: Server) -> None:
    with server.client(READ) as c:
        r = c.get("/users/u2/recommendations", params={"n": 5}).json()
        assert r["model"] == "knn" and r["fallback"] is None and len(r["items"]) == 5
        seen = set(server.service.get_user("u2") and _history(server, "u2"))
        got = [x["item"] for x in r["items"]]
        assert not seen & set(got)
        # u2 likes Drama (2 % 4): most of its recommendations are Drama items.
        assert sum(int(i[1:]) % 4 == 2 for i in got) >= 3, got
        for model in ("lmc", "als"):
            got = recs(c, "u2", n=5, model=model)
            assert len(got) == 5 and not seen & set(got), model
        # Unknown user: the popularity answer, marked as a fallback.
        r = c.get("/users/nobody/recommendations").json()
        assert r["fallback"] == "popularity" and len(r["items"]) == 10


def _history(server: Server, user: str) -> list[str]:
    with Store(server.service.settings.db) as store:
        ds = Dataset.from_store(store)
    u = ds.users.index(user)
    return ds.items.ids_of(ds.sequence(u))


def test_category_filter_and_validation(server: Server) -> None:
    with server.client(READ) as c:
        got = recs(c, "u1", n=5, category="Horror")
        assert got and all(int(i[1:]) % 4 == 3 for i in got)
        for bad in ({"n": 0}, {"n": 100000}, {"n": "ten"}, {"diversity": 2}):
            r = c.get("/users/u1/recommendations", params=bad)
            assert r.status_code == 422 and r.json()["detail"].startswith("invalid request"), bad
        r = c.get("/users/u1/recommendations", params={"model": "nope"})
        assert r.status_code == 404 and "unknown model version 'nope'" in r.json()["detail"]
        r = c.post(
            "/recommendations", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        r = c.post("/recommendations", json={"items": ["i1"], "events": ["view", "view"]})
        assert r.status_code == 422 and "events must be as long as items" in r.text
        r = c.post("/recommendations", json={"items": ["i1"], "surprise": 1})
        assert r.status_code == 422 and "surprise" in r.text
        big = {"items": ["x" * 200] * 900, "text": "y" * 10_000}
        r = c.post("/recommendations", content=json.dumps(big) * 10)
        assert r.status_code == 413
    with server.client(WRITE) as c:
        for bad in (
            {"user": "", "item": "i1"},
            {"user": "u1", "item": "i1", "ts": -5},
            {"user": "u1", "item": "i1", "event": "has space"},
            {"user": "u1"},
        ):
            r = c.post("/feedback", json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert c.post("/feedback/batch", json={"events": []}).status_code == 422


def test_fast_path_answers_like_fastapi(server: Server) -> None:
    """Plain user recommendations and single feedback events are answered in front of FastAPI
    (lmrec.service.fast `FastPath`); anything else goes through FastAPI. Both give the same."""
    with server.client(READ) as c:
        fast = c.get("/users/u3/recommendations", params={"n": 4, "exclude_seen": "true"})
        # "yes" and an unknown parameter are left to FastAPI (which accepts both).
        slow = c.get("/users/u3/recommendations", params={"n": 4, "exclude_seen": "yes", "x": 1})
        assert fast.status_code == slow.status_code == 200
        assert fast.json() == slow.json() and len(fast.json()["items"]) == 4
        a = c.get("/users/u3/recommendations", params={"model": "nope"})
        b = c.get("/users/u3/recommendations", params={"model": "nope", "x": 1})
        assert a.status_code == b.status_code == 404 and a.json() == b.json()
    with server.client(WRITE) as c:
        r = c.post("/feedback", json={"user": "fp-1", "item": "i1", "ts": 1.7e9})
        body = json.dumps({"user": "fp-1", "item": "i2", "ts": 1.7e9}).encode()
        # A chunked body (no content-length) goes the FastAPI way.
        r2 = c.post(
            "/feedback",
            content=iter([body[:5], body[5:]]),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == r2.status_code == 200
        assert r.json() == r2.json() == {"accepted": 1, "added": 1}
        # A body that fails validation is replayed to FastAPI for its 422 message.
        r = c.post("/feedback", json={"user": "fp-1", "item": "i1", "ts": "soon"})
        assert r.status_code == 422 and "ts" in r.json()["detail"]
    with server.client(ADMIN) as c:
        assert set(_history(server, "fp-1")) == {"i1", "i2"}


_USERS = st.sampled_from(["u0", "u3", "u17", "u39", "nobody", "shop/1"])
_REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "n": st.integers(1, 45).map(str),
        "model": st.sampled_from(["knn", "als", "lmc", "nope"]),
        "exclude_seen": st.sampled_from(["true", "false", "1", "0"]),
        "category": st.sampled_from([*NAMES, "zzz"]),
    },
)


def test_fast_path_is_fastapi_and_recommend_for_any_request(server: Server) -> None:
    """For any plain request, the fast path (lmrec.service.fast `FastPath`, batched through
    `recommend_users`) answers as FastAPI does (an unknown parameter sends a request that way)
    and as `Service.recommend` does called alone: same status, same JSON."""
    from lmrec.errors import LmrecError
    from lmrec.service.core import NotFound

    svc = server.service

    @settings(max_examples=40, deadline=None)
    @given(user=_USERS, params=_REQUESTS)
    def check(c: httpx.Client, user: str, params: dict[str, str]) -> None:
        path = f"/users/{user}/recommendations"
        fast = c.get(path, params=params)
        slow = c.get(path, params={**params, "via": "fastapi"})
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), params
        try:
            want = svc.recommend(
                user,
                int(params.get("n", 10)),
                model=params.get("model"),
                exclude_seen=params.get("exclude_seen", "true") in ("true", "1"),
                category=params.get("category"),
            )
            assert (fast.status_code, fast.json()) == (200, want), params
        except NotFound:
            assert fast.status_code == 404, params
        except LmrecError:
            assert fast.status_code == 400, params

    with server.client(READ) as c:
        check(c)


def test_explanations(server: Server) -> None:
    with server.client(READ) as c:
        r = c.get("/users/u2/recommendations", params={"n": 3, "explain": True}).json()
        for x in r["items"]:
            why = x["why"]
            assert why["sentence"] and why["reasons"][0]["kind"] == "history"
            # The items named as reasons are in u2's history.
            assert set(why["reasons"][0]["items"]) <= set(_history(server, "u2"))
        r = c.post("/recommendations", json={"items": ["i3"], "n": 2, "explain": True}).json()
        assert all("i3" in x["why"]["reasons"][0]["items"] for x in r["items"])


def test_diversity_reranks(server: Server) -> None:
    with server.client(READ) as c:
        plain = recs(c, "u0", n=8, model="lmc")
        diverse = recs(c, "u0", n=8, model="lmc", diversity=0.9)
        genres = lambda items: len({int(i[1:]) % 4 for i in items})  # noqa: E731
        assert len(diverse) == 8 and genres(diverse) > genres(plain), (plain, diverse)


def test_reranking_parameters_are_the_rerank_config(server: Server) -> None:
    """A request's re-ranking parameters replace fields of the one `RerankConfig` default that
    the CLI and the evaluation use: the service's list is `diversify(model, config)`'s."""
    from lmrec.rerank import RerankConfig, diversify

    slot = server.service.registry.slots["knn"]
    model: Recommender = Recommender.load(slot.path)
    params = {"diversity": 0.6, "method": "mmr", "similarity": "jaccard", "pool": 15}
    with server.client(READ) as c:
        for user in ("u5", "u6"):
            want = diversify(model, RerankConfig(**params)).recommend(user, 6).items
            assert recs(c, user, model="knn", n=6, **params) == want, user
            body = {"user": user, "n": 6, "model": "knn", **params}
            r = c.post("/recommendations", json=body)
            assert [x["item"] for x in r.json()["items"]] == want
        # The defaults are the config's: maxsum over category cosine, a pool of 50.
        want = diversify(model, RerankConfig(diversity=0.6)).recommend("u5", 6).items
        assert recs(c, "u5", model="knn", n=6, diversity=0.6) == want
        for bad in ({"method": "zigzag"}, {"pool": 0}, {"relevance": "prob"}):
            r = c.get("/users/u5/recommendations", params={"diversity": 0.3, **bad})
            assert r.status_code == 422, (bad, r.text)


# -- live feedback --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["knn", "lmc", "als"])
def test_feedback_changes_the_next_answer(server: Server, model: str) -> None:
    user = f"u{4 * 3 + 1}-fb-{model}"  # a new user: no snapshot history
    with server.client(WRITE) as c:
        before = c.get(f"/users/{user}/recommendations", params={"model": model}).json()
        assert before["fallback"] == "popularity"
        horror = ["i3", "i7", "i11"]
        r = c.post(
            "/feedback/batch",
            json={"events": [{"user": user, "item": i, "event": "view"} for i in horror]},
        )
        assert r.status_code == 200 and r.json() == {"accepted": 3, "added": 3}
        after = c.get(f"/users/{user}/recommendations", params={"model": model, "n": 5}).json()
        assert after["fallback"] is None
        got = [x["item"] for x in after["items"]]
        assert not set(horror) & set(got)  # seen items are excluded at once
        assert sum(int(i[1:]) % 4 == 3 for i in got) >= 4, got  # and the taste followed


def test_feedback_of_known_user_moves_their_list(server: Server) -> None:
    with server.client(WRITE) as c:
        before = recs(c, "u5", n=10)  # u5 likes Comedy
        events = [{"user": "u5", "item": f"i{i}", "event": "purchase"} for i in (2, 6, 10, 14, 18)]
        assert c.post("/feedback/batch", json={"events": events}).status_code == 200
        after = recs(c, "u5", n=10)
        assert after != before
        assert sum(int(i[1:]) % 4 == 2 for i in after) > sum(int(i[1:]) % 4 == 2 for i in before)


def test_concurrent_feedback_loses_nothing(server: Server) -> None:
    with Store(server.service.settings.db) as store:
        start = store.counts()["interactions"]
    n_clients, per_client = 20, 15

    def client_run(k: int) -> int:
        added = 0
        with server.client(WRITE) as c:
            for j in range(per_client):
                if j % 3 == 0:
                    body = {
                        "events": [
                            {"user": f"c{k}", "item": f"i{(j + x) % 40}", "event": "click"}
                            for x in range(3)
                        ]
                    }
                    r = c.post("/feedback/batch", json=body)
                else:
                    r = c.post(
                        "/feedback", json={"user": f"c{k}", "item": f"i{j % 40}", "event": "view"}
                    )
                assert r.status_code == 200, r.text
                added += r.json()["added"]
        return added

    with ThreadPoolExecutor(n_clients) as pool:
        added = sum(pool.map(client_run, range(n_clients)))
    expected = n_clients * (per_client // 3 * 3 + (per_client - per_client // 3))
    assert added == expected
    with Store(server.service.settings.db) as store:
        assert store.counts()["interactions"] - start == expected
    # Everything acknowledged is live for the next answer too.
    assert len(server.service.feed.of("c0")) == per_client // 3 * 3 + (per_client - per_client // 3)


# -- catalogue ------------------------------------------------------------------------------------


def test_new_item_is_recommended_and_searchable_at_once(server: Server) -> None:
    with server.client(WRITE) as c:
        r = c.put(
            "/items/brand-new",
            json={
                "title": "Haunted house of screams",
                "description": "ghost haunted house scream blood",
                "categories": ["Horror"],
            },
        )
        assert r.status_code == 201 and r.json()["created"]
        assert c.get("/items/brand-new").json()["categories"] == ["Horror"]
        # The text model encodes it at once: a horror fan gets it (u3 likes Horror).
        got = recs(c, "u3", n=5, model="lmc", category="Horror")
        assert "brand-new" in got, got
        q = c.post("/recommendations", json={"items": ["i3", "i7"], "model": "lmc", "n": 5}).json()
        assert "brand-new" in [x["item"] for x in q["items"]]
        # Search and similar items (the collaborative model never saw it: text path).
        # (The first search may wait for the index build: the encoder loads on a busy machine.)
        hits = c.get("/search", params={"q": "haunted ghost scream"}, timeout=300).json()["items"]
        assert "brand-new" in [h["item"] for h in hits[:5]]
        sim = c.get("/items/brand-new/similar", params={"n": 5}).json()
        assert sim["source"] == "text" and all(
            int(h["item"][1:]) % 4 == 3 for h in sim["items"][:3]
        )
        # Updating keeps one copy; deleting removes it from every answer.
        assert c.put("/items/brand-new", json={"title": "Haunted house 2"}).status_code == 200
        assert c.delete("/items/brand-new").status_code == 200
        assert "brand-new" not in recs(c, "u3", n=20, model="lmc")
        assert c.get("/items/brand-new").status_code == 404
        assert c.get("/items/brand-new/similar").status_code == 404
        hits = c.get("/search", params={"q": "haunted ghost scream", "n": 40}).json()["items"]
        assert "brand-new" not in [h["item"] for h in hits]


def test_deleted_item_is_never_recommended(server: Server) -> None:
    with server.client(WRITE) as c:
        top = recs(c, "u9", n=3)[0]
        assert c.delete(f"/items/{top}").status_code == 200
        for model in ("knn", "lmc", "als"):
            assert top not in recs(c, "u9", n=40, model=model)
        assert c.delete(f"/items/{top}").status_code == 404


def test_new_user_profile_personalises_without_feedback(server: Server) -> None:
    with server.client(WRITE) as c:
        pop = recs(c, "fresh", model="lmc", n=5)
        r = c.put("/users/fresh", json={"tags": ["ghost", "haunted", "scream"]})
        assert r.status_code == 201
        got = c.get("/users/fresh/recommendations", params={"model": "lmc", "n": 5}).json()
        assert got["fallback"] is None
        items = [x["item"] for x in got["items"]]
        assert items != pop and sum(int(i[1:]) % 4 == 3 for i in items) >= 4, items
        q = c.post("/recommendations", json={"text": "funny jokes", "model": "lmc", "n": 5}).json()
        assert sum(int(x["item"][1:]) % 4 == 1 for x in q["items"]) >= 4


def test_deleting_a_user_erases_them(server: Server) -> None:
    with server.client(WRITE) as c:
        unknown = c.get("/users/never-seen/recommendations").json()
        assert (
            c.post(
                "/feedback/batch",
                json={"events": [{"user": "u6", "item": f"i{i}"} for i in (1, 5, 9)]},
            ).status_code
            == 200
        )
        assert recs(c, "u6") != [x["item"] for x in unknown["items"]]
        assert c.delete("/users/u6").status_code == 200
        with Store(server.service.settings.db) as store:
            assert store.get("user", "u6") is None
            ds = Dataset.from_store(store)
            assert "u6" not in ds.users
        for model in ("knn", "lmc", "als"):
            after = c.get("/users/u6/recommendations", params={"model": model}).json()
            ref = c.get("/users/never-seen/recommendations", params={"model": model}).json()
            assert after["items"] == ref["items"] and after["fallback"] == "popularity", model
        assert c.get("/users/u6").status_code == 404
        assert c.delete("/users/u6").status_code == 404


def test_ids_with_slashes_are_addressable(server: Server) -> None:
    """Shop SKUs and user ids may contain '/': sent percent-encoded (or plain), they name the
    same item or user on every route, fast path included."""
    with server.client(WRITE) as c:
        r = c.put("/items/sku%2F7", json={"title": "Ghost scream", "categories": ["Horror"]})
        assert r.status_code == 201, r.text
        assert c.get("/items/sku%2F7").json()["item"] == "sku/7"
        assert c.get("/items/sku/7").json()["item"] == "sku/7"
        assert c.get("/items/sku%2F7/similar", params={"n": 3}).status_code == 200
        assert c.put("/users/shop%2F42", json={"tags": ["ghost"]}).status_code == 201
        assert c.get("/users/shop%2F42").json()["user"] == "shop/42"
        fb = {"user": "shop/42", "item": "sku/7", "ts": 1.7e9}
        assert c.post("/feedback", json=fb).json() == {"accepted": 1, "added": 1}
        for params in ({"n": 5, "model": "knn"}, {"n": 5, "model": "knn", "explain": "true"}):
            r = c.get("/users/shop%2F42/recommendations", params=params)  # fast, then slow
            assert r.status_code == 200 and r.json()["user"] == "shop/42", r.text
            assert "sku/7" not in [x["item"] for x in r.json()["items"]]  # seen
        assert set(_history(server, "shop/42")) == {"sku/7"}
        assert c.delete("/users/shop%2F42").status_code == 200
        assert c.get("/users/shop/42").status_code == 404
        assert c.delete("/items/sku/7").status_code == 200
        assert c.get("/items/sku%2F7").status_code == 404


# -- retrieval index ------------------------------------------------------------------------------


def test_index_answers_like_exact_scoring(server: Server) -> None:
    slot = server.service.registry.slots["als"]
    assert slot.index is not None and slot.index.kind == "flat"
    model: Recommender = Recommender.load(slot.path)
    with server.client(READ) as c:
        for user in ("u10", "u11", "u12"):
            via_index = recs(c, user, model="als", n=5)
            exact = model.recommend(Query(user=user), 5).items
            assert via_index == exact, user


# -- model versions -------------------------------------------------------------------------------


def test_hot_swap_keeps_answering(server: Server) -> None:
    stop = threading.Event()
    codes: list[int] = []

    def hammer() -> None:
        with server.client(READ) as c:
            while not stop.is_set():
                codes.append(c.get("/users/u1/recommendations").status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with server.client(ADMIN) as c:
            r = c.post("/models/pop/activate")
            assert r.status_code == 202
            for _ in range(400):
                if c.get("/health").json()["active"] == "pop":
                    break
                time.sleep(0.02)
            assert c.get("/users/u1/recommendations").json()["model"] == "pop"
            versions = {v["version"]: v for v in c.get("/models").json()["versions"]}
            assert versions["pop"]["state"] == "loaded" and versions["knn"]["state"] == "loaded"
            r = c.post("/models/knn/activate", params={"wait": True})
            assert r.status_code == 200 and r.json()["active"] == "knn"
            assert c.post("/models/nope/activate").status_code == 404
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert codes and set(codes) == {200}


def test_retrain_endpoint_activates_new_version(server: Server) -> None:
    from lmrec.service import schemas as out

    user, horror = "retrain-1", ["i3", "i7", "i11", "i15"]
    with server.client(ADMIN) as c:
        events = [{"user": user, "item": i, "event": "view", "ts": 2000.0 + j}
                  for j, i in enumerate(horror)]  # fmt: skip
        r = c.post("/feedback/batch", json={"events": events})
        assert r.json() == {"accepted": 4, "added": 4}, r.text
        r = c.post("/models/train", json={"model": "ease", "params": {"reg": "high"}})
        assert r.status_code == 400 and "invalid parameters for model 'ease'" in r.json()["detail"]
        r = c.post("/models/train", json={"model": "ease", "params": {"reg": 1.0}})
        assert r.status_code == 202
        job = r.json()
        out.Job.model_validate(job)
        for _ in range(600):
            info = c.get(f"/models/jobs/{job['job']}").json()
            if info["state"] != "running":
                break
            time.sleep(0.05)
        assert info["state"] == "done", info
        out.Job.model_validate(info)
        assert c.get("/health").json()["active"] == job["version"]
        # The retrained version saw this test's feedback as training data.
        model = server.service.registry.slots[job["version"]].model
        assert user in model.users
        own = model.recommend(Query(user=user), 5)
        assert not set(horror) & set(own.items) and own.fallback is None
        assert sum(int(i[1:]) % 4 == 3 for i in own.items) >= 4, own.items
        r = c.get(f"/users/{user}/recommendations", params={"n": 5}).json()
        assert r["model"] == job["version"] and r["fallback"] is None
        assert [x["item"] for x in r["items"]] == own.items
        assert c.post("/models/knn/activate", params={"wait": True}).status_code == 200


def test_answers_have_the_documented_shapes(server: Server) -> None:
    """Every kind of answer, errors included, on the fast path and through FastAPI, is valid by
    the response model (lmrec.service.schemas: a missing or unknown field fails) that
    /openapi.json names for its route and status."""
    from lmrec.service import schemas as out

    with server.client(ADMIN) as c:
        spec = c.get("/openapi.json").json()["paths"]

        def check(method: str, path: str, route: str, model: type, status: int = 200, **kw):
            r = c.request(method, path, **kw)
            assert r.status_code == status, (method, path, r.text)
            body = model.model_validate(r.json())
            documented = spec[route][method.lower()]["responses"]
            code = str(status) if status >= 400 else next(k for k in documented if k[0] == "2")
            ref = documented[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] == model.__name__, (route, code, ref)
            return body

        rec = "/users/{user_id}/recommendations"
        check("GET", "/health", "/health", out.Health)
        assert check("GET", "/users/u1/recommendations", rec, out.Recommendations).items
        why = check("GET", "/users/u1/recommendations?n=3&explain=true", rec, out.Recommendations)
        assert all(x.why is not None and x.why.reasons for x in why.items)
        check("GET", "/users/u1/recommendations?n=3&diversity=0.5", rec, out.Recommendations)
        query = {"items": ["i3"], "n": 2, "explain": True}
        check("POST", "/recommendations", "/recommendations", out.Recommendations, json=query)
        check("GET", "/items/i1/similar?n=3", "/items/{item_id}/similar", out.Similar)
        check("GET", "/search?q=ghost%20house&n=3", "/search", out.SearchResults)
        item, user = "/items/{item_id}", "/users/{user_id}"
        check("PUT", "/items/shape-i", item, out.Written, 201, json={"title": "Shape"})
        check("GET", "/items/shape-i", item, out.Item)
        check("DELETE", "/items/shape-i", item, out.Deleted)
        check("PUT", "/users/shape-u", user, out.Written, 201, json={"tags": ["Drama"]})
        event = {"user": "shape-u", "item": "i1"}
        check("POST", "/feedback", "/feedback", out.FeedbackAccepted, json=event)
        batch = {"events": [event, {**event, "item": "i2"}]}
        check("POST", "/feedback/batch", "/feedback/batch", out.FeedbackAccepted, json=batch)
        assert check("GET", "/users/shape-u", user, out.User).events_since_start == 3
        check("DELETE", "/users/shape-u", user, out.Deleted)
        check("GET", "/models", "/models", out.Models)
        check("POST", "/models/knn/load?wait=true", "/models/{version}/load", out.VersionState)
        # Errors: the fast path's, FastAPI's, the key check's and the service's read alike.
        check("GET", "/users/u1/recommendations?model=nope", rec, out.ErrorBody, 404)
        assert check("GET", "/users/u1/recommendations?n=0", rec, out.ErrorBody, 422).errors
        no_key = {"headers": {"X-API-Key": "not-a-key-at-all"}}
        check("GET", "/users/u1/recommendations", rec, out.ErrorBody, 401, **no_key)
        check("GET", "/models/jobs/nope", "/models/jobs/{job_id}", out.ErrorBody, 404)
        bad = {"model": "ease", "params": {"reg": "high"}}
        check("POST", "/models/train", "/models/train", out.ErrorBody, 400, json=bad)


def test_refuses_to_start_without_keys(tmp_path: Path) -> None:
    from lmrec.errors import LmrecError

    with pytest.raises(LmrecError, match="no API keys configured"):
        create_app(Settings(db=f"sqlite:///{tmp_path / 's.db'}"))
    with pytest.raises(LmrecError, match="not a saved lmrec model"):
        create_app(
            Settings(db=f"sqlite:///{tmp_path / 's.db'}", auth=False, models=[str(tmp_path)])
        )
