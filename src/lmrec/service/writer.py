"""`FeedbackWriter`: one thread writes every feedback event, in batched transactions.

Requests put their events on a queue and wait. The writer takes what is waiting (up to
`flush_events` events, gathering for at most `flush_ms`), writes it in one transaction
(unknown users and items are created), then hands the committed events to `on_commit` (the
live overlay) and only then answers the waiting requests. So an acknowledged event is both in
the store and in the next answer; an event whose transaction failed is reported as failed to
its request, never silently dropped. One writer means SQLite never sees competing writers.
"""

from __future__ import annotations

__all__ = ["FeedbackWriter", "Pending"]

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from lmrec.errors import LmrecError
from lmrec.store import Store


@dataclass(frozen=True)
class Pending:
    """Events of one request, as parallel lists."""

    users: Sequence[str]
    items: Sequence[str]
    events: Sequence[str]
    values: Sequence[float]  # NaN where absent
    ts: Sequence[float]


_STOP = object()


class FeedbackWriter:
    """Batched, single-threaded writes of feedback to the store."""

    def __init__(
        self,
        store: Store,
        on_commit: Callable[[list[Pending]], None],
        *,
        flush_ms: float = 2.0,
        flush_events: int = 2000,
    ):
        self.store = store
        self.on_commit = on_commit
        self.flush_s = flush_ms / 1000
        self.flush_events = flush_events
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lmrec-feedback-writer", daemon=True)
        self.committed = 0  # events acknowledged since start
        self.transactions = 0
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        if self._started:
            self._q.put(_STOP)
            self._thread.join()
            self._started = False

    def queued(self) -> int:
        return self._q.qsize()

    def submit(self, pending: Pending) -> Future:
        """Queue events; the future gives the number of new rows once committed."""
        if not self._started:
            raise LmrecError("the feedback writer is not running")
        fut: Future = Future()
        self._q.put((pending, fut))
        return fut

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is _STOP:
                break
            batch = [first]
            size = len(first[0].users)
            deadline = time.perf_counter() + self.flush_s
            while size < self.flush_events:
                left = deadline - time.perf_counter()
                try:
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt[0].users)
            self._write(batch)

    def _write(self, batch: list[tuple[Pending, Future]]) -> None:
        pend = [p for p, _ in batch]
        try:
            added = self._commit(pend)
        except Exception as exc:  # the transaction rolled back: tell every waiting request
            for _, fut in batch:
                fut.set_exception(exc)
            return
        try:
            self.on_commit(pend)
        finally:
            self.committed += sum(len(p.users) for p in pend)
            self.transactions += 1
            for (_, fut), n in zip(batch, added, strict=True):
                fut.set_result(n)

    def _commit(self, pend: list[Pending]) -> list[int]:
        """One transaction for the whole batch; returns new rows per request."""
        users = [u for p in pend for u in p.users]
        items = [i for p in pend for i in p.items]
        with self.store.begin() as conn:
            umap = self.store.ensure(conn, "user", users)
            imap = self.store.ensure(conn, "item", items)
            fresh = self.store.add_events(  # one statement for every request of the batch
                conn,
                [umap[u] for u in users],
                [imap[i] for i in items],
                [e for p in pend for e in p.events],
                [v for p in pend for v in p.values],
                [t for p in pend for t in p.ts],
            )
        out, at = [], 0
        for p in pend:
            out.append(int(fresh[at : at + len(p.users)].sum()))
            at += len(p.users)
        return out
