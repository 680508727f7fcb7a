"""Neighbourhood models: item-based and user-based k nearest neighbours.

Item kNN (Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS 2004) scores item j for a history
h as sum_i h_i S[i, j], where S keeps the `n_neighbors` items most similar to j. User kNN
(Herlocker et al., SIGIR 1999) scores item j as sum over the `n_neighbors` training users v
most similar to the history of sim(h, v) * X[v, j]. Both score any `History`, so a new or
extended history folds in without retraining. Similarities: cosine, asymmetric cosine
(Aiolli, RecSys 2013), Jaccard and Pearson, each with additive shrinkage.
"""

from __future__ import annotations

__all__ = [
    "ItemKNN",
    "ItemKNNConfig",
    "Similarity",
    "UserKNN",
    "UserKNNConfig",
    "pair_similarity",
    "similarity",
]

import itertools
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset
from lmrec.models.base import (
    Contributions,
    History,
    ModelConfig,
    Recommender,
    linear_contributions,
    recency_weighted,
    sparse_from_state,
    sparse_state,
)

Similarity = Literal["cosine", "asymmetric", "jaccard", "pearson"]

#: Dense working blocks hold at most this many similarity cells (float32, about 128 MB).
BLOCK_CELLS = 32_000_000
#: Sparse working blocks hold at most about this many co-occurrence cells.
SPARSE_CELLS = 20_000_000
#: Above this many items, `sparse=None` fits item kNN on sparse co-occurrence blocks.
SPARSE_ABOVE = 50_000


def _stats(m: sp.csr_matrix | sp.csc_matrix, axis: int) -> tuple[np.ndarray, ...]:
    """Per row (axis=1) or column (axis=0): sum of squares, sum, number of nonzeros."""
    sq = np.asarray(m.multiply(m).sum(axis=axis), np.float64).ravel()
    s = np.asarray(m.sum(axis=axis), np.float64).ravel()
    n = np.asarray((m != 0).sum(axis=axis), np.float64).ravel()
    return sq, s, n


def similarity(
    co: np.ndarray,
    a: tuple[np.ndarray, ...],
    b: tuple[np.ndarray, ...],
    dims: int,
    method: Similarity,
    shrink: float = 0.0,
    alpha: float = 0.5,
) -> np.ndarray:
    """Similarities from dot products `co` (A x B) and per-vector stats (sum sq, sum, nnz).

    cosine: co / (|a| |b| + shrink); asymmetric: co / (|a|^(2 alpha) |b|^(2 (1-alpha)) + shrink);
    jaccard (binary vectors): co / (n_a + n_b - co + shrink); pearson over all `dims`
    coordinates: (D co - s_a s_b) / (sqrt(D q_a - s_a^2) sqrt(D q_b - s_b^2) + D shrink).
    Pairs without overlap (co == 0) get 0.
    """
    return pair_similarity(
        co,
        tuple(x[:, None] for x in a),
        tuple(x[None, :] for x in b),
        dims,
        method,
        shrink,
        alpha,
    )


def pair_similarity(
    co: np.ndarray,
    a: tuple[np.ndarray, ...],
    b: tuple[np.ndarray, ...],
    dims: int,
    method: Similarity,
    shrink: float = 0.0,
    alpha: float = 0.5,
) -> np.ndarray:
    """`similarity` of dot products `co` and stats `a`, `b` that broadcast against `co`
    (e.g. one value per stored cell of a sparse product: the sparse fit uses this)."""
    qa, sa, na = a
    qb, sb, nb = b
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "cosine":
            den = np.sqrt(qa) * np.sqrt(qb) + shrink
            out = co / den
        elif method == "asymmetric":
            den = np.power(qa, alpha) * np.power(qb, 1.0 - alpha) + shrink
            out = co / den
        elif method == "jaccard":
            out = co / (na + nb - co + shrink)
        elif method == "pearson":
            num = dims * co - sa * sb
            den = np.sqrt(np.maximum(dims * qa - sa**2, 0)) * np.sqrt(
                np.maximum(dims * qb - sb**2, 0)
            )
            out = num / (den + dims * shrink)
        else:  # pragma: no cover - the config refuses other names
            raise ValueError(f"unknown similarity {method!r}")
    out = np.where((co > 0) & np.isfinite(out), out, 0.0)
    return out.astype(np.float32)


def _top_k_sparse(co: sp.csc_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k largest positive cells of each column of a sparse matrix: (row, col, value)."""
    co.sum_duplicates()
    cols = np.repeat(np.arange(co.shape[1]), np.diff(co.indptr))
    keep = co.data > 0
    rows, cols, vals = co.indices[keep], cols[keep], co.data[keep]
    order = np.lexsort((rows, -vals, cols))  # by column, best first, ties by row
    rows, cols, vals = rows[order], cols[order], vals[order]
    first = np.searchsorted(cols, np.arange(co.shape[1]))
    rank = np.arange(len(cols)) - first[cols]
    top = rank < k
    return rows[top].astype(np.int64), cols[top].astype(np.int64), vals[top]


def _top_k_columns(dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k largest positive cells of each column: (row, col, value) arrays."""
    n_rows, n_cols = dense.shape
    k = min(k, n_rows)
    if k <= 0 or n_cols == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float32)
    rows = np.argpartition(-dense, k - 1, axis=0)[:k] if k < n_rows else np.indices(dense.shape)[0]
    vals = np.take_along_axis(dense, rows, axis=0)
    cols = np.broadcast_to(np.arange(n_cols), rows.shape)
    keep = vals > 0
    return rows[keep], cols[keep], vals[keep]


class _KNNConfig(ModelConfig):
    similarity: Similarity = "cosine"
    """cosine, asymmetric (cosine with exponent `alpha`), jaccard or pearson."""
    shrink: float = Field(0.0, ge=0)
    """Added to the similarity's denominator: pulls similarities on little overlap to 0."""
    alpha: float = Field(0.5, ge=0, le=1)
    """Exponent of the asymmetric cosine (0.5 is the plain cosine)."""
    binary: bool = True
    """Treat every interaction as 1 (else use the event weights of the matrix)."""
    half_life: float | None = Field(5.0, gt=0)
    """Weigh history items by 0.5 ** (steps back from the newest / half_life); None: equal."""


def _prepare(m: sp.csr_matrix, binary: bool) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    if binary:
        m.data[:] = 1.0
    m.eliminate_zeros()
    return m


class ItemKNNConfig(_KNNConfig):
    n_neighbors: int = Field(200, ge=1)
    """How many most similar items (neighbours) each item keeps."""
    similarity: Similarity = "asymmetric"
    """cosine, asymmetric (cosine with exponent `alpha`), jaccard or pearson."""
    alpha: float = Field(0.5, ge=0, le=1)
    """Exponent of the asymmetric cosine on the history item's norm (0.5 is the cosine)."""
    shrink: float = Field(10.0, ge=0)
    """Added to the similarity's denominator: pulls similarities on little overlap to 0."""
    sparse: bool | None = None
    """Compute similarities from sparse co-occurrence blocks (time and memory grow with the
    pairs of items that share a user, not with items^2; the same neighbours as dense);
    None: sparse above 50,000 items."""


class ItemKNN(Recommender):
    """Item-based kNN: a sparse item-item similarity matrix with `n_neighbors` per item."""

    name = "itemknn"
    config_class = ItemKNNConfig
    config: ItemKNNConfig

    def _fit(self, dataset: Dataset) -> None:
        cfg = self.config
        x = _prepare(dataset.matrix(), cfg.binary or cfg.similarity == "jaccard")
        n = x.shape[1]
        stats = _stats(x, axis=0)
        sparse = cfg.sparse if cfg.sparse is not None else n > SPARSE_ABOVE
        blocks = self._sparse_blocks(x, stats) if sparse else self._dense_blocks(x, stats)
        rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
        for r, c, v in blocks:
            rows.append(r)
            cols.append(c)
            vals.append(v)
        self.sim = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, n),
            dtype=np.float32,
        )

    def _dense_blocks(self, x: sp.csr_matrix, stats: tuple[np.ndarray, ...]) -> Iterator[tuple]:
        """(row, col, value) of each column's neighbours, from dense blocks of columns."""
        cfg, n = self.config, x.shape[1]
        xc = x.tocsc()
        block = max(1, BLOCK_CELLS // max(n, 1))
        for start in range(0, n, block):
            stop = min(n, start + block)
            co = (x.T @ xc[:, start:stop]).toarray()
            sim = similarity(
                co,
                stats,
                tuple(s[start:stop] for s in stats),
                x.shape[0],
                cfg.similarity,
                cfg.shrink,
                cfg.alpha,
            )
            sim[np.arange(start, stop), np.arange(stop - start)] = 0.0  # not its own neighbour
            r, c, v = _top_k_columns(sim, cfg.n_neighbors)
            yield r, c + start, v

    def _sparse_blocks(self, x: sp.csr_matrix, stats: tuple[np.ndarray, ...]) -> Iterator[tuple]:
        """The same neighbours from sparse blocks of columns, each block sized so that its
        co-occurrence product holds at most about SPARSE_CELLS cells."""
        cfg, n = self.config, x.shape[1]
        xt, xc = x.T.tocsr(), x.tocsc()
        xb = xc.copy()
        xb.data[:] = 1.0
        # an upper bound of the cells of column j of X^T X: the interactions of j's users
        cost = np.asarray(xb.T @ np.diff(x.indptr).astype(np.float64)).ravel()
        cuts = np.searchsorted(np.cumsum(cost), np.arange(SPARSE_CELLS, cost.sum(), SPARSE_CELLS))
        edges = np.unique(np.concatenate([[0], cuts + 1, [n]]).clip(0, n))
        for start, stop in itertools.pairwise(edges):
            co = sp.csc_matrix(xt @ xc[:, start:stop])
            co.sum_duplicates()
            r = co.indices
            c = np.repeat(np.arange(stop - start), np.diff(co.indptr)) + start
            co.data = pair_similarity(
                co.data,
                tuple(s[r] for s in stats),
                tuple(s[c] for s in stats),
                x.shape[0],
                cfg.similarity,
                cfg.shrink,
                cfg.alpha,
            )
            co.data[r == c] = 0.0  # not its own neighbour
            r, c, v = _top_k_sparse(co, cfg.n_neighbors)
            yield r, c + start, v

    def _history_matrix(self, history: History) -> sp.csr_matrix:
        binary = self.config.binary or self.config.similarity == "jaccard"
        return recency_weighted(history, self.config.half_life, _prepare(history.matrix, binary))

    def score(self, history: History) -> np.ndarray:
        return np.asarray((self._history_matrix(history) @ self.sim).toarray(), np.float32)

    def score_columns(self, history: History, items: np.ndarray) -> np.ndarray:
        """The columns `items` of the sparse product, never the whole (B, n_items) array."""
        prod = sp.csr_matrix(self._history_matrix(history) @ self.sim)
        return np.asarray(prod[:, items].toarray(), np.float32)

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """h_j S[j, i]: the weighted history item times its similarity to the item."""
        return linear_contributions(
            self._history_matrix(history), self.sim.tocsr(), items, "itemknn similarity"
        )

    def _state(self) -> dict[str, np.ndarray]:
        return sparse_state("sim", self.sim)

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.sim = sparse_from_state(state, "sim")


class UserKNNConfig(_KNNConfig):
    n_neighbors: int = Field(50, ge=1)
    """How many most similar training users score each history."""


class UserKNN(Recommender):
    """User-based kNN: score(h, j) = sum over the k users v most like h of sim(h, v) X[v, j]."""

    name = "userknn"
    config_class = UserKNNConfig
    config: UserKNNConfig

    def _binary(self) -> bool:
        return self.config.binary or self.config.similarity == "jaccard"

    def _fit(self, dataset: Dataset) -> None:
        self.train = _prepare(dataset.matrix(), self._binary())
        self._cache()

    def _cache(self) -> None:
        self._train_t = self.train.T.tocsr()
        self._train_stats = _stats(self.train, axis=1)

    def _similarity_rows(self, history: History) -> np.ndarray:
        """(B, n_users) similarity of each history row to each training user (0 to itself)."""
        cfg = self.config
        h = recency_weighted(history, cfg.half_life, _prepare(history.matrix, self._binary()))
        co = (h @ self._train_t).toarray()
        sim = similarity(
            co, _stats(h, axis=1), self._train_stats, h.shape[1], cfg.similarity, cfg.shrink,
            cfg.alpha,
        )  # fmt: skip
        users = history.users
        own = np.flatnonzero((users >= 0) & (users < sim.shape[1]))
        sim[own, users[own]] = 0.0
        return sim

    def similar_users(self, history: History) -> tuple[np.ndarray, np.ndarray, Any]:
        """The `n_neighbors` training users most similar to a one-row history (positive
        similarity only), their similarities and their training rows."""
        sim = self._similarity_rows(history)[0]
        k = min(self.config.n_neighbors, len(sim))
        top = np.argpartition(-sim, k - 1)[:k]
        top = top[sim[top] > 0]
        return top, sim[top].astype(np.float64), self.train[top]

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """The whole score comes from the similar users' votes."""
        s = self.score(history)[0, items]
        return Contributions.of_parts(s, "userknn neighbours", similar_users=s)

    def score(self, history: History) -> np.ndarray:
        cfg = self.config
        h = recency_weighted(history, cfg.half_life, _prepare(history.matrix, self._binary()))
        n_users = self.train.shape[0]
        out = np.zeros((len(history), self.train.shape[1]), np.float32)
        block = max(1, BLOCK_CELLS // max(n_users, 1))
        for start in range(0, len(history), block):
            hb = h[start : start + block]
            co = (hb @ self._train_t).toarray()
            sim = similarity(
                co,
                _stats(hb, axis=1),
                self._train_stats,
                h.shape[1],
                cfg.similarity,
                cfg.shrink,
                cfg.alpha,
            )
            users = history.users[start : start + block]
            own = np.flatnonzero((users >= 0) & (users < n_users))
            sim[own, users[own]] = 0.0  # a known user is not their own neighbour
            c, r, v = _top_k_columns(sim.T, cfg.n_neighbors)
            w = sp.csr_matrix((v, (r, c)), shape=(hb.shape[0], n_users), dtype=np.float32)
            out[start : start + hb.shape[0]] = (w @ self.train).toarray()
        return out

    def _forget_user_rows(self, idx: np.ndarray) -> None:
        train = self.train.tolil(copy=True)
        train[idx] = 0
        self.train = train.tocsr()
        self.train.eliminate_zeros()
        self._cache()

    def _state(self) -> dict[str, np.ndarray]:
        return sparse_state("train", self.train)

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.train = sparse_from_state(state, "train")
        self._cache()
