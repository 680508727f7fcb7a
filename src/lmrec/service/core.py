"""`Service`: the recommendation service without HTTP (the FastAPI app in app.py calls it).

It owns the store, the live feed and the model registry, and composes the parts that do the
work, each safe to call from many threads:

- `Catalogue` (catalogue.py): items, users and profiles, and their changes;
- `Answers` (answers.py): recommendations and similar items;
- `SearchIndex` (search.py): semantic item search;
- `FeedbackIntake` (intake.py): feedback events to the store and the live feed;
- `ModelAdmin` and `Jobs` (admin.py): model versions, loading, activation, retraining;
- `Experiments` (experiments.py): A/B experiments, the arm of each answer, the exposure log.

The methods of `Service` are the service's one surface (the routes, `lmrec serve` and the
tests use them); each hands the call to the part that owns it.
"""

from __future__ import annotations

__all__ = ["NotFound", "Service", "Unavailable"]

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from lmrec.experiments.config import ExperimentConfig
from lmrec.models.base import Query
from lmrec.rerank.config import RerankConfig
from lmrec.service.admin import Jobs, ModelAdmin
from lmrec.service.answers import Answers, UserRequest
from lmrec.service.catalogue import Catalogue
from lmrec.service.errors import NotFound, Unavailable
from lmrec.service.experiments import Experiments
from lmrec.service.follow import StoreFollower
from lmrec.service.intake import FeedbackIntake
from lmrec.service.live import Feed, Slot
from lmrec.service.overview import Overviews, history
from lmrec.service.registry import ModelRegistry
from lmrec.service.search import ItemSearch, SearchIndex
from lmrec.service.settings import Settings
from lmrec.store import Store


class Service:
    """Answers, feedback, catalogue and model management over one store."""

    def __init__(self, settings: Settings):
        settings.check()
        self.settings = settings
        if settings.threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(settings.threads)
        self.store = Store(settings.db, busy_timeout_s=settings.busy_timeout_s)
        self.feed = Feed()
        self.registry = ModelRegistry(settings.models, settings.models_dir, self._prepare)
        self.catalogue = Catalogue(settings, self.store, self.feed, self.registry)
        self.search = SearchIndex(settings, self.store, self.registry, self.catalogue)
        self.answers = Answers(settings, self.registry, self.feed, self.catalogue, self.search)
        self.intake = FeedbackIntake(settings, self.store, self.feed, self.catalogue)
        self.follower: StoreFollower | None = None
        self.writer = self.intake.writer
        self.admin = ModelAdmin(self.registry)
        self.jobs = Jobs(self.store, self.registry)
        self.experiments = Experiments(self.store, self.registry, self.catalogue)
        self.overviews = Overviews(self.store)
        self.started_at = time.time()

    def _prepare(self, slot: Slot) -> None:
        # The registry's hook for a freshly loaded version (the catalogue exists by then).
        self.catalogue.prepare(slot)

    # -- life cycle --------------------------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        """Read the catalogue, start the writer, load the active version (waiting if `wait`)."""
        if self.settings.follow_store:  # before the catalogue: later events are polled
            self.follower = StoreFollower(self.store, self.intake.on_store_rows)
            self.answers.follower = self.follower
        self.catalogue.load()
        self.writer.start()
        self.experiments.start()
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
                target=self.search.warm, name="lmrec-search-index", daemon=True
            ).start()

    def stop(self) -> None:
        """Stop the writer (after its last commit), the loaders and the store."""
        self.writer.stop()
        self.experiments.stop()
        self.answers.close()
        self.registry.close()
        self.store.close()

    def health(self) -> dict[str, Any]:
        """Liveness, the loaded versions and the feedback counters."""
        return {
            "status": "ok" if self.registry.active in self.registry.slots else "loading",
            "active": self.registry.active,
            "loaded": sorted(self.registry.slots),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "search_index": "ready" if self.search.ready else "not built",
            "feedback_committed": self.writer.committed,
            "feedback_queued": self.writer.queued(),
            "feedback_followed": self.follower.added if self.follower is not None else 0,
            "pid": os.getpid(),
        }

    # -- answers (Answers, SearchIndex) ------------------------------------------------------

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
        session: str | None = None,
    ) -> dict[str, Any]:
        """`Answers.recommend`: top-n items for a user and/or an anonymous query; without a
        `model`, a running experiment may pick the arm's version (`Experiments.route`; an
        anonymous query is bucketed by its `session`)."""
        route = self.experiments.route(user, session) if model is None else None
        answer = self.answers.recommend(
            user,
            n,
            model=route.model if route is not None else model,
            exclude_seen=exclude_seen,
            category=category,
            rerank=rerank,
            explain=explain,
            extra=extra,
        )
        if route is not None:
            self.experiments.record(route, answer)
        return answer

    def recommend_users(self, requests: Sequence[UserRequest]) -> list[dict[str, Any] | Exception]:
        """`Answers.recommend_users`: many user requests in few model calls (each routed by
        the running experiments as `recommend` does)."""
        exp = self.experiments
        if not exp.running:
            return self.answers.recommend_users(requests)
        routes = [exp.route(r[0]) if r[2] is None else None for r in requests]
        routed = [
            r if rt is None else (r[0], r[1], rt.model, r[3], r[4])
            for r, rt in zip(requests, routes, strict=True)
        ]
        out = self.answers.recommend_users(routed)
        for rt, answer in zip(routes, out, strict=True):
            if rt is not None and isinstance(answer, dict):
                exp.record(rt, answer)
        return out

    def ratings(self, user: str, items: Sequence[str], *, model: str | None = None) -> dict:
        """`Answers.ratings`: predicted ratings of items for a user."""
        return self.answers.ratings(user, items, model=model)

    def similar(self, item: str, n: int = 10, *, model: str | None = None) -> dict[str, Any]:
        """`Answers.similar`: items like `item`."""
        return self.answers.similar(item, n, model=model)

    def search_index(self) -> ItemSearch:
        """`SearchIndex.get`: the text index of every stored item, built on first use."""
        return self.search.get()

    def search_text(self, text: str, n: int = 10) -> dict[str, Any]:
        """`SearchIndex.search`: items whose text is closest to `text`."""
        return self.search.search(text, n)

    # -- feedback (FeedbackIntake) -----------------------------------------------------------

    def now(self, k: int = 1) -> list[float]:
        """`FeedbackIntake.now`: k strictly increasing timestamps from now on."""
        return self.intake.now(k)

    def submit_feedback(self, events: Sequence[dict[str, Any]]) -> Future:
        """`FeedbackIntake.submit`: queue events; the future gives the rows added."""
        return self.intake.submit(events)

    # -- catalogue (Catalogue) ---------------------------------------------------------------

    def put_item(self, item: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`Catalogue.put_item`: create or update an item."""
        return self.catalogue.put_item(item, fields)

    def get_item(self, item: str) -> dict[str, Any]:
        """`Catalogue.get_item`: the stored fields of an item."""
        return self.catalogue.get_item(item)

    def delete_item(self, item: str) -> None:
        """`Catalogue.delete_item`: delete an item and its events."""
        self.catalogue.delete_item(item)

    def put_user(self, user: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`Catalogue.put_user`: create or update a user."""
        return self.catalogue.put_user(user, fields)

    def get_user(self, user: str) -> dict[str, Any]:
        """`Catalogue.get_user`: the stored fields of a user."""
        return self.catalogue.get_user(user)

    def delete_user(self, user: str) -> None:
        """`Catalogue.delete_user`: erase a user from the store and every later answer."""
        self.catalogue.delete_user(user)

    # -- models (ModelAdmin, Jobs) -----------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """`ModelAdmin.models`: every version and the active one."""
        return self.admin.models()

    def activate(self, name: str) -> Future:
        """`ModelAdmin.activate`: load a version and make it the default."""
        return self.admin.activate(name)

    def load(self, name: str) -> Future:
        """`ModelAdmin.load`: load a version beside the active one."""
        return self.admin.load(name)

    def train(self, model: str, params: dict[str, Any], activate: bool = True) -> dict[str, Any]:
        """`Jobs.train`: retrain on the store in the background."""
        return self.jobs.train(model, params, activate)

    def job(self, job: str) -> dict[str, Any]:
        """`Jobs.get`: the state of a retraining job."""
        return self.jobs.get(job)

    # -- experiments (Experiments) -----------------------------------------------------------

    def create_experiment(self, config: ExperimentConfig) -> dict[str, Any]:
        """`Experiments.create`: store an experiment and route answers by it at once."""
        return self.experiments.create(config)

    def list_experiments(self) -> list[dict[str, Any]]:
        """`Experiments.list`: every experiment and its state."""
        return self.experiments.list()

    def experiment_report(self, name: str) -> dict[str, Any]:
        """`Experiments.report`: per-arm results, the sequential test, the sample-ratio check."""
        return self.experiments.report(name)

    def stop_experiment(self, name: str) -> dict[str, Any]:
        """`Experiments.stop_one`: no more assignments; the report stays."""
        return self.experiments.stop_one(name)

    # -- the console's reads (overview.py) ---------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """`overview.overview`: counts, activity by day, the popularity curve."""
        return self.overviews.get()

    def history(self, user: str, n: int = 20) -> dict[str, Any]:
        """`overview.history`: a user's newest events with the items' titles."""
        return history(self.store, self.catalogue, user, n)
