"""Fairness of a model's lists, for users and for item providers.

Users (`group_gap`): a per-user metric (e.g. NDCG@10 of `EvalResult.per_user`) by the value
of a user attribute (gender, age band): each group's mean and size, the gap (largest minus
smallest mean) and a test of it (Welch's t-test for two groups, Kruskal-Wallis for more).

Providers (`exposure_shares`): the share of position-weighted exposure (1 / log2(rank + 1),
the DCG discount, rank from 1) that each item group (a category, a brand) gets in the top-k
lists, against a reference share: of the catalogue (`catalogue_shares`) or of the training
interactions (`interaction_shares`). `exposure_gap` is their total variation distance,
0.5 * sum_g |exposure_g - reference_g| (0: exposure in proportion, 1: all to other groups).
Exposure inequality over items is `gini` in the metric table (`metrics.gini_exposure`).

```python
res = evaluate(model, split, k=10)
group_gap(res.per_user["ndcg@10"], user_values(split.train, res.users, "gender"))
shares = exposure_shares(res.lists, item_groups(split.train), k=10)
exposure_gap(shares, catalogue_shares(item_groups(split.train)))
```
"""

from __future__ import annotations

__all__ = [
    "catalogue_shares",
    "exposure_gap",
    "exposure_shares",
    "group_gap",
    "interaction_shares",
    "item_groups",
    "user_values",
]

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lmrec.data import Dataset
from lmrec.errors import LmrecError


def user_values(dataset: Dataset, users: np.ndarray, attribute: str) -> list[str | None]:
    """The value of `attribute` of each of these users (indices), as text; None if absent."""
    attrs = dataset.user_features.attributes
    out: list[str | None] = []
    for u in np.asarray(users, np.int64).tolist():
        v = attrs[u].get(attribute)
        out.append(None if v is None or v == "" else str(v))
    return out


def group_gap(values: np.ndarray, groups: Sequence[str | None]) -> dict[str, Any]:
    """Mean of `values` (per user; NaN ignored) in each group, the gap between the best and
    the worst group and the p-value of the difference (users without a group left out)."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    if len(values) != len(groups):
        raise LmrecError(f"{len(values)} values but {len(groups)} group labels")
    by: dict[str, np.ndarray] = {}
    labels = np.array(["" if g is None else g for g in groups], dtype=object)
    ok = np.isfinite(values) & (labels != "")
    for g in sorted(set(labels[ok].tolist())):
        by[g] = values[ok & (labels == g)]
    if len(by) < 2:
        raise LmrecError(f"a gap needs at least two groups, found {sorted(by)}")
    means = {g: float(v.mean()) for g, v in by.items()}
    if len(by) == 2:
        a, b = by.values()
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        test = "welch"
    else:
        p = float(stats.kruskal(*by.values()).pvalue)
        test = "kruskal"
    best, worst = max(means, key=means.__getitem__), min(means, key=means.__getitem__)
    return {
        "groups": {g: {"users": len(by[g]), "mean": means[g]} for g in by},
        "gap": means[best] - means[worst],
        "relative_gap": (means[best] - means[worst]) / means[best] if means[best] else 0.0,
        "best": best,
        "worst": worst,
        "p_value": p,
        "test": test,
    }


def item_groups(dataset: Dataset, attribute: str | None = None) -> list[str]:
    """Each item's provider group: the value of item `attribute` (e.g. "brand"), else its
    first category ("" when it has none)."""
    f = dataset.item_features
    if attribute is not None:
        return [str(a.get(attribute, "")) for a in f.attributes]
    return [str(c[0]) if c else "" for c in f.categories]


def _shares(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {g: (w / total if total else 0.0) for g, w in sorted(weights.items())}


def exposure_shares(lists: np.ndarray, groups: Sequence[str], k: int) -> dict[str, float]:
    """Share of the position-weighted exposure of the top-k of `lists` (item indices, -1
    pads) that each item group gets; every group of `groups` is listed (0 if never shown)."""
    top = np.asarray(lists)[:, :k]
    w = np.broadcast_to(1.0 / np.log2(np.arange(2, top.shape[1] + 2)), top.shape)
    g = np.asarray(groups, dtype=object)
    shown = top >= 0
    out = dict.fromkeys(sorted(set(groups)), 0.0)
    for name, weight in zip(g[top[shown]].tolist(), w[shown].tolist(), strict=True):
        out[name] += weight
    return _shares(out)


def catalogue_shares(groups: Sequence[str]) -> dict[str, float]:
    """Share of the catalogue's items in each group."""
    names, counts = np.unique(np.asarray(groups, dtype=object).astype(str), return_counts=True)
    return _shares(dict(zip(names.tolist(), counts.astype(float).tolist(), strict=True)))


def interaction_shares(dataset: Dataset, groups: Sequence[str]) -> dict[str, float]:
    """Share of the dataset's interactions with items of each group."""
    counts = np.bincount(dataset.item, minlength=dataset.n_items).astype(float)
    out = dict.fromkeys(sorted(set(groups)), 0.0)
    for g, c in zip(groups, counts.tolist(), strict=True):
        out[g] += c
    return _shares(out)


def exposure_gap(shares: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Total variation distance between exposure shares and reference shares."""
    keys = set(shares) | set(reference)
    return 0.5 * sum(abs(shares.get(g, 0.0) - reference.get(g, 0.0)) for g in keys)
