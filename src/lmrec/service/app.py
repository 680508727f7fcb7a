"""The REST API (FastAPI): `create_app(settings)`; OpenAPI documentation at /docs.

Scopes of API keys (header `X-API-Key: KEY` or `Authorization: Bearer KEY`): `read` answers
(recommendations, similar items, search, reads of items, users and models, metrics), `write`
adds feedback and changes to items and users, `admin` adds model loading, activation and
retraining. /health, /docs and /openapi.json need no key. Feedback is acknowledged only once it
is committed to the store and visible to the next answer.
"""

from __future__ import annotations

__all__ = ["create_app"]

import asyncio
import gc
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmrec.errors import LmrecError
from lmrec.models.base import Query as ModelQuery
from lmrec.rerank.config import Method, SimilaritySource
from lmrec.service.core import NotFound, Service, Unavailable
from lmrec.service.metrics import Metrics
from lmrec.service.schemas import (
    MAX_POOL,
    Feedback,
    FeedbackBatch,
    ItemBody,
    QueryBody,
    ServedRelevance,
    TrainBody,
    UserBody,
    rerank_config,
)
from lmrec.service.settings import SCOPES, Settings

IdPath = Annotated[str, Path(min_length=1, max_length=255)]
N = Annotated[int, Query(ge=1, le=1000, description="how many items (at most max_n)")]


class _Problem(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status, self.detail, self.headers = status, detail, headers


def _json(obj: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(obj, separators=(",", ":"), allow_nan=False),
        status_code=status,
        media_type="application/json",
    )


class _Guard:
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
            await self._reject(send, 413, f"request body larger than {self.max_body} bytes")
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
                    raise _Problem(413, f"request body larger than {limit} bytes")
            return msg

        async def tracked_send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _Problem as p:
            status[0] = p.status
            await self._reject(send, p.status, p.detail)
        finally:
            route = scope.get("route")
            name = getattr(route, "path_format", None) or "other"
            self.metrics.observe(scope["method"], name, status[0], time.perf_counter() - t0)

    @staticmethod
    async def _reject(send: Any, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _App(FastAPI):
    """FastAPI with a fast path in front: `fast(scope, receive, send, slow)` answers the hot
    requests itself and hands every other one to `slow` (the whole FastAPI stack)."""

    fast: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.fast is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
        else:
            await self.fast(scope, receive, send, super().__call__)


async def _send_json(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


_REC_PARAMS = frozenset({"n", "model", "exclude_seen", "category"})
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def freeze_heap() -> None:
    """Move every object alive now (loaded models, vocabularies, the catalogue) out of the
    cyclic garbage collector's reach (`gc.freeze`). Without it a full collection walks the
    whole heap and stalls every request for 0.1-0.4 s (seen in the load benchmark as a p99
    ten times the p50). Objects that die later are still freed by reference counting."""
    gc.freeze()


class _Batcher:
    """Coalesces concurrent user-recommendation requests into one batched model call.

    Requests arriving while a batch is being computed form the next batch, so an idle service
    answers one request at once and a busy one amortises the per-call cost of the model over
    many rows. No request waits for a timer.

    A batch runs on the event loop itself when it should take at most `inline_seconds` (by a
    moving average of the seconds per request), else in a worker thread. For cheap models the
    thread hop and the GIL going back and forth between two cores cost more than the work
    (benchmarks/service.md: EASE on ML-100K, 50 clients); slow models (sequence models on CPU,
    big catalogues) keep the loop free to read other requests meanwhile.
    """

    def __init__(self, run: Any, max_batch: int = 256, inline_seconds: float = 0.02):
        self.run = run
        self.max_batch = max_batch
        self.inline_seconds = inline_seconds
        self.row_cost = 0.0  # moving average of seconds per request
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.busy = False

    async def submit(self, request: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((request, fut))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch = self.pending[: self.max_batch]
                del self.pending[: self.max_batch]
                try:
                    reqs = [r for r, _ in batch]
                    t0 = time.perf_counter()
                    if self.row_cost * len(reqs) <= self.inline_seconds:
                        results = self.run(reqs)
                    else:
                        results = await run_in_threadpool(self.run, reqs)
                    per_row = (time.perf_counter() - t0) / len(reqs)
                    self.row_cost += 0.2 * (per_row - self.row_cost)
                except Exception as exc:  # pragma: no cover - run() returns exceptions per row
                    results = [exc] * len(batch)
                for (_, fut), res in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(res, Exception):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self.busy = False


def create_app(settings: Settings | None = None, *, service: Service | None = None) -> FastAPI:
    """The FastAPI application; the service starts (store, writer, models) with the app."""
    settings = settings or Settings()
    svc = service or Service(settings)
    metrics = Metrics()
    metrics.gauge(
        "lmrec_feedback_committed_total",
        "Feedback events committed since start.",
        lambda: svc.writer.committed,
    )
    metrics.gauge(
        "lmrec_feedback_transactions_total",
        "Feedback write transactions.",
        lambda: svc.writer.transactions,
    )
    metrics.gauge(
        "lmrec_feedback_queued", "Feedback requests waiting for the writer.", svc.writer.queued
    )
    metrics.gauge("lmrec_live_events", "Events held in the live feed.", lambda: svc.feed.count)
    metrics.gauge(
        "lmrec_models_loaded", "Model versions in memory.", lambda: len(svc.registry.slots)
    )
    metrics.gauge("lmrec_catalog_items", "Items in the catalogue.", lambda: len(svc.catalog))

    batcher = _Batcher(svc.recommend_users)

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
    app.state.service = svc
    app.state.metrics = metrics

    keys = dict(settings.api_keys)

    def need(scope: str):
        rank = SCOPES.index(scope)

        # async: a plain `def` dependency would cost every request a worker-thread hop.
        async def check(request: Request) -> None:
            if not settings.auth:
                return
            key = request.headers.get("x-api-key")
            if key is None:
                auth = request.headers.get("authorization", "")
                if auth[:7].lower() == "bearer ":
                    key = auth[7:].strip()
            if not key:
                raise _Problem(
                    401, "an API key is required (X-API-Key header)", {"WWW-Authenticate": "Bearer"}
                )
            found = None
            for k, s in keys.items():
                if hmac.compare_digest(k.encode(), key.encode()):
                    found = s
            if found is None:
                raise _Problem(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
            if SCOPES.index(found) < rank:
                raise _Problem(403, f"this API key has the {found!r} scope; {scope!r} is needed")

        return Depends(check)

    read, write, admin = need("read"), need("write"), need("admin")

    def allowed(scope: dict, needed: str) -> bool:
        """Whether the request's API key has the `needed` scope (the fast path's check; any
        failure goes the slow way, which gives the 401/403 answer)."""
        if not settings.auth:
            return True
        key = bearer = None  # as `check`: the first X-API-Key, else the first Authorization
        for k, v in scope["headers"]:
            if k == b"x-api-key":
                key = v.decode("latin-1")
                break
            if k == b"authorization" and bearer is None:
                bearer = v[7:].decode("latin-1").strip() if v[:7].lower() == b"bearer " else ""
        key = key if key is not None else bearer
        if not key:
            return False
        found = None
        for k, sc in keys.items():
            if hmac.compare_digest(k.encode(), key.encode()):
                found = sc
        return found is not None and SCOPES.index(found) >= SCOPES.index(needed)

    rec_route = "/users/{user_id}/recommendations"

    async def fast(scope: dict, receive: Any, send: Any, slow: Any) -> None:
        """The two hot requests without FastAPI's per-request machinery (dependency solving,
        parameter models, telemetry, exception middleware; about 0.5 ms of a core each):
        GET /users/{id}/recommendations with plain valid parameters and POST /feedback with a
        valid JSON body. Anything else, including every invalid or unauthorised request and
        the re-ranking and explanation options, goes through FastAPI unchanged, so answers and
        error messages are the same either way."""
        path, method = scope["path"], scope["method"]
        if scope.get("root_path"):
            await slow(scope, receive, send)
            return
        if method == "GET" and path.startswith("/users/") and path.endswith("/recommendations"):
            user = path[7:-16]
            args: dict[str, str] = {}
            ok = 0 < len(user) <= 255 and allowed(scope, "read")
            if ok and scope["query_string"]:
                for k, v in parse_qsl(scope["query_string"].decode("latin-1"), True):
                    if k in args or k not in _REC_PARAMS:
                        ok = False
                        break
                    args[k] = v
            n = args.get("n", "10")
            ok = ok and n.isascii() and n.isdigit() and 1 <= int(n) <= 1000
            ok = ok and len(args.get("model", "")) <= 255
            ok = ok and args.get("exclude_seen", "true") in _BOOLS
            ok = ok and ("category" not in args or 1 <= len(args["category"]) <= 200)
            if not ok:
                await slow(scope, receive, send)
                return
            t0 = time.perf_counter()
            req = (
                user,
                int(n),
                args.get("model"),
                _BOOLS[args.get("exclude_seen", "true")],
                args.get("category"),
            )
            await _answer(send, "GET", rec_route, t0, batcher.submit(req))
            return
        if method == "POST" and path == "/feedback" and allowed(scope, "write"):
            length = ctype = None
            for k, v in scope["headers"]:
                if k == b"content-length":
                    length = v
                elif k == b"content-type":
                    ctype = v
            if (
                length is None
                or not length.isdigit()
                or int(length) > settings.max_body_bytes
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
                if not msg.get("more_body") or len(body) > settings.max_body_bytes:
                    break
            event = None
            if len(body) <= settings.max_body_bytes:
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
            await _answer(send, "POST", "/feedback", t0, _ingest_body([event]))
            return
        await slow(scope, receive, send)

    async def _answer(send: Any, method: str, route: str, t0: float, work: Any) -> None:
        """Await `work` (the answer as a dict) and send it; the same error mapping as the
        exception handlers below."""
        status = 500
        try:
            try:
                body = _dumps(await work)
                status = 200
            except NotFound as exc:
                status, body = 404, _dumps({"detail": str(exc)})
            except Unavailable as exc:
                status, body = 503, _dumps({"detail": str(exc)})
            except LmrecError as exc:
                status, body = 400, _dumps({"detail": str(exc)})
            await _send_json(send, status, body)
        finally:
            metrics.observe(method, route, status, time.perf_counter() - t0)

    app.fast = fast

    # -- errors ------------------------------------------------------------------------------

    @app.exception_handler(_Problem)
    async def _problem(request: Request, exc: _Problem) -> Response:
        return JSONResponse({"detail": exc.detail}, exc.status, headers=exc.headers)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> Response:
        return JSONResponse({"detail": str(exc)}, 503)

    @app.exception_handler(LmrecError)
    async def _bad(request: Request, exc: LmrecError) -> Response:
        return JSONResponse({"detail": str(exc)}, 400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()))
            problems.append(f"{where}: {e.get('msg')}")
        return JSONResponse(
            {"detail": "invalid request: " + "; ".join(problems[:20]), "errors": problems[:100]},
            422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    app.add_middleware(_Guard, metrics=metrics, max_body=settings.max_body_bytes)

    # -- health and metrics ------------------------------------------------------------------

    @app.get("/health", tags=["service"], summary="Liveness and the loaded model versions")
    async def health() -> Response:
        return _json(svc.health())

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", dependencies=[read])
    async def prom() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # -- recommendations ---------------------------------------------------------------------

    @app.get(
        "/users/{user_id:path}/recommendations",
        tags=["recommendations"],
        summary="Top-n items for a user (with their newest feedback folded in)",
        dependencies=[read],
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
        if rerank is not None or explain:
            return _json(
                await run_in_threadpool(
                    svc.recommend,
                    user_id,
                    n,
                    model=model,
                    exclude_seen=exclude_seen,
                    category=category,
                    rerank=rerank,
                    explain=explain,
                )
            )
        return _json(await batcher.submit((user_id, n, model, exclude_seen, category)))

    @app.post(
        "/recommendations",
        tags=["recommendations"],
        summary="Top-n items for an anonymous query: recent items, attributes, tags, free text",
        dependencies=[read],
    )
    async def recommend_query(body: QueryBody) -> Response:
        extra = ModelQuery(
            items=list(body.items),
            events=list(body.events) if body.events is not None else None,
            attributes=body.attributes,
            tags=list(body.tags),
            text=body.text,
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
            )

        if (
            body.text or body.tags or body.attributes or body.explain or rerank is not None
        ):  # may run the text encoder: off the loop
            return _json(await run_in_threadpool(run))
        return _json(run())

    @app.get(
        "/items/{item_id:path}/similar",
        tags=["recommendations"],
        summary="Items similar to an item (the model's similarity; text for new items)",
        dependencies=[read],
    )
    async def similar(
        item_id: IdPath,
        n: N = 10,
        model: Annotated[str | None, Query(max_length=255)] = None,
    ) -> Response:
        return _json(await run_in_threadpool(svc.similar, item_id, n, model=model))

    @app.get(
        "/search",
        tags=["recommendations"],
        summary="Semantic item search by free text through the text encoder",
        dependencies=[read],
    )
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=2000, description="free text")],
        n: N = 10,
    ) -> Response:
        return _json(await run_in_threadpool(svc.search_text, q, n))

    # -- feedback ----------------------------------------------------------------------------

    async def _ingest_body(events: list[Feedback]) -> dict[str, Any]:
        fut = svc.submit_feedback([e.model_dump() for e in events])
        try:
            added = await asyncio.wrap_future(fut)
        except LmrecError:
            raise
        except Exception as exc:
            raise Unavailable(
                f"the store refused the events: {type(exc).__name__}: {exc}"
            ) from None
        return {"accepted": len(events), "added": int(added)}

    async def _ingest(events: list[Feedback]) -> Response:
        return _json(await _ingest_body(events))

    @app.post(
        "/feedback",
        tags=["feedback"],
        summary="One feedback event; answered once committed and live",
        dependencies=[write],
    )
    async def feedback(body: Feedback) -> Response:
        return await _ingest([body])

    @app.post(
        "/feedback/batch",
        tags=["feedback"],
        summary="Many feedback events in one transaction",
        dependencies=[write],
    )
    async def feedback_batch(body: FeedbackBatch) -> Response:
        return await _ingest(body.events)

    # -- items and users ---------------------------------------------------------------------

    @app.put(
        "/items/{item_id:path}",
        tags=["items"],
        summary="Create or update an item",
        dependencies=[write],
    )
    async def put_item(item_id: IdPath, body: ItemBody) -> Response:
        out = await run_in_threadpool(svc.put_item, item_id, body.model_dump())
        return _json(out, 201 if out["created"] else 200)

    @app.get("/items/{item_id:path}", tags=["items"], summary="An item", dependencies=[read])
    async def get_item(item_id: IdPath) -> Response:
        return _json(await run_in_threadpool(svc.get_item, item_id))

    @app.delete(
        "/items/{item_id:path}",
        tags=["items"],
        summary="Delete an item and its events",
        dependencies=[write],
    )
    async def delete_item(item_id: IdPath) -> Response:
        await run_in_threadpool(svc.delete_item, item_id)
        return _json({"item": item_id, "deleted": True})

    @app.put(
        "/users/{user_id:path}",
        tags=["users"],
        summary="Create or update a user",
        dependencies=[write],
    )
    async def put_user(user_id: IdPath, body: UserBody) -> Response:
        out = await run_in_threadpool(svc.put_user, user_id, body.model_dump())
        return _json(out, 201 if out["created"] else 200)

    @app.get("/users/{user_id:path}", tags=["users"], summary="A user", dependencies=[read])
    async def get_user(user_id: IdPath) -> Response:
        return _json(await run_in_threadpool(svc.get_user, user_id))

    @app.delete(
        "/users/{user_id:path}",
        tags=["users"],
        summary="Erase a user: profile and events, from the store and every later answer",
        dependencies=[write],
    )
    async def delete_user(user_id: IdPath) -> Response:
        await run_in_threadpool(svc.delete_user, user_id)
        return _json({"user": user_id, "deleted": True})

    # -- models ------------------------------------------------------------------------------

    @app.get(
        "/models", tags=["models"], summary="Model versions and the active one", dependencies=[read]
    )
    async def models() -> Response:
        return _json(await run_in_threadpool(svc.models))

    async def _await_or_accept(fut: Any, wait: bool, name: str) -> Response:
        if not wait:
            return _json({"version": name, "state": "loading"}, 202)
        try:
            await asyncio.wrap_future(fut)
        except LmrecError:
            raise
        except Exception as exc:
            raise LmrecError(f"cannot load model version {name!r}: {exc}") from None
        return _json({"version": name, "state": "loaded", "active": svc.registry.active})

    @app.post(
        "/models/{version}/activate",
        tags=["models"],
        summary="Load (in the background) and make a version the default; no downtime",
        dependencies=[admin],
    )
    async def activate(version: IdPath, wait: bool = False) -> Response:
        return await _await_or_accept(svc.activate(version), wait, version)

    @app.post(
        "/models/{version}/load",
        tags=["models"],
        summary="Load a version beside the active one (for ?model= variants)",
        dependencies=[admin],
    )
    async def load(version: IdPath, wait: bool = False) -> Response:
        return await _await_or_accept(svc.load(version), wait, version)

    @app.post(
        "/models/train",
        tags=["models"],
        summary="Retrain on the current store in the background; activates the new version",
        dependencies=[admin],
    )
    async def train(body: TrainBody) -> Response:
        info = await run_in_threadpool(svc.train, body.model, body.params, body.activate)
        return _json(info, 202)

    @app.get(
        "/models/jobs/{job_id}", tags=["models"], summary="A retraining job", dependencies=[admin]
    )
    async def job(job_id: IdPath) -> Response:
        return _json(svc.job(job_id))

    return app
