"""`StoreFollower`: events that other service processes wrote, into this process's live feed.

Several processes serve one store (`lmrec serve --workers N`, or several hosts). Each writes
its own feedback and puts it in its own live feed at once; the others learn of it from the
store's shared event sequence, the interactions' row ids. Before each answer for a user, the
follower reads the rows above the highest id it has seen (one primary-key range read, empty
when nothing was written), so an event acknowledged by any process is in the next answer of
every process.

Row ids are handed out when a row is inserted, not when its transaction commits: a row with a
lower id can become visible after a higher one. Ids skipped over are kept as holes and read
again on each poll until they appear or `hole_s` passes (a rolled-back insert, or an id that
MySQL's `ON DUPLICATE KEY` consumed, never appears).
"""

from __future__ import annotations

__all__ = ["StoreFollower"]

import math
import threading
import time
from collections.abc import Callable

from lmrec.store import Store

Row = tuple[int, str, str, str, float | None, float]


class StoreFollower:
    """Polls the store for interactions this process has not seen; hands them to `on_rows`
    (which may say how many of them were news to this process: `added`)."""

    def __init__(
        self,
        store: Store,
        on_rows: Callable[[list[Row]], int | None],
        *,
        hole_s: float = 10.0,
        max_holes: int = 1000,
    ):
        self.store, self.on_rows = store, on_rows
        self.hole_s, self.max_holes = hole_s, max_holes
        self.top = store.last_event_id()  # earlier rows are in the models' deltas
        self.holes: dict[int, float] = {}  # id -> when it was first missed
        self.polls = 0
        self.rows = 0  # rows read
        self.added = 0  # of which on_rows said they were new here
        self._lock = threading.Lock()
        self._started = -math.inf

    def poll(self, since: float | None = None) -> int:
        """Take the rows committed since the last poll; returns how many.

        `since` (a `time.monotonic()` of the caller's request): nothing to do when a poll that
        started after it has run, since that poll saw every commit before the request.
        """
        with self._lock:
            if since is not None and self._started >= since:
                return 0
            self._started = now = time.monotonic()
            self.holes = {h: t for h, t in self.holes.items() if now - t < self.hole_s}
            taken = 0
            while True:
                rows = self.store.events_after(self.top, sorted(self.holes))
                fresh = self._take(rows, now)
                if fresh:
                    self.added += self.on_rows(fresh) or 0
                taken += len(fresh)
                if len(rows) < 50_000:
                    break
            self.polls += 1
            self.rows += taken
            return taken

    def _take(self, rows: list[Row], now: float) -> list[Row]:
        fresh = []
        for r in rows:
            rid = r[0]
            if rid > self.top:
                for h in range(max(self.top + 1, rid - self.max_holes), rid):
                    self.holes.setdefault(h, now)
                self.top = rid
                fresh.append(r)
            elif self.holes.pop(rid, None) is not None:
                fresh.append(r)
        if len(self.holes) > self.max_holes:
            for h in sorted(self.holes)[: len(self.holes) - self.max_holes]:
                del self.holes[h]
        return fresh
