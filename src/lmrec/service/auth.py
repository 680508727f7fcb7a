"""API keys and their scopes: the one check that the routes and the fast path both use.

A key comes in the first `X-API-Key` header, else in the first `Authorization: Bearer KEY`.
Scopes include the ones before them (`SCOPES`: read < write < admin). Keys are compared in
constant time.
"""

from __future__ import annotations

__all__ = ["Auth"]

import hmac
from collections.abc import Iterable
from typing import Any

from fastapi import Depends, Request

from lmrec.service.errors import HttpProblem
from lmrec.service.settings import SCOPES, Settings

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Auth:
    """The API keys of `settings` (none needed when `settings.auth` is off)."""

    def __init__(self, settings: Settings):
        self.enabled = settings.auth
        self.keys: dict[str, str] = dict(settings.api_keys)

    @staticmethod
    def key_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The key of raw ASGI headers: the first X-API-Key, else the first Authorization's
        bearer token ("" when that header is not a bearer one); None when neither is there."""
        bearer = None
        for k, v in headers:
            if k == b"x-api-key":
                return v.decode("latin-1")
            if k == b"authorization" and bearer is None:
                bearer = v[7:].decode("latin-1").strip() if v[:7].lower() == b"bearer " else ""
        return bearer

    def scope_of(self, key: str) -> str | None:
        """The scope of `key`, None for an unknown key (every key is compared)."""
        found = None
        for k, scope in self.keys.items():
            if hmac.compare_digest(k.encode(), key.encode()):
                found = scope
        return found

    def problem(self, headers: Iterable[tuple[bytes, bytes]], needed: str) -> HttpProblem | None:
        """Why a request with these headers may not do what needs the `needed` scope (401:
        no or unknown key, 403: a narrower scope), or None when it may."""
        if not self.enabled:
            return None
        key = self.key_of(headers)
        if not key:
            return HttpProblem(401, "an API key is required (X-API-Key header)", _CHALLENGE)
        found = self.scope_of(key)
        if found is None:
            return HttpProblem(401, "unknown API key", _CHALLENGE)
        if SCOPES.index(found) < SCOPES.index(needed):
            return HttpProblem(403, f"this API key has the {found!r} scope; {needed!r} is needed")
        return None

    def allows(self, headers: Iterable[tuple[bytes, bytes]], needed: str) -> bool:
        """Whether a request with these headers has the `needed` scope."""
        return self.problem(headers, needed) is None

    def need(self, needed: str) -> Any:
        """A FastAPI dependency that refuses requests without the `needed` scope."""
        if needed not in SCOPES:
            raise ValueError(f"unknown scope {needed!r}; expected one of {SCOPES}")

        # async: a plain `def` dependency would cost every request a worker-thread hop.
        async def check(request: Request) -> None:
            problem = self.problem(request.scope["headers"], needed)
            if problem is not None:
                raise problem

        check.lmrec_scope = needed  # type: ignore[attr-defined]  # read by `route_problem`
        return Depends(check)

    def route_problem(self, scope: dict) -> HttpProblem | None:
        """The key problem of a request for its route's needed scope (None: none, or no
        route). FastAPI reads and validates a body before it runs dependencies; an invalid
        body is answered only after this check, so that a caller without a key learns 401,
        not what the body should have been."""
        route = scope.get("route")
        stack = [getattr(route, "dependant", None)]
        while stack:
            dep = stack.pop()
            if dep is None:
                continue
            needed = getattr(dep.call, "lmrec_scope", None)
            if needed is not None:
                return self.problem(scope["headers"], needed)
            stack.extend(dep.dependencies)
        return None
