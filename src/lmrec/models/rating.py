"""Explicit-rating models: the shared rating task (`RatingModel`) and the two models without
latent factors, `baseline` (global mean + user and item biases) and `knnbaseline` (item-based
k nearest neighbours over the residuals of the baseline, Pearson-baseline similarity with
shrinkage; Koren, TKDD 2010, section 2.2 — Surprise's `BaselineOnly` and `KNNBaseline`).

The rating task reads the interactions of the rating event (`rating_event`, default "rating")
that carry a value; every other event is ignored, and a dataset without ratings is refused with
a `DataError`. Predictions are clipped to the rating scale seen in the training data. Ranking
by predicted rating goes through the usual `score`, so a rating model also recommends: a known
user's row is their predicted ratings of every item; an unknown user with a history is folded
in from that history (the query's `values` as ratings, an item without one counting as rated
at the top of the scale).
"""

from __future__ import annotations

__all__ = [
    "Baseline",
    "BaselineConfig",
    "FactorRatingConfig",
    "FactorRatingModel",
    "KNNBaseline",
    "KNNBaselineConfig",
    "RatingModel",
    "Ratings",
    "fit_biases",
    "ratings_of",
]

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset
from lmrec.errors import DataError, LmrecError, Problem
from lmrec.models.base import (
    History,
    ModelConfig,
    Recommendations,
    Recommender,
    sparse_from_state,
    sparse_state,
)


@dataclass(frozen=True)
class Ratings:
    """Parallel arrays of (user index, item index, rating), one per rated (user, item) pair."""

    user: np.ndarray
    item: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.value)

    def matrix(self, n_users: int, n_items: int) -> sp.csr_matrix:
        """users x items CSR of the ratings (float64)."""
        m = sp.csr_matrix(
            (self.value.astype(np.float64), (self.user, self.item)), shape=(n_users, n_items)
        )
        m.sort_indices()
        return m


def ratings_of(dataset: Dataset, event: str = "rating") -> Ratings:
    """The rated interactions of `dataset`: event `event` with a finite value; a pair rated
    twice keeps its latest rating. Raises `DataError` when there are none."""
    where = f"dataset {dataset.name or '(unnamed)'}"
    if event not in dataset.event_names:
        raise DataError(
            Problem(
                where,
                None,
                "event",
                None,
                f"no {event!r} events to learn ratings from (events: "
                f"{', '.join(dataset.event_names)}); the rating task reads only {event!r} "
                "interactions with a value (set rating_event to another event name)",
            )
        )
    code = dataset.event_names.index(event)
    keep = (dataset.event == code) & np.isfinite(dataset.value)
    if not keep.any():
        raise DataError(
            Problem(where, None, "value", None, f"the {event!r} events carry no rating values")
        )
    u, i, r = dataset.user[keep], dataset.item[keep], dataset.value[keep]
    key = u.astype(np.int64) * dataset.n_items + i
    # Rows are in time order per user: the last occurrence of a key is the latest rating.
    _, last = np.unique(key[::-1], return_index=True)
    pick = np.sort(len(key) - 1 - last)
    return Ratings(u[pick].astype(np.int64), i[pick].astype(np.int64), r[pick].astype(np.float64))


def fit_biases(
    r: Ratings, n_users: int, n_items: int, mu: float, reg_user: float, reg_item: float, epochs: int
) -> tuple[np.ndarray, np.ndarray]:
    """User and item biases by alternating least squares (Surprise's `BaselineOnly` with
    bsl_options method='als'): b_u = sum(r - mu - b_i) / (reg_user + n_u), then
    b_i = sum(r - mu - b_u) / (reg_item + n_i), `epochs` times."""
    n_u = np.bincount(r.user, minlength=n_users)
    n_i = np.bincount(r.item, minlength=n_items)
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    for _ in range(epochs):
        bu = np.bincount(r.user, r.value - mu - bi[r.item], minlength=n_users) / (reg_user + n_u)
        bi = np.bincount(r.item, r.value - mu - bu[r.user], minlength=n_items) / (reg_item + n_i)
    return bu, bi


class RatingConfig(ModelConfig):
    """Fields shared by the rating models."""

    rating_event: str = "rating"
    """The event whose values are the ratings; other events are ignored."""


class RatingModel(Recommender):
    """A rating predictor behind the Recommender contract: `predict_ratings(users, items)`,
    clipped to the learned scale, and `score` = predicted ratings of every item."""

    predicts_ratings: ClassVar[bool] = True
    config: RatingConfig
    mu_: float
    scale_: tuple[float, float]

    def _fit(self, dataset: Dataset) -> None:
        r = ratings_of(dataset, self.config.rating_event)
        self.mu_ = float(r.value.mean())
        self.scale_ = (float(r.value.min()), float(r.value.max()))
        self.rated_ = r.matrix(dataset.n_users, dataset.n_items)
        self._fit_ratings(r, dataset)

    @abstractmethod
    def _fit_ratings(self, r: Ratings, dataset: Dataset) -> None:
        """Learn from the rated interactions (`dataset` for anything else, e.g. item text)."""

    @abstractmethod
    def _predict_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Unclipped predictions for known users (>= 0) and item indices, pairwise."""

    @abstractmethod
    def _predict_rows(self, users: np.ndarray) -> np.ndarray:
        """(B, n_items) unclipped predictions of every item for known users."""

    @abstractmethod
    def _fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """(n_items,) unclipped predictions for a new user who rated `items` so."""

    def _clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, *self.scale_)

    def predict_ratings(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings (n,) of (user index, item index) pairs, clipped to the rating
        scale of the training data; an unknown user (-1) gets the prediction of a user with no
        ratings (the item's baseline)."""
        self.check_fitted()
        assert self.items is not None and self.users is not None
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        if users.shape != items.shape:
            raise LmrecError(f"predict_ratings: {len(users)} users but {len(items)} items")
        if len(items) and (items.min() < 0 or items.max() >= len(self.items)):
            raise LmrecError("predict_ratings: item index out of the model's catalogue")
        out = np.empty(len(users), np.float64)
        known = users >= 0
        out[known] = self._predict_pairs(users[known], items[known])
        if (~known).any():
            out[~known] = self._fold_in(np.zeros(0, np.int64), np.zeros(0))[items[~known]]
        return self._clip(out)

    def score(self, history: History) -> np.ndarray:
        assert self.items is not None
        out = np.zeros((len(history), len(self.items)), np.float32)
        known = np.flatnonzero(history.users >= 0)
        if len(known):
            out[known] = self._clip(self._predict_rows(history.users[known]))
        for r in np.flatnonzero(history.users < 0):
            items, ratings = self._row_ratings(history, int(r))
            if len(items):
                out[r] = self._clip(self._fold_in(items, ratings))
        return out

    def _row_ratings(self, history: History, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The items of history row r and their ratings: the query's `values` where given,
        else the top of the rating scale."""
        assert self.items is not None
        items = history.matrix[r].indices.astype(np.int64)
        ratings = np.full(len(items), self.scale_[1])
        q = history.queries[r] if history.queries else None
        if q is not None and q.values is not None and q.items:
            idx = self.items.indices(list(q.items))
            given = {int(i): float(v) for i, v in zip(idx, q.values, strict=False) if i >= 0}
            for pos, i in enumerate(items):
                if int(i) in given and np.isfinite(given[int(i)]):
                    ratings[pos] = given[int(i)]
        return items, ratings

    def _base_state(self) -> dict[str, np.ndarray]:
        return {
            "mu": np.asarray(self.mu_),
            "scale": np.asarray(self.scale_, np.float64),
            **sparse_state("rated", self.rated_),
        }

    def _set_base_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.mu_ = float(state["mu"])
        lo, hi = (float(x) for x in state["scale"])
        self.scale_ = (lo, hi)
        self.rated_ = sparse_from_state(state, "rated")


class FactorRatingConfig(RatingConfig):
    """Fields shared by the latent-factor rating models."""

    embedding_size: int = Field(100, ge=1)
    """Number of latent factors."""
    fold_in_reg: float = Field(1.0, ge=0)
    """Ridge weight (times the number of ratings) of a new user's folded-in factors."""
    seed: int = 0
    """Seed of initialisation and sampling."""


class FactorRatingModel(RatingModel):
    """r_ui = mu + b_u + b_i + p_u . q_i over learned arrays `bu_`, `bi_`, `user_vec_` (P) and
    `item_vec_` (Q): prediction, ranking, fold-in of new users, similar items and the saved
    state shared by the factor models (how P and Q are learned is each model's own)."""

    config: FactorRatingConfig
    bu_: np.ndarray
    bi_: np.ndarray
    user_vec_: np.ndarray
    item_vec_: np.ndarray

    def _implicit(self, rated: sp.csr_matrix) -> np.ndarray:
        """The implicit-feedback part of the user factor for each row of `rated` (users'
        rated items); none here (SVD++ adds one)."""
        return np.zeros((rated.shape[0], self.item_vec_.shape[1]))

    def _predict_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dot = np.einsum("nk,nk->n", self.user_vec_[users], self.item_vec_[items])
        return self.mu_ + self.bu_[users] + self.bi_[items] + dot

    def _predict_rows(self, users: np.ndarray) -> np.ndarray:
        return (
            self.mu_
            + self.bu_[users, None]
            + self.bi_[None, :]
            + self.user_vec_[users] @ self.item_vec_.T
        )

    def _fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        base = self.mu_ + self.bi_
        if len(items) == 0:
            return base
        resid = ratings - base[items]
        bu = resid.sum() / (len(items) + 15.0)
        q = self.item_vec_[items]
        row = sp.csr_matrix(
            (np.ones(len(items)), (np.zeros(len(items), np.int64), items)), shape=(1, len(base))
        )
        implicit = self._implicit(row)[0]
        target = resid - bu - q @ implicit
        k = q.shape[1]
        a = q.T @ q + self.config.fold_in_reg * len(items) * np.eye(k)
        p = np.linalg.solve(a, q.T @ target)
        return base + bu + self.item_vec_ @ (p + implicit)

    def similar_items(self, item: str, n: int = 10) -> Recommendations:
        """Items whose factors have the highest cosine with the item's factors."""
        return self._similar_by_vectors(item, self.item_vec_, n)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._base_state(),
            "bu": self.bu_,
            "bi": self.bi_,
            "user_vec": self.user_vec_,
            "item_vec": self.item_vec_,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_base_state(state)
        self.bu_, self.bi_ = state["bu"], state["bi"]
        self.user_vec_, self.item_vec_ = state["user_vec"], state["item_vec"]


class BaselineConfig(RatingConfig):
    reg_user: float = Field(15.0, ge=0)
    """Shrinkage of the user biases towards 0 (Surprise's reg_u)."""
    reg_item: float = Field(10.0, ge=0)
    """Shrinkage of the item biases towards 0 (Surprise's reg_i)."""
    epochs: int = Field(10, ge=1)
    """Alternating least-squares sweeps."""


class _Biased(RatingModel):
    """Shared baseline part: mu + b_u + b_i."""

    config: BaselineConfig
    bu_: np.ndarray
    bi_: np.ndarray

    def _fit_biases(self, r: Ratings, dataset: Dataset) -> None:
        c = self.config
        self.bu_, self.bi_ = fit_biases(
            r, dataset.n_users, dataset.n_items, self.mu_, c.reg_user, c.reg_item, c.epochs
        )

    def _new_user_bias(self, items: np.ndarray, ratings: np.ndarray) -> float:
        return float(
            (ratings - self.mu_ - self.bi_[items]).sum() / (self.config.reg_user + len(items))
        )

    def _bias_state(self) -> dict[str, np.ndarray]:
        return {**self._base_state(), "bu": self.bu_, "bi": self.bi_}

    def _set_bias_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_base_state(state)
        self.bu_, self.bi_ = state["bu"], state["bi"]


class Baseline(_Biased):
    """r_ui = mu + b_u + b_i (biases by regularised alternating least squares)."""

    name = "baseline"
    config_class = BaselineConfig
    personalized: ClassVar[bool] = False  # every user's ranking is the item biases'

    def _fit_ratings(self, r: Ratings, dataset: Dataset) -> None:
        self._fit_biases(r, dataset)

    def _predict_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu_ + self.bu_[users] + self.bi_[items]

    def _predict_rows(self, users: np.ndarray) -> np.ndarray:
        return self.mu_ + self.bu_[users, None] + self.bi_[None, :]

    def _fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        return self.mu_ + self._new_user_bias(items, ratings) + self.bi_

    def _state(self) -> dict[str, np.ndarray]:
        return self._bias_state()

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_bias_state(state)


class KNNBaselineConfig(BaselineConfig):
    n_neighbors: int = Field(40, ge=1)
    """Neighbours (the most similar items the user rated) per prediction (Surprise's k)."""
    shrinkage: float = Field(100.0, ge=0)
    """Similarity times (n - 1) / (n - 1 + shrinkage) for n common raters."""
    min_support: int = Field(1, ge=1)
    """Item pairs with fewer common raters have similarity 0."""


def pearson_baseline(residual: sp.csr_matrix, shrinkage: float, min_support: int) -> np.ndarray:
    """(n_items, n_items) shrunk Pearson-baseline similarity of the columns of a users x
    items residual matrix (r_ui - b_ui at rated cells): sum_u e_ui e_uj / sqrt(sum_u e_ui^2
    sum_u e_uj^2) over the common raters u, times (n_ij - 1) / (n_ij - 1 + shrinkage)."""
    e = sp.csc_matrix(residual, dtype=np.float64)
    ind = e.copy()
    ind.data = np.ones_like(ind.data)
    sq = e.multiply(e).tocsc()
    num = (e.T @ e).toarray()
    n = (ind.T @ ind).toarray()
    den = np.sqrt((sq.T @ ind).toarray() * (ind.T @ sq).toarray())
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(den > 0, num / den, 0.0)
    sim *= np.maximum(n - 1, 0) / np.maximum(n - 1 + shrinkage, 1e-12)
    sim[n < min_support] = 0.0
    np.fill_diagonal(sim, 0.0)
    return sim.astype(np.float32)


class KNNBaseline(_Biased):
    """r_ui = b_ui + sum_j s_ij (r_uj - b_uj) / sum_j s_ij over the k items j rated by u most
    similar to i (positive similarities only), b_ui = mu + b_u + b_i."""

    name = "knnbaseline"
    config_class = KNNBaselineConfig
    config: KNNBaselineConfig
    sim_: np.ndarray

    def _fit_ratings(self, r: Ratings, dataset: Dataset) -> None:
        self._fit_biases(r, dataset)
        res = r.value - self.mu_ - self.bu_[r.user] - self.bi_[r.item]
        e = sp.csr_matrix((res, (r.user, r.item)), shape=(dataset.n_users, dataset.n_items))
        self.sim_ = pearson_baseline(e, self.config.shrinkage, self.config.min_support)

    def _neighbour_mean(
        self, targets: np.ndarray, items: np.ndarray, dev: np.ndarray
    ) -> np.ndarray:
        """Per target item, the similarity-weighted mean of `dev` over its k most similar
        `items` (positive similarities; 0 where there is none)."""
        if len(items) == 0:
            return np.zeros(len(targets))
        s = self.sim_[np.ix_(targets, items)].astype(np.float64)
        k = self.config.n_neighbors
        if len(items) > k:
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s_top = np.take_along_axis(s, top, axis=1)
            d_top = dev[top]
        else:
            s_top, d_top = s, np.broadcast_to(dev, s.shape)
        s_top = np.maximum(s_top, 0.0)
        w = s_top.sum(axis=1)
        num = (s_top * d_top).sum(axis=1)
        return np.divide(num, w, out=np.zeros_like(num), where=w > 0)

    def _user_dev(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.rated_.indptr[u], self.rated_.indptr[u + 1]
        items = self.rated_.indices[lo:hi].astype(np.int64)
        dev = self.rated_.data[lo:hi] - self.mu_ - self.bu_[u] - self.bi_[items]
        return items, dev

    def _predict_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self.mu_ + self.bu_[users] + self.bi_[items]
        order = np.argsort(users, kind="stable")
        bounds = np.flatnonzero(np.diff(users[order])) + 1
        for group in np.split(order, bounds):
            if len(group) == 0:
                continue
            hist, dev = self._user_dev(int(users[group[0]]))
            out[group] += self._neighbour_mean(items[group], hist, dev)
        return out

    def _predict_rows(self, users: np.ndarray) -> np.ndarray:
        assert self.items is not None
        all_items = np.arange(len(self.items))
        out = self.mu_ + self.bu_[users, None] + self.bi_[None, :]
        for row, u in enumerate(users):
            hist, dev = self._user_dev(int(u))
            out[row] += self._neighbour_mean(all_items, hist, dev)
        return out

    def _fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        bu = self._new_user_bias(items, ratings)
        dev = ratings - self.mu_ - bu - self.bi_[items]
        base = self.mu_ + bu + self.bi_
        return base + self._neighbour_mean(np.arange(len(self.bi_)), items, dev)

    def similar_items(self, item: str, n: int = 10) -> Recommendations:
        """The items with the highest Pearson-baseline similarity to `item`."""
        self.check_fitted()
        assert self.items is not None
        i = self.items.get(item)
        if i < 0:
            raise LmrecError(f"unknown item {item!r}")
        s = self.sim_[i].astype(np.float64)
        s[i] = -np.inf
        order = np.lexsort((np.arange(len(s)), -s))[:n]
        return Recommendations(self.items.ids_of(order), s[order].astype(float).tolist())

    def _state(self) -> dict[str, np.ndarray]:
        return {**self._bias_state(), "sim": self.sim_}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_bias_state(state)
        self.sim_ = state["sim"]
