"""EASE: embarrassingly shallow autoencoder (Steck, WWW 2019).

A closed-form item-item model: B = argmin |X - X B|^2 + reg |B|^2 subject to diag(B) = 0,
solved as P = (X'X + reg I)^-1, B = -P / diag(P), diag(B) = 0. Scores are h B for any
history h, so new histories fold in without retraining. Memory and time grow as n_items^2
and n_items^3.
"""

from __future__ import annotations

__all__ = ["EASE", "EASEConfig"]

from collections.abc import Mapping

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.models.base import (
    Contributions,
    History,
    ModelConfig,
    Recommender,
    linear_contributions,
    recency_weighted,
)


class EASEConfig(ModelConfig):
    reg: float = Field(8.0, gt=0)
    """L2 regularisation; with `relative_reg`, a multiple of the mean of diag(X'X) (the mean
    number of interactions per item), so the default scales with the data."""
    relative_reg: bool = True
    """Read `reg` relative to the Gram diagonal's mean (else as an absolute lambda)."""
    binary: bool = True
    """Treat every interaction as 1 (else use the event weights of the matrix)."""
    half_life: float | None = Field(5.0, gt=0)
    """Weigh history items by 0.5 ** (steps back from the newest / half_life); None: equal."""
    max_items: int = Field(30_000, ge=1)
    """Refuse catalogues larger than this (the dense n_items^2 matrices would not fit)."""


class EASE(Recommender):
    """EASE item-item regression, closed form with an L2 penalty `reg`."""

    name = "ease"
    config_class = EASEConfig
    config: EASEConfig

    def _fit(self, dataset: Dataset) -> None:
        cfg = self.config
        n = dataset.n_items
        if n > cfg.max_items:
            raise LmrecError(
                f"ease: {n} items is more than max_items={cfg.max_items} (needs {n}^2 dense "
                "matrices); raise max_items if memory allows, or use itemknn"
            )
        x = dataset.matrix().astype(np.float64)
        if cfg.binary:
            x.data[:] = 1.0
        g = (x.T @ x).toarray()
        diag = np.diag(g).copy()
        lam = cfg.reg * max(float(diag.mean()), 1e-12) if cfg.relative_reg else cfg.reg
        g[np.diag_indices(n)] += lam
        p = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices(n)] = 0.0
        self.lam = lam
        self.weights = np.ascontiguousarray(b, dtype=np.float32)  # C order: fast h @ W

    def _history_matrix(self, history: History) -> sp.csr_matrix:
        h = history.matrix.astype(np.float32, copy=True)
        if self.config.binary:
            h.data[:] = 1.0
        return recency_weighted(history, self.config.half_life, h)

    def score(self, history: History) -> np.ndarray:
        return np.asarray(self._history_matrix(history) @ self.weights, np.float32)

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """h_j B[j, i]: the weighted history item times its EASE weight for the item."""
        return linear_contributions(
            self._history_matrix(history), self.weights, items, "ease weights"
        )

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "lambda": np.asarray(self.lam)}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.weights = np.ascontiguousarray(state["weights"], dtype=np.float32)
        self.lam = float(state["lambda"])
