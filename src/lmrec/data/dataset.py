"""`Dataset`: an immutable in-memory snapshot of users, items and interactions.

Interactions are kept sorted by (user, time); equal timestamps keep their storage order (the
store's row id, i.e. the order of the imported file), so per-user sequences are stable.
Everything a model needs is derived from here: the CSR user-item matrix, per-user sequences,
user and item features and texts. A dataset saves to `.npz` + JSON and loads without pickle.
"""

from __future__ import annotations

__all__ = ["Dataset", "ItemFeatures", "UserFeatures", "csr_dedup", "snapshot"]

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from lmrec.data.vocab import Vocabulary
from lmrec.errors import LmrecError
from lmrec.files import staged_dir

if TYPE_CHECKING:
    import pandas as pd

    from lmrec.store import Store

FORMAT_VERSION = 1
_ARRAYS = ("user_ids", "item_ids", "user", "item", "event", "value", "ts", "item_created_at")
Aggregate = Literal["max", "sum", "last", "count"]


@dataclass(frozen=True)
class UserFeatures:
    """Per-user attributes (dicts such as age, gender, occupation) and interest tags."""

    attributes: list[dict[str, Any]]
    tags: list[list[str]]

    @classmethod
    def empty(cls, n: int) -> UserFeatures:
        return cls([{} for _ in range(n)], [[] for _ in range(n)])

    def take(self, idx: np.ndarray) -> UserFeatures:
        return UserFeatures([self.attributes[i] for i in idx], [self.tags[i] for i in idx])


@dataclass(frozen=True)
class ItemFeatures:
    """Per-item text (title, description), categories, attributes and creation time."""

    title: list[str]
    description: list[str]
    categories: list[list[str]]
    attributes: list[dict[str, Any]]
    created_at: np.ndarray = field(repr=False)

    @classmethod
    def empty(cls, n: int) -> ItemFeatures:
        return cls([""] * n, [""] * n, [[] for _ in range(n)], [{} for _ in range(n)], np.zeros(n))

    def take(self, idx: np.ndarray) -> ItemFeatures:
        return ItemFeatures(
            [self.title[i] for i in idx],
            [self.description[i] for i in idx],
            [self.categories[i] for i in idx],
            [self.attributes[i] for i in idx],
            self.created_at[idx],
        )


def csr_dedup(
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    shape: tuple[int, int],
    keep: Literal["max", "last"] = "max",
) -> sp.csr_matrix:
    """A float32 CSR matrix with one entry per (row, col): the largest value, or the last one
    in the given order."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    vals = np.asarray(vals, np.float32)
    lin = rows * shape[1] + cols
    # Within a pair, the kept entry comes last: the largest value, or the latest given.
    order = np.lexsort((vals, lin)) if keep == "max" else np.argsort(lin, kind="stable")
    lin_s = lin[order]
    last = np.ones(len(lin_s), dtype=bool)
    last[:-1] = lin_s[1:] != lin_s[:-1]
    sel = order[last]
    # Entries are in (row, col) order already: build the CSR arrays directly (the COO route
    # costs about 0.5 ms of checks and conversions, felt on every served request).
    indptr = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows[sel], minlength=shape[0]), out=indptr[1:])
    m = sp.csr_matrix((vals[sel], cols[sel], indptr), shape=shape, dtype=np.float32)
    m.has_sorted_indices = True
    return m


def _consenting(arr: Any, urows: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """The interactions and users of a store read without those who opted out of training."""
    out = [r for r in urows if r.get("consent_training", True) in (True, 1)]
    if len(out) == len(urows):
        return arr, urows
    gone = np.array(
        [r["id"] for r in urows if r.get("consent_training", True) not in (True, 1)], np.int64
    )
    keep = ~np.isin(arr.user_id, gone)
    return type(arr)(*(getattr(arr, f)[keep] for f in arr.__dataclass_fields__)), out


def erased_id(k: int) -> str:
    """The id left at vocabulary index `k` of an erased user: it holds a control character,
    which no real id may (`lmrec.ids`), so it never names anybody."""
    return f"\x1ferased:{k}"


class Dataset:
    """Users, items and time-ordered interactions over two vocabularies.

    Parameters are parallel arrays of interactions (user and item are vocabulary indices).
    `event_weights` maps event type -> weight for `matrix()`; None weighs every event 1.
    """

    def __init__(
        self,
        users: Vocabulary,
        items: Vocabulary,
        user: np.ndarray,
        item: np.ndarray,
        *,
        event: np.ndarray | None = None,
        value: np.ndarray | None = None,
        ts: np.ndarray | None = None,
        event_names: Sequence[str] = ("interaction",),
        user_features: UserFeatures | None = None,
        item_features: ItemFeatures | None = None,
        event_weights: Mapping[str, float] | None = None,
        name: str = "",
        _sorted: bool = False,
    ):
        n = len(user)
        user = np.asarray(user, dtype=np.int32)
        item = np.asarray(item, dtype=np.int32)
        event = np.zeros(n, dtype=np.int8) if event is None else np.asarray(event, dtype=np.int8)
        value = np.full(n, np.nan, np.float32) if value is None else np.asarray(value, np.float32)
        ts = np.zeros(n, dtype=np.float64) if ts is None else np.asarray(ts, dtype=np.float64)
        if not (len(item) == len(event) == len(value) == len(ts) == n):
            raise ValueError("interaction arrays must have the same length")
        if n and (user.min() < 0 or user.max() >= len(users)):
            raise ValueError("user index out of the user vocabulary")
        if n and (item.min() < 0 or item.max() >= len(items)):
            raise ValueError("item index out of the item vocabulary")
        if n and (event.min() < 0 or event.max() >= len(event_names)):
            raise ValueError("event code out of event_names")
        if not _sorted:
            order = np.lexsort((ts, user))  # stable: ties keep the given order
            user, item, event, value, ts = (
                user[order],
                item[order],
                event[order],
                value[order],
                ts[order],
            )
        for a in (user, item, event, value, ts):
            a.setflags(write=False)
        self.users = users
        self.items = items
        self.user, self.item, self.event, self.value, self.ts = user, item, event, value, ts
        self.event_names: tuple[str, ...] = tuple(event_names)
        self.user_features = user_features or UserFeatures.empty(len(users))
        self.item_features = item_features or ItemFeatures.empty(len(items))
        if len(self.user_features.attributes) != len(users):
            raise ValueError("user_features must have one entry per user")
        if len(self.item_features.title) != len(items):
            raise ValueError("item_features must have one entry per item")
        self.event_weights = dict(event_weights) if event_weights else None
        self.name = name
        self._matrix_cache: dict[tuple, sp.csr_matrix] = {}

    # -- sizes -------------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.user)

    def __len__(self) -> int:
        return self.n_interactions

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: {self.n_users} users, {self.n_items} items, "
            f"{self.n_interactions} interactions)"
        )

    # -- derived views -----------------------------------------------------------------------

    @cached_property
    def user_ptr(self) -> np.ndarray:
        """CSR-style offsets: user u's interactions are rows user_ptr[u]:user_ptr[u+1]."""
        counts = np.bincount(self.user, minlength=self.n_users)
        ptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        ptr.setflags(write=False)
        return ptr

    def sequence(self, u: int) -> np.ndarray:
        """Item indices of user u in time order (repeats kept)."""
        return self.item[self.user_ptr[u] : self.user_ptr[u + 1]]

    def sequences(self) -> list[np.ndarray]:
        """Every user's time-ordered item sequence."""
        if self.n_users == 0:
            return []
        return np.split(self.item, self.user_ptr[1:-1])

    def matrix(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        use_value: bool = False,
        aggregate: Aggregate = "max",
    ) -> sp.csr_matrix:
        """The n_users x n_items CSR matrix (float32).

        Each interaction weighs `weights[event]` (default: the dataset's `event_weights`, else 1;
        events missing from the mapping weigh 0 and are dropped) times its value if
        `use_value`. Repeated (user, item) pairs are combined by `aggregate`.
        """
        weights = weights if weights is not None else self.event_weights
        key = (tuple(sorted(weights.items())) if weights else None, use_value, aggregate)
        if key in self._matrix_cache:
            return self._matrix_cache[key]
        w = np.ones(self.n_interactions, dtype=np.float32)
        if weights:
            per_event = np.array([weights.get(e, 0.0) for e in self.event_names], np.float32)
            w = per_event[self.event]
        if use_value:
            w = w * np.nan_to_num(self.value, nan=1.0)
        keep = w != 0
        rows, cols, w = self.user[keep], self.item[keep], w[keep]
        if aggregate == "sum":
            m = sp.csr_matrix(
                (w, (rows, cols)), shape=(self.n_users, self.n_items), dtype=np.float32
            )
        elif aggregate == "count":
            m = sp.csr_matrix(
                (np.ones_like(w), (rows, cols)),
                shape=(self.n_users, self.n_items),
                dtype=np.float32,
            )
        elif aggregate in ("max", "last"):
            m = csr_dedup(rows, cols, w, (self.n_users, self.n_items), keep=aggregate)
        else:
            raise ValueError(f"aggregate must be max, sum, last or count, not {aggregate!r}")
        m.sort_indices()
        for a in (m.data, m.indices, m.indptr):  # shared through the cache: read-only
            a.setflags(write=False)
        self._matrix_cache[key] = m
        return m

    def item_counts(self) -> np.ndarray:
        """Number of distinct users per item (int64)."""
        m = self.matrix(weights={e: 1.0 for e in self.event_names}, aggregate="max")
        return np.diff(m.tocsc().indptr).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """Number of interactions per user (int64)."""
        return np.diff(self.user_ptr)

    # -- new datasets over the same vocabularies ---------------------------------------------

    def _replace(self, mask: np.ndarray | None = None, **kw: Any) -> Dataset:
        sel = slice(None) if mask is None else np.asarray(mask)
        args: dict[str, Any] = dict(
            users=self.users,
            items=self.items,
            user=self.user[sel],
            item=self.item[sel],
            event=self.event[sel],
            value=self.value[sel],
            ts=self.ts[sel],
            event_names=self.event_names,
            user_features=self.user_features,
            item_features=self.item_features,
            event_weights=self.event_weights,
            name=self.name,
            _sorted=True,
        )
        args.update(kw)
        return Dataset(**args)

    def subset(self, mask: np.ndarray, name: str | None = None) -> Dataset:
        """The interactions where `mask` is true (a bool array, or indices), same vocabularies."""
        mask = np.asarray(mask)
        if mask.dtype == bool and len(mask) != self.n_interactions:
            raise ValueError("mask must have one entry per interaction")
        if mask.dtype != bool:
            mask = np.sort(mask)
        return self._replace(mask, name=self.name if name is None else name)

    def forget_users(self, idx: Sequence[int] | np.ndarray) -> Dataset:
        """The dataset without these users (indices): their interactions, attributes and tags
        are gone and their ids are replaced by `erased_id` tombstones, so every other index
        stays as it was (models keep their user-indexed arrays aligned)."""
        idx = np.unique(np.asarray(idx, np.int64))
        if not len(idx):
            return self
        ids = self.users.ids.tolist()
        for k in idx.tolist():
            ids[k] = erased_id(k)
        attrs, tags = list(self.user_features.attributes), list(self.user_features.tags)
        for k in idx.tolist():
            attrs[k], tags[k] = {}, []
        keep = ~np.isin(self.user, idx)
        return self._replace(keep, users=Vocabulary(ids), user_features=UserFeatures(attrs, tags))

    def concat(self, other: Dataset, name: str | None = None) -> Dataset:
        """Interactions of both datasets (which must share vocabularies and event names).

        Equal timestamps of a user keep `self`'s interactions before `other`'s."""
        if self.users != other.users or self.items != other.items:
            raise ValueError("datasets must share user and item vocabularies")
        if self.event_names != other.event_names:
            raise ValueError("datasets must share event names")
        cat = np.concatenate
        return Dataset(
            self.users,
            self.items,
            cat([self.user, other.user]),
            cat([self.item, other.item]),
            event=cat([self.event, other.event]),
            value=cat([self.value, other.value]),
            ts=cat([self.ts, other.ts]),
            event_names=self.event_names,
            user_features=self.user_features,
            item_features=self.item_features,
            event_weights=self.event_weights,
            name=self.name if name is None else name,
        )

    def with_event_weights(self, weights: Mapping[str, float] | None) -> Dataset:
        return self._replace(event_weights=weights)

    def filter_counts(self, min_user: int = 0, min_item: int = 0) -> Dataset:
        """Drop users and items with fewer interactions, repeatedly until stable (k-core).

        Users and items that are dropped leave the vocabularies.
        """
        if min_user <= 0 and min_item <= 0:
            return self
        keep = np.ones(self.n_interactions, dtype=bool)
        while True:
            uc = np.bincount(self.user[keep], minlength=self.n_users)
            ic = np.bincount(self.item[keep], minlength=self.n_items)
            bad = (uc[self.user] < min_user) | (ic[self.item] < min_item)
            new_keep = keep & ~bad
            if new_keep.sum() == keep.sum():
                break
            keep = new_keep
        uc = np.bincount(self.user[keep], minlength=self.n_users)
        ic = np.bincount(self.item[keep], minlength=self.n_items)
        ukeep = np.flatnonzero(uc >= max(min_user, 1))
        ikeep = np.flatnonzero(ic >= max(min_item, 1))
        return self.reindex(ukeep, ikeep, keep)

    def reindex(
        self, user_idx: np.ndarray, item_idx: np.ndarray, mask: np.ndarray | None = None
    ) -> Dataset:
        """A dataset restricted to these users and items (new, smaller vocabularies, in the
        order given) and to the interactions in `mask` (bool per interaction) among theirs."""
        user_idx = np.asarray(user_idx, dtype=np.int64)
        item_idx = np.asarray(item_idx, dtype=np.int64)
        umap = np.full(self.n_users, -1, np.int64)
        umap[user_idx] = np.arange(len(user_idx))
        imap = np.full(self.n_items, -1, np.int64)
        imap[item_idx] = np.arange(len(item_idx))
        if mask is None:
            keep = np.ones(self.n_interactions, bool)
        else:
            keep = np.asarray(mask, dtype=bool).copy()
            if len(keep) != self.n_interactions:
                raise ValueError("mask must have one entry per interaction")
        keep &= (umap[self.user] >= 0) & (imap[self.item] >= 0)
        # New user indices keep the (user, time) order only if user_idx is increasing;
        # otherwise the constructor re-sorts (stably, so equal timestamps keep their order).
        increasing = bool(np.all(np.diff(user_idx) > 0))
        return Dataset(
            Vocabulary(self.users.ids[user_idx]),
            Vocabulary(self.items.ids[item_idx]),
            umap[self.user[keep]],
            imap[self.item[keep]],
            event=self.event[keep],
            value=self.value[keep],
            ts=self.ts[keep],
            event_names=self.event_names,
            user_features=self.user_features.take(user_idx),
            item_features=self.item_features.take(item_idx),
            event_weights=self.event_weights,
            name=self.name,
            _sorted=increasing,
        )

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_store(
        cls,
        store: Store,
        *,
        since: float | None = None,
        until: float | None = None,
        events: Sequence[str] | None = None,
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        event_weights: Mapping[str, float] | None = None,
        include_inactive: bool = True,
        consent: bool = True,
        name: str = "",
    ) -> Dataset:
        """Snapshot the store, optionally limited by time window [since, until) and events.

        With `include_inactive`, users and items without interactions in the window stay in the
        vocabularies (new items are part of the catalogue); count filters drop them. With
        `consent` (the default) users who opted out of training are left out, with their
        events; `consent=False` is for the store's own tools, never for training.
        """
        arr = store.read_interactions(since=since, until=until, events=events)
        urows = store.read_table("user")
        if consent:
            arr, urows = _consenting(arr, urows)
        irows = store.read_table("item")
        uid = np.fromiter((r["id"] for r in urows), np.int64, len(urows))
        iid = np.fromiter((r["id"] for r in irows), np.int64, len(irows))
        u_idx = np.searchsorted(uid, arr.user_id)  # store ids come sorted by id
        i_idx = np.searchsorted(iid, arr.item_id)
        ev_names, ev_codes = np.unique(arr.event, return_inverse=True)
        if len(ev_names) > 127:
            raise LmrecError(f"too many distinct event types ({len(ev_names)}); at most 127")
        ds = cls(
            Vocabulary([r["ext_id"] for r in urows]),
            Vocabulary([r["ext_id"] for r in irows]),
            u_idx,
            i_idx,
            event=ev_codes.astype(np.int8),
            value=arr.value,
            ts=arr.ts,
            event_names=[str(e) for e in ev_names] or ["interaction"],
            user_features=UserFeatures(
                [dict(r["attributes"] or {}) for r in urows], [list(r["tags"] or []) for r in urows]
            ),
            item_features=ItemFeatures(
                [r["title"] or "" for r in irows],
                [r["description"] or "" for r in irows],
                [list(r["categories"] or []) for r in irows],
                [dict(r["attributes"] or {}) for r in irows],
                np.array([r["created_at"] for r in irows], dtype=np.float64),
            ),
            event_weights=event_weights,
            name=name or store.engine.url.database or "",
        )
        if min_user_interactions > 0 or min_item_interactions > 0:
            return ds.filter_counts(min_user_interactions, min_item_interactions)
        if not include_inactive:
            return ds.reindex(
                np.flatnonzero(np.bincount(ds.user, minlength=ds.n_users)),
                np.flatnonzero(np.bincount(ds.item, minlength=ds.n_items)),
            )
        return ds

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        user: str = "user",
        item: str = "item",
        event: str | None = "event",
        value: str | None = "value",
        ts: str | None = "ts",
        name: str = "",
    ) -> Dataset:
        """A dataset from a DataFrame of interactions (ids as given, vocabularies in order of
        first appearance). Missing optional columns get defaults."""
        import pandas as pd

        for col in (user, item):
            if col not in frame:
                raise LmrecError(
                    f"from_frame: no column {col!r}; columns are {', '.join(map(str, frame))}"
                )
            if frame[col].isna().any():
                row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
                raise LmrecError(f"from_frame: column {col!r} is empty at row {row}")
        if ts and ts in frame:
            ts_arr = pd.to_numeric(frame[ts], errors="coerce").to_numpy(np.float64)
            if not np.isfinite(ts_arr).all():
                row = int(np.flatnonzero(~np.isfinite(ts_arr))[0])
                raise LmrecError(
                    f"from_frame: column {ts!r} must hold finite numbers; row {row} has "
                    f"{frame[ts].iloc[row]!r}"
                )
        users = pd.unique(frame[user].astype(str))
        items = pd.unique(frame[item].astype(str))
        uv, iv = Vocabulary(users), Vocabulary(items)
        if event and event in frame:
            ev_names, codes = np.unique(frame[event].astype(str).to_numpy(), return_inverse=True)
            if len(ev_names) > 127:
                raise LmrecError(
                    f"from_frame: too many distinct event types ({len(ev_names)}); at most 127"
                )
        else:
            ev_names, codes = np.array(["interaction"]), np.zeros(len(frame), np.int8)
        return cls(
            uv,
            iv,
            uv.indices(frame[user].astype(str).tolist()),
            iv.indices(frame[item].astype(str).tolist()),
            event=codes,
            value=frame[value].to_numpy(np.float32) if value and value in frame else None,
            ts=ts_arr if ts and ts in frame else None,
            event_names=[str(e) for e in ev_names],
            name=name,
        )

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the dataset to a directory (arrays.npz + JSON); no pickle."""
        with staged_dir(path, "dataset.json") as tmp:
            self._write(tmp)
        return Path(path)

    def _write(self, path: Path) -> None:
        np.savez_compressed(
            path / "arrays.npz",
            user_ids=self.users.ids,
            item_ids=self.items.ids,
            user=self.user,
            item=self.item,
            event=self.event,
            value=self.value,
            ts=self.ts,
            item_created_at=self.item_features.created_at,
        )
        meta = {
            "format": "lmrec.dataset",
            "version": FORMAT_VERSION,
            "name": self.name,
            "event_names": list(self.event_names),
            "event_weights": self.event_weights,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
        }
        (path / "dataset.json").write_text(json.dumps(meta, indent=2))
        uf, itf = self.user_features, self.item_features
        (path / "users.json").write_text(json.dumps({"attributes": uf.attributes, "tags": uf.tags}))
        (path / "items.json").write_text(
            json.dumps(
                {
                    "title": itf.title,
                    "description": itf.description,
                    "categories": itf.categories,
                    "attributes": itf.attributes,
                }
            )
        )

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read a dataset written by `save` (arrays loaded with allow_pickle=False)."""
        path = Path(path)
        try:
            meta = json.loads((path / "dataset.json").read_text())
        except FileNotFoundError:
            raise LmrecError(f"{path} is not a saved lmrec dataset (no dataset.json)") from None
        if meta.get("format") != "lmrec.dataset" or meta.get("version", 0) > FORMAT_VERSION:
            raise LmrecError(f"{path}/dataset.json: unsupported format {meta.get('format')!r}")
        try:
            with np.load(path / "arrays.npz", allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            u = json.loads((path / "users.json").read_text())
            it = json.loads((path / "items.json").read_text())
        except (OSError, ValueError) as e:
            raise LmrecError(f"{path}: cannot read the saved dataset: {e}") from None
        missing = sorted(set(_ARRAYS) - set(a))
        if missing:
            raise LmrecError(f"{path}/arrays.npz: missing arrays {', '.join(missing)}")
        sizes = (len(a["user_ids"]), len(a["item_ids"]), len(a["user"]))
        if sizes != (meta.get("n_users"), meta.get("n_items"), meta.get("n_interactions")):
            raise LmrecError(
                f"{path}: arrays do not match dataset.json (users, items, interactions: "
                f"{sizes} vs {(meta.get('n_users'), meta.get('n_items'), meta.get('n_interactions'))})"
            )
        return cls(
            Vocabulary(a["user_ids"]),
            Vocabulary(a["item_ids"]),
            a["user"],
            a["item"],
            event=a["event"],
            value=a["value"],
            ts=a["ts"],
            event_names=meta["event_names"],
            user_features=UserFeatures(u["attributes"], u["tags"]),
            item_features=ItemFeatures(
                it["title"],
                it["description"],
                it["categories"],
                it["attributes"],
                a["item_created_at"],
            ),
            event_weights=meta.get("event_weights"),
            name=meta.get("name", ""),
            _sorted=True,
        )

    # -- comparison --------------------------------------------------------------------------

    def equals(self, other: Dataset) -> bool:
        """Whether both hold the same vocabularies, interactions, events, features and name."""
        if not isinstance(other, Dataset):
            return False
        uf, of = self.user_features, other.user_features
        itf, otf = self.item_features, other.item_features
        return (
            self.users == other.users
            and self.items == other.items
            and self.event_names == other.event_names
            and self.event_weights == other.event_weights
            and self.name == other.name
            and all(
                np.array_equal(a, b)
                for a, b in (
                    (self.user, other.user),
                    (self.item, other.item),
                    (self.event, other.event),
                    (self.ts, other.ts),
                )
            )
            and np.array_equal(self.value, other.value, equal_nan=True)
            and uf.attributes == of.attributes
            and uf.tags == of.tags
            and itf.title == otf.title
            and itf.description == otf.description
            and itf.categories == otf.categories
            and itf.attributes == otf.attributes
            and np.array_equal(itf.created_at, otf.created_at, equal_nan=True)
        )

    # -- description -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts, sparsity, event mix, time range and per-user / per-item distributions."""

        def dist(x: np.ndarray) -> dict[str, float]:
            if len(x) == 0:
                return {}
            q = np.percentile(x, [0, 25, 50, 75, 90, 100])
            return {
                "min": float(q[0]),
                "p25": float(q[1]),
                "median": float(q[2]),
                "mean": float(x.mean()),
                "p75": float(q[3]),
                "p90": float(q[4]),
                "max": float(q[5]),
            }

        m = self.matrix(weights={e: 1.0 for e in self.event_names}, aggregate="count")
        pairs = m.nnz
        cells = self.n_users * self.n_items
        ev_counts = np.bincount(self.event, minlength=len(self.event_names))
        per_user = np.diff(self.user_ptr)
        per_item = np.bincount(self.item, minlength=self.n_items)
        out: dict[str, Any] = {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "user_item_pairs": int(pairs),
            "density": pairs / cells if cells else 0.0,
            "sparsity": 1 - pairs / cells if cells else 1.0,
            "events": {e: int(c) for e, c in zip(self.event_names, ev_counts, strict=True)},
            "users_without_interactions": int((per_user == 0).sum()),
            "items_without_interactions": int((per_item == 0).sum()),
            "interactions_per_user": dist(per_user),
            "interactions_per_item": dist(per_item),
        }
        if self.n_interactions:
            out["time_range"] = [float(self.ts.min()), float(self.ts.max())]
            vals = self.value[~np.isnan(self.value)]
            if len(vals):
                out["values"] = dist(vals.astype(np.float64))
        return out


def snapshot(url: str | None = None, **options: Any) -> Dataset:
    """Open the store at `url` (default: $LMREC_DB, else sqlite:///lmrec.db), take a
    `Dataset.from_store(store, **options)` snapshot and close the store; an error saying so
    when the snapshot holds no interactions."""
    from lmrec.store import Store, resolve_url

    url = resolve_url(url)
    with Store(url) as store:
        ds = Dataset.from_store(store, **options)
    if ds.n_interactions == 0:
        shown = url.split("@")[-1] if "@" in url else url  # no credentials in messages
        raise LmrecError(f"the store {shown} holds no interactions: import data first")
    return ds
