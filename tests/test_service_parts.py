"""The service's parts on their own: the one API-key check (`Auth`, used by the routes and the
fast path), the one table from errors to statuses, and `Feed`'s own changes."""

from __future__ import annotations

import math

import pytest

from lmrec.errors import DataError, LmrecError, Problem
from lmrec.service.auth import Auth
from lmrec.service.errors import HttpProblem, NotFound, Unavailable, answer_of
from lmrec.service.live import Event, Feed
from lmrec.service.settings import Settings

KEYS = {"read-key-123": "read", "write-key-123": "write", "admin-key-123": "admin"}


def _auth(**kw) -> Auth:
    return Auth(Settings(api_keys=KEYS, **kw))


def test_key_comes_from_x_api_key_else_the_bearer_token() -> None:
    assert Auth.key_of([]) is None
    assert Auth.key_of([(b"x-api-key", b"k1"), (b"x-api-key", b"k2")]) == "k1"
    assert Auth.key_of([(b"authorization", b"Bearer  k3 "), (b"x-api-key", b"k1")]) == "k1"
    assert Auth.key_of([(b"authorization", b"bearer k3"), (b"authorization", b"Bearer k4")]) == "k3"
    assert Auth.key_of([(b"authorization", b"Basic abc")]) == ""


@pytest.mark.parametrize(
    ("headers", "needed", "status"),
    [
        ([], "read", 401),
        ([(b"x-api-key", b"")], "read", 401),
        ([(b"x-api-key", b"not-a-key-at-all")], "read", 401),
        ([(b"x-api-key", b"read-key-123")], "read", None),
        ([(b"x-api-key", b"read-key-123")], "write", 403),
        ([(b"authorization", b"Bearer write-key-123")], "write", None),
        ([(b"authorization", b"Bearer write-key-123")], "admin", 403),
        ([(b"x-api-key", b"admin-key-123")], "admin", None),
    ],
)
def test_scopes_include_the_narrower_ones(headers: list, needed: str, status: int | None) -> None:
    auth = _auth()
    problem = auth.problem(headers, needed)
    assert (problem.status if problem else None) == status
    assert auth.allows(headers, needed) == (status is None)
    if status == 401:
        assert problem is not None and problem.headers == {"WWW-Authenticate": "Bearer"}
    if status == 403:
        assert problem is not None and f"{needed!r} is needed" in problem.detail
    assert _auth(auth=False).allows(headers, "admin")  # no keys needed: every scope


def test_errors_have_one_status_each() -> None:
    bad = DataError(Problem("x.csv", 3, "ts", "soon", "expected a number"))
    cases = [
        (NotFound("unknown item 'i9'"), 404),
        (Unavailable("no model is loaded"), 503),
        (LmrecError("n must be at most 10, got 11"), 400),
        (bad, 400),
        (HttpProblem(413, "request body larger than 1024 bytes"), 413),
    ]
    for exc, status in cases:
        got, body, _ = answer_of(exc)
        assert got == status and body == {"detail": str(exc)}, exc
    with pytest.raises(ZeroDivisionError):  # not an error of the table: the server's 500
        answer_of(ZeroDivisionError("a bug"))
    with pytest.raises(ValueError, match="unknown scope"):
        _auth().need("root")


def test_feed_drops_an_items_events_and_keeps_the_count() -> None:
    feed = Feed()
    feed.add(["a", "a", "b"], [Event(i, "view", float(t), math.nan) for t, i in enumerate("xyx")])
    feed.drop_item("x")
    assert [e.item for e in feed.of("a")] == ["y"] and feed.of("b") == []
    assert feed.count == 1
    feed.drop_user("a")
    assert feed.count == 0
