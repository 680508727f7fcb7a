"""Live state: what happened since a model's snapshot, applied to every answer.

A model answers from its training snapshot. The service keeps, per user, the events that the
snapshot lacks and sends them as the request-time history of a `Query` (the model folds them
in: kNN, EASE, content and LM models, ALS/BPR/LMMF fold-in, sequence models), so feedback
changes the next answer without retraining:

- `Feed`: events committed through the API since the service started (per user, in order).
- `Slot.delta`: events of the store that the model's snapshot lacks, found when it loaded
  (an anti-join of the store's interactions against the snapshot on (user, item, event, time)).
- `Slot.forget`: users of the snapshot deleted since (or deleted and created again): they are
  answered as unknown users, with only their new events.
- `Slot.blocked`: items of the model deleted since; never recommended.
- New items: models that accept them (`Recommender.accepts_new_items`: the text models
  lmcontent, lmmf, coldstart_user, coldstart_item) get them appended to their catalogue at
  once, from their text (`Recommender.with_items`); other models cannot score an item they were
  not trained on until retraining (the item is still searchable and has similar items through
  the text index).
"""

from __future__ import annotations

__all__ = [
    "Event",
    "Feed",
    "Slot",
    "extend_catalogue",
    "record_text",
    "supports_new_items",
    "with_records",
]

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lmrec.models.base import Query, Recommender
from lmrec.store import Store


@dataclass(frozen=True)
class Event:
    item: str
    event: str
    ts: float
    value: float  # NaN where absent


class Feed:
    """Events committed through the service since it started, per user, in commit order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: dict[str, list[Event]] = {}
        self.count = 0
        self._keys: dict[str, set[tuple[str, str, float]]] = {}

    def add(self, users: Sequence[str], events: Iterable[Event], *, unique: bool = False) -> int:
        """Append events; with `unique`, only those the user's feed lacks (same item, event
        and time: events another process wrote, read back from the store). Returns added."""
        added = 0
        with self._lock:
            for u, e in zip(users, events, strict=True):
                keys = self._keys.setdefault(u, set())
                key = (e.item, e.event, e.ts)
                if unique and key in keys:
                    continue
                keys.add(key)
                self.events.setdefault(u, []).append(e)
                added += 1
            self.count += added
        return added

    def of(self, user: str) -> list[Event]:
        return list(self.events.get(user, ()))

    def drop_user(self, user: str) -> None:
        """Forget every event of `user` (an erased user)."""
        with self._lock:
            self.count -= len(self.events.pop(user, ()))
            self._keys.pop(user, None)

    def drop_item(self, item: str) -> None:
        """Forget every event of `item` (a deleted item), of every user."""
        with self._lock:
            for u, evs in self.events.items():
                kept = [e for e in evs if e.item != item]
                if len(kept) < len(evs):
                    self.count -= len(evs) - len(kept)
                    self.events[u] = kept
                    self._keys[u] = {(e.item, e.event, e.ts) for e in kept}


@dataclass
class Slot:
    """A loaded model version and what the service knows beyond its snapshot."""

    name: str
    path: str
    model: Recommender
    delta: dict[str, list[Event]] = field(default_factory=dict)
    forget: set[str] = field(default_factory=set)
    blocked: np.ndarray | None = None  # bool over model items
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    index: Any = None  # VectorIndex over the model's item vectors (large catalogues)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _snapshot_keys: dict[int, set] = field(default_factory=dict, repr=False)
    _category_masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _similarity: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    # -- building queries --------------------------------------------------------------------

    def snapshot_keys(self, u: int) -> set:
        """(item, event, ts) of user index u in the snapshot (memoised per user)."""
        keys = self._snapshot_keys.get(u)
        if keys is None:
            ds = self.model.history
            keys = set()
            if ds is not None and 0 <= u < ds.n_users:
                lo, hi = ds.user_ptr[u], ds.user_ptr[u + 1]
                names = ds.event_names
                ids = ds.items.ids
                keys = {
                    (str(ids[i]), names[e], float(t))
                    for i, e, t in zip(ds.item[lo:hi], ds.event[lo:hi], ds.ts[lo:hi], strict=True)
                }
            if len(self._snapshot_keys) > 100_000:
                self._snapshot_keys.clear()
            self._snapshot_keys[u] = keys
        return keys

    def query(self, user: str, feed: Feed, extra: Query | None = None) -> Query:
        """The query for `user`: the snapshot user (unless forgotten) plus the events the
        snapshot lacks (store delta and API feed, deduplicated, oldest first), plus `extra`."""
        model = self.model
        assert model.users is not None
        known = user not in self.forget and model.users.get(user) >= 0
        new = self.delta.get(user, []) + feed.of(user)
        if new:
            seen = self.snapshot_keys(model.users.get(user)) if known else set()
            uniq: dict[tuple, Event] = {}
            for e in new:
                key = (e.item, e.event, e.ts)
                if key not in seen and key not in uniq:
                    uniq[key] = e
            new = sorted(uniq.values(), key=lambda e: e.ts) if uniq else []
        items = [e.item for e in new]
        events = [e.event for e in new]
        ts = [e.ts for e in new]
        values = [e.value for e in new]
        q = extra or Query()
        if q.items:
            items += list(q.items)
            events += list(q.events) if q.events is not None else ["view"] * len(q.items)
            ts += [time.time()] * len(q.items)
            values += [float("nan")] * len(q.items)
        return Query(
            user=user if known else None,
            items=items,
            events=events if items else None,
            timestamps=ts if items else None,
            values=values if items else None,
            attributes=q.attributes,
            tags=q.tags,
            text=q.text,
            time=q.time if q.time is not None else time.time(),
            context=q.context,
        )

    # -- masks -------------------------------------------------------------------------------

    def candidates(
        self, category: str | None, categories: Mapping[str, list[str]]
    ) -> np.ndarray | None:
        """Bool mask of recommendable items (not deleted, in `category` if given), or None."""
        mask = None if self.blocked is None or not self.blocked.any() else ~self.blocked
        if category is None:
            return mask
        cat = self._category_masks.get(category)
        if cat is None:
            ids = self.model.items.ids.tolist() if self.model.items is not None else []
            cat = np.fromiter((category in categories.get(i, ()) for i in ids), bool, len(ids))
            if len(self._category_masks) > 1000:
                self._category_masks.clear()
            self._category_masks[category] = cat
        return cat if mask is None else cat & mask

    def items_changed(self) -> None:
        self._category_masks = {}

    def block(self, item: str) -> None:
        assert self.model.items is not None
        i = self.model.items.get(item)
        if i >= 0:
            blocked = (
                np.zeros(len(self.model.items), bool)
                if self.blocked is None
                else self.blocked.copy()
            )
            blocked[i] = True
            self.blocked = blocked

    def unblock(self, item: str) -> None:
        if self.blocked is None or self.model.items is None:
            return
        i = self.model.items.get(item)
        if i >= 0 and self.blocked[i]:
            blocked = self.blocked.copy()
            blocked[i] = False
            self.blocked = blocked

    def similarity(self, model: Recommender, source: str, compute: Callable[[], Any]) -> Any:
        """The item similarity of `source` for `model` (this slot's model now or a moment
        ago): `compute()` once per model object and source."""
        key = (id(model), source)
        sim = self._similarity.get(key)
        if sim is None:
            sim = compute()
            if any(k[0] != id(model) for k in self._similarity):
                self._similarity.clear()
            self._similarity[key] = sim
        return sim

    # -- catalogue and user changes --------------------------------------------------------

    def extend(
        self,
        records: Sequence[Mapping[str, Any]],
        reindex: Callable[[Recommender], Any] | None = None,
    ) -> None:
        """Append the items of these store records that the model lacks, when it accepts new
        items (`with_records`); the blocked mask grows with the catalogue, and the retrieval
        index, if the slot has one, is rebuilt by `reindex`."""
        model = self.model
        assert model.items is not None
        new = [r for r in records if r["ext_id"] not in model.items]
        if not new or not supports_new_items(model):
            return
        grown = with_records(model, new)
        if self.blocked is not None:
            self.blocked = np.concatenate([self.blocked, np.zeros(len(new), bool)])
        if reindex is not None and self.index is not None:
            self.index = reindex(grown)
        self.model = grown

    def put_item(self, rec: Mapping[str, Any], reindex: Callable[[Recommender], Any]) -> None:
        """A store item was created or changed: recommendable again if the model has it, else
        appended when the model accepts new items."""
        with self.lock:
            assert self.model.items is not None
            self.items_changed()
            if rec["ext_id"] in self.model.items:
                self.unblock(rec["ext_id"])
            else:
                self.extend([rec], reindex)

    def drop_item(self, item: str) -> None:
        """A store item was deleted: never recommended again, its store events forgotten."""
        with self.lock:
            self.block(item)
            self.items_changed()
            if self.index is not None and self.model.items is not None:
                p = self.model.items.get(item)
                if p >= 0:
                    self.index.hide([p])
            for u, evs in list(self.delta.items()):
                self.delta[u] = [e for e in evs if e.item != item]

    def drop_user(self, user: str) -> None:
        """A user was erased: answered as an unknown user from now on."""
        with self.lock:
            self.delta.pop(user, None)
            if self.model.users is not None and user in self.model.users:
                self.forget = self.forget | {user}

    # -- loading -----------------------------------------------------------------------------

    def sync_with_store(self, store: Store, items: list[dict[str, Any]], users: set[str]) -> None:
        """Compute delta, forget and blocked from the store as it is now."""
        model = self.model
        assert model.users is not None and model.items is not None
        arr = store.read_interactions()
        urows = {r["id"]: r["ext_id"] for r in store.read_table("user")}
        irows = {r["id"]: r["ext_id"] for r in items}
        store_items = set(irows.values())
        blocked = ~np.fromiter((i in store_items for i in model.items), bool, len(model.items))
        self.blocked = blocked if blocked.any() else None
        frame = pd.DataFrame(
            {
                "user": pd.Series(arr.user_id).map(urows).to_numpy(object),
                "item": pd.Series(arr.item_id).map(irows).to_numpy(object),
                "event": arr.event.astype(object),
                "ts": arr.ts,
                "value": arr.value,
            }
        )
        ds = model.history
        if ds is not None and ds.n_interactions:
            snap = pd.DataFrame(
                {
                    "user": ds.users.ids[ds.user].astype(object),
                    "item": ds.items.ids[ds.item].astype(object),
                    "event": np.asarray(ds.event_names, dtype=object)[ds.event],
                    "ts": ds.ts,
                    "_in_snapshot": True,
                }
            ).drop_duplicates(["user", "item", "event", "ts"])
            merged = frame.merge(snap, on=["user", "item", "event", "ts"], how="left")
            in_snap = merged["_in_snapshot"].fillna(False).to_numpy(bool)
            # Snapshot users none of whose snapshot events remain were deleted (and maybe
            # created again): forget their snapshot history.
            still = set(merged.loc[in_snap, "user"].unique())
            snap_users = set(snap["user"].unique())
            self.forget = {u for u in snap_users if u not in still} | {
                u for u in model.users if u not in users
            }
            rest = frame[~in_snap]
        else:
            self.forget = {u for u in model.users if u not in users}
            rest = frame
        delta: dict[str, list[Event]] = {}
        for u, i, e, t, v in zip(
            rest["user"], rest["item"], rest["event"], rest["ts"], rest["value"], strict=True
        ):
            delta.setdefault(u, []).append(Event(i, e, float(t), float(v)))
        self.delta = delta
        self._snapshot_keys = {}


# -- new items ---------------------------------------------------------------------------------


def supports_new_items(model: Recommender) -> bool:
    """Whether the model can add items it was not trained on (`Recommender.with_items`)."""
    return bool(model.accepts_new_items)


def extend_catalogue(
    model: Recommender,
    ids: Sequence[str],
    texts: Sequence[str],
    categories: Sequence[Sequence[Any]] | None = None,
    attributes: Sequence[Mapping[str, Any] | None] | None = None,
) -> Recommender:
    """A copy of the model whose catalogue also holds these new items, from their text,
    categories and attributes (`Recommender.with_items`); the original is left as it was."""
    return model.with_items(ids, texts, categories, attributes)


def record_text(rec: Mapping[str, Any], template: str | None = None) -> str:
    """The text of a store item record (title, description, categories, attributes), as the
    models' `item_texts` build it for trained items."""
    from lmrec.text.templates import item_text

    return item_text(
        rec.get("title") or "",
        rec.get("description") or "",
        rec.get("categories") or [],
        rec.get("attributes") or {},
        template=template,
        fallback=f"Item {rec['ext_id']}",
    )


def with_records(model: Recommender, records: Sequence[Mapping[str, Any]]) -> Recommender:
    """`extend_catalogue` with store item records: their text (by the model's item
    template), categories and attributes."""
    tpl = getattr(model.config, "item_template", None)
    return extend_catalogue(
        model,
        [r["ext_id"] for r in records],
        [record_text(r, tpl) for r in records],
        [r.get("categories") or [] for r in records],
        [r.get("attributes") or {} for r in records],
    )
