"""`Experiments`: A/B experiments inside the service, and `ExposureLog`, their exposure log.

An answer without an explicit `model` goes through `route`: the oldest running experiment
whose population the user (or, for anonymous queries, the session) belongs to picks the arm
by the salted hash of `lmrec.experiments.assign`, and the arm's model version answers. An arm
whose version is not loaded is served by the active version and logged as `ARM~fallback`, so
the sample-ratio check sees the traffic its arm lost. Every such answer carries
`experiment: {name, arm, request_id}` and is queued to the `ExposureLog`, whose thread writes
exposures to the store in batches, off the request's path; a failed write is retried, never
dropped (unless the store refuses it for ten minutes: then it is counted as lost and said on
stderr), and `stop` writes what is queued before the service ends. A process killed outright
loses what is still queued (the last 100 ms of answers at most).

The running experiments are re-read from the store every second by the log's thread, so
experiments created or stopped by `lmrec experiment` in another process take effect.
"""

from __future__ import annotations

__all__ = ["Experiments", "ExposureLog", "Route"]

import itertools
import json
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from lmrec.errors import LmrecError, StoreError
from lmrec.experiments.config import ExperimentConfig, assign
from lmrec.experiments.report import report
from lmrec.service.catalogue import Catalogue
from lmrec.service.errors import NotFound
from lmrec.service.registry import ModelRegistry
from lmrec.store import Store


@dataclass(frozen=True)
class Route:
    """Where one answer goes: the experiment, the arm that serves it and its model version."""

    experiment: str
    arm: str
    model: str | None
    unit: str


class ExposureLog:
    """A thread that writes queued exposures to the store in batched transactions.

    `add` only appends to a deque: it never wakes the writer (a queue's notify per answer
    hands the GIL to the writer thread and cost answers about 0.6 ms each on a busy machine);
    the writer wakes every `flush_ms`, or at once for `flush` and `stop`, and takes what is
    there."""

    def __init__(self, store: Store, flush_ms: float = 100.0, on_tick: Any = None):
        self.store = store
        self.flush_s = flush_ms / 1000
        self.on_tick = on_tick  # called about once a second from the thread
        self._rows: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lmrec-exposure-log", daemon=True)
        self.added = 0
        self.written = 0  # exposures handled (stored, or lost after give_up_s)
        self.failures = 0
        self.lost = 0
        self.give_up_s = 600.0
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Write everything queued, then end the thread."""
        if self._started:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._started = False

    def queued(self) -> int:
        return self.added - self.written

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.added += 1
            self._rows.append(row)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every exposure queued so far is in the store."""
        deadline = time.monotonic() + timeout
        with self._done:
            target = self.added
            while self.written < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._started:
                    raise LmrecError(f"{target - self.written} exposures are still not written")
                self._wake.set()
                self._done.wait(min(left, 0.05))

    def _run(self) -> None:
        tick = time.monotonic()
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            stopping = self._stopping
            if self.on_tick is not None and time.monotonic() - tick >= 1.0:
                tick = time.monotonic()
                try:
                    self.on_tick()
                except Exception:  # the store is away: the next tick tries again
                    self.failures += 1
            while self._rows:
                batch = []
                while self._rows and len(batch) < 5000:
                    row = self._rows.popleft()
                    if not isinstance(row["items"], str):
                        row["items"] = json.dumps(row["items"])
                    batch.append(row)
                self._write(batch)
            if stopping:
                break

    def _write(self, batch: list[dict[str, Any]]) -> None:
        """Write a batch, retrying (with backoff up to 2 s) while the store refuses it; only
        when the store has failed for `give_up_s` (default 10 minutes) are the rows counted
        as `lost` and reported on stderr."""
        t0 = time.monotonic()
        attempt = 0
        while True:
            try:
                self.store.add_exposures(batch)  # idempotent by request id: a retry is safe
                break
            except Exception as exc:
                self.failures += 1
                if time.monotonic() - t0 > self.give_up_s:
                    self.lost += len(batch)
                    print(
                        f"lmrec: {len(batch)} exposures lost, the store refused them for "
                        f"{self.give_up_s:.0f} s: {type(exc).__name__}: {exc}",
                        file=sys.stderr,
                        flush=True,
                    )
                    break
                time.sleep(min(2.0, 0.05 * 2**attempt))
                attempt += 1
        with self._done:
            self.written += len(batch)
            self._done.notify_all()


class Experiments:
    """The experiments of the store: create, list, report, stop, and the routing of answers."""

    def __init__(self, store: Store, registry: ModelRegistry, catalogue: Catalogue):
        self.store, self.registry, self.catalogue = store, registry, catalogue
        self.log = ExposureLog(store, on_tick=self.refresh)
        self._lock = threading.Lock()
        # Request ids: a random prefix per process and a counter (os.urandom per answer, as in
        # uuid4, costs more than the rest of the experiment's work on a busy machine).
        self._prefix = secrets.token_hex(8)
        self._ids = itertools.count()
        self.configs: dict[str, tuple[ExperimentConfig, float | None]] = {}
        self._parsed: dict[str, ExperimentConfig] = {}  # by stored JSON text
        # Running experiments, oldest first, with the users known when each was read (for
        # population "new" and "known": a user stays in or out for the experiment's life).
        self.running: list[tuple[ExperimentConfig, frozenset[str] | None]] = []

    def start(self) -> None:
        self.refresh()
        self.log.start()

    def stop(self) -> None:
        self.log.stop()

    def refresh(self) -> None:
        """Re-read the experiments from the store (started, stopped, created elsewhere)."""
        rows = self.store.read_experiments()
        configs = {}
        for r in rows:  # a config is parsed once (they do not change once stored)
            cfg = self._parsed.get(r["config"])
            if cfg is None:
                cfg = self._parsed[r["config"]] = ExperimentConfig.model_validate_json(r["config"])
            configs[r["name"]] = (cfg, r["stopped_at"])
        now = time.time()
        old = {c.name: known for c, known in self.running}
        running = []
        for cfg, stopped in configs.values():
            if stopped is None and cfg.running(now):
                known = old.get(cfg.name)
                if known is None and cfg.population != "all":
                    with self.catalogue.lock:
                        known = frozenset(self.catalogue.users)
                running.append((cfg, known))
        with self._lock:
            self.configs, self.running = configs, running

    # -- routing (the hot path) --------------------------------------------------------------

    def _member(
        self, cfg: ExperimentConfig, known: frozenset[str] | None, user: str | None
    ) -> bool:
        if user is None:
            return cfg.population != "known" and cfg.segment is None
        if cfg.population == "new" and known is not None and user in known:
            return False
        if cfg.population == "known" and known is not None and user not in known:
            return False
        if cfg.segment is not None:
            prof = self.catalogue.profiles.get(user)
            attrs = prof[0] if prof else {}
            return all(attrs.get(k) == v for k, v in cfg.segment.items())
        return True

    def route(self, user: str | None, session: str | None = None) -> Route | None:
        """The arm that answers for `user` (or an anonymous `session`), None outside every
        running experiment."""
        running = self.running
        if not running or (user is None and session is None):
            return None
        now = time.time()
        for cfg, known in running:
            if not cfg.running(now) or not self._member(cfg, known, user):
                continue
            unit = user if user is not None else f"session:{session}"
            arm_name = assign(cfg, unit)
            model = cfg.model_of(arm_name)
            if model is not None and model not in self.registry.slots:
                return Route(cfg.name, f"{arm_name}~fallback", None, unit)
            return Route(cfg.name, arm_name, model, unit)
        return None

    def record(self, route: Route, answer: dict[str, Any]) -> None:
        """Tag the answer with its experiment and arm and queue its exposure."""
        rid = f"{self._prefix}{next(self._ids):016x}"
        answer["experiment"] = {"name": route.experiment, "arm": route.arm, "request_id": rid}
        # The items' JSON is written by the log's thread (`ExposureLog.add` takes a list too).
        self.log.add(
            {
                "experiment": route.experiment,
                "arm": route.arm,
                "unit": route.unit,
                "items": [r["item"] for r in answer["items"]],
                "request_id": rid,
                "ts": time.time(),
            }
        )

    # -- management --------------------------------------------------------------------------

    def create(self, config: ExperimentConfig) -> dict[str, Any]:
        """Store a new experiment (started now unless it says when) and route by it at once."""
        for arm in config.arms:
            if arm.model is not None:
                try:
                    self.registry.version(arm.model)
                except KeyError as exc:
                    raise NotFound(f"arm {arm.name!r}: {exc.args[0]}") from None
        config = config.started()
        try:
            self.store.put_experiment(config.name, config.dumps(), time.time())
        except StoreError as exc:
            raise LmrecError(str(exc)) from None
        self.refresh()
        return self.describe(config.name)

    def get(self, name: str) -> tuple[ExperimentConfig, float | None]:
        found = self.configs.get(name)
        if found is None:
            self.refresh()
            found = self.configs.get(name)
        if found is None:
            raise NotFound(f"unknown experiment {name!r}")
        return found

    def describe(self, name: str) -> dict[str, Any]:
        cfg, stopped = self.get(name)
        running = any(c.name == name for c, _ in self.running)
        state = "running" if running else ("stopped" if stopped is not None else "scheduled")
        if stopped is None and cfg.stop is not None and cfg.stop <= time.time():
            state = "ended"
        return {"name": name, "state": state, "stopped_at": stopped, "config": cfg.model_dump()}

    def list(self) -> list[dict[str, Any]]:
        self.refresh()
        return [self.describe(n) for n in self.configs]

    def stop_one(self, name: str) -> dict[str, Any]:
        self.get(name)
        self.store.stop_experiment(name, time.time())
        self.refresh()
        return self.describe(name)

    def report(self, name: str) -> dict[str, Any]:
        """`lmrec.experiments.report` once every exposure queued so far is written."""
        cfg, stopped = self.get(name)
        self.log.flush()
        with self.catalogue.lock:
            prices = {
                i: float(r["attributes"]["price"])
                for i, r in self.catalogue.items.items()
                if isinstance(r.get("attributes"), dict)
                and isinstance(r["attributes"].get("price"), int | float)
            }
        return report(self.store, cfg, stopped_at=stopped, prices=prices)
