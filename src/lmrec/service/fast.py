"""The fast path: the two hot requests answered on raw ASGI, and the batcher behind it.

`FastPath` answers GET /users/{id}/recommendations with plain valid parameters and POST
/feedback with a valid JSON body without FastAPI's per-request machinery (dependency solving,
parameter models, telemetry, exception middleware; about 0.5 ms of a core each). Anything
else, including every invalid or unauthorised request and the re-ranking and explanation
options, goes to FastAPI unchanged, so answers and error messages are the same either way:
the key check is `Auth`'s, the error statuses `errors.answer_of`'s, and user recommendations
go through the same `Batcher` as the FastAPI route's.
"""

from __future__ import annotations

__all__ = ["Batcher", "FastPath", "dumps", "ingest", "send_json"]

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from lmrec.errors import LmrecError
from lmrec.ids import id_problem
from lmrec.service.answers import UserRequest
from lmrec.service.auth import Auth
from lmrec.service.core import Service
from lmrec.service.errors import STORE_DOWN, Unavailable, answer_of, log
from lmrec.service.metrics import Metrics
from lmrec.service.schemas import Feedback

REC_ROUTE = "/users/{user_id}/recommendations"
_REC_PARAMS = frozenset({"n", "model", "exclude_seen", "category"})
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def dumps(obj: Any) -> bytes:
    """Compact JSON (no NaN: scores that are not finite are given as null beforehand)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


async def send_json(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a whole JSON answer on raw ASGI."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def ingest(svc: Service, events: Sequence[Feedback]) -> dict[str, Any]:
    """Queue the events and wait until they are committed and live; a store failure is a 503."""
    fut = svc.submit_feedback([e.model_dump() for e in events])
    try:
        added = await asyncio.wrap_future(fut)
    except LmrecError:
        raise
    except Exception as exc:  # the database's message (SQL text) goes to the log, not out
        log.warning("feedback not committed: %s: %s", type(exc).__name__, exc)
        raise Unavailable(f"the events were not committed: {STORE_DOWN}") from None
    return {"accepted": len(events), "added": int(added)}


class Batcher:
    """Coalesces concurrent user-recommendation requests into batched model calls.

    Requests arriving while a batch is being computed form the next batch, so an idle service
    answers one request at once and a busy one amortises the per-call cost of the model over
    many rows. No request waits for a timer.

    A batch runs on the event loop itself when it should take at most `inline_seconds` (by a
    moving average of the seconds per request), else on worker threads. For cheap models the
    thread hop and the GIL going back and forth between two cores cost more than the work
    (benchmarks/service.md: EASE on ML-100K, 50 clients); slow models (sequence models on CPU,
    big catalogues, the two-stage model) keep the loop free to read other requests meanwhile.
    Up to `parts` slow batches run side by side: a batch is cut across the free threads (at
    least `min_part` requests a part), and while one runs, `min_part` waiting requests start
    the next. Each part's answers go out when that part is done, so under steady load the
    parts fall out of step and one thread's answers are being sent while the other computes.
    numpy, scipy, torch and LightGBM let go of the GIL while they compute, so a second core
    takes its share of a slow model's work (benchmarks/twostage.md). Every answer is the same
    whichever batch or part it lands in.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch: int = 256,
        inline_seconds: float = 0.02,
        parts: int = 1,
        min_part: int = 8,
    ):
        self.run = run
        self.max_batch = max_batch
        self.inline_seconds = inline_seconds
        self.parts, self.min_part = max(1, parts), max(1, min_part)
        self.row_cost = 0.0  # moving average of seconds per request (of one part's thread)
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.running = 0  # batches (parts) being computed
        self.inline = False  # the running batch is on the event loop
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, request: Any) -> Any:
        """The answer to one request (or the exception `run` gave for it, raised)."""
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((request, fut))
        self._start()
        return await fut

    def _start(self) -> None:
        """Start batches from the waiting requests while there is a free slot for them."""
        loop = asyncio.get_running_loop()
        while self.pending and self.running < self.parts and not self.inline:
            if self.running and len(self.pending) < self.min_part:
                return  # a few requests alone cost more each: wait for a running batch
            n = min(len(self.pending), self.max_batch)
            inline = not self.running and self.row_cost * n <= self.inline_seconds
            k = 1 if inline else max(1, min(self.parts - self.running, n // self.min_part))
            batch = self.pending[:n]
            del self.pending[:n]
            size = -(-n // k)
            for i in range(0, n, size):
                self.running += 1
                self.inline = inline
                task = loop.create_task(self._batch(batch[i : i + size], inline))
                self._tasks.add(task)  # held until done (the loop keeps weak references)
                task.add_done_callback(self._tasks.discard)

    async def _batch(self, batch: list[tuple[Any, asyncio.Future]], inline: bool) -> None:
        try:
            reqs = [r for r, _ in batch]
            t0 = time.perf_counter()
            try:
                results = self.run(reqs) if inline else await run_in_threadpool(self.run, reqs)
            except Exception as exc:  # pragma: no cover - run() returns exceptions per row
                results = [exc] * len(batch)
            per_row = (time.perf_counter() - t0) / len(reqs)
            self.row_cost += 0.2 * (per_row - self.row_cost)
            for (_, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, Exception):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
        finally:
            self.running -= 1
            self.inline = False
            self._start()


Slow = Callable[[Any, Any, Any], Awaitable[None]]


class FastPath:
    """`await fast(scope, receive, send, slow)`: answers the hot requests itself and hands
    every other one to `slow` (the whole FastAPI stack)."""

    def __init__(self, svc: Service, auth: Auth, batcher: Batcher, metrics: Metrics, max_body: int):
        self.svc, self.auth, self.batcher = svc, auth, batcher
        self.metrics, self.max_body = metrics, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any, slow: Slow) -> None:
        path, method = scope["path"], scope["method"]
        if scope.get("root_path"):
            await slow(scope, receive, send)
        elif method == "GET" and path.startswith("/users/") and path.endswith("/recommendations"):
            req = self._recommendation(scope, path[7:-16])
            if req is None:
                await slow(scope, receive, send)
            else:
                await self._answer(send, "GET", REC_ROUTE, self.batcher.submit(req))
        elif (
            method == "POST" and path == "/feedback" and self.auth.allows(scope["headers"], "write")
        ):
            await self._feedback(scope, receive, send, slow)
        else:
            await slow(scope, receive, send)

    def _recommendation(self, scope: dict, user: str) -> UserRequest | None:
        """The batcher's request for a plain GET of recommendations, None for any other."""
        if id_problem(user) is not None or not self.auth.allows(scope["headers"], "read"):
            return None  # FastAPI answers (422 for a bad id, as on every route)
        args: dict[str, str] = {}
        if scope["query_string"]:
            for k, v in parse_qsl(scope["query_string"].decode("latin-1"), True):
                if k in args or k not in _REC_PARAMS:
                    return None
                args[k] = v
        n = args.get("n", "10")
        ok = n.isascii() and n.isdigit() and 1 <= int(n) <= 1000
        ok = ok and len(args.get("model", "")) <= 255
        ok = ok and args.get("exclude_seen", "true") in _BOOLS
        ok = ok and ("category" not in args or 1 <= len(args["category"]) <= 200)
        if not ok:
            return None
        exclude = _BOOLS[args.get("exclude_seen", "true")]
        return (user, int(n), args.get("model"), exclude, args.get("category"))

    async def _feedback(self, scope: dict, receive: Any, send: Any, slow: Slow) -> None:
        """POST /feedback: one valid JSON event is ingested here; any other body is replayed
        to FastAPI, which gives its answer (or error)."""
        length = ctype = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = v
            elif k == b"content-type":
                ctype = v
        if (
            length is None
            or not length.isdigit()
            or int(length) > self.max_body
            or ctype is None
            or not ctype.startswith(b"application/json")
        ):
            await slow(scope, receive, send)
            return
        t0 = time.perf_counter()
        body = b""
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            body += msg.get("body", b"")
            if not msg.get("more_body") or len(body) > self.max_body:
                break
        event = None
        if len(body) <= self.max_body:
            try:
                event = Feedback.model_validate_json(body)
            except (ValidationError, ValueError):
                event = None
        if event is None:
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await slow(scope, replay, send)
            return
        await self._answer(send, "POST", "/feedback", ingest(self.svc, [event]), t0)

    async def _answer(
        self, send: Any, method: str, route: str, work: Awaitable[Any], t0: float | None = None
    ) -> None:
        """Await `work` (the answer as a dict) and send it; errors as `answer_of` says."""
        t0 = time.perf_counter() if t0 is None else t0
        status = 500
        try:
            try:
                body = dumps(await work)
                status = 200
            except LmrecError as exc:
                status, problem, _ = answer_of(exc)
                body = dumps(problem)
            await send_json(send, status, body)
        finally:
            self.metrics.observe(method, route, status, time.perf_counter() - t0)
