"""The REST API (FastAPI): `create_app(settings)`; OpenAPI documentation at /docs.

Scopes of API keys (header `X-API-Key: KEY` or `Authorization: Bearer KEY`): `read` answers
(recommendations, similar items, search, reads of items, users and models, metrics), `write`
adds feedback and changes to items and users, `admin` adds model loading, activation and
retraining. /health, /docs and /openapi.json need no key. Feedback is acknowledged only once it
is committed to the store and visible to the next answer.

The parts: `Auth` (auth.py) checks keys for the routes and the fast path alike; `FastPath` and
`Batcher` (fast.py) answer the hot requests on raw ASGI; `errors.py` maps errors to statuses;
`Guard` (guard.py) limits bodies and counts requests; the routes below, one router per group,
call `Service` (core.py) and answer in the shapes of `schemas.py`.
"""

from __future__ import annotations

__all__ = ["create_app", "freeze_heap"]

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from lmrec.errors import LmrecError
from lmrec.ids import ID_PATTERN, MAX_ID
from lmrec.models.base import Query as ModelQuery
from lmrec.rerank.config import Method, SimilaritySource
from lmrec.service import schemas as out
from lmrec.service.auth import Auth
from lmrec.service.console import console_routes, experiment_routes
from lmrec.service.core import Service
from lmrec.service.errors import Conflict, add_handlers
from lmrec.service.fast import Batcher, FastPath, dumps, ingest, send_json
from lmrec.service.guard import Guard, path_problem, read_only
from lmrec.service.metrics import Metrics
from lmrec.service.openapi import document
from lmrec.service.schemas import (
    MAX_POOL,
    RESPONSES,
    Feedback,
    FeedbackBatch,
    ItemBody,
    QueryBody,
    ServedRelevance,
    TrainBody,
    UserBody,
    rerank_config,
)
from lmrec.service.settings import Settings

IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
N = Annotated[int, Query(ge=1, le=1000, description="how many items (at most max_n)")]


CREATED = {201: {"model": out.Written, "description": "created"}}
ACCEPTED = {202: {"model": out.VersionState, "description": "loading in the background"}}


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


class _App(FastAPI):
    """FastAPI with a fast path in front: `fast(scope, receive, send, slow)` answers the hot
    requests itself and hands every other one to `slow` (the whole FastAPI stack)."""

    fast: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (problem := path_problem(scope)) is not None:
            await send_json(send, 400, dumps({"detail": problem}))
            return
        if scope["type"] == "http" and read_only(scope):
            await send_json(
                send, 405, dumps({"detail": "Method Not Allowed"}), [(b"allow", b"GET")]
            )
            return
        if self.fast is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
        else:
            await self.fast(scope, receive, send, super().__call__)


def freeze_heap() -> None:
    """Move every object alive now (loaded models, vocabularies, the catalogue) out of the
    cyclic garbage collector's reach (`gc.freeze`). Without it a full collection walks the
    whole heap and stalls every request for 0.1-0.4 s (seen in the load benchmark as a p99
    ten times the p50). Objects that die later are still freed by reference counting."""
    gc.freeze()


def create_app(settings: Settings | None = None, *, service: Service | None = None) -> FastAPI:
    """The FastAPI application; the service starts (store, writer, models) with the app."""
    settings = settings or Settings()
    svc = service or Service(settings)
    metrics = _metrics(svc)
    auth = Auth(settings)
    batcher = Batcher(svc.recommend_users, parts=svc.settings.batch_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(svc.start)
        freeze_heap()
        yield
        await run_in_threadpool(svc.stop)

    app = _App(
        title="lmrec",
        version="1",
        summary="Recommendations from collaborative, sequence and language models, with live "
        "feedback.",
        lifespan=lifespan,
    )
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    app.state.service = svc
    app.state.metrics = metrics
    app.fast = FastPath(svc, auth, batcher, metrics, settings.max_body_bytes)
    add_handlers(app, auth)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    app.add_middleware(Guard, metrics=metrics, max_body=settings.max_body_bytes)
    # The order of the groups is the order of matching: /users/{id}/recommendations before
    # /users/{id}, /items/{id}/similar before /items/{id}.
    app.include_router(_service_routes(svc, auth, metrics))
    app.include_router(console_routes(svc, auth))  # /users/{id}/history before /users/{id}
    app.include_router(experiment_routes(svc, auth))
    app.include_router(_recommendation_routes(svc, auth, batcher))
    app.include_router(_feedback_routes(svc, auth))
    app.include_router(_catalogue_routes(svc, auth))
    app.include_router(_model_routes(svc, auth))
    return app


def _metrics(svc: Service) -> Metrics:
    """The service's metrics: per-route counters (`Guard`) and these gauges."""
    metrics = Metrics()
    writer = svc.writer
    metrics.gauge(
        "lmrec_feedback_committed_total",
        "Feedback events committed since start.",
        lambda: writer.committed,
    )
    metrics.gauge(
        "lmrec_feedback_transactions_total",
        "Feedback write transactions.",
        lambda: writer.transactions,
    )
    metrics.gauge(
        "lmrec_feedback_queued", "Feedback requests waiting for the writer.", writer.queued
    )
    log = svc.experiments.log
    metrics.gauge(
        "lmrec_exposures_written_total", "Experiment exposures written.", lambda: log.written
    )
    metrics.gauge("lmrec_exposures_queued", "Exposures waiting for the log.", log.queued)
    metrics.gauge("lmrec_exposures_lost_total", "Exposures the store refused.", lambda: log.lost)
    metrics.gauge("lmrec_live_events", "Events held in the live feed.", lambda: svc.feed.count)
    metrics.gauge(
        "lmrec_models_loaded", "Model versions in memory.", lambda: len(svc.registry.slots)
    )
    metrics.gauge(
        "lmrec_catalog_items", "Items in the catalogue.", lambda: len(svc.catalogue.items)
    )
    return metrics


def _service_routes(svc: Service, auth: Auth, metrics: Metrics) -> APIRouter:
    """/health and /metrics."""
    r = APIRouter(tags=["service"])

    @r.get("/health", summary="Liveness and the loaded model versions", response_model=out.Health)
    async def health() -> Response:
        return _json(svc.health())

    @r.get(
        "/metrics",
        summary="Prometheus metrics",
        dependencies=[auth.need("read")],
        response_class=Response,
        responses={
            **RESPONSES,
            200: {
                "description": "metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        },
    )
    async def prom() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return r


def _recommendation_routes(svc: Service, auth: Auth, batcher: Batcher) -> APIRouter:
    """Recommendations for users and queries, similar items, item search."""
    r = APIRouter(tags=["recommendations"], dependencies=[auth.need("read")], responses=RESPONSES)

    @r.get(
        "/users/{user_id:path}/recommendations",
        summary="Top-n items for a user (with their newest feedback folded in)",
        response_model=out.Recommendations,
    )
    async def recommend_user(
        user_id: IdPath,
        n: N = 10,
        model: Annotated[str | None, Query(max_length=255, description="version")] = None,
        exclude_seen: bool = True,
        category: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        diversity: Annotated[
            float | None, Query(ge=0, le=1, description="re-ranking diversity weight (0: off)")
        ] = None,
        method: Annotated[Method | None, Query(description="re-ranking method")] = None,
        similarity: Annotated[
            SimilaritySource | None, Query(description="item similarity of the re-ranking")
        ] = None,
        pool: Annotated[
            int | None, Query(ge=1, le=MAX_POOL, description="candidates re-ranked")
        ] = None,
        relevance: Annotated[
            ServedRelevance | None, Query(description="relevance the re-ranking weighs")
        ] = None,
        explain: Annotated[bool, Query(description="add reasons to each item")] = False,
    ) -> Response:
        rerank = rerank_config(
            diversity=diversity,
            method=method,
            similarity=similarity,
            pool=pool,
            relevance=relevance,
        )
        if rerank is None and not explain:
            return _json(await batcher.submit((user_id, n, model, exclude_seen, category)))
        answer = await run_in_threadpool(
            svc.recommend,
            user_id,
            n,
            model=model,
            exclude_seen=exclude_seen,
            category=category,
            rerank=rerank,
            explain=explain,
        )
        return _json(answer)

    @r.post(
        "/recommendations",
        summary="Top-n items for an anonymous query: recent items, attributes, tags, free text",
        response_model=out.Recommendations,
    )
    async def recommend_query(body: QueryBody) -> Response:
        extra = ModelQuery(
            items=list(body.items),
            events=list(body.events) if body.events is not None else None,
            attributes=body.attributes,
            tags=list(body.tags),
            text=body.text,
            time=body.time,
            context=body.context,
        )
        rerank = body.rerank()

        def run() -> dict[str, Any]:
            return svc.recommend(
                body.user,
                body.n,
                model=body.model,
                exclude_seen=body.exclude_seen,
                category=body.category,
                rerank=rerank,
                explain=body.explain,
                extra=extra,
                session=body.session,
            )

        if body.text or body.tags or body.attributes or body.explain or rerank is not None:
            return _json(await run_in_threadpool(run))  # may run the text encoder: off the loop
        return _json(run())

    @r.get(
        "/users/{user_id:path}/ratings",
        summary="Predicted ratings of items for a user (rating models only)",
        response_model=out.Ratings,
    )
    async def ratings(
        user_id: IdPath,
        item: Annotated[list[str], Query(min_length=1, max_length=1000, description="item ids")],
        model: Annotated[str | None, Query(max_length=255, description="version")] = None,
    ) -> Response:
        return _json(await run_in_threadpool(svc.ratings, user_id, item, model=model))

    @r.get(
        "/items/{item_id:path}/similar",
        summary="Items similar to an item (the model's similarity; text for new items)",
        response_model=out.Similar,
    )
    async def similar(
        item_id: IdPath,
        n: N = 10,
        model: Annotated[str | None, Query(max_length=255)] = None,
    ) -> Response:
        return _json(await run_in_threadpool(svc.similar, item_id, n, model=model))

    @r.get(
        "/search",
        summary="Semantic item search by free text through the text encoder",
        response_model=out.SearchResults,
    )
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=2000, description="free text")],
        n: N = 10,
    ) -> Response:
        return _json(await run_in_threadpool(svc.search_text, q, n))

    return r


def _feedback_routes(svc: Service, auth: Auth) -> APIRouter:
    """Feedback events, one or many; answered once committed (the fast path takes most of
    POST /feedback, through the same `ingest`)."""
    r = APIRouter(tags=["feedback"], dependencies=[auth.need("write")], responses=RESPONSES)

    @r.post(
        "/feedback",
        summary="One feedback event; answered once committed and live",
        response_model=out.FeedbackAccepted,
    )
    async def feedback(body: Feedback) -> Response:
        return _json(await ingest(svc, [body]))

    @r.post(
        "/feedback/batch",
        summary="Many feedback events in one transaction",
        response_model=out.FeedbackAccepted,
    )
    async def feedback_batch(body: FeedbackBatch) -> Response:
        return _json(await ingest(svc, body.events))

    return r


def _catalogue_routes(svc: Service, auth: Auth) -> APIRouter:
    """Items and users: create or update, read, delete."""
    r = APIRouter(responses=RESPONSES)
    read, write = auth.need("read"), auth.need("write")

    @r.put(
        "/items/{item_id:path}",
        tags=["items"],
        summary="Create or update an item",
        dependencies=[write],
        response_model=out.Written,
        responses=CREATED,
    )
    async def put_item(item_id: IdPath, body: ItemBody) -> Response:
        answer = await run_in_threadpool(svc.put_item, item_id, body.model_dump())
        return _json(answer, 201 if answer["created"] else 200)

    @r.get(
        "/items/{item_id:path}",
        tags=["items"],
        summary="An item",
        dependencies=[read],
        response_model=out.Item,
    )
    async def get_item(item_id: IdPath) -> Response:
        return _json(await run_in_threadpool(svc.get_item, item_id))

    @r.delete(
        "/items/{item_id:path}",
        tags=["items"],
        summary="Delete an item and its events",
        dependencies=[write],
        response_model=out.Deleted,
    )
    async def delete_item(item_id: IdPath) -> Response:
        await run_in_threadpool(svc.delete_item, item_id)
        return _json({"item": item_id, "deleted": True})

    @r.put(
        "/users/{user_id:path}",
        tags=["users"],
        summary="Create or update a user",
        dependencies=[write],
        response_model=out.Written,
        responses=CREATED,
    )
    async def put_user(user_id: IdPath, body: UserBody) -> Response:
        answer = await run_in_threadpool(svc.put_user, user_id, body.model_dump())
        return _json(answer, 201 if answer["created"] else 200)

    @r.get(
        "/users/{user_id:path}",
        tags=["users"],
        summary="A user",
        dependencies=[read],
        response_model=out.User,
    )
    async def get_user(user_id: IdPath) -> Response:
        return _json(await run_in_threadpool(svc.get_user, user_id))

    @r.delete(
        "/users/{user_id:path}",
        tags=["users"],
        summary="Erase a user: profile and events, from the store and every later answer",
        dependencies=[write],
        response_model=out.Deleted,
    )
    async def delete_user(user_id: IdPath) -> Response:
        await run_in_threadpool(svc.delete_user, user_id)
        return _json({"user": user_id, "deleted": True})

    return r


def _model_routes(svc: Service, auth: Auth) -> APIRouter:
    """Model versions: list, load, activate, retrain, and the retraining jobs."""
    r = APIRouter(tags=["models"], responses=RESPONSES)
    read, admin = auth.need("read"), auth.need("admin")

    async def loaded(fut: Any, wait: bool, name: str) -> Response:
        """202 at once, or (`wait`) the answer once the version is loaded."""
        if not wait:
            return _json({"version": name, "state": "loading"}, 202)
        try:
            await asyncio.wrap_future(fut)
        except LmrecError as exc:
            raise Conflict(f"cannot load model version {name!r}: {exc}") from None
        except Exception as exc:
            raise Conflict(f"cannot load model version {name!r}: {exc}") from None
        return _json({"version": name, "state": "loaded", "active": svc.registry.active})

    @r.get(
        "/models",
        summary="Model versions and the active one",
        dependencies=[read],
        response_model=out.Models,
    )
    async def models() -> Response:
        return _json(await run_in_threadpool(svc.models))

    @r.post(
        "/models/{version}/activate",
        summary="Load (in the background) and make a version the default; no downtime",
        dependencies=[admin],
        response_model=out.VersionState,
        responses=ACCEPTED,
    )
    async def activate(version: IdPath, wait: bool = False) -> Response:
        return await loaded(svc.activate(version), wait, version)

    @r.post(
        "/models/{version}/load",
        summary="Load a version beside the active one (for ?model= variants)",
        dependencies=[admin],
        response_model=out.VersionState,
        responses=ACCEPTED,
    )
    async def load(version: IdPath, wait: bool = False) -> Response:
        return await loaded(svc.load(version), wait, version)

    @r.post(
        "/models/train",
        summary="Retrain on the current store in the background; activates the new version",
        dependencies=[admin],
        response_model=out.Job,
        status_code=202,
    )
    async def train(body: TrainBody) -> Response:
        info = await run_in_threadpool(svc.train, body.model, body.params, body.activate)
        return _json(info, 202)

    @r.get(
        "/models/jobs/{job_id}",
        summary="A retraining job",
        dependencies=[admin],
        response_model=out.Job,
    )
    async def job(job_id: IdPath) -> Response:
        return _json(svc.job(job_id))

    return r
