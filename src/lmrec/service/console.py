"""The routes of experiments (/experiments...) and of the web console (/console, /stats,
/users/{id}/history).

The console is a static page (`web/`: HTML, CSS and vanilla JavaScript, no build step, nothing
fetched from a CDN) served by the same app. It asks for an API key, keeps it in the tab's
sessionStorage and calls the same REST endpoints with it: a read key sees everything, an admin
key may also create and stop experiments.
"""

from __future__ import annotations

__all__ = ["console_routes", "experiment_routes"]

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from lmrec.errors import LmrecError
from lmrec.experiments.config import ExperimentConfig
from lmrec.ids import ID_PATTERN
from lmrec.service.auth import Auth
from lmrec.service.core import Service
from lmrec.service.errors import NotFound
from lmrec.service.fast import dumps
from lmrec.service.schemas import RESPONSES

WEB = Path(__file__).parent / "web"
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
ExpName = Annotated[str, PathParam(min_length=1, max_length=64, pattern=ID_PATTERN)]


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def experiment_routes(svc: Service, auth: Auth) -> APIRouter:
    """Create, list, report and stop experiments."""
    r = APIRouter(tags=["experiments"], responses=RESPONSES)
    read, admin = auth.need("read"), auth.need("admin")

    @r.post(
        "/experiments",
        summary="Create an experiment (arms: model versions with traffic shares); starts now",
        dependencies=[admin],
        status_code=201,
    )
    async def create(body: ExperimentConfig) -> Response:
        return _json(await run_in_threadpool(svc.create_experiment, body), 201)

    @r.get("/experiments", summary="Every experiment and its state", dependencies=[read])
    async def listing() -> Response:
        return _json({"experiments": await run_in_threadpool(svc.list_experiments)})

    @r.get(
        "/experiments/{name}",
        summary="The report: per-arm CTR with intervals, sequential test, sample-ratio check",
        dependencies=[read],
    )
    async def report(name: ExpName) -> Response:
        return _json(await run_in_threadpool(svc.experiment_report, name))

    @r.post(
        "/experiments/{name}/stop",
        summary="Stop assigning users to an experiment (its report stays)",
        dependencies=[admin],
    )
    async def stop(name: ExpName) -> Response:
        return _json(await run_in_threadpool(svc.stop_experiment, name))

    return r


def console_routes(svc: Service, auth: Auth) -> APIRouter:
    """The console's page and files, and the two reads only it needs."""
    r = APIRouter()
    read = auth.need("read")

    @r.get("/console", include_in_schema=False)
    async def console_root() -> Response:
        return RedirectResponse("/console/")

    @r.get("/console/{name:path}", include_in_schema=False)
    async def console_file(name: str) -> Response:
        name = name or "index.html"
        path = (WEB / name).resolve()
        if WEB.resolve() not in path.parents or not path.is_file():
            raise NotFound(f"no console file {name!r}")
        return FileResponse(path, media_type=_TYPES.get(path.suffix, "application/octet-stream"))

    @r.get(
        "/auth/scope",
        tags=["service"],
        summary="The scope of the API key of this request",
        dependencies=[read],
        responses=RESPONSES,
    )
    async def whoami(request: Request) -> Response:
        if not auth.enabled:
            return _json({"scope": "admin"})
        key = auth.key_of(request.scope["headers"]) or ""
        return _json({"scope": auth.scope_of(key)})

    @r.get(
        "/stats",
        tags=["service"],
        summary="Store overview: counts, activity by day, popularity curve",
        dependencies=[read],
        responses=RESPONSES,
    )
    async def stats() -> Response:
        return _json(await run_in_threadpool(svc.overview))

    @r.get(
        "/users/{user_id:path}/history",
        tags=["users"],
        summary="A user's newest events with item titles",
        dependencies=[read],
        responses=RESPONSES,
    )
    async def user_history(
        user_id: Annotated[str, PathParam(min_length=1, max_length=255)],
        n: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> Response:
        if not user_id:
            raise LmrecError("user id is empty")
        return _json(await run_in_threadpool(svc.history, user_id, n))

    return r
