"""Defects of the 2026-12-01 security and robustness audit (issue 18), against a real server:
each test here failed before its fix."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmrec.service import Settings
from test_service import ADMIN, READ, WRITE, Server, fill_store, train


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("audit")
    url = f"sqlite:///{tmp / 'store.db'}"
    fill_store(url, n_users=12, n_items=28)
    models = tmp / "models"
    models.mkdir()
    train(url, "itemknn", models / "knn")
    s = Server(
        Settings(
            db=url,
            models=[f"knn={models / 'knn'}"],
            models_dir=str(models),
            api_keys={READ: "read", WRITE: "write", ADMIN: "admin"},
            max_body_bytes=4096,
            flush_ms=1.0,
            busy_timeout_s=0.2,
        )
    )
    yield s
    s.stop()


def raw(srv: Server, request: bytes) -> tuple[int, bytes]:
    """Send raw HTTP/1.1 bytes; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_chunked_body_over_the_limit_is_413(srv: Server) -> None:
    big = b'{"user": "u1", "item": "' + b"x" * 8000 + b'"}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (big[:3000], big[3000:]))
    for path in (b"/feedback", b"/feedback/batch", b"/recommendations"):
        req = (
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: x\r\nX-API-Key: "
            + ADMIN.encode()
            + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        status, body = raw(srv, req)
        assert status == 413, (path, status, body)


@pytest.mark.parametrize("bad", ["%00", "a%0Ab", "a%09b", "a%7Fb", "%C3%28", "a%FFb"])
def test_path_ids_refuse_control_characters_and_bad_utf8(srv: Server, bad: str) -> None:
    with srv.client() as c:
        for method, path in (
            ("GET", f"/users/{bad}/recommendations"),
            ("GET", f"/users/{bad}"),
            ("PUT", f"/items/{bad}"),
            ("GET", f"/items/{bad}/similar"),
            ("DELETE", f"/users/{bad}"),
        ):
            r = c.request(method, path, json={} if method == "PUT" else None)
            assert r.status_code in (400, 422), (method, path, r.status_code, r.text)


def test_two_raw_ids_never_collide(srv: Server) -> None:
    with srv.client() as c:
        assert c.put("/items/%FF", json={"title": "t"}).status_code in (400, 422)
        assert c.get("/items/%EF%BF%BD").status_code == 404  # U+FFFD was never created


@pytest.mark.parametrize(
    "path,body",
    [
        ("/feedback", {"user": "u1", "item": "i1", "ts": False}),
        ("/feedback", {"user": "u1", "item": "i1", "value": True}),
        ("/feedback", {"user": "u1", "item": "i1", "ts": "1000"}),
        ("/feedback", {"user": "u1", "item": "i1", "value": "4"}),
        ("/feedback/batch", {"events": [{"user": "u1", "item": "i1", "ts": True}]}),
        ("/recommendations", {"items": ["i1"], "n": True}),
        ("/recommendations", {"items": ["i1"], "n": "5"}),
        ("/recommendations", {"items": ["i1"], "explain": "yes"}),
        ("/recommendations", {"items": ["i1"], "diversity": True}),
    ],
)
def test_no_loose_coercion(srv: Server, path: str, body: dict) -> None:
    with srv.client() as c:
        r = c.post(path, json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)


def test_numbers_stay_numbers(srv: Server) -> None:
    with srv.client() as c:
        r = c.post("/feedback", json={"user": "u1", "item": "i1", "ts": 1000, "value": 4})
        assert r.status_code == 200, r.text
        r = c.post("/recommendations", json={"items": ["i1"], "n": 3, "diversity": 0})
        assert r.status_code == 200, r.text


def test_event_names_and_ids_read_as_the_importer_reads_them(srv: Server) -> None:
    with srv.client() as c:
        r = c.post("/feedback", json={"user": "u2", "item": "i3", "event": "Click", "ts": 5.0})
        assert r.status_code == 200, r.text
        db = srv.service.settings.db.removeprefix("sqlite:///")
        with sqlite3.connect(db) as con:
            got = con.execute(
                "SELECT DISTINCT i.event FROM interactions i JOIN users u ON u.id = i.user_id"
                " WHERE u.ext_id = 'u2'"
            ).fetchall()
        assert ("click",) in got and ("Click",) not in got, got
        for body in (
            {"user": " u2", "item": "i3"},
            {"user": "u2", "item": " 50 "},
            {"user": "u2 ", "item": "i3"},
        ):
            assert c.post("/feedback", json=body).status_code == 422, body
        assert c.put("/items/%2050%20", json={"title": "x"}).status_code in (400, 422)


def test_newline_id_same_answer_on_both_paths(srv: Server) -> None:
    with srv.client() as c:
        fast = c.get("/users/u1%0A/recommendations")
        slow = c.get("/users/u1%0A/recommendations", params={"explain": "true"})
        assert fast.status_code == slow.status_code, (fast.text, slow.text)
        assert fast.status_code in (400, 422)


def test_unparseable_body_is_401_without_key(srv: Server) -> None:
    with srv.client(None) as c:
        for path in ("/feedback", "/feedback/batch", "/recommendations", "/models/train"):
            r = c.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
            assert r.status_code == 401, (path, r.status_code, r.text)
        r = c.put("/items/i1", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 401, r.text
    with srv.client(READ) as c:
        r = c.post("/feedback", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 403, r.text
        r = c.post("/feedback", json={"user": 5})
        assert r.status_code == 403, r.text


def test_models_hide_server_paths(srv: Server) -> None:
    models_dir = srv.service.settings.models_dir
    with srv.client(READ) as c:
        r = c.get("/models")
        assert r.status_code == 200
        assert models_dir not in r.text and str(Path(models_dir).parent) not in r.text, r.text
        assert [v["path"] for v in r.json()["versions"]] == ["knn"]


def test_locked_store_is_a_clean_503(srv: Server) -> None:
    path = srv.service.settings.db.removeprefix("sqlite:///")
    lock = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        with srv.client() as c:
            r = c.put("/items/locked-item", json={"title": "t"})
            assert r.status_code == 503, r.text
            for body in ({"user": "u1", "item": "i1", "ts": 77.0},):
                r = c.post("/feedback", json=body)
                assert r.status_code == 503, r.text
                low = r.text.lower()
                assert "insert" not in low and "select" not in low and "sql" not in low, r.text
            r = c.delete("/users/u3")
            assert r.status_code == 503, r.text
    finally:
        lock.execute("ROLLBACK")
        lock.close()
