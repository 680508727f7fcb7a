"""`lmcontent`: content-based recommendation over language-model text vectors; the user's
interest vector is the recency-, rating- and event-weighted mean of the history items' text
vectors and/or the user-text vector (see `lmrec.models.lm_base` for the text side)."""

from __future__ import annotations

__all__ = ["LMContent", "LMContentConfig"]

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset
from lmrec.models.base import (
    Contributions,
    History,
    recency_weighted,
    sparse_from_state,
    sparse_state,
)
from lmrec.models.lm_base import SideConfig, TextModel, _value_matrix, _widen
from lmrec.text.encoders import normalize


class LMContentConfig(SideConfig):
    half_life: float | None = Field(1.0, gt=0)
    """Weigh history items by 0.5 ** (steps back from the newest / half_life); None: equal."""
    rating_weight: Literal["none", "linear", "centered"] = "none"
    """How ratings weigh history items: none, r / max, or (r - mid) / (max - mid) (dislikes < 0)."""
    user_text_weight: float = Field(0.0, ge=0)
    """Weight of the user-text vector beside the history (alone it is used for empty histories)."""
    scoring: Literal["kernel", "cosine", "dot"] = "kernel"
    """kernel: sum over history items of weight * exp((cos - 1) / temperature); cosine: with the
    unit interest vector (mean of the history's vectors); dot: with the raw weighted sum."""
    temperature: float = Field(0.03, gt=0)
    """Sharpness of the kernel (small: the closest history item decides)."""
    threshold: float | None = None
    """Items whose cosine similarity to the interest vector is below this are never recommended."""


class LMContent(TextModel):
    """Content recommender over language-model text vectors of items and users."""

    name = "lmcontent"
    config_class = LMContentConfig
    config: LMContentConfig
    uses_side_information = True

    def _fit(self, dataset: Dataset) -> None:
        self._fit_text(dataset, users=True)
        self.values = _value_matrix(dataset)
        vals = dataset.value[~np.isnan(dataset.value)]
        self.max_value = float(vals.max()) if len(vals) else 1.0
        self.min_value = float(vals.min()) if len(vals) else 0.0

    def _weights(self, history: History) -> sp.csr_matrix:
        """History weights (event weights x rating factor x recency)."""
        m = sp.csr_matrix(history.matrix, dtype=np.float32, copy=True)
        m.sort_indices()
        if self.config.rating_weight != "none" and m.nnz:
            factor = np.ones(m.nnz, np.float32)
            rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
            vals = np.full(m.nnz, np.nan, np.float32)
            known = history.users >= 0
            if known.any() and self.values.nnz:
                stored = self.values[np.maximum(history.users, 0)]
                stored = stored.multiply(known[:, None].astype(np.float32)).tocsr()
                stored.sort_indices()
                lin_s = np.repeat(np.arange(stored.shape[0]), np.diff(stored.indptr))
                lin_s = lin_s * m.shape[1] + stored.indices
                lin_m = rows * m.shape[1] + m.indices
                pos = np.searchsorted(lin_s, lin_m)
                ok = pos < len(lin_s)
                ok[ok] = lin_s[pos[ok]] == lin_m[ok]
                vals[ok] = stored.data[pos[ok]]
            for r, q in enumerate(history.queries or []):
                if q is None or q.values is None or not q.items:
                    continue
                idx = self.items.indices(list(q.items)) if self.items is not None else []
                lo, hi = m.indptr[r], m.indptr[r + 1]
                cols = m.indices[lo:hi]
                for i, v in zip(idx, q.values, strict=False):
                    if i >= 0 and v is not None and not np.isnan(v):
                        vals[lo + np.searchsorted(cols, i)] = v
            has = ~np.isnan(vals)
            top, low = self.max_value, self.min_value
            if self.config.rating_weight == "linear":
                factor[has] = vals[has] / top if top > 0 else 1.0
            else:
                mid = (top + low) / 2
                factor[has] = (vals[has] - mid) / (top - mid) if top > mid else 1.0
            m.data *= factor
        return recency_weighted(history, self.config.half_life, m)

    def interest_vectors(self, history: History) -> tuple[np.ndarray, np.ndarray]:
        """(B, dim) interest vectors and whether each row has one."""
        w = self._weights(history)
        items = self.joint_vectors()
        p = np.asarray(w @ items, np.float32)
        total = np.asarray(np.abs(w).sum(axis=1)).ravel()
        p = p / np.where(total > 0, total, 1.0)[:, None]
        has_hist = np.diff(w.indptr) > 0
        uvec, has_text, _ = self._row_user_vectors(history)
        uvec = self._pad(uvec)
        alone = has_text & ~has_hist
        both = has_text & has_hist
        p[alone] = uvec[alone]
        if self.config.user_text_weight > 0:
            p[both] = p[both] + self.config.user_text_weight * uvec[both]
        return p, has_hist | has_text

    def score(self, history: History) -> np.ndarray:
        c = self.config
        p, has = self.interest_vectors(history)
        p_unit = normalize(p)
        items = self.joint_vectors()
        s = np.asarray((p_unit if c.scoring != "dot" else p) @ items.T, np.float32)
        if c.scoring == "kernel":
            s = self._kernel_scores(history, s)
        if self.config.threshold is not None:
            cos = s if self.config.scoring == "cosine" else p_unit @ items.T
            s[(cos < self.config.threshold) & has[:, None]] = -np.inf
        # Ties (e.g. rows without any signal) are broken by popularity.
        assert self.popularity is not None
        pop = self.popularity / max(float(self.popularity.max()), 1.0)
        return s + np.float32(1e-6) * pop[None, :]

    def _add_items(
        self,
        vecs: np.ndarray,
        side: np.ndarray,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        assert self.items is not None
        self.values = _widen(self.values, len(self.items))

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """kernel: w_j exp((cos(j, i) - 1) / T) / sum |w|; cosine and dot: the history item's
        share of the interest vector's product with the item. Parts: the user text
        ("interest") and the popularity tie-break ("popular")."""
        c = self.config
        w = sp.csr_matrix(self._weights(history))
        w.eliminate_zeros()
        hist = w.indices.astype(np.int64)
        wv = w.data.astype(np.float64)
        total = float(np.abs(wv).sum()) or 1.0
        v = self.joint_vectors().astype(np.float64)
        score = self.score(history)[0, items].astype(np.float64)
        assert self.popularity is not None
        pop = self.popularity / max(float(self.popularity.max()), 1.0)
        tie = np.float32(1e-6) * pop[items].astype(np.float64)
        if len(hist) == 0:
            contrib = np.zeros((len(items), 0))
        elif c.scoring == "kernel":
            kern = np.exp((v[hist] @ v[items].T - 1.0) / c.temperature)  # (H, M)
            contrib = (wv[:, None] * kern / total).T
        else:
            p, _ = self.interest_vectors(history)
            norm = float(np.linalg.norm(p[0]))
            scale = 1.0 if c.scoring == "dot" or norm == 0 else 1.0 / norm  # cosine: p / |p|
            contrib = ((wv / total)[:, None] * (v[hist] @ v[items].T) * scale).T
        rest = score - contrib.sum(axis=1)  # user text and the popularity tie-break
        parts = {"popular": tie}
        if self._row_user_vectors(history)[1][0]:
            parts["interest"] = rest - tie
        return Contributions(hist, contrib, rest, True, f"lmcontent {c.scoring}", parts)

    def _kernel_scores(self, history: History, cosine: np.ndarray) -> np.ndarray:
        """Rows with a history: sum_j w_j exp((cos(j, i) - 1) / T); others keep `cosine` (the
        user-text match, plus user_text_weight times it beside a history)."""
        w = sp.csr_matrix(self._weights(history))
        w.eliminate_zeros()
        has_hist = np.diff(w.indptr) > 0
        if not has_hist.any():
            return cosine
        used = np.unique(w.indices)
        items = self.joint_vectors()
        sims = items[used] @ items.T  # (U, n)
        kern = np.exp((sims - 1.0) / self.config.temperature)
        total = np.asarray(np.abs(w).sum(axis=1)).ravel()
        s = np.asarray(w[:, used] @ kern, np.float32) / np.where(total > 0, total, 1.0)[:, None]
        out = cosine.copy()
        out[has_hist] = s[has_hist]
        if self.config.user_text_weight > 0:
            uvec, has_text, _ = self._row_user_vectors(history)
            both = has_hist & has_text
            out[both] += self.config.user_text_weight * (self._pad(uvec[both]) @ items.T)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._text_state(),
            **sparse_state("values", self.values),
            "value_range": np.array([self.min_value, self.max_value], np.float32),
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_text_state(state)
        self.values = sparse_from_state(state, "values")
        self.min_value, self.max_value = (float(x) for x in state["value_range"])
