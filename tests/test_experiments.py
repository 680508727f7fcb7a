"""A/B experiments: assignment, the statistics, the store's exposure log, and the service end to
end (real uvicorn, real HTTP, real SQLite/PostgreSQL, real models)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lmrec.cli import main
from lmrec.errors import LmrecError, StoreError
from lmrec.experiments import ExperimentConfig, assign, msprt, srm_check, wilson
from lmrec.service import Settings
from lmrec.service.errors import NotFound
from lmrec.store import Store
from test_service import ADMIN, READ, WRITE, Server, fill_store, train


def config(**kw) -> ExperimentConfig:
    base = {"name": "e1", "arms": [{"name": "A", "share": 0.5}, {"name": "B", "share": 0.5}]}
    return ExperimentConfig.parse({**base, **kw})


# -- assignment and configuration -----------------------------------------------------------------


def test_assignment_is_sticky_follows_shares_and_is_independent_across_experiments() -> None:
    cfg = config(arms=[{"name": "A", "share": 0.3}, {"name": "B", "share": 0.7}])
    units = [f"user-{k}" for k in range(20_000)]
    arms = [assign(cfg, u) for u in units]
    assert arms == [assign(cfg, u) for u in units]  # same unit, same arm, every time
    share_a = arms.count("A") / len(arms)
    assert abs(share_a - 0.3) < 0.015, share_a
    other = [assign(cfg.model_copy(update={"name": "e2"}), u) for u in units]
    both_a = sum(a == b == "A" for a, b in zip(arms, other, strict=True)) / len(units)
    assert abs(both_a - 0.09) < 0.01, both_a  # 0.3 * 0.3: the splits are independent
    resalted = [assign(cfg.model_copy(update={"salt": "other"}), u) for u in units]
    assert resalted != arms


def test_config_errors_say_what_is_wrong() -> None:
    with pytest.raises(LmrecError, match="shares must add up to 1"):
        config(arms=[{"name": "A", "share": 0.5}, {"name": "B", "share": 0.6}])
    with pytest.raises(LmrecError, match="arm names must be unique"):
        config(arms=[{"name": "A", "share": 0.5}, {"name": "A", "share": 0.5}])
    with pytest.raises(LmrecError, match="arms"):
        config(arms=[{"name": "A", "share": 1.0}])
    with pytest.raises(LmrecError, match=r"nope\.json"):
        ExperimentConfig.parse("nope.json")


# -- statistics -----------------------------------------------------------------------------------


def _looks(rng: np.random.Generator, p_a: float, p_b: float, n: int = 3000, k: int = 60):
    a, b = rng.random(n) < p_a, rng.random(n) < p_b
    at = np.linspace(50, n, k).astype(int)
    return at, np.cumsum(a)[at - 1], at, np.cumsum(b)[at - 1]


def test_msprt_keeps_its_error_rate_under_continuous_monitoring_where_a_z_test_does_not() -> None:
    rng = np.random.default_rng(7)
    msprt_rejects = z_rejects = 0
    reps = 300
    for _ in range(reps):
        na, sa, nb, sb = _looks(rng, 0.1, 0.1)
        msprt_rejects += msprt(na, sa, nb, sb, alpha=0.05, tau=0.05).significant
        pa, pb = sa / na, sb / nb
        pool = (sa + sb) / (na + nb)
        z = (pb - pa) / np.sqrt(pool * (1 - pool) * (1 / na + 1 / nb))
        z_rejects += bool((np.abs(z) > 1.96).any())  # a daily look at a fixed-horizon test
    assert msprt_rejects / reps <= 0.05
    assert z_rejects / reps > 0.15  # peeking at the z-test inflates its 5% several times
    power = sum(msprt(*_looks(rng, 0.1, 0.14)).significant for _ in range(100))
    assert power >= 80


def test_wilson_interval_and_always_valid_interval_cover_the_truth() -> None:
    lo, hi = wilson(30, 100)
    assert lo < 0.3 < hi and lo > 0.2 and hi < 0.4
    assert wilson(0, 0) == (0.0, 1.0)
    rng = np.random.default_rng(1)
    r = msprt(*_looks(rng, 0.1, 0.2))
    assert r.ci_low < 0.1 < r.ci_high and r.significant and r.p_values == sorted(r.p_values)[::-1]


def test_sample_ratio_check() -> None:
    assert srm_check([5000, 5040], [0.5, 0.5])[1] > 0.5
    assert srm_check([5000, 4600], [0.5, 0.5])[1] < 1e-3
    assert srm_check([2000, 8100], [0.2, 0.8])[1] > 0.05
    assert srm_check([0, 0], [0.5, 0.5]) == (0.0, 1.0)


# -- the store ------------------------------------------------------------------------------------


def test_store_keeps_experiments_and_exposures(store: Store) -> None:
    store.put_experiment("e1", config().dumps(), 100.0)
    with pytest.raises(StoreError, match="exists already"):
        store.put_experiment("e1", config().dumps(), 101.0)
    rows = [
        {
            "experiment": "e1",
            "arm": "AB"[k % 2],
            "unit": f"u{k}",
            "items": json.dumps(["i1", "i2"]),
            "request_id": f"r{k}",
            "ts": 200.0 + k,
        }
        for k in range(5)
    ]
    assert store.add_exposures(rows) == 5
    assert store.add_exposures(rows[:2]) == 0  # a retried write adds nothing
    got = store.read_exposures("e1")
    assert [r[1] for r in got] == [f"u{k}" for k in range(5)] and got[0][0] == "A"
    assert store.count_exposures() == {"e1": 5}
    assert store.stop_experiment("e1", 300.0) and not store.stop_experiment("e1", 301.0)
    [row] = store.read_experiments()
    assert row["stopped_at"] == 300.0 and ExperimentConfig.model_validate_json(row["config"])


# -- the service ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("experiments")
    url = f"sqlite:///{tmp / 'store.db'}"
    fill_store(url, n_users=60)
    models = tmp / "models"
    models.mkdir()
    train(url, "itemknn", models / "knn")
    train(url, "popularity", models / "pop")
    srv = Server(
        Settings(
            db=url,
            models=[f"knn={models / 'knn'}", f"pop={models / 'pop'}"],
            api_keys={READ: "read", WRITE: "write", ADMIN: "admin"},
            flush_ms=1.0,
        )
    )
    with srv.client() as c:
        for _ in range(200):
            if len(c.get("/health").json()["loaded"]) >= 2:
                break
            time.sleep(0.05)
    yield srv
    srv.stop()


def test_experiment_routes_answers_logs_exposures_and_reports(ab_server: Server) -> None:
    body = {
        "name": "knn-vs-pop",
        "arms": [
            {"name": "A", "model": "pop", "share": 0.5},
            {"name": "B", "model": "knn", "share": 0.5},
        ],
        "min_exposures": 10,
    }
    with ab_server.client(READ) as c:
        assert c.post("/experiments", json=body).status_code == 403
    with ab_server.client(ADMIN) as c:
        bad = {**body, "arms": [{"name": "A", "model": "nope", "share": 1.0}, body["arms"][1]]}
        assert c.post("/experiments", json=bad).status_code == 422  # shares add up to 2
        r = c.post(
            "/experiments",
            json={
                **body,
                "name": "x",
                "arms": [{"name": "A", "model": "nope", "share": 0.5}, body["arms"][1]],
            },
        )
        assert r.status_code == 404 and "nope" in r.json()["detail"]
        r = c.post("/experiments", json=body)
        assert r.status_code == 201 and r.json()["state"] == "running", r.text
        assert c.post("/experiments", json=body).status_code == 400  # exists already
    seen: dict[str, str] = {}
    with ab_server.client(READ) as c, ab_server.client(WRITE) as w:
        for rep in range(2):
            for u in range(60):
                user = f"u{u}"
                got = c.get(f"/users/{user}/recommendations", params={"n": 5}).json()
                tag = got["experiment"]
                assert tag["name"] == "knn-vs-pop" and len(tag["request_id"]) == 32
                assert got["model"] == {"A": "pop", "B": "knn"}[tag["arm"]]
                assert seen.setdefault(user, tag["arm"]) == tag["arm"]  # sticky
                if rep == 0 and tag["arm"] == "B":  # B's users click the first item
                    r = w.post(
                        "/feedback",
                        json={"user": user, "item": got["items"][0]["item"], "event": "click"},
                    )
                    assert r.status_code == 200
        # An explicit model is outside the experiment; anonymous queries go by session.
        assert (
            "experiment" not in c.get("/users/u1/recommendations", params={"model": "knn"}).json()
        )
        anon = c.post("/recommendations", json={"items": ["i1"], "session": "s-1"}).json()
        assert (
            anon["experiment"]["arm"]
            == c.post("/recommendations", json={"items": ["i2"], "session": "s-1"}).json()[
                "experiment"
            ]["arm"]
        )
        rep = c.get("/experiments/knn-vs-pop").json()
        listed = c.get("/experiments").json()["experiments"]
        assert [e["name"] for e in listed] == ["knn-vs-pop"]
    arms = {a["arm"]: a for a in rep["arms"]}
    assert rep["exposures"] == 122 and sum(a["units"] for a in arms.values()) == 61
    n_b = sum(a == "B" for a in seen.values())
    assert arms["A"]["clicks"] == 0 and arms["B"]["clicks"] == n_b
    assert (
        0 < arms["B"]["ctr"] < 1
        and arms["B"]["ctr_ci"][0] < arms["B"]["ctr"] < arms["B"]["ctr_ci"][1]
    )
    assert arms["B"]["ndcg_clicked"] == pytest.approx(arms["B"]["ctr"])  # clicks at rank 1
    assert not rep["srm"]["mismatch"]
    assert rep["tests"][0]["significant"] and rep["decision"]["winner"] == "B", rep["decision"]
    with ab_server.client(ADMIN) as c:
        assert c.post("/experiments/knn-vs-pop/stop").json()["state"] == "stopped"
        assert "experiment" not in c.get("/users/u1/recommendations").json()
        assert c.get("/experiments/nope").status_code == 404
    assert f"lmrec_exposures_written_total {122}" in _metrics(ab_server)


def test_batch_of_two_models_answers_each_request_as_alone(ab_server: Server) -> None:
    """`recommend_users` with requests for two versions (an A/B experiment's two model calls)
    runs the groups side by side; each answer equals `recommend` for that request alone,
    whatever the group threads, and a bad request fails alone."""
    svc = ab_server.service
    answers = svc.answers
    reqs = [(f"u{u}", 5, ("knn", "pop")[u % 2], True, None) for u in range(20)]
    reqs.append(("u3", 10_000, "knn", True, None))  # n above max_n: its own error only
    reqs.append(("u4", 5, "nope", True, None))  # unknown version: 404 for this row
    alone = [answers.recommend(u, n, model=m) for u, n, m, _, _ in reqs[:20]]
    try:
        for threads in (1, 2):
            answers.settings = svc.settings.model_copy(update={"group_threads": threads})
            got = answers.recommend_users(reqs)
            assert got[:20] == alone, threads
            assert {a["model"] for a in got[:20]} == {"knn", "pop"}
            assert isinstance(got[20], LmrecError) and "at most" in str(got[20])
            assert isinstance(got[21], NotFound)
        assert answers._executor is not None  # the two groups went to the pool
        answers.close()
        assert answers._executor is None and answers.recommend_users(reqs[:2])[0] == alone[0]
    finally:  # the module's server goes on with its own settings
        answers.settings = svc.settings
        answers.close()


def _metrics(srv: Server) -> str:
    with srv.client(READ) as c:
        return c.get("/metrics").text


def test_cli_creates_lists_reports_and_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    cfg = tmp_path / "exp.json"
    cfg.write_text(
        json.dumps(
            {"name": "cli-exp", "arms": [{"name": "A", "share": 0.5}, {"name": "B", "share": 0.5}]}
        )
    )
    assert main(["--db", db, "experiment", "create", str(cfg)]) == 0
    assert main(["--db", db, "experiment", "create", str(cfg)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["--db", db, "experiment", "list"]) == 0
    assert "cli-exp" in capsys.readouterr().out
    assert main(["--db", db, "experiment", "report", "cli-exp", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["exposures"] == 0 and rep["decision"]["action"] == "continue"
    assert main(["--db", db, "experiment", "stop", "cli-exp"]) == 0
    assert main(["--db", db, "experiment", "report", "cli-exp"]) == 0
    out = capsys.readouterr().out
    assert "stopped" in out and "sample-ratio" in out
    assert main(["--db", db, "experiment", "report", "nope"]) == 1


def test_exposure_log_retries_until_the_store_takes_the_rows(tmp_path: Path) -> None:
    from lmrec.service.experiments import ExposureLog
    from lmrec.store.schema import exposures

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    log = ExposureLog(store, flush_ms=1.0)
    log.start()
    exposures.drop(store.engine)  # the store refuses every write for a while
    for k in range(3):
        log.add(
            {
                "experiment": "e",
                "arm": "A",
                "unit": f"u{k}",
                "items": "[]",
                "request_id": f"r{k}",
                "ts": float(k),
            }
        )
    deadline = time.time() + 10
    while log.failures < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert log.failures >= 2 and log.queued() == 3
    exposures.create(store.engine)
    log.flush()
    log.stop()
    assert store.count_exposures() == {"e": 3} and log.lost == 0 and log.written == 3
    store.close()
