"""`coldstart_user`: users known by attributes and interest tags only (or a few chosen
items): a ridge map from the user-text vector to the items (starting from popularity), plus the
votes of attribute-similar users, score(u, i) = sum_v sim(u, v) r(v, i), plus content."""

from __future__ import annotations

__all__ = ["ColdStartUser", "ColdStartUserConfig"]

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset
from lmrec.models.base import Contributions, History, sparse_from_state, sparse_state
from lmrec.models.lm_base import TextConfig, TextModel, _normalize_rows, _widen
from lmrec.text.encoders import normalize


class ColdStartUserConfig(TextConfig):
    reg: float = Field(3.0, gt=0)
    """Ridge penalty of the text-to-items map, relative to the mean eigenvalue of the centred
    Gram matrix of the users' text vectors (so it does not depend on the number of users)."""
    neighbor_weight: float = Field(0.5, ge=0)
    """Weight of the similar users' votes beside the text-to-items map."""
    n_neighbors: int = Field(200, ge=1)
    """How many similar users vote."""
    neighbor_power: float = Field(1.0, gt=0)
    """Similarities are raised to this power (higher: the closest users count more)."""
    history_weight: float = Field(1.0, ge=0)
    """Weight of history overlap beside user-text similarity when finding similar users."""
    content_weight: float = Field(0.5, ge=0)
    """Weight of the text match of the chosen items, tags or free text with item text."""
    popularity_weight: float = Field(0.0, ge=0)
    """Extra weight of popularity (max-normalised); the map already starts from it."""


class ColdStartUser(TextModel):
    """Users known by attributes, interest tags or a handful of chosen items (onboarding).

    score(u, .) = norm(p + (x_u - x_mean) W) + neighbor_weight * norm(sum_v s(u, v)^a r_v)
                  + content_weight * norm(cos(q_u, item texts)) + popularity_weight * norm(p)
    where x_u is the user-text vector (attributes, tags, free text), p the training
    interaction rate of each item (popularity), W the ridge map from centred user-text vectors
    to centred interaction rows, W = (Xc^T Xc + reg * tr(Xc^T Xc) / d * I)^-1 Xc^T (R - p)
    (attribute-to-feature mapping for cold start, Gantner et al., ICDM 2010), s(u, v) the
    text cosine plus history_weight times the history overlap (cosine of binary rows) over the
    n_neighbors most similar training users v, q_u the chosen items' and the tags' or free
    text's vectors, and norm scales a row to maximum 1 (negative parts clipped).
    """

    name = "coldstart_user"
    config_class = ColdStartUserConfig
    config: ColdStartUserConfig
    uses_side_information = True

    def _fit(self, dataset: Dataset) -> None:
        self._fit_text(dataset, users=True)
        m = dataset.matrix().tocsr().astype(np.float32)
        m.data = np.abs(m.data)
        self.neighbors = np.flatnonzero(np.diff(m.indptr) > 0)  # users with training data
        self.votes = m[self.neighbors]
        binary = self.votes.copy()
        binary.data[:] = 1.0
        norms = np.sqrt(np.asarray(binary.sum(axis=1)).ravel())
        self.vote_norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        n, d = dataset.n_items, self.item_vectors.shape[1]
        # Interaction rate of each item among users with training data (the popularity prior).
        self.rate = np.zeros(n, np.float32)
        if binary.shape[0]:
            self.rate = np.asarray(binary.mean(axis=0), np.float32).ravel()
        self.text_mean = np.zeros(d, np.float32)
        self.text_map = np.zeros((d, n), np.float32)
        with_text = self.has_user_text[self.neighbors]
        if with_text.any():
            x = self.user_vectors[self.neighbors[with_text]].astype(np.float64)
            self.text_mean = x.mean(axis=0).astype(np.float32)
            xc = x - x.mean(axis=0)
            gram = xc.T @ xc  # (d, d)
            lam = self.config.reg * max(float(np.trace(gram)) / d, 1e-12)
            # Xc^T (R - 1 p^T) = Xc^T R, since the columns of Xc sum to zero.
            rhs = np.asarray((binary[with_text].T @ xc).T, np.float64)  # (d, n)
            self.text_map = np.linalg.solve(gram + lam * np.eye(d), rhs).astype(np.float32)

    def _similarities(self, history: History, uvec: np.ndarray, has_text: np.ndarray) -> np.ndarray:
        """(B, n_neighbors_total) similarity of each row to each user with training data."""
        nb_text = self.user_vectors[self.neighbors]
        sim = np.zeros((len(history), len(self.neighbors)), np.float32)
        if has_text.any():
            sim[has_text] = uvec[has_text] @ nb_text.T
        hw = self.config.history_weight
        if hw > 0 and history.matrix.nnz:
            h = sp.csr_matrix(history.matrix, dtype=np.float32, copy=True)
            h.data[:] = 1.0
            hn = np.sqrt(np.asarray(h.sum(axis=1)).ravel())
            b = self.votes.copy()
            b.data[:] = 1.0
            overlap = np.asarray((h @ b.T).todense(), np.float32)
            overlap /= np.where(hn > 0, hn, 1.0)[:, None] * self.vote_norms[None, :]
            sim += hw * overlap
        # A known user never votes for themselves.
        pos = np.searchsorted(self.neighbors, history.users)
        self_rows = np.flatnonzero((history.users >= 0) & (pos < len(self.neighbors)))
        self_rows = self_rows[self.neighbors[pos[self_rows]] == history.users[self_rows]]
        sim[self_rows, pos[self_rows]] = -np.inf
        return sim

    def score(self, history: History) -> np.ndarray:
        c = self.config
        b = len(history)
        n = len(self.item_vectors)
        uvec, has_text, told = self._row_user_vectors(history)
        # The text-to-items map (popularity where there is no user text).
        mapped = np.tile(self.rate, (b, 1))
        if has_text.any():
            mapped[has_text] += (uvec[has_text] - self.text_mean) @ self.text_map
        out = _normalize_rows(np.clip(mapped, 0, None))
        if len(self.neighbors) and c.neighbor_weight > 0:
            sim = self._similarities(history, uvec, has_text)
            k = min(c.n_neighbors, sim.shape[1])
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            w = np.clip(np.take_along_axis(sim, top, axis=1), 0, None) ** c.neighbor_power
            weights = sp.csr_matrix(
                (w.ravel(), (np.repeat(np.arange(b), k), top.ravel())),
                shape=(b, len(self.neighbors)),
            )
            votes = np.asarray((weights @ self.votes).todense(), np.float32)
            out += c.neighbor_weight * _normalize_rows(votes)
        if c.popularity_weight > 0:
            assert self.popularity is not None
            out += c.popularity_weight * (self.popularity / max(float(self.popularity.max()), 1.0))
        if c.content_weight > 0:
            h = sp.csr_matrix(history.matrix, dtype=np.float32)
            h.data = np.abs(h.data)
            p = np.asarray(h @ self.item_vectors, np.float32)
            p[told] += uvec[told]
            has = (np.diff(h.indptr) > 0) | told
            if has.any():
                cos = normalize(p[has]) @ self.item_vectors.T
                out[has] += c.content_weight * _normalize_rows(np.clip(cos, 0, None))
        assert out.shape == (b, n)
        return out

    def similar_users(self, history: History) -> tuple[np.ndarray, np.ndarray, Any]:
        """The `n_neighbors` most similar training users of a one-row history (text and
        history overlap), their weights sim^neighbor_power and their vote rows."""
        cfg = self.config
        uvec, has_text, _ = self._row_user_vectors(history)
        sim = self._similarities(history, uvec, has_text)[0]
        k = min(cfg.n_neighbors, len(sim))
        top = np.argpartition(-sim, k - 1)[:k]
        w = np.clip(sim[top], 0, None) ** cfg.neighbor_power
        keep = w > 0
        return self.neighbors[top[keep]], w[keep].astype(np.float64), self.votes[top[keep]]

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """Each part's exact share of the score, measured by scoring again without it:
        similar users, content ("interest" when it came from tags or free text), popularity,
        and the rest, the map from the user's attributes and text ("profile")."""
        c = self.config
        full = self.score(history)[0, items].astype(np.float64)
        parts: dict[str, np.ndarray] = {}
        for part, key in (
            ("similar_users", "neighbor_weight"),
            ("content", "content_weight"),
            ("popular", "popularity_weight"),
        ):
            if getattr(c, key) > 0:
                m = copy.copy(self)
                m.config = c.model_copy(update={key: 0.0})
                parts[part] = full - m.score(history)[0, items].astype(np.float64)
        parts["profile"] = full - sum(parts.values())
        if "content" in parts and self._row_user_vectors(history)[2][0]:
            parts["interest"] = parts.pop("content")
        return Contributions.of_parts(full, "coldstart_user neighbours", **parts)

    def _add_items(
        self,
        vecs: np.ndarray,
        side: np.ndarray,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        """New items: no votes, interaction rate 0, nothing from the text-to-items map."""
        k = len(vecs)
        self.votes = _widen(self.votes, self.votes.shape[1] + k)
        self.rate = np.concatenate([self.rate, np.zeros(k, np.float32)])
        self.text_map = np.hstack(
            [self.text_map, np.zeros((self.text_map.shape[0], k), np.float32)]
        )

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._text_state(),
            "neighbors": self.neighbors,
            **sparse_state("votes", self.votes),
            "vote_norms": self.vote_norms,
            "rate": self.rate,
            "text_mean": self.text_mean,
            "text_map": self.text_map,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_text_state(state)
        self.neighbors = state["neighbors"]
        self.votes = sparse_from_state(state, "votes")
        self.vote_norms = state["vote_norms"]
        self.rate = state["rate"]
        self.text_mean = state["text_mean"]
        self.text_map = state["text_map"]
