"""Matrix factorisation through the `implicit` library (CPU models): ALS and BPR.

ALS: weighted least squares for implicit feedback (Hu, Koren & Volinsky, ICDM 2008), with
confidence alpha * weight. BPR: Bayesian personalised ranking (Rendle et al., UAI 2009),
trained by `implicit`'s parallel SGD. Factors are saved as `.npz`; a history the model has not
seen (a new user, or a known user's newer items) is folded in at request time by solving the
user's least-squares problem against the fixed item factors (`implicit`'s `recalculate_user`
for ALS; the same solve over BPR's item factors).
"""

from __future__ import annotations

__all__ = ["ALS", "BPR", "ALSConfig", "BPRConfig"]

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import AliasChoices, Field

from lmrec.data import Dataset
from lmrec.models.base import (
    Contributions,
    History,
    ModelConfig,
    Recommendations,
    Recommender,
    recency_weighted,
)


@contextmanager
def _pinned() -> Iterator[None]:
    """BLAS single-threaded while `implicit` runs its own threads (its documented advice)."""
    import implicit.cpu  # noqa: F401 - load its libraries before limiting their threads
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        yield


def _least_squares(
    y: np.ndarray, hist: np.ndarray, conf: np.ndarray, reg: float, items: np.ndarray
) -> np.ndarray:
    """(M, H) c_j y_i' A^-1 y_j for x = A^-1 sum_j c_j y_j, A = Y'Y + reg I + sum (c_j-1) y_j y_j'
    (Hu, Koren & Volinsky, ICDM 2008, section 5; `implicit`'s `explain`)."""
    yh = y[hist]
    a = y.T @ y + reg * np.eye(y.shape[1]) + (yh.T * (conf - 1.0)) @ yh
    wi = np.linalg.solve(a, y[items].T)  # (f, M) = A^-1 y_i
    return (wi.T @ yh.T) * conf[None, :]


def _weights(m: sp.csr_matrix, binary: bool) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    if binary:
        m.data[:] = 1.0
    m.eliminate_zeros()
    m.sort_indices()
    return m


class _MFConfig(ModelConfig):
    embedding_size: int = Field(
        64, ge=1, validation_alias=AliasChoices("embedding_size", "factors")
    )
    """Size of the user and item embeddings (implicit's `factors`; old name accepted)."""
    epochs: int = Field(15, ge=1, validation_alias=AliasChoices("epochs", "iterations"))
    """Passes over the data (implicit's `iterations`; old name accepted)."""
    reg: float = Field(0.01, ge=0)
    """L2 regularisation of the factors."""
    binary: bool = True
    """Treat every interaction as 1 (else use the event weights of the matrix)."""
    seed: int = 0
    """Random seed of the initial factors."""
    num_threads: int = Field(2, ge=0, exclude=True)
    """Threads `implicit` uses (0: all cores); a runtime setting, not saved with the model."""
    half_life: float | None = Field(5.0, gt=0)
    """In fold-in, weigh history items by 0.5 ** (steps back from the newest / half_life)."""


class _MF(Recommender):
    """Shared parts: user factors per History row, dot-product scores, cosine similar items."""

    config: _MFConfig
    user_factors: np.ndarray
    item_factors: np.ndarray

    def _matrix(self, dataset: Dataset) -> sp.csr_matrix:
        return _weights(dataset.matrix(), self.config.binary)

    def _user_vectors(self, history: History) -> np.ndarray:
        raise NotImplementedError

    def score(self, history: History) -> np.ndarray:
        return np.asarray(self._user_vectors(history) @ self.item_factors.T, np.float32)

    def score_columns(self, history: History, items: np.ndarray) -> np.ndarray:
        return np.asarray(self._user_vectors(history) @ self.item_factors[items].T, np.float32)

    def item_embeddings(self) -> np.ndarray:
        """The item factors: score = <user factors, item factors>."""
        return np.asarray(self.item_factors, np.float32)

    def query_embeddings(self, history: History) -> np.ndarray:
        """The (folded-in) user factors of each history row."""
        return np.asarray(self._user_vectors(history), np.float32)

    def _fold_in_contributions(
        self, history: History, alpha: float, reg: float, items: np.ndarray, method: str
    ) -> Contributions:
        """Contributions c_j y_i' A^-1 y_j of the fold-in least squares (confidence alpha h_j)."""
        h = recency_weighted(
            history, self.config.half_life, _weights(history.matrix, self.config.binary)
        )
        hist = h.indices.astype(np.int64)
        conf = alpha * h.data.astype(np.float64)
        y = self.item_factors.astype(np.float64)
        contrib = _least_squares(y, hist, conf, reg, items)
        return Contributions(hist, contrib, np.zeros(len(items)), True, method)

    def similar_items(self, item: str, n: int = 10) -> Recommendations:
        """Items whose factors have the highest cosine with the item's factors."""
        return self._similar_by_vectors(item, self.item_factors, n)

    def _forget_user_rows(self, idx: np.ndarray) -> None:
        self.user_factors = np.array(self.user_factors, copy=True)
        self.user_factors[idx] = 0.0
        self._restore()

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]
        self._restore()

    def _restore(self) -> None:
        """Rebuild the `implicit` object around loaded factors."""


class ALSConfig(_MFConfig):
    reg: float = Field(1.0, ge=0)
    """L2 regularisation of the factors (implicit's `regularization`)."""
    alpha: float = Field(10.0, gt=0)
    """Confidence of an observed interaction: alpha * weight (unobserved cells weigh 1)."""


class ALS(_MF):
    """Implicit-feedback ALS (`implicit.cpu.als`); every history row is folded in exactly."""

    name = "als"
    config_class = ALSConfig
    config: ALSConfig

    def _new(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        return AlternatingLeastSquares(
            factors=c.embedding_size,
            regularization=c.reg,
            alpha=c.alpha,
            iterations=c.epochs,
            random_state=c.seed,
            num_threads=c.num_threads,
        )

    def _fit(self, dataset: Dataset) -> None:
        with _pinned():
            self._model = self._new()
            self._model.fit(self._matrix(dataset), show_progress=False)
        self.user_factors = np.asarray(self._model.user_factors, np.float32)
        self.item_factors = np.asarray(self._model.item_factors, np.float32)

    def _restore(self) -> None:
        with _pinned():
            self._model = self._new()
        self._model.user_factors = self.user_factors
        self._model.item_factors = self.item_factors

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """The fold-in least squares' exact split of the score over the history items."""
        c = self.config
        return self._fold_in_contributions(history, c.alpha, c.reg, items, "als least squares")

    def _user_vectors(self, history: History) -> np.ndarray:
        h = _weights(history.matrix, self.config.binary)
        h = recency_weighted(history, self.config.half_life, h)
        with _pinned():
            return np.asarray(
                self._model.recalculate_user(np.arange(h.shape[0]), h), np.float32
            ).reshape(h.shape[0], -1)


class BPRConfig(_MFConfig):
    epochs: int = Field(100, ge=1, validation_alias=AliasChoices("epochs", "iterations"))
    """Epochs of SGD over the positive interactions (old name: `iterations`)."""
    learning_rate: float = Field(0.01, gt=0)
    """SGD step size."""
    reg: float = Field(0.01, ge=0)
    """L2 regularisation of the factors."""
    fold_in: Literal["new", "always"] = "always"
    """new: known users whose history is unchanged keep their trained factors, other rows are
    folded in; always: fold in every row."""
    fold_in_reg: float = Field(1.0, gt=0)
    """L2 penalty of the fold-in least squares, relative to the mean item-factor norm^2."""
    fold_in_alpha: float = Field(10.0, gt=0)
    """Confidence of a history item in the fold-in least squares (other items weigh 1)."""


class BPR(_MF):
    """Bayesian personalised ranking (`implicit.cpu.bpr`), with least-squares fold-in."""

    name = "bpr"
    config_class = BPRConfig
    config: BPRConfig

    def _fit(self, dataset: Dataset) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        x = self._matrix(dataset)
        with _pinned():
            model = BayesianPersonalizedRanking(
                factors=c.embedding_size,
                learning_rate=c.learning_rate,
                regularization=c.reg,
                iterations=c.epochs,
                random_state=c.seed,
                num_threads=c.num_threads,
            )
            model.fit(x, show_progress=False)
        # implicit appends a bias: item_factors[:, -1] is the item bias, user_factors[:, -1] = 1.
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.item_factors = np.asarray(model.item_factors, np.float32)
        self._train = x
        self._restore()

    def _restore(self) -> None:
        v = self.item_factors.astype(np.float64)
        self._gram = v.T @ v
        self._lam = self.config.fold_in_reg * float(np.mean(np.sum(v * v, axis=1)))
        if not hasattr(self, "_train"):
            self._train = None

    def _fold_in(self, h: sp.csr_matrix) -> np.ndarray:
        """Least-squares user vectors: min sum_j c_j (p_j - u.v_j)^2 + lam |u|^2, p = history."""
        v = self.item_factors.astype(np.float64)
        f = v.shape[1]
        out = np.zeros((h.shape[0], f), np.float32)
        eye = np.eye(f) * self._lam
        for r in range(h.shape[0]):
            idx = h.indices[h.indptr[r] : h.indptr[r + 1]]
            if len(idx) == 0:
                continue
            conf = self.config.fold_in_alpha * h.data[h.indptr[r] : h.indptr[r + 1]]
            vi = v[idx]
            a = self._gram + (vi.T * (conf - 1.0)) @ vi + eye
            b = vi.T @ conf
            out[r] = np.linalg.solve(a, b)
        return out

    def contributions(self, history: History, items: np.ndarray) -> Contributions | None:
        """The fold-in least squares' split (A = V'V + sum (c_j - 1) v_j v_j' + lam I); None
        for a known user answered by their trained factors (fold_in="new", history as in
        training): those have no decomposition over history items."""
        c = self.config
        if c.fold_in == "new":
            u = int(history.users[0])
            h0 = _weights(history.matrix, c.binary)
            if 0 <= u < len(self.user_factors) and abs(h0 - self._train_matrix()[u]).sum() == 0:
                return None
        return self._fold_in_contributions(
            history, c.fold_in_alpha, self._lam, items, "bpr fold-in least squares"
        )

    def _user_vectors(self, history: History) -> np.ndarray:
        h = _weights(history.matrix, self.config.binary)
        out = np.zeros((h.shape[0], self.item_factors.shape[1]), np.float32)
        users = history.users
        n_users = len(self.user_factors)
        todo = np.ones(len(users), bool)
        if self.config.fold_in == "new":
            train = self._train_matrix()
            known = np.flatnonzero((users >= 0) & (users < n_users))
            if len(known):
                same = np.asarray(abs(h[known] - train[users[known]]).sum(axis=1)).ravel() == 0
                keep = known[same]
                out[keep] = self.user_factors[users[keep]]
                todo[keep] = False
        rows = np.flatnonzero(todo)
        if len(rows):
            h = recency_weighted(history, self.config.half_life, h)
            out[rows] = self._fold_in(h[rows])
        return out

    def _train_matrix(self) -> sp.csr_matrix:
        if self._train is None:
            assert self.history is not None
            self._train = self._matrix(self.history)
        return self._train
