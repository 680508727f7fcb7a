"""Several service processes on one store: the shared event sequence (`StoreFollower`) on
every backend, and `lmrec serve --workers 2` through two real worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import new_store_url
from lmrec.data import Dataset
from lmrec.models import create_model
from lmrec.service.follow import StoreFollower
from lmrec.store import Store


def test_follower_reads_each_committed_row_once(store: Store) -> None:
    with store.begin() as conn:
        store.ensure(conn, "user", ["a", "b"])
        store.ensure(conn, "item", ["x", "y"])
    got: list[tuple] = []
    follower = StoreFollower(store, got.extend, hole_s=60)
    assert follower.poll() == 0

    def add(user: str, item: str, ts: float, value: float = float("nan")) -> None:
        with store.begin() as conn:
            u = store.id_map(conn, "user", [user])[user]
            i = store.id_map(conn, "item", [item])[item]
            store.add_events(conn, [u], [i], ["view"], [value], [ts])

    add("a", "x", 1.0, 2.5)
    add("b", "y", 2.0)
    assert follower.poll() == 2
    assert [r[1:] for r in got] == [("a", "x", "view", 2.5, 1.0), ("b", "y", "view", None, 2.0)]
    assert follower.poll() == 0  # nothing new, nothing twice
    with pytest.raises(RuntimeError), store.begin() as conn:  # an id handed out, never committed
        store.add_events(conn, [1], [1], ["view"], [np.nan], [9.0])
        raise RuntimeError("rolled back")
    add("a", "y", 3.0)
    assert follower.poll() == 1 and got[-1][1:3] == ("a", "y")
    if store.dialect != "sqlite":  # SQLite reuses the id; the servers skip it: a hole
        assert len(follower.holes) == 1
    follower.hole_s = 0.0  # holes expire
    assert follower.poll() == 0 and follower.holes == {}
    assert len(got) == 3


def test_follower_takes_rows_committed_out_of_id_order(store_url: str) -> None:
    if store_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer commits in id order")
    store = Store(store_url)
    with store.begin() as conn:
        u = store.ensure(conn, "user", ["a", "b"])
        i = store.ensure(conn, "item", ["x"])
    got: list[tuple] = []
    follower = StoreFollower(store, got.extend, hole_s=60)
    with store.begin() as slow:  # takes the lower id, commits last
        store.add_events(slow, [u["a"]], [i["x"]], ["view"], [np.nan], [1.0])
        with store.begin() as fast:
            store.add_events(fast, [u["b"]], [i["x"]], ["view"], [np.nan], [2.0])
        assert follower.poll() == 1 and got[-1][1] == "b"
        assert len(follower.holes) == 1
    assert follower.poll() == 1 and got[-1][1] == "a"
    assert follower.holes == {}
    store.close()


# -- lmrec serve --workers 2 -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(url: str) -> None:
    rng = np.random.default_rng(0)
    with Store(url) as store, store.begin() as conn:
        u = store.ensure(conn, "user", [f"u{k}" for k in range(30)])
        i = store.ensure(conn, "item", [f"i{k}" for k in range(20)])
        rows = [(u[f"u{k}"], i[f"i{j}"]) for k in range(30) for j in rng.choice(20, 5, False)]
        uid, iid = (np.array(c) for c in zip(*rows, strict=True))
        n = len(uid)
        ts = np.arange(n, dtype=float)
        store.insert_interactions(conn, uid, iid, np.full(n, "view", object), np.ones(n), ts)


def _workers(base: str, want: int = 2, tries: int = 300) -> dict[int, httpx.Client]:
    """One kept-alive client per worker process (a connection stays with its worker)."""
    clients: dict[int, httpx.Client] = {}
    for _ in range(tries):
        c = httpx.Client(base_url=base, timeout=30)
        try:
            h = c.get("/health").json()
        except httpx.TransportError:
            c.close()
            time.sleep(0.2)
            continue
        if h["status"] == "ok" and h["pid"] not in clients:
            clients[h["pid"]] = c
            if len(clients) == want:
                return clients
        else:
            c.close()
            time.sleep(0.05)
        for held in clients.values():  # within uvicorn's keep-alive, whatever the others take
            held.get("/health")
    for c in clients.values():
        c.close()
    pytest.fail(f"saw {len(clients)} of {want} workers answering")


def _items(c: httpx.Client, user: str) -> list[str]:
    r = c.get(f"/users/{user}/recommendations", params={"n": 5})
    assert r.status_code == 200, r.text
    return [x["item"] for x in r.json()["items"]]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_feedback_to_one_worker_changes_the_next_answer_of_the_other(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    # Two backends (the single-writer file, a server); the follower's reads are tested on all
    # three above. Each worker process starts the whole service (about 10 s on 2 cores).
    store_url = new_store_url(request, backend, tmp_path)
    _fill(store_url)
    with Store(store_url) as s:
        create_model("itemknn").fit(Dataset.from_store(s)).save(tmp_path / "knn")
    port = _free_port()
    cmd = [sys.executable, "-m", "lmrec.cli", "--db", store_url, "serve", "--no-auth"]
    cmd += ["--model", f"knn={tmp_path / 'knn'}", "--port", str(port), "--workers", "2"]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": "src"})
    try:
        clients = _workers(f"http://127.0.0.1:{port}")
        (p1, c1), (p2, c2) = clients.items()
        for user, (writer, reader) in {"new-a": (c1, c2), "new-b": (c2, c1)}.items():
            top = _items(reader, user)[0]
            r = writer.post("/feedback", json={"user": user, "item": top, "event": "view"})
            assert r.status_code == 200, r.text
            assert top not in _items(reader, user)  # the other process saw it at once
            assert top not in _items(writer, user)
        followed = {c.get("/health").json()["feedback_followed"] for c in (c1, c2)}
        assert followed == {1}, followed  # each read the other's one event from the store
        for c in clients.values():
            c.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert p1 != p2


# -- the worker supervisor (lmrec.service.workers) ---------------------------------------------


def _supervisor(tmp_path: Path, port: int, workers: int = 2) -> subprocess.Popen:
    code = (
        "import sys; from lmrec.service.workers import serve_workers; "
        f"sys.exit(serve_workers('asgi_pid:make', {workers}, "
        f"{{'host': '127.0.0.1', 'port': {port}, 'log_level': 'warning'}}, startup_s=1.0))"
    )
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(["src", tests, os.environ.get("PYTHONPATH", "")])
    log = open(tmp_path / "sup.log", "wb")  # noqa: SIM115 - the process holds it
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log,
                            env={**os.environ, "PYTHONPATH": path})  # fmt: skip


def _pids_of_burst(base: str, n: int) -> list[int]:
    """Open `n` connections at once (a pool connecting in a burst); the pid each landed on."""
    import asyncio

    async def one() -> int:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            return int((await c.get("/")).text)

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(burst())


def _wait_up(base: str, tries: int = 200) -> None:
    for _ in range(tries):
        try:
            httpx.get(base, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"no worker answered on {base}")


def test_workers_share_a_burst_of_connections_and_stop_together(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _supervisor(tmp_path, port)
    try:
        _wait_up(base)
        seen: dict[int, int] = {}
        for _ in range(100):  # until both workers listen (the second may start later)
            pids = _pids_of_burst(base, 24)
            if len(set(pids)) == 2:
                break
            time.sleep(0.1)
        for pid in pids:
            seen[pid] = seen.get(pid, 0) + 1
        # Each socket of the SO_REUSEPORT group gets its hashed share of the 24 (a worker
        # holding fewer than 2 happens with probability 4e-5); one shared socket can hand a
        # whole burst to one worker.
        assert len(seen) == 2 and min(seen.values()) >= 2, seen
        workers = set(seen)
        # A worker that dies after its start is replaced.
        victim = next(iter(workers))
        time.sleep(1.2)  # past the supervisor's startup_s: a crash, not a failed start
        os.kill(victim, 9)
        for _ in range(300):
            now = set(_pids_of_burst(base, 24))
            if victim not in now and len(now) == 2:
                break
            time.sleep(0.1)
        assert victim not in now and len(now) == 2, now
        workers = now
        proc.terminate()  # SIGTERM to the parent stops every worker
        assert proc.wait(timeout=60) == 0
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_workers_refuse_an_address_in_use() -> None:
    from lmrec.errors import LmrecError
    from lmrec.service.workers import serve_workers

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(LmrecError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_workers("asgi_pid:make", 2, {"host": "127.0.0.1", "port": port})
    with pytest.raises(LmrecError, match="--workers must be at least 1"):
        serve_workers("asgi_pid:make", 0, {"host": "127.0.0.1", "port": port})
