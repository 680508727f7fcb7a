"""`FeedbackIntake`: feedback events from the API to the store, then to the live feed.

Events are queued to the `FeedbackWriter`, which commits them in few transactions; once
committed they reach the live feed (so the next answer uses them) and their new user and item
ids the catalogue.
"""

from __future__ import annotations

__all__ = ["FeedbackIntake"]

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from lmrec.errors import LmrecError
from lmrec.service.catalogue import Catalogue
from lmrec.service.live import Event, Feed
from lmrec.service.settings import Settings
from lmrec.service.writer import FeedbackWriter, Pending
from lmrec.store import Store


class FeedbackIntake:
    """Timestamps, queues and commits feedback events; owns the writer."""

    def __init__(self, settings: Settings, store: Store, feed: Feed, catalogue: Catalogue):
        self.settings, self.feed, self.catalogue = settings, feed, catalogue
        self.writer = FeedbackWriter(
            store,
            self.on_commit,
            flush_ms=settings.flush_ms,
            flush_events=settings.flush_events,
        )
        self._clock = 0.0
        self._clock_lock = threading.Lock()

    def now(self, k: int = 1) -> list[float]:
        """k strictly increasing timestamps from now on: events given without a time never
        collide on the store's (user, item, event, time) key."""
        with self._clock_lock:
            t = max(time.time(), self._clock + 1e-6)
            out = [t + j * 1e-6 for j in range(k)]
            self._clock = out[-1]
        return out

    def submit(self, events: Sequence[dict[str, Any]]) -> Future:
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

    def on_commit(self, pend: list[Pending]) -> None:
        """Committed events reach the live feed (and new ids the catalogue)."""
        for p in pend:
            self.feed.add(
                p.users,
                (
                    Event(i, e, float(t), float(v))
                    for i, e, t, v in zip(p.items, p.events, p.ts, p.values, strict=True)
                ),
            )
        self.catalogue.note_feedback(pend)

    def on_store_rows(self, rows: Sequence[tuple]) -> int:
        """Rows another process committed (`StoreFollower`) reach the live feed too; those
        this process wrote are there already. Returns how many were new to the feed."""
        nan = float("nan")
        pend = Pending(
            users=[r[1] for r in rows],
            items=[r[2] for r in rows],
            events=[r[3] for r in rows],
            values=[nan if r[4] is None else float(r[4]) for r in rows],
            ts=[float(r[5]) for r in rows],
        )
        events = (
            Event(i, e, t, v)
            for i, e, t, v in zip(pend.items, pend.events, pend.ts, pend.values, strict=True)
        )
        added = self.feed.add(pend.users, events, unique=True)
        self.catalogue.note_feedback([pend])
        return added
