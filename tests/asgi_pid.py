"""A tiny ASGI app for the worker-supervisor tests: answers every request with its pid."""

import os


async def _app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await receive()
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def make():  # type: ignore[no-untyped-def]
    """The app factory (`lmrec.service.workers.serve_workers` imports it in each worker)."""
    return _app
