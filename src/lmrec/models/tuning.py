"""Choosing a model's settings on validation data inside `fit` (EASE's text weight, a blend's
weights): the validation targets, the inner hold-out when `fit` gets no validation part, and
NDCG@10 of score rows with the history excluded."""

from __future__ import annotations

__all__ = ["ValidTargets", "holdout", "ndcg10_sum", "valid_targets"]

from dataclasses import dataclass

import numpy as np

from lmrec.data import Dataset
from lmrec.models.base import top_k


def holdout(dataset: Dataset, valid: Dataset | None) -> tuple[Dataset, Dataset | None]:
    """(data to fit on, data to choose on): `dataset` and `valid` when there is a validation
    part, else `dataset` without each user's last item and those last items (None when no
    user has two items)."""
    if valid is not None:
        return dataset, valid
    from lmrec.data.split import leave_one_out

    inner = leave_one_out(dataset, valid=False)
    if inner.test.n_interactions == 0:
        return dataset, None
    return inner.train, inner.test


@dataclass
class ValidTargets:
    """Validation users (indices) and each one's first validation item."""

    users: np.ndarray
    targets: np.ndarray

    def batches(self, size: int = 512):
        for s in range(0, len(self.users), size):
            yield self.users[s : s + size], self.targets[s : s + size]


def valid_targets(valid: Dataset, max_users: int, seed: int) -> ValidTargets:
    """The users with a validation item (a seeded sample of at most `max_users`) and their
    first validation item."""
    vseq = valid.sequences()
    users = np.flatnonzero([len(v) > 0 for v in vseq])
    if len(users) > max_users:
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(users, max_users, replace=False))
    return ValidTargets(users, np.array([vseq[u][0] for u in users], np.int64))


def ndcg10_sum(scores: np.ndarray, seen, targets: np.ndarray) -> float:
    """Sum over rows of NDCG@10 of the one target item, `seen` (sparse, B x n) excluded."""
    idx, _ = top_k(np.asarray(scores, np.float32), 10, seen)
    hit = idx == targets[:, None]
    rank = np.argmax(hit, axis=1)
    return float(np.where(hit.any(axis=1), 1.0 / np.log2(rank + 2.0), 0.0).sum())
