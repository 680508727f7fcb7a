"""Errors of the service and the one table from them to HTTP statuses.

`Service` raises `NotFound` (404), `Unavailable` (503) and `LmrecError` (400: a bad value in
the request); the HTTP layer raises `HttpProblem` with its own status (401, 403, 413).
`answer_of` turns any of them into (status, JSON body, headers); the fast path and FastAPI's
exception handlers (`add_handlers`) both answer through it, so an error reads the same on
either path.
"""

from __future__ import annotations

__all__ = [
    "STATUS",
    "STORE_DOWN",
    "HttpProblem",
    "NotFound",
    "Unavailable",
    "add_handlers",
    "answer_of",
]

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from lmrec.errors import LmrecError

log = logging.getLogger("lmrec.service")

#: The answer to a store failure (the database's own message, which quotes SQL, is logged).
STORE_DOWN = "the store is busy or unreachable; try again"


class NotFound(LmrecError):
    """A named user, item, model version or job does not exist (404)."""


class Conflict(LmrecError):
    """The request clashes with the state of the server, e.g. a version that fails to load
    (409)."""


class Unavailable(LmrecError):
    """The service cannot answer yet, e.g. no model is loaded (503)."""


class HttpProblem(Exception):
    """An answer the HTTP layer gives itself: a missing key (401), a narrow scope (403), a
    body too large (413)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


#: Status of each error of the service; the first class in an exception's MRO decides.
STATUS: dict[type[Exception], int] = {
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
    LmrecError: 400,
}

#: Most problems a 422 answer lists in its `detail` line (and in `errors`).
_SHOWN, _LISTED = 20, 100


def answer_of(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, body, headers) of the answer to `exc`; the body is {"detail": message} (and
    "errors" for invalid requests). Raises `exc` again when it is not an error of the table
    (a bug: the server's 500)."""
    if isinstance(exc, HttpProblem):
        return exc.status, {"detail": exc.detail}, exc.headers
    if isinstance(exc, RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()))
            problems.append(f"{where}: {e.get('msg')}")
        body = {
            "detail": "invalid request: " + "; ".join(problems[:_SHOWN]),
            "errors": problems[:_LISTED],
        }
        return 422, body, None
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, {"detail": exc.detail}, exc.headers
    if isinstance(exc, OperationalError):  # locked, busy or unreachable; its SQL stays here
        log.warning("store failure: %s", exc)
        return 503, {"detail": STORE_DOWN}, {"Retry-After": "1"}
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls], {"detail": str(exc)}, None
    raise exc


def allowed(request: Request) -> str:
    """The methods of the path's most specific routes (`/items/{id}/similar` over
    `/items/{id}`, which its `:path` parameter would also match), for a 405's Allow header."""
    found: dict[str, set[str]] = {}
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            found.setdefault(route.path_format, set()).update(route.methods)
    best = max(found, key=len, default=None)
    return ", ".join(sorted(found[best] - {"HEAD"})) if best else ""


def add_handlers(app: FastAPI, auth: Any = None) -> None:
    """Answer every error of the table, invalid requests and HTTP errors through `answer_of`;
    an invalid request to a route that needs a key is first checked for the key (`auth`:
    `Auth.route_problem`), so 401 and 403 come before 422."""

    async def handle(request: Request, exc: Exception) -> Response:
        if auth is not None and isinstance(exc, RequestValidationError | StarletteHTTPException):
            exc = auth.route_problem(request.scope) or exc
        status, body, headers = answer_of(exc)
        if status == 405 and not isinstance(exc, HttpProblem):
            headers = {**(headers or {}), "Allow": allowed(request)}
        return JSONResponse(body, status, headers=headers)

    for cls in (HttpProblem, *STATUS, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(cls, handle)
    app.add_exception_handler(OperationalError, handle)
