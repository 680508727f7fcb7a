"""The "attributes" feature group of `twostage`: the items' and users' own attributes.

Chosen from the fitting data (`AttributeTable.of`): the attribute keys held by at least
`MIN_COVERAGE` of the items (or users), numeric where nine in ten of their values are numbers
(5.04, "1995"), categorical where they are strings with 2 to half-as-many-as-holders distinct
values (a brand, an occupation; ids and free text are left out). At most `MAX_NUMERIC` numeric
and `MAX_CATEGORICAL` categorical keys of each side, the most widely held first. Columns:

- `item.attr.KEY`: the candidate's numeric attribute (price, sales rank, release year);
- `match.KEY`: the share of the user's history items with the candidate's value of the
  categorical item attribute (brand loyalty);
- `user.attr.KEY`: the user's numeric attribute (age);
- `affinity.KEY`: the share of the candidate's interactions in the fitting data by users with
  the user's value of the categorical user attribute (what people like them take).

Missing values are NaN (LightGBM routes them; the DCN ranker imputes the mean). A request's
`Query.attributes`, when it brings any, stand for the user's stored ones.
"""

from __future__ import annotations

__all__ = ["AttributeTable"]

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmrec.data import Dataset
from lmrec.models.base import History, sparse_from_state, sparse_state

MIN_COVERAGE = 0.1
MAX_NUMERIC = 8
MAX_CATEGORICAL = 4


def _number(v: Any) -> float | None:
    """The value as a finite float (numbers and numeric strings), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v)
        except ValueError:
            return None
    else:
        return None
    return x if math.isfinite(x) else None


def _pick(dicts: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(numeric keys, categorical keys) worth a column (see the module's rules)."""
    held: dict[str, list[Any]] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            if v is not None and v != "":
                held.setdefault(str(k), []).append(v)
    numeric: list[str] = []
    categorical: list[str] = []
    for key, vals in sorted(held.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(vals) < MIN_COVERAGE * len(dicts):
            continue
        if sum(_number(v) is not None for v in vals) >= 0.9 * len(vals):
            numeric.append(key)
        elif all(isinstance(v, str) for v in vals) and 2 <= len(set(vals)) <= len(vals) / 2:
            categorical.append(key)
    return numeric[:MAX_NUMERIC], categorical[:MAX_CATEGORICAL]


def _column_name(prefix: str, key: str) -> str:
    """A feature name LightGBM accepts (no JSON punctuation)."""
    return prefix + re.sub(r"[^0-9A-Za-z_.-]", "_", key)


@dataclass
class AttributeTable:
    """The chosen keys and what scoring needs of them (see the module docstring)."""

    item_numeric: list[str]
    item_num: np.ndarray  # (n_items, len(item_numeric)) float32, NaN: missing
    item_categorical: list[str]
    item_cat: np.ndarray  # (n_items, len(item_categorical)) int64 value index, -1: missing
    user_numeric: list[str]
    user_categorical: list[str]
    user_vocab: list[list[str]]  # the values of each categorical user key
    affinity: list[sp.csr_matrix]  # (n_items, len(vocab)) shares, one per categorical user key
    _onehot: list[sp.csr_matrix] = field(default_factory=list, repr=False)
    _user_index: list[dict[str, int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        n = len(self.item_cat)
        self._user_index = [{v: i for i, v in enumerate(vocab)} for vocab in self.user_vocab]
        self._onehot = []
        for j in range(len(self.item_categorical)):
            v = self.item_cat[:, j]
            ok = np.flatnonzero(v >= 0)
            size = int(v.max()) + 1 if len(ok) else 1
            self._onehot.append(
                sp.csr_matrix((np.ones(len(ok), np.float32), (ok, v[ok])), shape=(n, size))
            )

    @classmethod
    def of(cls, ds: Dataset) -> AttributeTable:
        items = ds.item_features.attributes
        users = ds.user_features.attributes
        item_numeric, item_categorical = _pick(items)
        user_numeric, user_categorical = _pick(users)
        num = np.full((ds.n_items, len(item_numeric)), np.nan, np.float32)
        cat = np.full((ds.n_items, len(item_categorical)), -1, np.int64)
        vocabs: list[dict[str, int]] = [{} for _ in item_categorical]
        for i, attrs in enumerate(items):
            for j, key in enumerate(item_numeric):
                x = _number(attrs.get(key))
                if x is not None:
                    num[i, j] = x
            for j, key in enumerate(item_categorical):
                v = attrs.get(key)
                if isinstance(v, str) and v:
                    cat[i, j] = vocabs[j].setdefault(v, len(vocabs[j]))
        user_vocab, affinity = [], []
        for key in user_categorical:
            vocab: dict[str, int] = {}
            val = np.array(
                [
                    vocab.setdefault(v, len(vocab)) if isinstance(v, str) and v else -1
                    for v in (a.get(key) for a in users)
                ],
                np.int64,
            )
            of_event = val[ds.user] if ds.n_interactions else np.zeros(0, np.int64)
            ok = of_event >= 0
            counts = sp.csr_matrix(
                (np.ones(int(ok.sum()), np.float32), (ds.item[ok], of_event[ok])),
                shape=(ds.n_items, max(len(vocab), 1)),
            )
            counts.sum_duplicates()
            per_item = np.maximum(np.bincount(ds.item, minlength=ds.n_items), 1)
            user_vocab.append(list(vocab))
            affinity.append(
                sp.csr_matrix(
                    sp.diags(1.0 / per_item.astype(np.float32)) @ counts, dtype=np.float32
                )
            )
        return cls(
            item_numeric,
            num,
            item_categorical,
            cat,
            user_numeric,
            user_categorical,
            user_vocab,
            affinity,
        )

    @property
    def names(self) -> list[str]:
        """The group's feature columns, in `columns`' order."""
        return (
            [_column_name("item.attr.", k) for k in self.item_numeric]
            + [_column_name("match.", k) for k in self.item_categorical]
            + [_column_name("user.attr.", k) for k in self.user_numeric]
            + [_column_name("affinity.", k) for k in self.user_categorical]
        )

    def columns(
        self, history: History, item: np.ndarray, users: Sequence[Mapping[str, Any]]
    ) -> list[np.ndarray]:
        """(B, C) arrays of each column for the candidates `item` (B, C) of the history rows;
        `users`: the stored attributes of the model's users (by index)."""
        b, c = item.shape
        rows = np.repeat(np.arange(b), c)
        cols: list[np.ndarray] = [self.item_num[item, j] for j in range(len(self.item_numeric))]
        if self.item_categorical:
            held = history.matrix.astype(bool).astype(np.float32)
            length = np.diff(history.matrix.indptr).astype(np.float32)
            with np.errstate(invalid="ignore", divide="ignore"):
                for j, onehot in enumerate(self._onehot):
                    prof = (held @ onehot).tocsr()  # (B, values): history items per value
                    v = self.item_cat[item, j]
                    got = np.asarray(prof[rows, np.maximum(v, 0).ravel()]).reshape(b, c)
                    cols.append(np.where(v >= 0, got / length[:, None], np.nan))
        if self.user_numeric or self.user_categorical:
            mine = [history.user_attributes(r, users) for r in range(b)]
            for key in self.user_numeric:
                x = np.array([_number(a.get(key)) for a in mine], np.float64)  # None -> nan
                cols.append(np.repeat(x[:, None], c, axis=1))
            for key, index, share in zip(
                self.user_categorical, self._user_index, self.affinity, strict=True
            ):
                val = np.array([index.get(a.get(key), -1) for a in mine], np.int64)
                got = np.asarray(share[item.ravel(), np.repeat(np.maximum(val, 0), c)])
                cols.append(np.where(val[:, None] >= 0, got.reshape(b, c), np.nan))
        return cols

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "attr.item_numeric": np.asarray(self.item_numeric, dtype=str),
            "attr.item_num": self.item_num,
            "attr.item_categorical": np.asarray(self.item_categorical, dtype=str),
            "attr.item_cat": self.item_cat,
            "attr.user_numeric": np.asarray(self.user_numeric, dtype=str),
            "attr.user_categorical": np.asarray(self.user_categorical, dtype=str),
        }
        for j, (vocab, share) in enumerate(zip(self.user_vocab, self.affinity, strict=True)):
            out[f"attr.user_vocab.{j}"] = np.asarray(vocab, dtype=str)
            out.update(sparse_state(f"attr.affinity.{j}", share))
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> AttributeTable | None:
        """The table saved by `state`, or None for a model saved before the group existed."""
        if "attr.item_num" not in state:
            return None

        def strings(name: str) -> list[str]:
            return [str(k) for k in np.asarray(state[name]).tolist()]

        keys = strings("attr.user_categorical")
        return cls(
            strings("attr.item_numeric"),
            np.asarray(state["attr.item_num"], np.float32),
            strings("attr.item_categorical"),
            np.asarray(state["attr.item_cat"], np.int64),
            strings("attr.user_numeric"),
            keys,
            [strings(f"attr.user_vocab.{j}") for j in range(len(keys))],
            [sparse_from_state(state, f"attr.affinity.{j}") for j in range(len(keys))],
        )
