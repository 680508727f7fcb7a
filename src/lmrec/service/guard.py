"""ASGI middleware in front of the whole app: the request-body limit and per-route metrics."""

from __future__ import annotations

__all__ = ["Guard", "path_problem"]

import re
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from lmrec.ids import CONTROL as _CONTROL
from lmrec.service.errors import HttpProblem
from lmrec.service.fast import dumps, send_json
from lmrec.service.metrics import Metrics


def path_problem(scope: dict) -> str | None:
    """Why the request's path cannot name anything, or None: percent-escapes that are not
    UTF-8 (the server would replace them with U+FFFD, so two raw ids would name one user), or
    control characters, which no id may hold (`lmrec.ids`) and no route would match."""
    raw = scope.get("raw_path")
    if raw is None or b"%" not in raw:
        return None
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return "the path is not valid UTF-8 (after percent-decoding)"
    if _CONTROL.search(scope["path"]):
        return "the path holds a control character (NUL, newline, tab, ...): no id may"
    return None


_READ_ONLY = re.compile(r"^/(items/.+/similar|users/.+/recommendations)$")


def read_only(scope: dict) -> bool:
    """Whether the request would change `/items/{id}/similar` or `/users/{id}/recommendations`
    (PUT, DELETE): those paths name the read-only sub-resource (405), never an id ending in
    "/similar" that the `:path` parameter of `/items/{id}` would otherwise take."""
    return scope["method"] in ("PUT", "DELETE", "PATCH") and bool(_READ_ONLY.match(scope["path"]))


class Guard:
    """ASGI middleware: body-size limit and per-route metrics, without Starlette's
    BaseHTTPMiddleware overhead."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int):
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        too_big, length = False, None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                length = v
                try:
                    too_big = int(v) > self.max_body
                except ValueError:
                    too_big = True
        if length is None and not too_big:
            # No Content-Length (chunked): read the body here, so that one over the limit is
            # a 413 and not whatever the body parser makes of an exception inside it.
            receive, too_big = await self._buffered(receive)
        if too_big:
            await send_json(
                send, 413, dumps({"detail": f"request body larger than {self.max_body} bytes"})
            )
            self.metrics.observe(scope["method"], "other", 413, time.perf_counter() - t0)
            return
        seen = 0
        limit = self.max_body

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise HttpProblem(413, f"request body larger than {limit} bytes")
            return msg

        async def tracked_send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except HttpProblem as p:
            status[0] = p.status
            await send_json(send, p.status, dumps({"detail": p.detail}))
        finally:
            route = scope.get("route")
            name = getattr(route, "path_format", None) or "other"
            self.metrics.observe(scope["method"], name, status[0], time.perf_counter() - t0)

    async def _buffered(self, receive: Any) -> tuple[Any, bool]:
        """(a receive that replays the whole body, whether it is over the limit)."""
        body, msg = b"", {"type": "http.request"}
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            body += msg.get("body", b"")
            if len(body) > self.max_body:
                return receive, True
            if not msg.get("more_body"):
                break
        first = (
            {"type": "http.request", "body": body, "more_body": False}
            if msg["type"] == "http.request"
            else msg
        )
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return first

        return replay, False
