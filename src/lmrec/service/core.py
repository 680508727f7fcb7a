"""`Service`: the recommendation service without HTTP (the FastAPI app in app.py calls it).

It owns the store, the feedback writer, the live state (feed, catalogue, profiles), the model
registry and the item search index. Every method is safe to call from many threads.
"""

from __future__ import annotations

import gc

__all__ = ["NotFound", "Service", "Unavailable"]

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.models.base import History, Query, Ranker, Recommender
from lmrec.rerank.config import RerankConfig
from lmrec.service.index import VectorIndex
from lmrec.service.live import (
    Event,
    Feed,
    Slot,
    record_text,
    supports_new_items,
    with_records,
)
from lmrec.service.registry import ModelRegistry
from lmrec.service.settings import Settings
from lmrec.service.writer import FeedbackWriter, Pending
from lmrec.store import Store


class NotFound(LmrecError):
    """A named user, item, model version or job does not exist (404)."""


class Unavailable(LmrecError):
    """The service cannot answer yet, e.g. no model is loaded (503)."""


class _Search:
    """Semantic item search: text vectors of every stored item in a `VectorIndex`."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], index: VectorIndex, name: str):
        self.encode = encode
        self.index = index
        self.name = name
        self.pos: dict[str, int] = {i: p for p, i in enumerate(index.ids)}


class Service:
    """Answers, feedback, catalogue and model management over one store."""

    def __init__(self, settings: Settings):
        settings.check()
        self.settings = settings
        if settings.threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(settings.threads)
        self.store = Store(settings.db)
        self.feed = Feed()
        self._lock = threading.RLock()  # catalogue, users and slot preparation
        self.catalog: dict[str, dict[str, Any]] = {}
        self.categories: dict[str, list[str]] = {}
        self.profiles: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self.users: set[str] = set()
        self.registry = ModelRegistry(settings.models, settings.models_dir, self._prepare)
        self.writer = FeedbackWriter(
            self.store,
            self._on_commit,
            flush_ms=settings.flush_ms,
            flush_events=settings.flush_events,
        )
        self._search: _Search | None = None
        self._search_changed: set[str] = set()
        self._search_lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self._clock = 0.0
        self._clock_lock = threading.Lock()
        self.started_at = time.time()

    # -- life cycle --------------------------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        """Read the catalogue, start the writer, load the active version (waiting if `wait`)."""
        self._load_catalog()
        self.writer.start()
        first = self.settings.active or self.registry.newest()
        if first is not None:
            fut = self.registry.activate(first)
            if wait:
                fut.result()
        for name in self.registry.explicit:
            if name != first:
                self.registry.load(name)
        if self.settings.warm_search:
            threading.Thread(
                target=self._warm_search, name="lmrec-search-index", daemon=True
            ).start()

    def _warm_search(self) -> None:
        try:
            self.search_index()
            gc.freeze()  # the encoder's objects too stay out of full collections (app.freeze_heap)
        except Exception as exc:  # reported again, to the caller, by the first search
            print(f"lmrec serve: the item search index could not be built: {exc}", flush=True)

    def stop(self) -> None:
        self.writer.stop()
        self.registry.close()
        self.store.close()

    def _load_catalog(self) -> None:
        with self._lock:
            self.catalog = {r["ext_id"]: r for r in self.store.read_table("item")}
            self.categories = {i: list(r["categories"] or []) for i, r in self.catalog.items()}
            self.users = set()
            self.profiles = {}
            for r in self.store.read_table("user"):
                self.users.add(r["ext_id"])
                if r["attributes"] or r["tags"]:
                    self.profiles[r["ext_id"]] = (
                        dict(r["attributes"] or {}),
                        list(r["tags"] or []),
                    )

    def _prepare(self, slot: Slot) -> None:
        """Bring a freshly loaded version up to date with the store (runs in a loader thread)."""
        slot.model.make_contiguous()
        with self._lock:
            items = list(self.catalog.values())
            slot.sync_with_store(self.store, items, set(self.users))
            model = slot.model
            assert model.items is not None
            if supports_new_items(model):
                new = [r for r in items if r["ext_id"] not in model.items]
                if new:
                    slot.model = with_records(model, new)
                    slot.blocked = (
                        None
                        if slot.blocked is None
                        else np.concatenate([slot.blocked, np.zeros(len(new), bool)])
                    )
            slot.index = self._model_index(slot.model)

    # -- answers -----------------------------------------------------------------------------

    def _slot(self, model: str | None) -> Slot:
        try:
            return self.registry.slot(model)
        except KeyError as exc:
            raise NotFound(exc.args[0]) from None
        except LookupError as exc:
            raise Unavailable(str(exc)) from None

    def _query(self, slot: Slot, user: str | None, extra: Query | None = None) -> Query:
        if user is None:
            return extra or Query()
        q = slot.query(user, self.feed, extra)
        prof = self.profiles.get(user)
        if prof is not None and not (extra and (extra.attributes or extra.tags or extra.text)):
            attrs, tags = prof
            # The stored profile speaks for users the model does not know (new or forgotten).
            if q.user is None:
                q = Query(
                    user=None,
                    items=q.items,
                    events=q.events,
                    timestamps=q.timestamps,
                    values=q.values,
                    attributes=attrs or None,
                    tags=tags,
                    text=q.text,
                )
        return q

    def recommend(
        self,
        user: str | None,
        n: int = 10,
        *,
        model: str | None = None,
        exclude_seen: bool = True,
        category: str | None = None,
        rerank: RerankConfig | None = None,
        explain: bool = False,
        extra: Query | None = None,
    ) -> dict[str, Any]:
        """Top-n items for a user and/or an anonymous query, with the version that answered;
        re-ranked as `rerank` says when it is active (diversity, constraints, filters)."""
        if n > self.settings.max_n:
            raise LmrecError(f"n must be at most {self.settings.max_n}, got {n}")
        slot = self._slot(model)
        m = slot.model
        q = self._query(slot, user, extra)
        hist = m.history_of([q])
        mask = slot.candidates(category, self.categories)
        idx, val, used = self._rank(slot, m, hist, n, exclude_seen, mask, rerank)
        keep = idx[0] >= 0
        ids = m.items.ids_of(idx[0][keep])  # type: ignore[union-attr]
        out: dict[str, Any] = {
            "user": user,
            "model": slot.name,
            "items": [
                {"item": i, "score": float(s) if math.isfinite(s) else None}
                for i, s in zip(ids, val[0][keep].tolist(), strict=True)
            ],
            "fallback": used[0],
        }
        if explain:
            self._explain(slot, hist, q, out)
        return out

    def recommend_users(
        self, requests: Sequence[tuple[str, int, str | None, bool, str | None]]
    ) -> list[dict[str, Any] | Exception]:
        """Many (user, n, model, exclude_seen, category) requests in as few model calls as
        possible: one `rank` per (version, exclude_seen, category) group. Each answer is what
        `recommend` gives for that request alone (or the exception it raises)."""
        out: list[dict[str, Any] | Exception | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for r, (_, n, model, ex, cat) in enumerate(requests):
            if n > self.settings.max_n:
                out[r] = LmrecError(f"n must be at most {self.settings.max_n}, got {n}")
                continue
            groups.setdefault((model, ex, cat), []).append(r)
        for (model, ex, cat), rows in groups.items():
            try:
                slot = self._slot(model)
                m = slot.model
                qs = [self._query(slot, requests[r][0]) for r in rows]
                hist = m.history_of(qs)
                mask = slot.candidates(cat, self.categories)
                k = max(requests[r][1] for r in rows)
                idx, val, used = self._rank(slot, m, hist, k, ex, mask, None)
            except Exception as exc:
                for r in rows:
                    out[r] = exc
                continue
            assert m.items is not None
            for j, r in enumerate(rows):
                n = requests[r][1]
                keep = idx[j][:n] >= 0
                ids = m.items.ids_of(idx[j][:n][keep])
                out[r] = {
                    "user": requests[r][0],
                    "model": slot.name,
                    "items": [
                        {"item": i, "score": float(v) if math.isfinite(v) else None}
                        for i, v in zip(ids, val[j][:n][keep].tolist(), strict=True)
                    ],
                    "fallback": used[j],
                }
        return out  # type: ignore[return-value]

    def _rank(
        self,
        slot: Slot,
        m: Recommender,
        hist: History,
        n: int,
        exclude_seen: bool,
        mask: np.ndarray | None,
        rerank: RerankConfig | None,
    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        if rerank is not None and rerank.active:
            ranker = _reranked(slot, m, rerank, self.categories)
            return ranker.rank(hist, n, exclude_seen=exclude_seen, candidates=mask)
        index = slot.index
        if index is not None and mask is None and hist.matrix.nnz:
            vecs = m.query_embeddings(hist)
            if vecs is not None:
                ex = [hist.matrix[r].indices if exclude_seen else [] for r in range(len(hist))]
                idx, val = index.search(vecs, n, exclude=ex)
                return idx, val, [None] * len(hist)
        return m.rank(hist, n, exclude_seen=exclude_seen, candidates=mask)

    def _explain(self, slot: Slot, hist: History, q: Query, out: dict[str, Any]) -> None:
        """Add each item's reasons and sentence (lmrec.explain: contributions of the history
        items to the score, similar users, interests or popularity; only true ones)."""
        from lmrec.explain import explain_history

        m = slot.model
        assert m.items is not None
        idx = m.items.indices([r["item"] for r in out["items"]])
        found = explain_history(m, hist, idx, fallback=out["fallback"])
        for r, e in zip(out["items"], found, strict=True):
            r["why"] = {
                "sentence": e.sentence,
                "reasons": [
                    {k: v for k, v in vars(x).items() if v not in ([], {}, None, "")}
                    for x in e.reasons
                ],
            }

    def similar(self, item: str, n: int = 10, *, model: str | None = None) -> dict[str, Any]:
        """Items like `item`: the model's own similarity, else the text index for new items."""
        if n > self.settings.max_n:
            raise LmrecError(f"n must be at most {self.settings.max_n}, got {n}")
        if item not in self.catalog:
            raise NotFound(f"unknown item {item!r}")
        slot = self._slot(model)
        m = slot.model
        assert m.items is not None
        if item in m.items:
            blocked = slot.blocked
            extra = 0 if blocked is None else int(blocked.sum())
            recs = m.similar_items(item, n + extra)
            pairs = [
                (i, s)
                for i, s in zip(recs.items, recs.scores, strict=True)
                if blocked is None or not blocked[m.items.get(i)]
            ][:n]
            return {
                "item": item,
                "model": slot.name,
                "source": "model",
                "items": [{"item": i, "score": float(s)} for i, s in pairs],
            }
        hits = self.search_text(record_text(self.catalog[item]), n + 1)["items"]
        return {
            "item": item,
            "model": slot.name,
            "source": "text",
            "items": [h for h in hits if h["item"] != item][:n],
        }

    # -- item search -------------------------------------------------------------------------

    def search_index(self) -> _Search:
        """The text index of every stored item, built on first use."""
        if self._search is not None:
            return self._search
        with self._search_lock:
            if self._search is not None:
                return self._search
            encode, name = self._search_encoder()
            with self._lock:
                ids = list(self.catalog)
                texts = [record_text(self.catalog[i]) for i in ids]
                self._search_changed: set[str] = set()
            vecs = encode(texts) if ids else encode(["empty"])[:0]
            kind = "auto" if self.settings.index == "off" else self.settings.index
            index = VectorIndex(vecs, ids, kind=kind, exact_limit=self.settings.exact_limit)
            search = _Search(encode, index, name)
            with self._lock:
                # Items created, changed or deleted while the vectors were being computed.
                for item in self._search_changed:
                    if item in search.pos:
                        index.hide([search.pos.pop(item)])
                    if item in self.catalog:
                        index.add(encode([record_text(self.catalog[item])]), [item])
                        search.pos[item] = len(index) - 1
                self._search = search
            return search

    def _search_encoder(self) -> tuple[Callable[[list[str]], np.ndarray], str]:
        from lmrec.text import encode_cached, load_encoder

        spec = self.settings.search_encoder
        if spec is None:
            active = self.registry.slots.get(self.registry.active or "")
            own = active.model.text_encoder() if active is not None else None
            if active is not None and own is not None:
                encode, name = own
                return encode, f"{name} ({active.name})"
            spec = "minilm"
        enc = load_encoder(spec)
        if not hasattr(enc, "name") or type(enc).__name__ == "TfidfEncoder":
            raise LmrecError(
                f"search encoder {spec!r} needs fitting; use 'minilm' or a model directory"
            )
        store = self.store
        return (lambda texts: encode_cached(enc, texts, store)), enc.name

    def search_text(self, text: str, n: int = 10) -> dict[str, Any]:
        """Items whose text is closest to `text` (cosine of encoder vectors)."""
        if n > self.settings.max_n:
            raise LmrecError(f"n must be at most {self.settings.max_n}, got {n}")
        s = self.search_index()
        v = s.encode([text])
        idx, val = s.index.search(v, n)
        return {
            "query": text,
            "encoder": s.name,
            "items": [
                {"item": s.index.ids[i], "score": float(x)}
                for i, x in zip(idx[0].tolist(), val[0].tolist(), strict=True)
                if i >= 0
            ],
        }

    def _model_index(self, m: Recommender) -> VectorIndex | None:
        """A retrieval index over an embedding model's items, when the settings ask for one."""
        kind = self.settings.index
        if kind == "off":
            return None
        items = m.item_embeddings()
        if items is None:
            return None
        if kind == "auto" and len(items) <= self.settings.exact_limit:
            return None  # small catalogue: the model scores every item exactly anyway
        assert m.items is not None
        return VectorIndex(
            items, m.items.ids.tolist(), kind=kind, exact_limit=self.settings.exact_limit
        )

    # -- feedback ----------------------------------------------------------------------------

    def now(self, k: int = 1) -> list[float]:
        """k strictly increasing timestamps from now on: events given without a time never
        collide on the store's (user, item, event, time) key."""
        with self._clock_lock:
            t = max(time.time(), self._clock + 1e-6)
            out = [t + j * 1e-6 for j in range(k)]
            self._clock = out[-1]
        return out

    def submit_feedback(self, events: Sequence[dict[str, Any]]) -> Future:
        """Queue events ({user, item, event, value, ts}); the future gives the rows added."""
        if len(events) > self.settings.max_batch_events:
            raise LmrecError(
                f"a batch holds at most {self.settings.max_batch_events} events, got {len(events)}"
            )
        missing = sum(1 for e in events if e.get("ts") is None)
        clock = iter(self.now(missing) if missing else [])
        ts = [float(e["ts"]) if e.get("ts") is not None else next(clock) for e in events]
        pending = Pending(
            users=[e["user"] for e in events],
            items=[e["item"] for e in events],
            events=[e.get("event") or "view" for e in events],
            values=[float("nan") if e.get("value") is None else float(e["value"]) for e in events],
            ts=ts,
        )
        return self.writer.submit(pending)

    def _on_commit(self, pend: list[Pending]) -> None:
        """Committed events reach the live feed (and new ids the catalogue)."""
        for p in pend:
            self.feed.add(
                p.users,
                (
                    Event(i, e, float(t), float(v))
                    for i, e, t, v in zip(p.items, p.events, p.ts, p.values, strict=True)
                ),
            )
        with self._lock:
            for p in pend:
                self.users.update(p.users)
                for i in p.items:
                    if i not in self.catalog:
                        self.catalog[i] = {
                            "ext_id": i,
                            "title": "",
                            "description": "",
                            "categories": [],
                            "attributes": {},
                        }
                        self.categories[i] = []

    # -- catalogue ---------------------------------------------------------------------------

    def put_item(self, item: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create or update an item; a new item is encoded and recommendable at once by text
        models, and searchable at once."""
        fields = {k: v for k, v in fields.items() if v is not None}
        with self._lock:
            with self.store.begin() as conn:
                added, _ = self.store.upsert(conn, "item", [{"ext_id": item, **fields}])
            rec = self.store.get("item", item)
            assert rec is not None
            rec = {
                k: rec[k]
                for k in (
                    "id",
                    "ext_id",
                    "title",
                    "description",
                    "categories",
                    "attributes",
                    "created_at",
                )
            }
            self.catalog[item] = rec
            self.categories[item] = list(rec["categories"] or [])
            for slot in list(self.registry.slots.values()):
                self._slot_add_item(slot, rec)
            if self._search is None:
                self._search_changed.add(item)
            else:
                s = self._search
                if item in s.pos:
                    s.index.hide([s.pos[item]])
                s.index.add(s.encode([record_text(rec)]), [item])
                s.pos[item] = len(s.index) - 1
        return {"item": item, "created": bool(added)}

    def _slot_add_item(self, slot: Slot, rec: dict[str, Any]) -> None:
        with slot.lock:
            m = slot.model
            assert m.items is not None
            item = rec["ext_id"]
            slot.items_changed()
            if item in m.items:
                slot.unblock(item)
                return
            if not supports_new_items(m):
                return
            new = with_records(m, [rec])
            if slot.blocked is not None:
                slot.blocked = np.concatenate([slot.blocked, [False]])
            if slot.index is not None:
                slot.index = self._model_index(new)
            slot.model = new

    def get_item(self, item: str) -> dict[str, Any]:
        rec = self.store.get("item", item)
        if rec is None:
            raise NotFound(f"unknown item {item!r}")
        return {
            "item": item,
            "title": rec["title"],
            "description": rec["description"],
            "categories": rec["categories"],
            "attributes": rec["attributes"],
            "created_at": rec["created_at"],
        }

    def delete_item(self, item: str) -> None:
        with self._lock:
            if not self.store.delete("item", item):
                raise NotFound(f"unknown item {item!r}")
            self.catalog.pop(item, None)
            self.categories.pop(item, None)
            for slot in list(self.registry.slots.values()):
                with slot.lock:
                    slot.block(item)
                    slot.items_changed()
                    if slot.index is not None and slot.model.items is not None:
                        p = slot.model.items.get(item)
                        if p >= 0:
                            slot.index.hide([p])
                    for u, evs in list(slot.delta.items()):
                        slot.delta[u] = [e for e in evs if e.item != item]
            with self.feed._lock:
                for u, evs in self.feed.events.items():
                    kept = [e for e in evs if e.item != item]
                    self.feed.count -= len(evs) - len(kept)
                    self.feed.events[u] = kept
            if self._search is None:
                self._search_changed.add(item)
            elif item in self._search.pos:
                self._search.index.hide([self._search.pos.pop(item)])

    def put_user(self, user: str, fields: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in fields.items() if v is not None}
        with self._lock:
            with self.store.begin() as conn:
                added, _ = self.store.upsert(conn, "user", [{"ext_id": user, **fields}])
            rec = self.store.get("user", user)
            assert rec is not None
            self.users.add(user)
            if rec["attributes"] or rec["tags"]:
                self.profiles[user] = (dict(rec["attributes"] or {}), list(rec["tags"] or []))
            else:
                self.profiles.pop(user, None)
        return {"user": user, "created": bool(added)}

    def get_user(self, user: str) -> dict[str, Any]:
        rec = self.store.get("user", user)
        if rec is None:
            raise NotFound(f"unknown user {user!r}")
        return {
            "user": user,
            "attributes": rec["attributes"],
            "tags": rec["tags"],
            "created_at": rec["created_at"],
            "events_since_start": len(self.feed.of(user)),
        }

    def delete_user(self, user: str) -> None:
        """Erase a user: their row and events in the store, the live feed, every loaded
        version's view of them (later answers for this id are the unknown-user answer)."""
        with self._lock:
            if not self.store.delete("user", user):
                raise NotFound(f"unknown user {user!r}")
            self.users.discard(user)
            self.profiles.pop(user, None)
            self.feed.drop_user(user)
            for slot in list(self.registry.slots.values()):
                with slot.lock:
                    slot.delta.pop(user, None)
                    if slot.model.users is not None and user in slot.model.users:
                        slot.forget = slot.forget | {user}

    # -- models ------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        self.registry.scan()
        out = []
        for v in sorted(self.registry.versions.values(), key=lambda v: v.name):
            slot = self.registry.slots.get(v.name)
            row: dict[str, Any] = {"version": v.name, "path": v.path, "state": v.state}
            if v.error:
                row["error"] = v.error
            if slot is not None:
                m = slot.model
                row.update(
                    model=m.name,
                    items=len(m.items) if m.items is not None else 0,
                    users=len(m.users) if m.users is not None else 0,
                    load_seconds=round(slot.load_seconds, 3),
                    index=slot.index.kind if slot.index is not None else "exact",
                    new_items=supports_new_items(m),
                )
            out.append(row)
        return {"active": self.registry.active, "versions": out}

    def activate(self, name: str) -> Future:
        try:
            return self.registry.activate(name)
        except KeyError as exc:
            raise NotFound(exc.args[0]) from None

    def load(self, name: str) -> Future:
        try:
            return self.registry.load(name)
        except KeyError as exc:
            raise NotFound(exc.args[0]) from None

    def train(self, model: str, params: dict[str, Any], activate: bool = True) -> dict[str, Any]:
        """Retrain on the store as it is now, in the background; save as a new version."""
        from lmrec.models import create_model

        if self.registry.models_dir is None:
            raise LmrecError("retraining needs a models directory: start with --models-dir DIR")
        create_model(model, **params)  # validate the name and parameters now (400 if bad)
        job = uuid.uuid4().hex[:12]
        version = f"{model}-{time.strftime('%Y%m%d-%H%M%S')}-{job[:4]}"
        info: dict[str, Any] = {"job": job, "model": model, "version": version, "state": "running"}
        self.jobs[job] = info

        def run() -> None:
            from lmrec.data import Dataset

            t0 = time.perf_counter()
            try:
                ds = Dataset.from_store(self.store)
                fitted = create_model(model, **params).fit(ds)
                assert self.registry.models_dir is not None
                fitted.save(self.registry.models_dir / version)  # complete or not at all
                info["fit_seconds"] = round(time.perf_counter() - t0, 3)
                if activate:
                    self.registry.scan()
                    self.registry.activate(version).result()
                info["state"] = "done"
            except Exception as exc:
                info["state"] = "failed"
                info["error"] = f"{type(exc).__name__}: {exc}"

        threading.Thread(target=run, name=f"lmrec-train-{job}", daemon=True).start()
        return info

    def job(self, job: str) -> dict[str, Any]:
        if job not in self.jobs:
            raise NotFound(f"unknown job {job!r}")
        return self.jobs[job]

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.registry.active in self.registry.slots else "loading",
            "active": self.registry.active,
            "loaded": sorted(self.registry.slots),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "search_index": "ready" if self._search is not None else "not built",
            "feedback_committed": self.writer.committed,
            "feedback_queued": self.writer.queued(),
        }


def _reranked(slot: Slot, m: Recommender, config: RerankConfig, categories: dict) -> Ranker:
    """The model re-ranked as `config` says (`lmrec.rerank.diversify`, the same as the CLI and
    the evaluation), with the live catalogue's categories; similarity=text uses the model's text
    vectors. The similarity is cached per model object and source."""
    from lmrec.rerank import diversify, item_similarity

    assert m.items is not None
    cats = [categories.get(i, []) for i in m.items]
    sim = None
    if config.diversifies:
        cache = slot.__dict__.setdefault("_similarity", {})
        key = (id(m), config.similarity)
        sim = cache.get(key)
        if sim is None:
            sim = item_similarity(m, config.similarity, categories=cats)
            if any(k[0] != id(m) for k in cache):
                cache.clear()
            cache[key] = sim
    return diversify(m, config, similarity=sim, categories=cats)
