"""EASE: embarrassingly shallow autoencoder (Steck, WWW 2019).

A closed-form item-item model: B = argmin |X - X B|^2 + reg |B|^2 subject to diag(B) = 0,
solved as P = (X'X + reg I)^-1, B = -P / diag(P), diag(B) = 0. Scores are h B for any
history h, so new histories fold in without retraining. Memory and time grow as n_items^2
and n_items^3.

With `text_weight` > 0 the items' language-model text vectors join the regression as
side information (collective EASE, Jeunen et al., RecSys 2020, with dense text features):
the Gram matrix becomes X'X + a F F' + reg I, where F holds the centred, unit-length text
vectors (n_items, d) and a = text_weight x the mean of diag(X'X). This is EASE fitted on X
with d extra rows a^(1/2) F' appended, "pseudo-users" whose interactions are the text
dimensions: items with similar text get similar columns, so an item bought by few users
borrows the co-purchases of its textual neighbours. On Amazon Beauty it is the strongest
lmrec model (`benchmarks/text_aware.md`).
"""

from __future__ import annotations

import json

__all__ = ["EASE", "EASEConfig"]

from collections.abc import Mapping, Sequence
from typing import Any, Self

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
from lmrec.models.tuning import holdout, ndcg10_sum, valid_targets


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
    text_weight: float | None = Field(0.0, ge=0)
    """Weight of the items' text Gram F F' (F: centred unit text vectors) beside X'X, as a
    multiple of the mean of diag(X'X); 0: EASE on interactions alone; None: the one of
    `text_weights` with the best validation NDCG@10 (see `EASE.fit`)."""
    text_weights: list[float] = Field(default_factory=lambda: [0.0, 1.0, 4.0, 16.0, 64.0])
    """Candidates tried when text_weight is None (each costs two n_items^2 x d products)."""
    valid_users: int = Field(20_000, ge=1)
    """Choose text_weight on at most this many validation users (a seeded sample)."""
    encoder: str = "minilm"
    """Text encoder spec (see `lmrec.text.load_encoder`) when text_weight > 0."""
    item_template: str | None = None
    """str.format template of item text (title, description, categories, attributes)."""
    epsilon: float | None = Field(None, gt=0)
    """Differential privacy (`lmrec.privacy.dp_gram`): the Gram X'X gets Gaussian noise so the
    weights are (epsilon, delta)-DP for adding or removing one user (None: no noise). It
    covers the weights only: the popularity fallback and the training history saved for
    fold-in are not noised (DEVELOPERS.md, issue 18)."""
    delta: float = Field(1e-5, gt=0, lt=1)
    """The delta of (epsilon, delta)-DP."""
    dp_max_items: int = Field(64, ge=1)
    """With epsilon: each user's row is clipped to their this many latest items."""
    seed: int = 0
    """Seed of the privacy noise."""


def text_side(
    dataset: Dataset, encoder: str, template: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(n_items, d) float64 text vectors centred on their mean and scaled to unit length, so
    that F F' is a cosine kernel around the catalogue's average text (MiniLM's raw cosines
    of unrelated product titles are mostly positive), and that mean (d,)."""
    from lmrec.text.cache import item_vectors

    f = item_vectors(dataset, encoder, template).astype(np.float64)
    mean = f.mean(axis=0)
    return _unit(f - mean), mean


def _unit(f: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norm > 0, norm, 1.0)


#: New items borrow the EASE weights of this many text neighbours, softmax(cos / temperature)
#: weighted (the placement `lmrec.nn.layers.DualViewEmbedding.borrow_ids` uses).
NEIGHBOURS, TEMPERATURE = 5, 0.02


class EASE(Recommender):
    """EASE item-item regression, closed form with an L2 penalty `reg`."""

    name = "ease"
    config_class = EASEConfig
    config: EASEConfig

    def __init__(self, config: Any = None, **params: Any):
        super().__init__(config, **params)
        self._valid: Dataset | None = None
        #: The text weight trained with (the config's, or the one chosen on validation).
        self.text_weight_ = float(self.config.text_weight or 0.0)
        #: Validation NDCG@10 of each candidate text weight when it was chosen: (k, 2).
        self.text_search_ = np.zeros((0, 2))
        #: The items' centred unit text vectors (n_items, d) and their mean, with text.
        self.text_f = np.zeros((0, 0), np.float32)
        self.text_mean = np.zeros(0)

    def chosen(self) -> dict[str, Any]:
        if self.config.text_weight is not None or len(self.text_search_) == 0:
            return {}
        return {"text_weight": self.text_weight_}

    @property
    def accepts_new_items(self) -> bool:  # type: ignore[override]
        """With its text view EASE places new items among their text neighbours."""
        return self.text_weight_ > 0 and len(self.text_f) > 0

    def with_items(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None = None,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> EASE:
        """A copy whose catalogue also holds these new items: each new item's row and column
        of B are the softmax(cos / 0.02)-weighted mean of those of its 5 most text-similar
        items (cosines of the centred text vectors), so it is recommended after histories
        that lead to the items it reads like, and counts like them in a history."""
        import copy

        from lmrec.data import Vocabulary
        from lmrec.text.encoders import load_encoder

        if not ids:
            return self
        if not self.accepts_new_items:
            return super().with_items(ids, texts, categories, attributes)  # type: ignore[return-value]
        self.check_fitted()
        assert self.items is not None and self.popularity is not None
        self.check_new_items(ids, texts)
        vecs = np.asarray(load_encoder(self.config.encoder).encode([str(t) for t in texts]))
        f_new = _unit(vecs.astype(np.float64) - self.text_mean).astype(np.float32)
        sim = f_new @ self.text_f.T  # (k, n)
        k = min(NEIGHBOURS, sim.shape[1])
        nb = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, nb, axis=1) / TEMPERATURE
        w = np.exp(top - top.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)  # (k_new, NEIGHBOURS)
        n, m = len(self.items), len(ids)
        b = np.zeros((n + m, n + m), np.float32)
        b[:n, :n] = self.weights
        b[:n, n:] = np.einsum("jk,ijk->ij", w, self.weights[:, nb])  # columns: scores of new
        b[n:, :n] = np.einsum("jk,jki->ji", w, self.weights[nb, :])  # rows: new in a history
        new = copy.copy(self)
        new.items = Vocabulary([*self.items.ids.tolist(), *ids])
        new.popularity = np.concatenate([self.popularity, np.zeros(m, np.float32)])
        new.weights = b
        new.text_f = np.concatenate([self.text_f, f_new])
        return new

    def fit(self, dataset: Dataset, valid: Dataset | None = None) -> Self:
        """Fit on `dataset`. With text_weight=None the text weight is chosen on NDCG@10 of
        `valid` (each user's first item there), or, without `valid`, of each user's last
        item held out of `dataset` (then the model is refitted on all of it)."""
        self._valid = valid
        try:
            return super().fit(dataset, valid)
        finally:
            self._valid = None

    def _fit(self, dataset: Dataset) -> None:
        cfg = self.config
        n = dataset.n_items
        if n > cfg.max_items:
            raise LmrecError(
                f"ease: {n} items is more than max_items={cfg.max_items} (needs {n}^2 dense "
                "matrices); raise max_items if memory allows, or use itemknn"
            )
        f = None
        if cfg.text_weight is None or cfg.text_weight > 0:
            f, self.text_mean = text_side(dataset, cfg.encoder, cfg.item_template)
            self.text_f = f.astype(np.float32)
        if cfg.text_weight is None:
            assert f is not None
            train, held = holdout(dataset, self._valid)
            p = self._choose_text_weight(train, held, f) if held is not None else None
            if p is not None and train is dataset:  # chosen on this very Gram: done
                self._set_weights(p)
                return
        g, self.lam, scale = self._gram(dataset)
        if f is not None and self.text_weight_ > 0:
            g += (self.text_weight_ * scale) * (f @ f.T)
        if self.config.epsilon is not None:
            # The noisy Gram is symmetric but indefinite: scipy 1.17's inv (which detects
            # symmetry) hung or crashed on it; LU through numpy does not.
            self._set_weights(np.linalg.inv(g))
            return
        self._set_weights(scipy.linalg.inv(g, overwrite_a=True, check_finite=False))

    def _gram(self, dataset: Dataset) -> tuple[np.ndarray, float, float]:
        """(X'X + lambda I, lambda, mean of diag(X'X)); with `epsilon`, X'X is DP-noised."""
        x = dataset.matrix().astype(np.float64)
        if self.config.binary:
            x.data[:] = 1.0
        dp = self.config.epsilon is not None
        g = self._dp_gram(dataset, x) if dp else (x.T @ x).toarray()
        scale = max(float(np.diag(g).mean()), 1e-12)
        lam = self.config.reg * scale if self.config.relative_reg else self.config.reg
        g[np.diag_indices(len(g))] += lam
        return g, lam, scale

    def _dp_gram(self, dataset: Dataset, x: sp.csr_matrix) -> np.ndarray:
        from lmrec.privacy import dp_gram

        cfg = self.config
        assert cfg.epsilon is not None
        last = _last_times(dataset, x)
        rng = np.random.default_rng(cfg.seed)
        g, privacy = dp_gram(x, cfg.epsilon, cfg.delta, cfg.dp_max_items, rng, ts=last)
        self.privacy_ = privacy.as_dict()
        return g

    def _set_weights(self, p: np.ndarray) -> None:
        """B = -P / diag(P) with a zero diagonal, from P = (Gram + lambda I)^-1."""
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices(len(b))] = 0.0
        self.weights = np.ascontiguousarray(b, dtype=np.float32)  # C order: fast h @ W

    def _choose_text_weight(self, train: Dataset, held: Dataset, f: np.ndarray) -> np.ndarray:
        """Try every candidate text weight on `held` (Woodbury updates of one inverse:
        (G + a F F')^-1 = P - P F (I / a + F' P F)^-1 F' P); sets `text_weight_` and returns
        the chosen P."""
        g, self.lam, scale = self._gram(train)
        p0 = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)
        del g
        pf = p0 @ f
        fpf = f.T @ pf
        vt = valid_targets(held, self.config.valid_users, 0)
        hists = [
            (
                self._history_matrix(History.from_dataset(train, u)),
                History.from_dataset(train, u),
                t,
            )
            for u, t in vt.batches()
        ]
        best, best_p, rows = -1.0, p0, []
        for a in self.config.text_weights:
            p = (
                p0
                if a == 0
                else p0 - pf @ np.linalg.solve(np.eye(f.shape[1]) / (a * scale) + fpf, pf.T)
            )
            self._set_weights(p)
            gain = sum(ndcg10_sum(h @ self.weights, hist.matrix, t) for h, hist, t in hists)
            gain /= max(len(vt.users), 1)
            rows.append((a, gain))
            if gain > best:
                best, best_p, self.text_weight_ = gain, p, float(a)
        self.text_search_ = np.asarray(rows, np.float64)
        return best_p

    def _history_matrix(self, history: History) -> sp.csr_matrix:
        h = history.matrix.astype(np.float32, copy=True)
        if self.config.binary:
            h.data[:] = 1.0
        return recency_weighted(history, self.config.half_life, h)

    def score(self, history: History) -> np.ndarray:
        return np.asarray(self._history_matrix(history) @ self.weights, np.float32)

    def score_columns(self, history: History, items: np.ndarray) -> np.ndarray:
        return np.asarray(self._history_matrix(history) @ self.weights[:, items], np.float32)

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """h_j B[j, i]: the weighted history item times its EASE weight for the item."""
        return linear_contributions(
            self._history_matrix(history), self.weights, items, "ease weights"
        )

    def _state(self) -> dict[str, np.ndarray]:
        extra = {}
        if getattr(self, "privacy_", None):
            extra["privacy"] = np.asarray(json.dumps(self.privacy_))
        return {
            **extra,
            "weights": self.weights,
            "lambda": np.asarray(self.lam),
            "text_weight": np.asarray(self.text_weight_),
            "text_search": self.text_search_,
            "text_f": self.text_f,
            "text_mean": self.text_mean,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        if "privacy" in state:
            self.privacy_ = json.loads(str(state["privacy"]))
        self.weights = np.ascontiguousarray(state["weights"], dtype=np.float32)
        self.lam = float(state["lambda"])
        if "text_weight" in state:  # artifacts before the text view have neither
            self.text_weight_ = float(state["text_weight"])
            self.text_search_ = np.asarray(state["text_search"])
            self.text_f = np.asarray(state["text_f"], np.float32)
            self.text_mean = np.asarray(state["text_mean"], np.float64)


def _last_times(dataset: Dataset, x: sp.csr_matrix) -> np.ndarray:
    """For each stored entry of `x` (a user's item), the time of the user's latest
    interaction with it (clipping keeps the latest items)."""
    key = dataset.user.astype(np.int64) * dataset.n_items + dataset.item
    order = np.argsort(key, kind="stable")
    k, t = key[order], dataset.ts[order]
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr)).astype(np.int64)
    want = rows * dataset.n_items + x.indices
    pos = np.searchsorted(k, want, side="right") - 1  # a key's last row: its latest time
    return t[pos]
