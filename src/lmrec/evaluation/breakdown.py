"""Where a model gains: accuracy by item popularity bucket and by user history length.

Popularity (`bucket_items_by_popularity`): the catalogue is sorted by training popularity
(interactions in split.train, most first, ties by item index) and cut into thirds: head,
torso, tail; items without a training interaction always go to the tail. A test case counts
in the bucket of its held-out item: the metric of user u in bucket B counts only u's targets
in B, T_u^B = T_u & B, as relevant,

    hits_B[u, j] = [l_uj in T_u^B],   R_u^B = |T_u^B|,
    NDCG_B@k(u) = sum_{j<=k} hits_B[u, j] / log2(j + 1) / sum_{j<=min(R_u^B, k)} 1 / log2(j + 1),
    Recall_B@k(u) = sum_{j<=k} hits_B[u, j] / R_u^B,

and users without targets in B are left out of B. (Targets of other buckets in the list count
as misses there.) With one bucket this is the overall metric.

History (`bucket_users_by_history`): users by the length of their training history
(interactions in split.train) in fixed buckets 0, 1-4, 5-9, 10-19, 20-49, 50-99, 100-199,
200-499, 500+ (HISTORY_EDGES); from the shortest, neighbouring buckets are merged until each
holds at least 5% of the evaluated users (`min_users`), a short last one joining the one
before. Every metric of a user is the overall one, averaged over the users of the bucket.

```python
res = evaluate(model, split, k=10, breakdown=("popularity", "history"))
res.breakdown["popularity"].summary()   # {"head": {"users": .., "ndcg@10": ..}, ...}
compare_breakdowns({"pop": res_pop.breakdown["popularity"], "ease": ...}, "pop")
```
"""

from __future__ import annotations

__all__ = [
    "BREAKDOWNS",
    "HISTORY_EDGES",
    "Breakdown",
    "Bucket",
    "breakdown",
    "bucket_items_by_popularity",
    "bucket_metrics",
    "bucket_users_by_history",
    "compare_breakdowns",
    "pool_breakdowns",
]

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.evaluation import metrics as M
from lmrec.evaluation.runner import METRICS, Ranking, measure
from lmrec.evaluation.stats import paired_test

#: The breakdowns `evaluate(..., breakdown=...)` and `lmrec evaluate --breakdown` know.
BREAKDOWNS = ("popularity", "history")
#: Lower edges of the history-length buckets (interactions in training); the last is open.
HISTORY_EDGES = (0, 1, 5, 10, 20, 50, 100, 200, 500)
#: Share of the evaluated users a history bucket must hold before it stands on its own.
MIN_SHARE = 0.05


@dataclass
class Bucket:
    """One bucket: its name, the range it covers, per-user metrics of the users in it.

    users: (n,) user indices; per_user: "metric@k" -> (n,) values aligned with users (the
    shape `paired_test` reads); items: catalogue items in the bucket (popularity; None for
    history buckets or pooled folds)."""

    name: str
    range: str
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    items: int | None = None

    def summary(self) -> dict[str, Any]:
        """Users (cases) and the mean of each metric (NaN when the bucket is empty)."""
        out: dict[str, Any] = {"range": self.range, "items": self.items, "users": len(self.users)}
        for key, v in self.per_user.items():
            out[key] = float(np.mean(v)) if len(v) else float("nan")
        return out


@dataclass
class Breakdown:
    """The buckets of one breakdown ("popularity" or "history") of one result."""

    by: str
    buckets: list[Bucket] = field(default_factory=list)

    def __getitem__(self, name: str) -> Bucket:
        for b in self.buckets:
            if b.name == name:
                return b
        raise LmrecError(f"no bucket {name!r} in the {self.by} breakdown: {self.names}")

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.buckets]

    def summary(self) -> dict[str, dict[str, Any]]:
        """Bucket name -> its summary, in bucket order."""
        return {b.name: b.summary() for b in self.buckets}

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "buckets": [
                {"bucket": b.name, **{k: _num(v) for k, v in b.summary().items()}}
                for b in self.buckets
            ],
        }


def _num(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _popularity_names(n: int) -> list[str]:
    if n == 1:
        return ["all"]
    if n == 2:
        return ["head", "tail"]
    if n == 3:
        return ["head", "torso", "tail"]
    return ["head", *(f"torso{i}" for i in range(1, n - 1)), "tail"]


def bucket_items_by_popularity(
    train: Dataset | np.ndarray, n_buckets: int = 3
) -> tuple[list[str], np.ndarray]:
    """Bucket names and the (n_items,) bucket of each item, 0 = head ... n_buckets - 1 = tail.

    counts: interactions per item in `train` (or the array given). Items sorted by count,
    most first, ties by ascending index, are cut into n_buckets parts of sizes as equal as
    possible (the first n_items mod n_buckets parts one larger: `np.array_split`); then every
    item with count 0 moves to the tail."""
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 1:
        raise LmrecError(f"n_buckets must be a positive integer, got {n_buckets!r}")
    if isinstance(train, Dataset):
        counts = np.bincount(train.item, minlength=train.n_items)
    else:
        counts = np.asarray(train)
        if counts.ndim != 1 or (len(counts) and counts.min() < 0):
            raise LmrecError("popularity counts must be a 1-d array of non-negative numbers")
    order = np.lexsort((np.arange(len(counts)), -counts.astype(np.float64)))
    bucket = np.empty(len(counts), np.int64)
    for b, part in enumerate(np.array_split(order, n_buckets)):
        bucket[part] = b
    bucket[counts == 0] = n_buckets - 1
    return _popularity_names(n_buckets), bucket


def bucket_users_by_history(
    lengths: np.ndarray,
    edges: Sequence[int] = HISTORY_EDGES,
    min_users: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """Bucket names ("5-9", "50+") and the bucket of each of the given users' history lengths.

    Fixed buckets [edges[i], edges[i+1]) (the last open) that hold a user are merged, from
    the shortest, until each holds at least min_users users (default: 5% of the users,
    at least 1); a last group under min_users joins the one before."""
    lengths = np.asarray(lengths, dtype=np.int64)
    e = np.asarray(edges, dtype=np.int64)
    if e.ndim != 1 or len(e) == 0 or e[0] != 0 or np.any(np.diff(e) <= 0):
        raise LmrecError(f"history edges must rise strictly from 0, got {list(edges)}")
    if len(lengths) and lengths.min() < 0:
        raise LmrecError("history lengths must be >= 0")
    if min_users is None:
        min_users = max(1, math.ceil(MIN_SHARE * len(lengths)))
    fixed = np.searchsorted(e, lengths, side="right") - 1
    sizes = np.bincount(fixed, minlength=len(e))
    groups: list[list[int]] = []
    open_group: list[int] = []
    for i in np.flatnonzero(sizes):
        open_group.append(int(i))
        if sizes[open_group].sum() >= min_users:
            groups.append(open_group)
            open_group = []
    if open_group:
        if groups:
            groups[-1].extend(open_group)
        else:
            groups.append(open_group)
    names, code = [], np.empty(len(e), np.int64)
    for g, members in enumerate(groups):
        lo, last = e[members[0]], members[-1]
        hi = e[last + 1] - 1 if last + 1 < len(e) else None
        names.append(f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}"))
        code[members] = g
    return names, code[fixed]


def bucket_metrics(
    lists: np.ndarray,
    relevant: sp.csr_matrix,
    ks: Sequence[int],
    metrics: Sequence[str] = ("ndcg", "recall"),
    items: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-user accuracy metrics (rows of METRICS of kind "accuracy") of ranked `lists`
    ((U, K), -1 pads) counting only the relevant items in `items` (a boolean mask over the
    catalogue; None: all) as relevant: hits_B[u, j] = [l_uj in T_u & B], R_u^B = |T_u & B|.
    Returns the rows kept (users with R_u^B > 0) and "metric@k" -> values of those rows."""
    for m in metrics:
        if m not in METRICS or METRICS[m].kind != "accuracy":
            raise LmrecError(f"a breakdown measures accuracy metrics only, not {m!r}")
    rel = sp.csr_matrix(relevant, dtype=np.float32)
    if items is not None:
        rel = rel @ sp.diags(np.asarray(items, dtype=np.float32))
        rel.eliminate_zeros()
    n_rel = np.diff(rel.indptr)
    rows = np.flatnonzero(n_rel > 0)
    rel = rel[rows]
    lst = np.asarray(lists)[rows]
    r = Ranking(rows, lst, rel, M.hits_matrix(lst, rel), n_rel[rows])
    per_user, _ = measure(r, ks, metrics)
    return rows, per_user


def _count_range(counts: np.ndarray) -> str:
    return f"{int(counts.min())}-{int(counts.max())}" if len(counts) else "-"


def breakdown(
    ranking: Ranking,
    train: Dataset,
    by: Literal["popularity", "history"],
    ks: Sequence[int],
    metrics: Sequence[str] = ("ndcg", "recall"),
    *,
    n_buckets: int = 3,
    edges: Sequence[int] = HISTORY_EDGES,
    min_users: int | None = None,
) -> Breakdown:
    """The accuracy `metrics` at each k of a ranking (`rank_targets`) by item popularity
    bucket or by history length, both measured on `train` (the part models are fitted on).
    A popularity bucket's range is the training interactions of its items; a history
    bucket's name is its range of training interactions per user."""
    if by == "popularity":
        counts = np.bincount(train.item, minlength=train.n_items)
        names, item_bucket = bucket_items_by_popularity(counts, n_buckets)
        out = Breakdown(by)
        for b, name in enumerate(names):
            mask = item_bucket == b
            rows, per_user = bucket_metrics(ranking.lists, ranking.relevant, ks, metrics, mask)
            rng = _count_range(counts[mask])
            out.buckets.append(Bucket(name, rng, ranking.users[rows], per_user, int(mask.sum())))
        return out
    if by == "history":
        lengths = np.bincount(train.user, minlength=train.n_users)[ranking.users]
        names, user_bucket = bucket_users_by_history(lengths, edges, min_users)
        out = Breakdown(by)
        for g, name in enumerate(names):
            sel = np.flatnonzero(user_bucket == g)
            _, per_user = bucket_metrics(
                ranking.lists[sel], ranking.relevant[sel], ks, metrics, None
            )
            out.buckets.append(Bucket(name, name, ranking.users[sel], per_user))
        return out
    raise LmrecError(f"unknown breakdown {by!r}; available: {', '.join(BREAKDOWNS)}")


def pool_breakdowns(parts: Sequence[Breakdown], n_users: int) -> Breakdown:
    """One breakdown over folds: buckets of the same name pooled, users keyed
    fold * n_users + user (as `ProtocolResult` pools folds)."""
    if len(parts) == 1:
        return parts[0]
    out = Breakdown(parts[0].by)
    names = list(dict.fromkeys(n for p in parts for n in p.names))
    for name in names:
        found = [(f, p[name]) for f, p in enumerate(parts) if name in p.names]
        keys = list(found[0][1].per_user)
        out.buckets.append(
            Bucket(
                name,
                found[0][1].range if len({b.range for _, b in found}) == 1 else "pooled",
                np.concatenate([f * n_users + b.users for f, b in found]),
                {k: np.concatenate([b.per_user[k] for _, b in found]) for k in keys},
            )
        )
    return out


def compare_breakdowns(
    breakdowns: Mapping[str, Breakdown],
    reference: str,
    metric: str = "ndcg@10",
    test: Literal["wilcoxon", "ttest"] = "wilcoxon",
) -> list[dict[str, Any]]:
    """Rows (bucket, model) of several models' breakdowns: the bucket's range and items, the
    model's users and metric means, and, against the reference model on `metric`, the ratio
    of the means (model / reference; None when the reference's mean is 0) and the paired
    test's p-value over the users both have in the bucket (None for the reference and for
    fewer than 2 paired users)."""
    if reference not in breakdowns:
        raise LmrecError(f"reference {reference!r} is not one of {', '.join(breakdowns)}")
    ref = breakdowns[reference]
    names = list(dict.fromkeys([*ref.names, *(n for b in breakdowns.values() for n in b.names)]))
    rows: list[dict[str, Any]] = []
    for name in names:
        base = ref[name] if name in ref.names else None
        for label, bd in breakdowns.items():
            if name not in bd.names:
                continue
            bucket = bd[name]
            s = bucket.summary()
            if metric not in bucket.per_user:
                raise LmrecError(f"the breakdown of {label} has no {metric!r}")
            row: dict[str, Any] = {"by": bd.by, "bucket": name, "model": label, **s}
            row.update(
                reference=reference, ratio_metric=metric, ratio=None, test=test, p_value=None
            )
            if base is not None:
                ref_mean = base.summary()[metric]
                if ref_mean and not math.isnan(ref_mean):
                    row["ratio"] = s[metric] / ref_mean
                if label != reference:
                    with contextlib.suppress(LmrecError):  # fewer than 2 users in common
                        row["p_value"] = paired_test(base, bucket, metric, test)["p_value"]
            rows.append({k: _num(v) for k, v in row.items()})
    return rows
