"""`Answers`: recommendations and similar items from the loaded model versions.

Each answer uses the user's live history (the store's events since the model's snapshot and
the feedback since the start, `Slot.query`), the stored profile of users the model does not
know, the live catalogue (deleted items never come back, categories filter) and, for large
catalogues, the retrieval index of embedding models.
"""

from __future__ import annotations

__all__ = ["NO_CONSENT", "Answers", "UserRequest", "ranked", "slot_of"]

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.models.base import History, Query, Ranker, Recommender
from lmrec.rerank.config import RerankConfig
from lmrec.service.catalogue import Catalogue
from lmrec.service.errors import Conflict, NotFound, Unavailable
from lmrec.service.follow import StoreFollower
from lmrec.service.live import Feed, Slot, record_text
from lmrec.service.registry import ModelRegistry
from lmrec.service.search import SearchIndex
from lmrec.service.settings import Settings

#: The `fallback` of answers to users who opted out of personalisation.
NO_CONSENT = "no consent to personalisation"

#: One user-recommendation request: (user, n, model, exclude_seen, category).
UserRequest = tuple[str, int, "str | None", bool, "str | None"]


def slot_of(registry: ModelRegistry, model: str | None) -> Slot:
    """The loaded version `model` (None: the active one); 404 unknown, 503 not loaded yet."""
    try:
        return registry.slot(model)
    except KeyError as exc:
        raise NotFound(exc.args[0]) from None
    except LookupError as exc:
        raise Unavailable(str(exc)) from None


def ranked(
    user: str | None,
    version: str,
    model: Recommender,
    idx: np.ndarray,
    scores: np.ndarray,
    fallback: str | None,
) -> dict[str, Any]:
    """The answer of one row that `model` (of `version`) ranked (item indices, -1 for none,
    and their scores): the `schemas.Recommendations` body."""
    assert model.items is not None
    keep = idx >= 0
    ids = model.items.ids_of(idx[keep])
    return {
        "user": user,
        "model": version,
        "items": [
            {"item": i, "score": float(s) if math.isfinite(s) else None}
            for i, s in zip(ids, scores[keep].tolist(), strict=True)
        ],
        "fallback": fallback,
    }


class Answers:
    """Recommendations for users and queries, and similar items."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        feed: Feed,
        catalogue: Catalogue,
        search: SearchIndex,
    ):
        self.settings, self.registry, self.feed = settings, registry, feed
        self.catalogue, self.search = catalogue, search
        self.follower: StoreFollower | None = None  # set by the service (follow_store)
        self._executor: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _check_n(self, n: int) -> None:
        if n > self.settings.max_n:
            raise LmrecError(f"n must be at most {self.settings.max_n}, got {n}")

    def _fallback(self, user: str | None, used: str | None) -> str | None:
        """The answer's `fallback`: NO_CONSENT for a user who opted out of personalisation."""
        return NO_CONSENT if user is not None and not self.catalogue.personal(user) else used

    def query(
        self, slot: Slot, user: str | None, extra: Query | None = None, since: float | None = None
    ) -> Query:
        """The model's query for `user` (live history, and the stored profile when the model
        does not know them and the request brings none) and/or the request's `extra`.

        `since`: the `time.monotonic()` by which the request had arrived (default now); with
        `follow_store`, every event another process committed before then is in the history
        (one store read serves every request of a batch)."""
        if user is None or not self.catalogue.personal(user):
            return extra or Query()  # no consent to personalisation: what anybody gets
        if self.follower is not None:
            self.follower.poll(since=time.monotonic() if since is None else since)
        q = slot.query(user, self.feed, extra)
        prof = self.catalogue.profiles.get(user)
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
                    time=q.time,
                    context=q.context,
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
        self._check_n(n)
        slot = slot_of(self.registry, model)
        m = slot.model
        q = self.query(slot, user, extra)
        hist = m.history_of([q])
        mask = slot.candidates(category, self.catalogue.categories)
        idx, val, used = self._rank(slot, m, hist, n, exclude_seen, mask, rerank)
        out = ranked(user, slot.name, m, idx[0], val[0], self._fallback(user, used[0]))
        if explain:
            self._explain(slot, hist, out)
        return out

    def recommend_users(self, requests: Sequence[UserRequest]) -> list[dict[str, Any] | Exception]:
        """Many (user, n, model, exclude_seen, category) requests in as few model calls as
        possible: one `rank` per (version, exclude_seen, category) group, the groups side by
        side on up to `Settings.group_threads` threads (the two arms of an A/B experiment
        are two groups). Each answer is what `recommend` gives for that request alone (or
        the exception it raises)."""
        since = time.monotonic()  # every request of the batch had arrived by now
        out: list[dict[str, Any] | Exception | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for r, (_, n, model, ex, cat) in enumerate(requests):
            try:
                self._check_n(n)
            except LmrecError as exc:
                out[r] = exc
                continue
            groups.setdefault((model, ex, cat), []).append(r)
        work = list(groups.items())
        if len(work) > 1 and self.settings.group_threads > 1:
            done = self._pool().map(lambda g: self._group(requests, *g, since), work)
        else:
            done = (self._group(requests, *g, since) for g in work)
        for (_, rows), answers in zip(work, done, strict=True):
            for r, a in zip(rows, answers, strict=True):
                out[r] = a
        return out  # type: ignore[return-value]

    def _pool(self) -> ThreadPoolExecutor:
        """The threads of `recommend_users`' groups, started on first use."""
        with self._pool_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.settings.group_threads, thread_name_prefix="lmrec-groups"
                )
            return self._executor

    def close(self) -> None:
        """Stop the group threads (a later batch starts them again)."""
        with self._pool_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    def _group(
        self, requests: Sequence[UserRequest], key: tuple, rows: list[int], since: float
    ) -> list[dict[str, Any] | Exception]:
        """The answers of one group's requests (`rows` of `requests`) from one model call."""
        model, ex, cat = key
        try:
            slot = slot_of(self.registry, model)
            m = slot.model
            qs = [self.query(slot, requests[r][0], since=since) for r in rows]
            hist = m.history_of(qs)
            mask = slot.candidates(cat, self.catalogue.categories)
            k = max(requests[r][1] for r in rows)
            idx, val, used = self._rank(slot, m, hist, k, ex, mask, None)
        except Exception as exc:
            return [exc] * len(rows)
        answers: list[dict[str, Any] | Exception] = []
        for j, r in enumerate(rows):
            user, n = requests[r][0], requests[r][1]
            answers.append(
                ranked(user, slot.name, m, idx[j][:n], val[j][:n], self._fallback(user, used[j]))
            )
        return answers

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
            ranker = _reranked(slot, m, rerank, self.catalogue.categories)
            return ranker.rank(hist, n, exclude_seen=exclude_seen, candidates=mask)
        index = slot.index
        if index is not None and mask is None and hist.matrix.nnz:
            vecs = m.query_embeddings(hist)
            if vecs is not None:
                ex = [hist.matrix[r].indices if exclude_seen else [] for r in range(len(hist))]
                idx, val = index.search(vecs, n, exclude=ex)
                return idx, val, [None] * len(hist)
        return m.rank(hist, n, exclude_seen=exclude_seen, candidates=mask)

    @staticmethod
    def _explain(slot: Slot, hist: History, out: dict[str, Any]) -> None:
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

    def ratings(self, user: str, items: Sequence[str], *, model: str | None = None) -> dict:
        """Predicted ratings of `items` for `user` by a rating model (an unknown user gets the
        ratings of a user without any: the item baselines)."""
        if not items:
            raise LmrecError("give at least one item (?item=ID, repeated for more)")
        slot = slot_of(self.registry, model)
        m = slot.model
        if not getattr(m, "predicts_ratings", False):  # the served model's state: 409
            from lmrec.evaluation.rating import rating_model_names

            raise Conflict(
                f"model {slot.name!r} ({m.name}) ranks items but does not predict ratings; "
                f"serve a rating model ({', '.join(rating_model_names())})"
            )
        assert m.users is not None
        rated = m.rate(user, list(items))
        return {
            "user": user,
            "model": slot.name,
            "known_user": user in m.users,
            "items": [{"item": i, "rating": r} for i, r in zip(items, rated, strict=True)],
        }

    def similar(self, item: str, n: int = 10, *, model: str | None = None) -> dict[str, Any]:
        """Items like `item`: the model's own similarity, else the text index for new items."""
        self._check_n(n)
        if item not in self.catalogue.items:
            raise NotFound(f"unknown item {item!r}")
        slot = slot_of(self.registry, model)
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
        hits = self.search.search(record_text(self.catalogue.items[item]), n + 1)["items"]
        return {
            "item": item,
            "model": slot.name,
            "source": "text",
            "items": [h for h in hits if h["item"] != item][:n],
        }


def _reranked(slot: Slot, m: Recommender, config: RerankConfig, categories: dict) -> Ranker:
    """The model re-ranked as `config` says (`lmrec.rerank.diversify`, the same as the CLI and
    the evaluation), with the live catalogue's categories; similarity=text uses the model's text
    vectors. The similarity is cached per model object and source (`Slot.similarity`)."""
    from lmrec.rerank import diversify, item_similarity

    assert m.items is not None
    cats = [categories.get(i, []) for i in m.items]
    sim = None
    if config.diversifies:
        sim = slot.similarity(
            m, config.similarity, lambda: item_similarity(m, config.similarity, categories=cats)
        )
    return diversify(m, config, similarity=sim, categories=cats)
