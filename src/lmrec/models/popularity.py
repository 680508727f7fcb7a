"""Non-personalised baselines: most popular items (all time or a recent window) and random."""

from __future__ import annotations

__all__ = ["Popularity", "PopularityConfig", "Random", "RandomConfig"]

from collections.abc import Mapping

import numpy as np

from lmrec.data import Dataset
from lmrec.models.base import Contributions, History, ModelConfig, Recommender


class PopularityConfig(ModelConfig):
    window_days: float | None = None
    """Count only interactions of the last `window_days` days before the newest one."""


class Popularity(Recommender):
    """Ranks items by how many distinct users interacted with them."""

    name = "popularity"
    config_class = PopularityConfig
    personalized = False
    config: PopularityConfig

    def _fit(self, dataset: Dataset) -> None:
        ds = dataset
        if self.config.window_days is not None and dataset.n_interactions:
            since = dataset.ts.max() - self.config.window_days * 86400.0
            ds = dataset.subset(dataset.ts >= since)
        self.counts = ds.item_counts().astype(np.float32)

    def score(self, history: History) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(history), len(self.counts))).copy()

    def score_columns(self, history: History, items: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts[items], (len(history), len(items))).copy()

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """The score is the item's popularity and nothing else."""
        s = self.counts[items]
        return Contributions.of_parts(s, "popularity", popular=s)

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.counts = state["counts"]


class RandomConfig(ModelConfig):
    seed: int = 0
    """Random seed (with the user, it fixes the scores)."""


class Random(Recommender):
    """Uniformly random scores (a floor for every metric); deterministic per user and seed."""

    name = "random"
    config_class = RandomConfig
    personalized = False
    config: RandomConfig

    def _fit(self, dataset: Dataset) -> None:
        pass

    def score(self, history: History) -> np.ndarray:
        assert self.items is not None
        out = np.empty((len(history), len(self.items)), np.float32)
        for r, u in enumerate(history.users):
            key = int(u) if u >= 0 else hash(tuple(history.sequences[r].tolist())) & 0xFFFFFFFF
            out[r] = np.random.default_rng([self.config.seed, key]).random(len(self.items))
        return out

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """The score is a random number and nothing else."""
        s = self.score(history)[0, items]
        return Contributions.of_parts(s, "random", random=s)
