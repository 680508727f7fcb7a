"""`ratingblend`: a linear blend of rating models (stacking, as in the Netflix Prize blends;
Koren, "The BellKor solution", 2009). The components are fitted on the training ratings less
a random `holdout` share; least squares on the held-out ratings gives an intercept and one
weight per component (then, with `refit`, every component is refitted on all the training
ratings); the blend predicts intercept + sum_k w_k r_k, clipped to the rating scale.

The artifact holds each component as a saved model of its own under `components/`.
"""

from __future__ import annotations

__all__ = ["RatingBlend", "RatingBlendConfig"]

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from lmrec.data import Dataset
from lmrec.models.base import History, Recommender
from lmrec.models.rating import RatingConfig, RatingModel, Ratings


class RatingBlendConfig(RatingConfig):
    components: list[str] = Field(
        default_factory=lambda: ["knnbaseline", "biasedmf", "svdpp"], min_length=1
    )
    """Registered rating models, each used once."""
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Parameters of each component, by its name (e.g. {"svdpp": {"epochs": 30}})."""
    holdout: float = Field(0.1, gt=0, lt=1)
    """Share of the training ratings held out to fit the blend weights."""
    ridge: float = Field(1e-3, ge=0)
    """Ridge weight of the blend's least squares (times the number of held-out ratings)."""
    refit: bool = False
    """Refit the components on all the training ratings after choosing the weights (twice
    the fitting time; False keeps the components fitted without the held-out share)."""
    seed: int = 0
    """Seed of the held-out sample."""

    @model_validator(mode="after")
    def _consistent(self) -> RatingBlendConfig:
        from lmrec.models import REGISTRY, get_model_class

        if len(set(self.components)) != len(self.components):
            raise ValueError(f"components must differ, got {self.components}")
        for c in self.components:
            if c not in REGISTRY or c == "ratingblend":
                raise ValueError(f"component {c!r} is not a registered rating model")
            if not get_model_class(c).predicts_ratings:
                raise ValueError(f"component {c!r} does not predict ratings")
        extra = set(self.params) - set(self.components)
        if extra:
            raise ValueError(f"params for models that are not components: {sorted(extra)}")
        return self


class RatingBlend(RatingModel):
    """intercept + sum_k w_k * (component k's predicted rating)."""

    name = "ratingblend"
    config_class = RatingBlendConfig
    config: RatingBlendConfig
    models: list[Recommender]
    weights_: np.ndarray

    def _make(self, name: str) -> Recommender:
        from lmrec.models import create_model

        params = dict(self.config.params.get(name, {}))
        return create_model(name, **{"rating_event": self.config.rating_event, **params})

    def _fit_ratings(self, r: Ratings, dataset: Dataset) -> None:
        code = dataset.event_names.index(self.config.rating_event)
        rows = np.flatnonzero((dataset.event == code) & np.isfinite(dataset.value))
        rng = np.random.default_rng(self.config.seed)
        held = rng.choice(rows, max(1, round(self.config.holdout * len(rows))), replace=False)
        mask = np.ones(dataset.n_interactions, bool)
        mask[held] = False
        part = dataset.subset(mask)
        u, i = dataset.user[held].astype(np.int64), dataset.item[held].astype(np.int64)
        models = [self._make(c).fit(part) for c in self.config.components]
        preds = [m.predict_ratings(u, i) for m in models]
        x = np.column_stack([np.ones(len(held)), *preds])
        a = x.T @ x + self.config.ridge * len(held) * np.diag([0.0] + [1.0] * len(preds))
        self.weights_ = np.linalg.solve(a, x.T @ dataset.value[held].astype(np.float64))
        if self.config.refit:
            models = [self._make(c).fit(dataset) for c in self.config.components]
        for m in models:  # every component answers known users from the full history
            m.history = dataset
        self.models = models

    def _combine(self, parts: list[np.ndarray]) -> np.ndarray:
        w = self.weights_
        return w[0] + sum(wk * p for wk, p in zip(w[1:], parts, strict=True))

    def _predict_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._combine([m.predict_ratings(users, items) for m in self.models])

    def _predict_rows(self, users: np.ndarray) -> np.ndarray:
        return self._combine([m.score(History.from_dataset(m.history, users)) for m in self.models])

    def _fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        assert self.items is not None
        n = len(self.items)
        if len(items) == 0:
            anon = np.full(n, -1, np.int64)
            return self._combine([m.predict_ratings(anon, np.arange(n)) for m in self.models])
        raise AssertionError("score() folds in through the components")

    def score(self, history: History) -> np.ndarray:
        """The blend of the components' scores (each folds in unknown users its own way)."""
        return np.asarray(
            self._clip(self._combine([m.score(history) for m in self.models])), np.float32
        )

    def _state(self) -> dict[str, np.ndarray]:
        return {**self._base_state(), "weights": self.weights_}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_base_state(state)
        self.weights_ = np.asarray(state["weights"], np.float64)

    def _write(self, path: Path) -> None:
        super()._write(path)
        self._write_components(path, self.config.components, self.models)

    def _read(self, path: Path) -> None:
        self.models = self._read_components(path, self.config.components)
