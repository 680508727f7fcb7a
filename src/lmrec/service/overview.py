"""What the console shows about the store: counts, activity by day, the popularity curve, and
a user's newest events (`history`). The overview is cached for a few seconds."""

from __future__ import annotations

__all__ = ["Overviews", "history"]

import threading
import time
from typing import Any

import numpy as np

from lmrec.service.catalogue import Catalogue
from lmrec.service.errors import NotFound
from lmrec.store import Store


class Overviews:
    """`get()`: the store's overview, recomputed at most every `ttl` seconds."""

    def __init__(self, store: Store, ttl: float = 10.0):
        self.store, self.ttl = store, ttl
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
            value = self._compute()
            self._cached = (time.monotonic(), value)
            return value

    def _compute(self) -> dict[str, Any]:
        counts = self.store.counts()
        x = self.store.read_interactions()
        events = dict(zip(*np.unique(x.event, return_counts=True), strict=True))
        days: dict[str, list] = {"day": [], "events": []}
        if len(x.ts):
            day = (x.ts // 86400).astype(np.int64)
            d, c = np.unique(day, return_counts=True)
            days = {
                "day": [time.strftime("%Y-%m-%d", time.gmtime(int(v) * 86400)) for v in d],
                "events": c.tolist(),
            }
        # Popularity curve: the share of all events that the top k% of items hold.
        curve: dict[str, list] = {"items_share": [], "events_share": []}
        if len(x.item_id):
            per_item = np.sort(np.unique(x.item_id, return_counts=True)[1])[::-1]
            cum = np.cumsum(per_item) / per_item.sum()
            at = np.unique(np.linspace(0, len(cum) - 1, min(100, len(cum))).astype(int))
            curve = {
                "items_share": ((at + 1) / len(cum)).tolist(),
                "events_share": cum[at].tolist(),
            }
        return {
            "counts": {**counts, "exposures": sum(self.store.count_exposures().values())},
            "events": {str(k): int(v) for k, v in events.items()},
            "activity": days,
            "popularity": curve,
        }


def history(store: Store, catalogue: Catalogue, user: str, n: int = 20) -> dict[str, Any]:
    """The newest `n` events of a user, newest first, with each item's title."""
    if store.get("user", user) is None:
        raise NotFound(f"unknown user {user!r}")
    rows = store.events_of([user], 0.0)[-n:][::-1]
    with catalogue.lock:
        titles = {i: (catalogue.items.get(i) or {}).get("title", "") for _, i, *_ in rows}
    return {
        "user": user,
        "events": [
            {"item": i, "title": titles.get(i, ""), "event": e, "value": v, "ts": t}
            for _, i, e, v, t in rows
        ],
    }
