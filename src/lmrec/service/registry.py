"""Model versions: discovery, loading in the background and hot swap of the active one.

A version is a saved model directory (`Recommender.save`). Loading happens in a worker thread
while the current active version keeps answering; activation swaps one reference, so a request
sees either the old or the new version, never a half-loaded one. Artifacts are read with
`Recommender.load` (JSON + .npz with allow_pickle=False): no pickle is ever loaded.
"""

from __future__ import annotations

__all__ = ["ModelRegistry", "Version"]

import gc
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lmrec.errors import LmrecError
from lmrec.models.base import Recommender
from lmrec.service.live import Slot


@dataclass
class Version:
    name: str
    path: str
    state: str = "available"  # available | loading | loaded | failed
    error: str | None = None
    future: Future | None = field(default=None, repr=False)


class ModelRegistry:
    """Versions by name, the loaded slots and the active one."""

    def __init__(
        self,
        models: list[str],
        models_dir: str | None,
        prepare: Callable[[Slot], None],
    ):
        self.models_dir = Path(models_dir) if models_dir else None
        self.versions: dict[str, Version] = {}
        self.slots: dict[str, Slot] = {}
        self.active: str | None = None
        self.prepare = prepare
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lmrec-model-load")
        self.explicit: list[str] = []
        for spec in models:
            name, sep, path = spec.partition("=")
            if not sep:
                path, name = spec, Path(spec).resolve().name
            if not (Path(path) / "config.json").exists():
                raise LmrecError(
                    f"--model {spec}: {path} is not a saved lmrec model (no config.json)"
                )
            if name in self.versions:
                raise LmrecError(f"--model {spec}: a version named {name!r} is already given")
            self.versions[name] = Version(name, str(path))
            self.explicit.append(name)
        if self.models_dir is not None and not self.models_dir.is_dir():
            raise LmrecError(f"--models-dir {self.models_dir}: no such directory")
        self.scan()

    def scan(self) -> None:
        """Pick up versions saved into models_dir since the last scan (e.g. by `lmrec train`)."""
        if self.models_dir is None:
            return
        with self._lock:
            for d in sorted(self.models_dir.iterdir()):
                if d.name.startswith("."):
                    continue  # a save in progress (lmrec.files.staged_dir) or hidden
                if (d / "config.json").exists() and d.name not in self.versions:
                    self.versions[d.name] = Version(d.name, str(d))

    def newest(self) -> str | None:
        """The default version: the first explicit one, else the newest in models_dir."""
        if self.explicit:
            return self.explicit[0]
        if not self.versions:
            return None
        return max(self.versions.values(), key=lambda v: Path(v.path).stat().st_mtime).name

    def version(self, name: str) -> Version:
        self.scan()
        v = self.versions.get(name)
        if v is None:
            raise KeyError(
                f"unknown model version {name!r}; versions: {', '.join(sorted(self.versions)) or 'none'}"
            )
        return v

    def load(self, name: str) -> Future:
        """Load a version in the background (once); the future gives its Slot."""
        with self._lock:
            v = self.version(name)
            if v.future is not None and v.state in ("loading", "loaded"):
                return v.future
            v.state, v.error = "loading", None
            v.future = self._pool.submit(self._load, v)
            return v.future

    def _load(self, v: Version) -> Slot:
        t0 = time.perf_counter()
        try:
            model = Recommender.load(v.path)
            slot = Slot(v.name, v.path, model)
            self.prepare(slot)
        except Exception as exc:
            v.state = "failed"
            v.error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, LmrecError):
                traceback.print_exc()
            raise
        slot.load_seconds = time.perf_counter() - t0
        with self._lock:
            self.slots[v.name] = slot
            v.state = "loaded"
        # Keep the loaded model out of full garbage collections (see app.freeze_heap).
        gc.freeze()
        return slot

    def activate(self, name: str) -> Future:
        """Load (if needed) then make `name` the default; the old one answers meanwhile."""
        fut = self.load(name)
        done: Future = Future()

        def swap(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                done.set_exception(exc)
                return
            with self._lock:
                self.active = name
            done.set_result(f.result())

        fut.add_done_callback(swap)
        return done

    def slot(self, name: str | None) -> Slot:
        """The loaded slot of a version (default: the active one)."""
        name = name or self.active
        if name is None:
            raise LookupError("no model is active: load one with POST /models/{version}/activate")
        s = self.slots.get(name)
        if s is None:
            v = self.versions.get(name)
            if v is None:
                raise KeyError(
                    f"unknown model version {name!r}; versions: {', '.join(sorted(self.versions))}"
                )
            raise LookupError(
                f"model version {name!r} is {v.state}"
                + (f" ({v.error})" if v.error else "")
                + ": load it first with POST /models/{version}/load"
            )
        return s

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
