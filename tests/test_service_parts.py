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


# -- the batcher ---------------------------------------------------------------------------------


def _slow_run(log: list, seconds: float):
    """A batch function that sleeps (off the GIL) per batch, records each batch's requests and
    the threads it ran on, answers x -> 2x and fails request -1 alone."""
    import threading
    import time

    def run(reqs: list) -> list:
        log.append((list(reqs), threading.get_ident(), time.perf_counter()))
        time.sleep(seconds)
        return [ValueError("bad") if r == -1 else 2 * r for r in reqs]

    return run


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_batcher_answers_each_request_and_runs_slow_batches_side_by_side(parts: int) -> None:
    import asyncio
    import threading

    from lmrec.service.fast import Batcher

    log: list = []
    b = Batcher(_slow_run(log, 0.05), inline_seconds=0.001, parts=parts, min_part=4)
    b.row_cost = 1.0  # known to be slow: batches go to threads

    async def main() -> list:
        async def one(x: int) -> object:
            try:
                return await b.submit(x)
            except ValueError as exc:
                return str(exc)

        return await asyncio.gather(*(one(x) for x in [*range(40), -1]))

    out = asyncio.run(main())
    assert out == [2 * x for x in range(40)] + ["bad"]
    seen = sorted(r for reqs, _, _ in log for r in reqs)
    assert seen == sorted([*range(40), -1])  # every request in exactly one batch
    assert b.running == 0 and not b.pending
    assert all(t != threading.get_ident() for _, t, _ in log)  # off the event loop
    # The first request starts a batch at once; the others, waiting meanwhile, start the
    # next batches, as many side by side as there are parts, each of min_part or more.
    starts = [t for _, _, t in log]
    overlap = [sum(1 for u in starts if s <= u < s + 0.04) for s in starts]
    assert max(overlap) == parts
    assert len(log[0][0]) == 1
    assert all(len(reqs) >= 4 for reqs, _, t in log[1:] if any(t - 0.04 < u < t for u in starts))


def test_batcher_runs_cheap_batches_on_the_loop_one_at_a_time() -> None:
    import asyncio
    import threading

    from lmrec.service.fast import Batcher

    log: list = []
    b = Batcher(_slow_run(log, 0.0), parts=2, min_part=1)

    async def main() -> list:
        return await asyncio.gather(*(b.submit(x) for x in range(20)))

    assert asyncio.run(main()) == [2 * x for x in range(20)]
    main_thread = threading.get_ident()
    assert all(t == main_thread for _, t, _ in log)
    assert sum(len(reqs) for reqs, _, _ in log) == 20
