"""`SearchIndex`: semantic item search, text vectors of every stored item in a `VectorIndex`.

Built on first use (or in the background at start) with the search encoder: the settings'
`search_encoder`, else the active model's own text encoder, else MiniLM. Items created,
changed or deleted afterwards reach it at once (it watches the `Catalogue`).
"""

from __future__ import annotations

__all__ = ["ItemSearch", "SearchIndex"]

import gc
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.service.catalogue import Catalogue
from lmrec.service.index import VectorIndex
from lmrec.service.live import record_text
from lmrec.service.registry import ModelRegistry
from lmrec.service.settings import Settings
from lmrec.store import Store

Encode = Callable[[list[str]], np.ndarray]


class ItemSearch:
    """A built index: the encoder, the vectors of the items and each item's position."""

    def __init__(self, encode: Encode, index: VectorIndex, name: str):
        self.encode = encode
        self.index = index
        self.name = name
        self.pos: dict[str, int] = {i: p for p, i in enumerate(index.ids)}

    def put(self, item: str, rec: dict[str, Any]) -> None:
        """Index the item's (new) text in place of its old one."""
        if item in self.pos:
            self.index.hide([self.pos[item]])
        self.index.add(self.encode([record_text(rec)]), [item])
        self.pos[item] = len(self.index) - 1

    def drop(self, item: str) -> None:
        """Never find the item again."""
        if item in self.pos:
            self.index.hide([self.pos.pop(item)])


class SearchIndex:
    """The item search of the service: `get()` builds it once, `search` answers."""

    def __init__(
        self, settings: Settings, store: Store, registry: ModelRegistry, catalogue: Catalogue
    ):
        self.settings, self.store, self.registry, self.catalogue = (
            settings,
            store,
            registry,
            catalogue,
        )
        self._built: ItemSearch | None = None
        self._changed: set[str] = set()  # items changed while the index is being built
        self._build_lock = threading.Lock()
        catalogue.watch(self.item_changed)

    @property
    def ready(self) -> bool:
        """Whether the index is built."""
        return self._built is not None

    def item_changed(self, item: str, rec: dict[str, Any] | None) -> None:
        """An item was created or changed (`rec`) or deleted (None); runs under the
        catalogue's lock."""
        built = self._built
        if built is None:
            self._changed.add(item)
        elif rec is None:
            built.drop(item)
        else:
            built.put(item, rec)

    def get(self) -> ItemSearch:
        """The text index of every stored item, built on first use."""
        if self._built is not None:
            return self._built
        with self._build_lock:
            if self._built is not None:
                return self._built
            encode, name = self._encoder()
            cat = self.catalogue
            with cat.lock:
                ids = list(cat.items)
                texts = [record_text(cat.items[i]) for i in ids]
                self._changed = set()
            vecs = encode(texts) if ids else encode(["empty"])[:0]
            kind = "auto" if self.settings.index == "off" else self.settings.index
            index = VectorIndex(vecs, ids, kind=kind, exact_limit=self.settings.exact_limit)
            built = ItemSearch(encode, index, name)
            with cat.lock:
                # Items created, changed or deleted while the vectors were being computed.
                for item in self._changed:
                    built.drop(item)
                    if item in cat.items:
                        built.put(item, cat.items[item])
                self._built = built
            return built

    def warm(self) -> None:
        """Build the index now (the start's background thread); a failure is printed, and
        given again to the first search."""
        try:
            self.get()
            gc.freeze()  # the encoder's objects too stay out of full collections (app.freeze_heap)
        except Exception as exc:
            print(f"lmrec serve: the item search index could not be built: {exc}", flush=True)

    def _encoder(self) -> tuple[Encode, str]:
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

    def search(self, text: str, n: int = 10) -> dict[str, Any]:
        """Items whose text is closest to `text` (cosine of encoder vectors)."""
        if n > self.settings.max_n:
            raise LmrecError(f"n must be at most {self.settings.max_n}, got {n}")
        s = self.get()
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
