"""Seeded, deterministic, vectorised splitters of a `Dataset` into train / valid / test.

Every splitter labels each interaction of the dataset with exactly one part (train, valid or
test) and returns a `Split` whose three datasets share the source's vocabularies, event names
and features, so indices mean the same thing in all three. Randomness comes only from
`numpy.random.default_rng(seed)`: equal seeds give equal splits.
"""

from __future__ import annotations

__all__ = [
    "SPLITTERS",
    "Split",
    "cold_start_items",
    "cold_start_users",
    "kfold",
    "leave_one_out",
    "random_split",
    "temporal_split",
]

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Literal

import numpy as np

from lmrec.data.dataset import Dataset
from lmrec.errors import LmrecError

TRAIN, VALID, TEST = 0, 1, 2


@dataclass(frozen=True)
class Split:
    """Train, validation and test datasets over the same vocabularies and features.

    `valid` may hold no interactions. `cold` says whether test/valid hold users or items that
    train never sees.
    """

    train: Dataset
    valid: Dataset
    test: Dataset
    name: str
    cold: Literal["users", "items"] | None = None
    _source: Dataset | None = field(default=None, repr=False, compare=False)
    _parts: np.ndarray | None = field(default=None, repr=False, compare=False)
    _tv: list[Dataset] = field(default_factory=list, init=False, repr=False, compare=False)

    def train_valid(self) -> Dataset:
        """Train and valid together (to refit after model selection); computed once."""
        if not self._tv:
            if self._source is not None and self._parts is not None:
                # A subset of the source keeps the storage order of equal timestamps.
                self._tv.append(self._source.subset(self._parts != TEST))
            else:
                self._tv.append(self.train.concat(self.valid))
        return self._tv[0]

    def __repr__(self) -> str:
        cold = f", cold={self.cold!r}" if self.cold else ""
        return (
            f"Split({self.name!r}: train={self.train.n_interactions}, "
            f"valid={self.valid.n_interactions}, test={self.test.n_interactions}{cold})"
        )


# -- helpers -----------------------------------------------------------------------------------


def _make(
    ds: Dataset, parts: np.ndarray, name: str, cold: Literal["users", "items"] | None = None
) -> Split:
    parts = np.asarray(parts, dtype=np.int8)
    parts.setflags(write=False)
    return Split(
        train=ds.subset(parts == TRAIN),
        valid=ds.subset(parts == VALID),
        test=ds.subset(parts == TEST),
        name=name,
        cold=cold,
        _source=ds,
        _parts=parts,
    )


def _check_dataset(ds: object, where: str) -> None:
    if not isinstance(ds, Dataset):
        raise LmrecError(f"{where}: expected a Dataset, got {type(ds).__name__}")


def _fraction(x: object, what: str, where: str, *, allow_zero: bool) -> float:
    if isinstance(x, bool) or not isinstance(x, Real) or not math.isfinite(float(x)):
        raise LmrecError(f"{where}: {what} must be a number, got {x!r}")
    v = float(x)
    low_ok = v >= 0 if allow_zero else v > 0
    if not (low_ok and v < 1):
        span = "[0, 1)" if allow_zero else "(0, 1)"
        raise LmrecError(f"{where}: {what} must be in {span}, got {x!r}")
    return v


def _seed_rng(seed: object, where: str) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, Integral | np.random.Generator):
        raise LmrecError(f"{where}: seed must be an integer, got {seed!r}")
    return np.random.default_rng(seed)  # type: ignore[arg-type]


def _round(x: np.ndarray) -> np.ndarray:
    """Round half up (not to even), so 2.5 -> 3 for every user alike."""
    return np.floor(x + 0.5).astype(np.int64)


def _shuffled_positions(ds: Dataset, rng: np.random.Generator) -> np.ndarray:
    """For each interaction, its position 0..n_u-1 in a random per-user permutation."""
    n = ds.n_interactions
    # One int64 key: user in the high bits, a random 32-bit draw in the low bits; a stable sort
    # groups by user and shuffles within a user (7x faster than lexsort on 1M interactions).
    key = (ds.user.astype(np.int64) << 32) | rng.integers(0, 2**32, size=n, dtype=np.int64)
    order = np.argsort(key, kind="stable")
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n, dtype=np.int64) - ds.user_ptr[ds.user[order]]
    return pos


# -- splitters ---------------------------------------------------------------------------------


def leave_one_out(ds: Dataset, *, valid: bool = True) -> Split:
    """Per user in time order: last -> test (>= 2 interactions), second-to-last -> valid (if
    `valid` and >= 3), the rest -> train. Equal timestamps keep storage order."""
    _check_dataset(ds, "leave_one_out")
    ptr = ds.user_ptr
    counts = np.diff(ptr)[ds.user]
    from_end = ptr[ds.user.astype(np.int64) + 1] - 1 - np.arange(ds.n_interactions)
    parts = np.full(ds.n_interactions, TRAIN, dtype=np.int8)
    parts[(from_end == 0) & (counts >= 2)] = TEST
    if valid:
        parts[(from_end == 1) & (counts >= 3)] = VALID
    return _make(ds, parts, "loo")


def temporal_split(ds: Dataset, *, test: float = 0.1, valid: float = 0.1) -> Split:
    """One global time cut: the newest `test` fraction of interactions -> test, the `valid`
    fraction just before it -> valid, the rest -> train.

    Fractions are turned into counts by rounding half up; the cut time is the timestamp of the
    first interaction past the count (oldest first). Interactions tied with a cut time go to the
    later part, so a part can be slightly larger than its fraction and
    max(train.ts) < min(valid.ts) <= max(valid.ts) < min(test.ts) always holds.
    """
    where = "temporal_split"
    _check_dataset(ds, where)
    t = _fraction(test, "test", where, allow_zero=False)
    v = _fraction(valid, "valid", where, allow_zero=True)
    if t + v >= 1:
        raise LmrecError(f"{where}: test + valid must be below 1, got {t} + {v} = {t + v}")
    n = ds.n_interactions
    ts_sorted = np.sort(ds.ts, kind="stable")
    n_test = int(_round(np.array(t * n)))
    n_valid = int(_round(np.array(v * n)))
    parts = np.full(n, TRAIN, dtype=np.int8)
    t_test = ts_sorted[n - n_test] if n_test > 0 else np.inf
    if n_valid > 0 and n - n_test - n_valid >= 0:
        t_valid = ts_sorted[n - n_test - n_valid]
        parts[ds.ts >= t_valid] = VALID
    parts[ds.ts >= t_test] = TEST
    return _make(ds, parts, "temporal")


def random_split(ds: Dataset, ratios: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0) -> Split:
    """Per user, shuffle the interactions and cut them train:valid:test by `ratios`.

    A user with n interactions gets round(n * r_train) in train and
    round(n * (r_train + r_valid)) - round(n * r_train) in valid (rounding half up); the rest
    go to test. Users with few interactions may therefore have none in valid or test.
    """
    where = "random_split"
    _check_dataset(ds, where)
    try:
        r = [float(x) for x in ratios]
    except (TypeError, ValueError):
        raise LmrecError(f"{where}: ratios must be three numbers, got {ratios!r}") from None
    if len(r) != 3 or not all(math.isfinite(x) and x >= 0 for x in r):
        raise LmrecError(
            f"{where}: ratios must be three non-negative numbers (train, valid, test), "
            f"got {ratios!r}"
        )
    if abs(sum(r) - 1) > 1e-6:
        raise LmrecError(f"{where}: ratios must sum to 1, got {ratios!r} (sum {sum(r):g})")
    if r[0] <= 0:
        raise LmrecError(f"{where}: the train ratio must be above 0, got {ratios!r}")
    rng = _seed_rng(seed, where)
    pos = _shuffled_positions(ds, rng)
    n_u = np.diff(ds.user_ptr).astype(np.float64)
    b_train = _round(n_u * r[0])[ds.user]
    b_valid = _round(n_u * (r[0] + r[1]))[ds.user]
    parts = np.where(pos < b_train, TRAIN, np.where(pos < b_valid, VALID, TEST))
    return _make(ds, parts, "random")


def kfold(ds: Dataset, k: int = 5, *, seed: int = 0) -> list[Split]:
    """k splits over per-user folds: each interaction is in the test part of exactly one split.

    Each user's interactions are shuffled and dealt round-robin into the k folds, starting at a
    random fold per user (so users with fewer than k interactions spread over all folds).
    Valid is empty; train is everything outside the test fold.
    """
    where = "kfold"
    _check_dataset(ds, where)
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 2:
        raise LmrecError(f"{where}: k must be an integer >= 2, got {k!r}")
    k = int(k)
    rng = _seed_rng(seed, where)
    pos = _shuffled_positions(ds, rng)
    offset = rng.integers(0, k, size=ds.n_users)
    fold = (pos + offset[ds.user]) % k
    out = []
    for f in range(k):
        parts = np.where(fold == f, TEST, TRAIN)
        out.append(_make(ds, parts, f"kfold-{f + 1}/{k}"))
    return out


def _cold(
    ds: Dataset,
    keys: np.ndarray,
    n_keys: int,
    fraction: float,
    valid_fraction: float,
    seed: int,
    kind: Literal["users", "items"],
) -> Split:
    where = f"cold_start_{kind}"
    _check_dataset(ds, where)
    f = _fraction(fraction, "fraction", where, allow_zero=False)
    vf = _fraction(valid_fraction, "valid_fraction", where, allow_zero=True)
    if f + vf >= 1:
        raise LmrecError(
            f"{where}: fraction + valid_fraction must be below 1, got {f} + {vf} = {f + vf}"
        )
    rng = _seed_rng(seed, where)
    active = np.flatnonzero(np.bincount(keys, minlength=n_keys))
    perm = rng.permutation(active)
    n_test = int(_round(np.array(f * len(active))))
    n_valid = int(_round(np.array(vf * len(active))))
    label = np.full(n_keys, TRAIN, dtype=np.int8)
    label[perm[:n_test]] = TEST
    label[perm[n_test : n_test + n_valid]] = VALID
    return _make(ds, label[keys], f"cold-{kind}", cold=kind)


def cold_start_users(
    ds: Dataset, fraction: float = 0.2, *, valid_fraction: float = 0.0, seed: int = 0
) -> Split:
    """Hold out whole users: `fraction` of the users with interactions -> test, `valid_fraction`
    -> valid (counts rounded half up); train has none of their interactions."""
    return _cold(ds, ds.user, ds.n_users, fraction, valid_fraction, seed, "users")


def cold_start_items(
    ds: Dataset, fraction: float = 0.2, *, valid_fraction: float = 0.0, seed: int = 0
) -> Split:
    """Hold out whole items: `fraction` of the items with interactions -> test, `valid_fraction`
    -> valid (counts rounded half up); train has none of their interactions."""
    return _cold(ds, ds.item, ds.n_items, fraction, valid_fraction, seed, "items")


SPLITTERS: dict[str, Callable[..., Split]] = {
    "loo": leave_one_out,
    "temporal": temporal_split,
    "random": random_split,
    "cold-users": cold_start_users,
    "cold-items": cold_start_items,
}
