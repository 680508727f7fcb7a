"""ASGI middleware in front of the whole app: the request-body limit and per-route metrics."""

from __future__ import annotations

__all__ = ["Guard"]

import time
from typing import Any

from lmrec.service.errors import HttpProblem
from lmrec.service.fast import dumps, send_json
from lmrec.service.metrics import Metrics


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
        too_big = False
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.max_body
                except ValueError:
                    too_big = True
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
