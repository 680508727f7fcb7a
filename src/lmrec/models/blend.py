"""Blend: a weighted sum of several fitted recommenders' standardised scores.

Different models get different users right: on Amazon Beauty the item-item EASE and the
text-aware sequence model `hybrid` agree on few of their hits, so their mix ranks better than
either. Each component is any registered model, fitted on the same data (and the same
validation part, for those that stop early on it); each row of each component's scores is
standardised over the catalogue (mean 0, standard deviation 1, items a component cannot place
left at its lowest score), and the blend scores are the weighted sum. The weights are chosen on
the validation part when `fit` gets one (a grid over the simplex, by NDCG@10 with the history
excluded, on at most `valid_users` users), else they are equal; `weights` fixes them.

The artifact holds each component as a saved model of its own under `components/`.
"""

from __future__ import annotations

__all__ = ["Blend", "BlendConfig", "Hybrid", "HybridConfig"]

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from lmrec.data import Dataset
from lmrec.models.base import Contributions, History, ModelConfig, Recommender
from lmrec.models.tuning import holdout, ndcg10_sum, valid_targets

#: Scores at or below this are a component's "cannot place this item" (UNTRAINED_SCORE).
_UNPLACED = -1e3


class BlendConfig(ModelConfig):
    components: list[str] = Field(default_factory=lambda: ["ease", "sasrec"], min_length=1)
    """Registered model names, each used once."""
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Parameters of each component, by its name (e.g. {"sasrec": {"epochs": 50}})."""
    weights: list[float] | None = None
    """One weight per component (None: chosen on the validation part, else equal)."""
    weight_steps: int = Field(10, ge=1)
    """Grid resolution of the weight search: weights are multiples of 1 / weight_steps."""
    valid_users: int = Field(10_000, ge=1)
    """Choose the weights on at most this many validation users (a seeded sample)."""
    seed: int = 0
    """Seed of the validation sample (and each component's `seed` unless its params set one)."""

    @model_validator(mode="after")
    def _consistent(self) -> BlendConfig:
        if len(set(self.components)) != len(self.components):
            raise ValueError(f"components must differ, got {self.components}")
        from lmrec.models import REGISTRY

        if "blend" in self.components:
            raise ValueError("a blend cannot contain a blend")
        unknown_models = [c for c in self.components if c not in REGISTRY]
        if unknown_models:
            raise ValueError(
                f"unknown model(s) {unknown_models}; available: {', '.join(sorted(REGISTRY))}"
            )
        unknown = sorted(set(self.params) - set(self.components))
        if unknown:
            raise ValueError(f"params given for models that are not components: {unknown}")
        if self.weights is not None:
            if len(self.weights) != len(self.components):
                raise ValueError(
                    f"{len(self.weights)} weights for {len(self.components)} components"
                )
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError(f"weights must be >= 0 and not all 0, got {self.weights}")
        return self


def standardise(scores: np.ndarray) -> np.ndarray:
    """Each row (B, n) to mean 0 and standard deviation 1 over the items the model places
    (scores above `_UNPLACED`, finite); the others get the row's lowest standardised score."""
    s = np.asarray(scores, np.float64)
    placed = np.isfinite(s) & (s > _UNPLACED)
    if placed.all():  # the usual case, in fewer passes (the same numbers as below)
        z = s - s.mean(axis=1, keepdims=True)
        z /= np.sqrt(np.maximum((z * z).mean(axis=1, keepdims=True), 1e-12))
        return z.astype(np.float32)
    count = np.maximum(placed.sum(axis=1, keepdims=True), 1)
    v = np.where(placed, s, 0.0)
    mean = v.sum(axis=1, keepdims=True) / count
    var = (np.where(placed, s - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
    z = (v - mean) / np.sqrt(np.maximum(var, 1e-12))
    low = np.where(placed, z, np.inf).min(axis=1, keepdims=True)
    low = np.where(np.isfinite(low), low, 0.0)
    return np.where(placed, z, low).astype(np.float32)


def _simplex(k: int, steps: int) -> list[np.ndarray]:
    """All weight vectors of k non-negative multiples of 1/steps that sum to 1."""
    out = []
    for head in itertools.product(range(steps + 1), repeat=k - 1):
        if sum(head) <= steps:
            out.append(np.array([*head, steps - sum(head)], np.float64) / steps)
    return out


class Blend(Recommender):
    """Weighted sum of the standardised scores of several registered models."""

    name = "blend"
    config_class = BlendConfig
    config: BlendConfig

    def __init__(self, config: Any = None, **params: Any):
        super().__init__(config, **params)
        self.models: list[Recommender] = []
        self.weights_: np.ndarray = self._default_weights()
        #: How the weights were set: "config", "validation" or "equal".
        self.weights_from_: str = "config" if self.config.weights is not None else "equal"
        #: Validation NDCG@10 of each weight vector tried (k weights + the score) when chosen.
        self.weight_search_: np.ndarray = np.zeros((0, len(self.config.components) + 1))

    def chosen(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.weights_from_ == "validation":
            names = self.config.components
            out["weights"] = {
                n: round(float(w), 4) for n, w in zip(names, self.weights_, strict=True)
            }
        for name, m in zip(self.config.components, self.models, strict=False):
            if sub := m.chosen():
                out[name] = sub
        return out

    def _default_weights(self) -> np.ndarray:
        c = self.config
        w = np.ones(len(c.components)) if c.weights is None else np.asarray(c.weights, float)
        return w / w.sum()

    def _component(self, name: str) -> Recommender:
        from lmrec.models import create_model, get_model_class

        params = dict(self.config.params.get(name, {}))
        if "seed" in get_model_class(name).config_class.model_fields and "seed" not in params:
            params["seed"] = self.config.seed
        return create_model(name, **params)

    def fit(self, dataset: Dataset, valid: Dataset | None = None) -> Blend:
        """Fit every component on `dataset` (with `valid` for those that stop early on it),
        then choose the weights on `valid` unless the config fixes them. Without `valid`,
        each user's last item is held out of `dataset` to choose the weights on (and to stop
        early on, as the sequence models do by themselves without a validation part): the
        components train on the rest and answer from the whole `dataset`."""
        super().fit(dataset, valid)
        train, held = dataset, valid
        tune = self.config.weights is None and len(self.config.components) > 1
        if tune:
            train, held = holdout(dataset, valid)
        self.models = [self._component(n).fit(train, valid=held) for n in self.config.components]
        for m in self.models:
            m.history = dataset
        if tune and held is not None:
            self._choose_weights(train, held)
        return self

    def _fit(self, dataset: Dataset) -> None:
        pass  # the components are fitted in `fit`, which also sees the validation part

    def _choose_weights(self, dataset: Dataset, valid: Dataset) -> None:
        """The grid weights with the best NDCG@10 of each user's first validation item."""
        vt = valid_targets(valid, self.config.valid_users, self.config.seed)
        if len(vt.users) == 0:
            return
        grid = _simplex(len(self.models), self.config.weight_steps)
        gains = np.zeros(len(grid))
        for users, targets in vt.batches():
            hist = History.from_dataset(dataset, users)
            z = np.stack([standardise(m.score(hist)) for m in self.models])  # (k, b, n)
            for g, w in enumerate(grid):
                gains[g] += ndcg10_sum(np.tensordot(w, z, axes=1), hist.matrix, targets)
        self.weights_ = grid[int(np.argmax(gains))]
        self.weights_from_ = "validation"
        self.weight_search_ = np.column_stack([np.stack(grid), gains / len(vt.users)])

    # -- answering ---------------------------------------------------------------------------

    def score(self, history: History) -> np.ndarray:
        self.check_fitted()
        out = np.zeros((len(history), len(self.items or [])), np.float32)
        for w, m in zip(self.weights_, self.models, strict=True):
            if w > 0:
                out += np.float32(w) * standardise(m.score(history))
        return out

    def contributions(self, history: History, items: np.ndarray) -> Contributions | None:
        """The weighted contributions of the component with the largest weight that has
        any (an approximate account of the blend's score: its `exact` is False)."""
        for i in np.argsort(-self.weights_):
            c = self.models[int(i)].contributions(history, items)
            if c is not None and self.weights_[i] > 0:
                return Contributions(
                    c.hist,
                    c.contrib * self.weights_[i],
                    c.rest * self.weights_[i],
                    False,
                    f"blend: {self.models[int(i)].name} part ({c.method})",
                    c.parts,
                )
        return None

    @property
    def accepts_new_items(self) -> bool:  # type: ignore[override]
        """When every component with a weight places new items by their text."""
        return bool(self.models) and all(
            m.accepts_new_items for w, m in zip(self.weights_, self.models, strict=True) if w > 0
        )

    def with_items(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None = None,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Blend:
        """A copy whose catalogue also holds these new items, each component placing them
        its own way (a component with weight 0 that cannot gets them as unplaced items)."""
        import copy

        from lmrec.data import Vocabulary

        if not ids:
            return self
        if not self.accepts_new_items:
            return super().with_items(ids, texts, categories, attributes)  # type: ignore[return-value]
        self.check_fitted()
        assert self.items is not None and self.popularity is not None
        self.check_new_items(ids, texts)
        new = copy.copy(self)
        new.models = [
            m.with_items(ids, texts, categories, attributes) if w > 0 else _Unplaced(m, len(ids))
            for w, m in zip(self.weights_, self.models, strict=True)
        ]
        new.items = Vocabulary([*self.items.ids.tolist(), *ids])
        new.popularity = np.concatenate([self.popularity, np.zeros(len(ids), np.float32)])
        return new

    def text_encoder(self) -> Any:
        for m in self.models:
            enc = m.text_encoder()
            if enc is not None:
                return enc
        return None

    # -- persistence -------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "weights": self.weights_,
            "weights_from": np.asarray(self.weights_from_),
            "weight_search": self.weight_search_,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.weights_ = np.asarray(state["weights"], np.float64)
        self.weights_from_ = str(state["weights_from"])
        self.weight_search_ = np.asarray(state["weight_search"])

    def _write(self, path: Path) -> None:
        super()._write(path)
        self._write_components(path, self.config.components, self.models)

    def _read(self, path: Path) -> None:
        self.models = self._read_components(path, self.config.components)


class _Unplaced:
    """A weight-0 component after new items arrived: its scores, with the new items
    unplaced (never read for ranking: its weight is 0)."""

    def __init__(self, model: Recommender, extra: int):
        self.model, self.extra = model, extra
        self.name = model.name
        self.accepts_new_items = False

    def score(self, history: History) -> np.ndarray:
        s = self.model.score(history)
        return np.concatenate([s, np.full((len(s), self.extra), -np.inf, np.float32)], axis=1)

    def contributions(self, history: History, items: np.ndarray) -> None:
        return None

    def text_encoder(self) -> None:
        return None


class HybridConfig(BlendConfig):
    components: list[str] = Field(default_factory=lambda: ["ease", "dualsasrec"], min_length=1)
    """Registered model names, each used once."""
    params: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"ease": {"text_weight": None}}
    )
    """Parameters of each component, by its name: EASE's text weight chosen on validation."""


class Hybrid(Blend):
    """The text-aware hybrid: EASE with the items' language-model text vectors as side
    information (`text_weight` chosen on validation) blended with `dualsasrec`, the SASRec
    whose items have a frozen text view and a learned id view; the blend weights are chosen
    on validation, so a catalogue of short sparse histories leans on the item-item part and
    one of long sequences on the sequence model. `blend` with its defaults (EASE + SASRec,
    no text) is the same architecture without the language model."""

    name = "hybrid"
    config_class = HybridConfig
    config: HybridConfig
