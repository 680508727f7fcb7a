"""`Catalogue`: the items and users of the store as the service knows them now.

It keeps the catalogue (item records and categories), the known user ids and the users'
stored profiles, and brings every change of an item or a user to the store, to each loaded
model version (`Slot`), to the live feed and to whoever `watch`es item changes (the item
search index).
"""

from __future__ import annotations

__all__ = ["Catalogue", "ItemWatcher"]

import threading
from collections.abc import Callable, Iterable
from typing import Any

from lmrec.models.base import Recommender
from lmrec.service.errors import NotFound
from lmrec.service.index import VectorIndex, model_index
from lmrec.service.live import Feed, Slot
from lmrec.service.registry import ModelRegistry
from lmrec.service.settings import Settings
from lmrec.service.writer import Pending
from lmrec.store import Store

#: Called (under the catalogue's lock) with an item id and its new record, None once deleted.
ItemWatcher = Callable[[str, "dict[str, Any] | None"], None]

_ITEM_FIELDS = ("id", "ext_id", "title", "description", "categories", "attributes", "created_at")


class Catalogue:
    """Items, users and profiles over one store; every method is safe from many threads."""

    def __init__(self, settings: Settings, store: Store, feed: Feed, registry: ModelRegistry):
        self.settings, self.store, self.feed, self.registry = settings, store, feed, registry
        self.lock = threading.RLock()  # catalogue, users and slot preparation
        self.items: dict[str, dict[str, Any]] = {}
        self.categories: dict[str, list[str]] = {}
        self.profiles: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self.users: set[str] = set()
        self.impersonal: set[str] = set()  # users without consent to personalisation
        self.watchers: list[ItemWatcher] = []

    def watch(self, watcher: ItemWatcher) -> None:
        """Call `watcher` on every item created, changed or deleted from now on."""
        self.watchers.append(watcher)

    def index_of(self, model: Recommender) -> VectorIndex | None:
        """The retrieval index of a model's items that the settings ask for (or None)."""
        return model_index(model, self.settings.index, self.settings.exact_limit)

    def load(self) -> None:
        """Read the items and users of the store."""
        with self.lock:
            self.items = {r["ext_id"]: r for r in self.store.read_table("item")}
            self.categories = {i: list(r["categories"] or []) for i, r in self.items.items()}
            self.users = set()
            self.profiles = {}
            self.impersonal = set()
            for r in self.store.read_table("user"):
                self.users.add(r["ext_id"])
                if not r.get("consent_personal", True):
                    self.impersonal.add(r["ext_id"])
                if r["attributes"] or r["tags"]:
                    self.profiles[r["ext_id"]] = (
                        dict(r["attributes"] or {}),
                        list(r["tags"] or []),
                    )

    def prepare(self, slot: Slot) -> None:
        """Bring a freshly loaded version up to date with the store (runs in a loader thread):
        the store's events and deletions since its snapshot, and the items it lacks when it
        accepts new items."""
        slot.model.make_contiguous()
        with self.lock:
            items = list(self.items.values())
            slot.sync_with_store(self.store, items, set(self.users))
            slot.extend(items)
            slot.index = self.index_of(slot.model)

    def note_feedback(self, pend: Iterable[Pending]) -> None:
        """Users and items of committed events become known (new items with no fields)."""
        with self.lock:
            for p in pend:
                self.users.update(p.users)
                for i in p.items:
                    if i not in self.items:
                        self.items[i] = {
                            "ext_id": i,
                            "title": "",
                            "description": "",
                            "categories": [],
                            "attributes": {},
                        }
                        self.categories[i] = []

    # -- items -------------------------------------------------------------------------------

    def put_item(self, item: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create or update an item; a new item is encoded and recommendable at once by text
        models, and searchable at once."""
        fields = {k: v for k, v in fields.items() if v is not None}
        with self.lock:
            with self.store.begin() as conn:
                added, _ = self.store.upsert(conn, "item", [{"ext_id": item, **fields}])
            stored = self.store.get("item", item)
            assert stored is not None
            rec = {k: stored[k] for k in _ITEM_FIELDS}
            self.items[item] = rec
            self.categories[item] = list(rec["categories"] or [])
            for slot in list(self.registry.slots.values()):
                slot.put_item(rec, self.index_of)
            for watcher in self.watchers:
                watcher(item, rec)
        return {"item": item, "created": bool(added)}

    def get_item(self, item: str) -> dict[str, Any]:
        """The stored fields of an item."""
        rec = self.store.get("item", item)
        if rec is None:
            raise NotFound(f"unknown item {item!r}")
        return {
            "item": item,
            "title": rec["title"],
            "description": rec["description"],
            "categories": rec["categories"],
            "attributes": rec["attributes"],
            "created_at": rec["created_at"],
        }

    def delete_item(self, item: str) -> None:
        """Delete an item and its events: from the store, the live feed and every answer."""
        with self.lock:
            if not self.store.delete("item", item):
                raise NotFound(f"unknown item {item!r}")
            self.items.pop(item, None)
            self.categories.pop(item, None)
            for slot in list(self.registry.slots.values()):
                slot.drop_item(item)
            self.feed.drop_item(item)
            for watcher in self.watchers:
                watcher(item, None)

    # -- users -------------------------------------------------------------------------------

    def personal(self, user: str) -> bool:
        """Whether `user` may be answered with personal recommendations (consent)."""
        return user not in self.impersonal

    def put_user(self, user: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create or update a user; the profile (attributes, tags) speaks for them at once."""
        fields = {k: v for k, v in fields.items() if v is not None}
        with self.lock:
            with self.store.begin() as conn:
                added, _ = self.store.upsert(conn, "user", [{"ext_id": user, **fields}])
            rec = self.store.get("user", user)
            assert rec is not None
            self.users.add(user)
            if rec["attributes"] or rec["tags"]:
                self.profiles[user] = (dict(rec["attributes"] or {}), list(rec["tags"] or []))
            else:
                self.profiles.pop(user, None)
            if rec.get("consent_personal", True):
                self.impersonal.discard(user)
            else:
                self.impersonal.add(user)
        return {"user": user, "created": bool(added)}

    def get_user(self, user: str) -> dict[str, Any]:
        """The stored fields of a user and how many events they gave since the start."""
        rec = self.store.get("user", user)
        if rec is None:
            raise NotFound(f"unknown user {user!r}")
        return {
            "user": user,
            "attributes": rec["attributes"],
            "tags": rec["tags"],
            "consent_personal": bool(rec.get("consent_personal", True)),
            "consent_training": bool(rec.get("consent_training", True)),
            "created_at": rec["created_at"],
            "events_since_start": len(self.feed.of(user)),
        }

    def delete_user(self, user: str) -> None:
        """Erase a user (`lmrec.erasure.erase_user`): their row, events and cached profile
        vectors in the store, every saved version's artifact (rewritten without them), the
        store's free pages and WAL; then the live feed and every loaded version's view of them
        (later answers for this id are the unknown-user answer)."""
        from lmrec.erasure import erase_user

        with self.lock:
            dirs = [v.path for v in self.registry.versions.values()]
            if self.registry.models_dir is not None:
                dirs.append(self.registry.models_dir)
            if not erase_user(self.store, user, dirs, vacuum=False).found:
                raise NotFound(f"unknown user {user!r}")
            self.users.discard(user)
            self.profiles.pop(user, None)
            self.impersonal.discard(user)
            self.feed.drop_user(user)
            for slot in list(self.registry.slots.values()):
                slot.drop_user(user)
