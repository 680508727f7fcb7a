"""Model administration: the versions and their state, loading and activation
(`ModelAdmin`), and retraining on the store in the background (`Jobs`)."""

from __future__ import annotations

__all__ = ["Jobs", "ModelAdmin"]

import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from lmrec.errors import LmrecError
from lmrec.service.errors import NotFound
from lmrec.service.live import supports_new_items
from lmrec.service.registry import ModelRegistry
from lmrec.store import Store


class ModelAdmin:
    """What `/models` shows and does: list, load and activate versions."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def models(self) -> dict[str, Any]:
        """Every version (after a new scan of the models directory) and the active one."""
        self.registry.scan()
        out = []
        for v in sorted(self.registry.versions.values(), key=lambda v: v.name):
            slot = self.registry.slots.get(v.name)
            # The folder's name only: the server's paths are not shown to read keys.
            row: dict[str, Any] = {"version": v.name, "path": Path(v.path).name, "state": v.state}
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
        """Load `name` in the background and make it the default once loaded."""
        try:
            return self.registry.activate(name)
        except KeyError as exc:
            raise NotFound(exc.args[0]) from None

    def load(self, name: str) -> Future:
        """Load `name` in the background beside the active version."""
        try:
            return self.registry.load(name)
        except KeyError as exc:
            raise NotFound(exc.args[0]) from None


class Jobs:
    """Retraining jobs: each fits a model on the store as it is, saves it as a new version in
    the models directory and (if asked) activates it."""

    def __init__(self, store: Store, registry: ModelRegistry):
        self.store, self.registry = store, registry
        self.jobs: dict[str, dict[str, Any]] = {}

    def train(self, model: str, params: dict[str, Any], activate: bool = True) -> dict[str, Any]:
        """Start a job; its state is "running", then "done" or "failed" (with the error)."""
        from lmrec.models import create_model

        if self.registry.models_dir is None:
            raise LmrecError("retraining needs a models directory: start with --models-dir DIR")
        create_model(model, **params)  # validate the name and parameters now (400 if bad)
        job = uuid.uuid4().hex[:12]
        version = f"{model}-{time.strftime('%Y%m%d-%H%M%S')}-{job[:4]}"
        info: dict[str, Any] = {"job": job, "model": model, "version": version, "state": "running"}
        self.jobs[job] = info
        threading.Thread(
            target=self._run,
            args=(info, params, activate),
            name=f"lmrec-train-{job}",
            daemon=True,
        ).start()
        return info

    def _run(self, info: dict[str, Any], params: dict[str, Any], activate: bool) -> None:
        from lmrec.data import Dataset
        from lmrec.models import create_model

        t0 = time.perf_counter()
        try:
            ds = Dataset.from_store(self.store)
            fitted = create_model(info["model"], **params).fit(ds)
            assert self.registry.models_dir is not None
            fitted.save(self.registry.models_dir / info["version"])  # complete or not at all
            info["fit_seconds"] = round(time.perf_counter() - t0, 3)
            if activate:
                self.registry.scan()
                self.registry.activate(info["version"]).result()
            info["state"] = "done"
        except Exception as exc:
            info["state"] = "failed"
            info["error"] = f"{type(exc).__name__}: {exc}"

    def get(self, job: str) -> dict[str, Any]:
        """The state of a job."""
        if job not in self.jobs:
            raise NotFound(f"unknown job {job!r}")
        return self.jobs[job]
