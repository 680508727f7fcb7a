"""`lmmf`: LM-enhanced factorisation. Item factors are a learned projection of the text
vectors plus a regularised free offset (FISM-style user tower: the mean of the history's input
factors), so a new item gets factors from its text alone (Kabbur et al., KDD 2013; text-tied
factors as in CTR, Wang & Blei, KDD 2011). Trained by the shared `lmrec.nn.trainer.Trainer`
(the network and its batches: `lmrec.models.lmmf_net`)."""

from __future__ import annotations

__all__ = ["LMMF", "LMMFConfig"]

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset
from lmrec.models.base import Contributions, History, recency_weighted
from lmrec.models.lm_base import SideConfig, TextModel


class LMMFConfig(SideConfig):
    embedding_size: int = Field(64, ge=1)
    """Dimension of the collaborative factors."""
    epochs: int = Field(20, ge=1)
    """Passes over the training interactions."""
    batch_size: int = Field(1024, ge=1)
    """Interactions per gradient step."""
    learning_rate: float = Field(3e-3, gt=0)
    """AdamW learning rate (`lmrec.nn.trainer.Trainer`)."""
    reg: float = Field(1e-4, ge=0)
    """Weight decay of the text projections."""
    offset_reg: float = Field(1e-2, ge=0)
    """Weight decay of the free per-item offsets (pulls factors towards the text projection)."""
    use_offset: bool = True
    """Learn a free offset per item besides the text projection (False: text alone)."""
    loss: Literal["softmax", "bpr"] = "softmax"
    """softmax over all trained items, or BPR with one uniform negative per positive."""
    half_life: float | None = Field(None, gt=0)
    """At answer time, weigh history items by recency (None: equal)."""
    user_text: bool = False
    """Add a learned projection of the user-text vector to the user factor."""
    seed: int = 0
    """Seed of initialisation and shuffling."""


class LMMF(TextModel):
    """Factorisation with item factors = text x W + offset; users = mean of history factors."""

    name = "lmmf"
    config_class = LMMFConfig
    config: LMMFConfig

    @property
    def uses_side_information(self) -> bool:  # type: ignore[override]
        return self.config.user_text

    def _fit(self, dataset: Dataset) -> None:
        import torch

        from lmrec.models.lmmf_net import LMMFNet, LMMFTask
        from lmrec.nn.trainer import TrainConfig, Trainer

        c = self.config
        self._fit_text(dataset, users=c.user_text)
        m = dataset.matrix().tocsr()
        m.data = np.abs(m.data)
        inputs = self._mf_inputs(self.item_vectors, self.side_vectors)
        active = np.diff(m.tocsc().indptr) > 0
        self.active = active
        torch.manual_seed(c.seed)
        net = LMMFNet(
            inputs, active, c.embedding_size, c.loss, self.user_vectors if c.user_text else None
        )
        task = LMMFTask(net, m, c)
        trainer = Trainer(
            TrainConfig(
                epochs=c.epochs,
                patience=None,
                eval_every=c.epochs,
                learning_rate=c.learning_rate,
                weight_decay=0.0,  # per-group decoupled decay: `LMMFTask.batches`
                grad_clip=None,
                seed=c.seed,
                device="cpu",
                amp=False,
            )
        )
        result = trainer.fit(net, task, label=self.name)
        self.losses = [float(r["loss"]) for r in result.history]
        self.train_seconds = result.seconds
        w = {x: p.detach().cpu().numpy().astype(np.float32) for x, p in net.named_parameters()}
        if not c.use_offset:
            for x in ("oq", "oe", "ob"):
                w[x][:] = 0
        w["oq"][~active] = 0  # items without training data: factors from text alone
        w["oe"][~active] = 0
        w["ob"][~active] = 0
        self.proj = {x: w[x] for x in ("wq", "we", "wb", "wu") if x in w}
        self.item_factors = inputs @ w["wq"] + w["oq"]
        self.history_factors = inputs @ w["we"] + w["oe"]
        self.item_bias = inputs @ w["wb"] + w["ob"]

    def _mf_inputs(self, text: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Projection inputs: the text vectors, with side_features * the structured-feature
        vectors appended when `side_features` > 0."""
        if self.config.side_features <= 0 or side.shape[1] == 0:
            return text.astype(np.float32)
        return np.hstack([text, self.config.side_features * side]).astype(np.float32)

    def factors_from_text(
        self,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None = None,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Factors (N, k) and biases (N,) of new items from their text alone (plus their
        categories and attributes when the model uses `side_features`)."""
        self._check_fitted()
        v = self._mf_inputs(
            self.encode(texts), self.side_vectors_of(categories, attributes, len(texts))
        )
        return v @ self.proj["wq"], v @ self.proj["wb"]

    def user_vectors_of(self, history: History) -> np.ndarray:
        """(B, k) user factors: the weighted mean of the history's input factors."""
        h = recency_weighted(history, self.config.half_life)
        h = sp.csr_matrix(h, dtype=np.float32)
        h.data = np.abs(h.data)
        total = np.asarray(h.sum(axis=1)).ravel()
        u = np.asarray(h @ self.history_factors) / np.where(total > 0, total, 1.0)[:, None]
        if "wu" in self.proj:
            uvec, has, _ = self._row_user_vectors(history)
            u = u + (uvec * has[:, None]) @ self.proj["wu"]
        return u.astype(np.float32)

    def score(self, history: History) -> np.ndarray:
        u = self.user_vectors_of(history)
        return (u @ self.item_factors.T + self.item_bias[None, :]).astype(np.float32)

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """h_j (e_j . q_i) / sum |h|; the rest is the item bias and the user-text part."""
        h = sp.csr_matrix(recency_weighted(history, self.config.half_life), dtype=np.float64)
        h.data = np.abs(h.data)
        hist = h.indices.astype(np.int64)
        total = float(h.data.sum()) or 1.0
        e = self.history_factors.astype(np.float64)
        q = self.item_factors.astype(np.float64)
        contrib = ((h.data / total)[:, None] * (e[hist] @ q[items].T)).T
        score = self.score(history)[0, items].astype(np.float64)
        return Contributions(hist, contrib, score - contrib.sum(axis=1), True, "lmmf factors")

    def item_embeddings(self) -> np.ndarray:
        """[q_i, b_i]: score = <[p_u, 1], [q_i, b_i]>."""
        return np.hstack([self.item_factors, self.item_bias[:, None]]).astype(np.float32)

    def query_embeddings(self, history: History) -> np.ndarray:
        """[p_u, 1] per history row, matching `item_embeddings`."""
        u = self.user_vectors_of(history)
        return np.hstack([u, np.ones((len(u), 1), np.float32)])

    def _add_items(
        self,
        vecs: np.ndarray,
        side: np.ndarray,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        """Factors from the text projection alone (no collaborative offset)."""
        p, x = self.proj, self._mf_inputs(vecs, side)
        self.item_factors = np.vstack([self.item_factors, x @ p["wq"]]).astype(np.float32)
        self.history_factors = np.vstack([self.history_factors, x @ p["we"]]).astype(np.float32)
        self.item_bias = np.concatenate([self.item_bias, x @ p["wb"]]).astype(np.float32)
        self.active = np.concatenate([self.active, np.zeros(len(vecs), bool)])

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._text_state(),
            **{f"proj.{x}": v for x, v in self.proj.items()},
            "item_factors": self.item_factors,
            "history_factors": self.history_factors,
            "item_bias": self.item_bias,
            "active": self.active,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_text_state(state)
        self.proj = {k[5:]: v for k, v in state.items() if k.startswith("proj.")}
        self.item_factors = state["item_factors"]
        self.history_factors = state["history_factors"]
        self.item_bias = state["item_bias"]
        self.active = state["active"].astype(bool)
