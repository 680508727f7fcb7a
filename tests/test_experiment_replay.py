"""The whole A/B loop on real data: ML-100K's held-out test interactions replayed through the
real service (arm A popularity, arm B EASE; each user's newest rating held out); the sequential test picks EASE, and a 50/50 split
broken by an arm whose model was not ready for the first part of the traffic is flagged by the
sample-ratio check."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.experiments.simulate import held_out, replay, write_store
from lmrec.models import create_model
from lmrec.service import Settings
from lmrec.store import Store
from test_service import ADMIN, READ, WRITE, Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replay_server(
    ml100k: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, set[str]]]]:
    tmp: Path = tmp_path_factory.mktemp("replay")
    split = leave_one_out(ml100k, valid=False)  # each user's newest rating is held out
    url = f"sqlite:///{tmp / 'store.db'}"
    with Store(url) as store:
        write_store(store, split.train)
    models = tmp / "models"
    create_model("popularity").fit(split.train).save(models / "pop")
    ease = create_model("ease").fit(split.train)
    ease.save(models / "ease")
    ease.save(models / "ease-late")  # loaded only halfway through the broken experiment
    srv = Server(
        Settings(
            db=url,
            models=[f"pop={models / 'pop'}", f"ease={models / 'ease'}"],
            models_dir=str(models),
            api_keys={READ: "read", WRITE: "write", ADMIN: "admin"},
            warm_search=False,
            flush_ms=1.0,
        )
    )
    with srv.client() as c:
        for _ in range(400):
            if {"pop", "ease"} <= set(c.get("/health").json()["loaded"]):
                break
            time.sleep(0.05)
    yield srv, held_out(split.test)
    srv.stop()


def _experiment(srv: Server, name: str, b_model: str) -> None:
    body = {
        "name": name,
        "arms": [
            {"name": "A", "model": "pop", "share": 0.5},
            {"name": "B", "model": b_model, "share": 0.5},
        ],
    }
    with srv.client(ADMIN) as c:
        r = c.post("/experiments", json=body)
        assert r.status_code == 201, r.text


def test_replayed_ml100k_picks_ease_over_popularity(replay_server) -> None:
    srv, held = replay_server
    _experiment(srv, "pop-vs-ease", "ease")
    res = replay(srv.url, held, read_key=READ, write_key=WRITE, clients=4)  # 943 users
    assert res.requests == len(held) == 943 and set(res.by_arm) == {"A", "B"}
    with srv.client(READ) as c:
        rep = c.get("/experiments/pop-vs-ease").json()
    with srv.client(ADMIN) as c:
        assert c.post("/experiments/pop-vs-ease/stop").status_code == 200
    arms = {a["arm"]: a for a in rep["arms"]}
    assert rep["exposures"] == 943 and arms["A"]["exposures"] == res.by_arm["A"]
    assert arms["A"]["clicks"] == res.clicks_by_arm["A"]  # one held-out item: one click at most
    assert arms["B"]["clicks"] == res.clicks_by_arm["B"]
    a_lo, a_hi = arms["A"]["ctr_ci"]
    b_lo, b_hi = arms["B"]["ctr_ci"]
    assert a_lo < arms["A"]["ctr"] < a_hi and b_lo < arms["B"]["ctr"] < b_hi
    assert arms["B"]["ctr"] > arms["A"]["ctr"] and b_lo > a_hi, arms
    [test] = rep["tests"]
    assert test["significant"] and test["p_value"] < 0.05 and test["ci"][0] > 0
    assert not rep["srm"]["mismatch"], rep["srm"]
    assert rep["decision"]["action"] == "stop" and rep["decision"]["winner"] == "B"


def test_a_broken_split_is_flagged_by_the_sample_ratio_check(replay_server) -> None:
    srv, held = replay_server
    _experiment(srv, "broken", "ease-late")
    users = sorted(held)
    first, rest = users[:250], users[250:]
    # Arm B's version is not loaded yet: its users are served by the active version.
    early = replay(srv.url, held, read_key=READ, write_key=WRITE, users=first)
    assert set(early.by_arm) == {"A", "B~fallback"}
    with srv.client(ADMIN) as c:
        assert c.post("/models/ease-late/load", params={"wait": True}).status_code == 200
    replay(srv.url, held, read_key=READ, write_key=WRITE, users=rest)
    with srv.client(READ) as c:
        rep = c.get("/experiments/broken").json()
    arms = {a["arm"]: a for a in rep["arms"]}
    assert arms["B"]["units"] < 0.45 * (arms["A"]["units"] + arms["B"]["units"])  # not 50%
    assert rep["other_arms"]["B~fallback"] == early.by_arm["B~fallback"]
    assert rep["srm"]["mismatch"] and rep["srm"]["p_value"] < 1e-3
    assert rep["decision"]["action"] == "investigate"
