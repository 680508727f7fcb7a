"""The model-agnostic evaluation runner: rank in batches, measure, keep per-user values.

Protocol (as RecBole and the SASRec/BERT4Rec replications report it): every user with at least
one interaction in the target part (split.valid or split.test) gets a ranking of the whole
catalogue, the items of their history excluded; all their target items are relevant. On
"valid" the history is split.train; on "test" it is train + valid. A sampled protocol (the
target among N sampled negatives) is available only on request and every result carries its
label, because its numbers are not comparable with full ranking.
"""

from __future__ import annotations

__all__ = [
    "ACCURACY",
    "BEYOND",
    "METRICS",
    "EvalResult",
    "Metric",
    "Ranking",
    "UserRanker",
    "evaluate",
    "item_category_matrix",
    "leave_one_out_metrics",
    "measure",
    "rank_targets",
    "rating_metrics",
]

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.evaluation import metrics as M
from lmrec.models.base import rows_per_batch

if TYPE_CHECKING:
    from lmrec.cluster import RayConfig
    from lmrec.evaluation.breakdown import Breakdown
    from lmrec.models.base import Ranker


@dataclass
class Ranking:
    """What the ranking step hands to the metrics: the top lists of the evaluated users and
    what the metrics need to measure them.

    users: (U,) user indices; lists: (U, depth) item indices, best first (-1 pads);
    relevant: (U, n_items) CSR of each user's target items; hits: (U, depth) relevance of each
    ranked item; n_rel: (U,) number of target items. popularity: (n_items,) users per item in
    the history part, over n_hist_users users with a history; n_items: the catalogue;
    n_candidates: the items that could be ranked; categories / item_vectors: for diversity;
    auc: (U,) per-user AUC when asked (it needs the whole ranking, so the ranking step
    measures it); fallback_users: users answered by the model's fallback.
    """

    users: np.ndarray
    lists: np.ndarray
    relevant: sp.csr_matrix
    hits: np.ndarray
    n_rel: np.ndarray
    popularity: np.ndarray | None = None
    n_hist_users: int = 0
    n_items: int = 0
    n_candidates: int = 0
    categories: sp.csr_matrix | None = None
    item_vectors: np.ndarray | None = None
    auc: np.ndarray | None = None
    fallback_users: int = 0


MetricValue = np.ndarray | float | None


@dataclass(frozen=True)
class Metric:
    """One row of the metric table: `fn(ranking, k)` gives (U,) per-user values, one float
    over all lists, or None where the metric cannot be measured (diversity without item
    categories). kind: "accuracy" (per user, from hits and n_rel only: curves and breakdowns
    use these), "list" (per user, from the lists and item data), "overall" (one value over all
    lists), "ranking" (per user, measured by the ranking step over the whole ranking, no k)."""

    fn: Callable[[Ranking, int], MetricValue]
    kind: Literal["accuracy", "list", "overall", "ranking"]


def _accuracy(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> Metric:
    return Metric(lambda r, k: fn(r.hits, r.n_rel, k), "accuracy")


def _diversity(r: Ranking, k: int) -> MetricValue:
    if r.categories is None:
        return None
    return M.intra_list_diversity(r.lists, categories=r.categories, k=k)


#: The metric table: name -> how to measure it from a Ranking at k. A new metric is one row.
METRICS: dict[str, Metric] = {
    "ndcg": _accuracy(M.ndcg),
    "recall": _accuracy(M.recall),
    "precision": _accuracy(lambda h, n, k: M.precision(h, k)),
    "hr": _accuracy(lambda h, n, k: M.hit_rate(h, k)),
    "mrr": _accuracy(lambda h, n, k: M.mrr(h, k)),
    "map": _accuracy(M.map_at_k),
    "f1": _accuracy(M.f1),
    "auc": Metric(lambda r, k: r.auc, "ranking"),
    "coverage": Metric(lambda r, k: M.catalog_coverage(r.lists, r.n_candidates, k), "overall"),
    "novelty": Metric(lambda r, k: M.novelty(r.lists, r.popularity, r.n_hist_users, k), "list"),
    "diversity": Metric(_diversity, "list"),
    "diversity_emb": Metric(
        lambda r, k: M.intra_list_diversity(r.lists, vectors=r.item_vectors, k=k), "list"
    ),
    "arp": Metric(lambda r, k: M.mean_popularity(r.lists, r.popularity, k), "list"),
    "gini": Metric(lambda r, k: M.gini_exposure(r.lists, r.n_items, k), "overall"),
    "personalization": Metric(lambda r, k: M.personalization(r.lists, k), "overall"),
}

#: Per-user accuracy metrics at k.
ACCURACY = tuple(m for m, row in METRICS.items() if row.kind == "accuracy")
#: Beyond-accuracy metrics at k: per-user (novelty, diversity, diversity_emb, arp) and over all
#: lists (coverage, gini, personalization).
BEYOND = ("coverage", "novelty", "diversity", "diversity_emb", "arp", "gini", "personalization")
PER_USER_BEYOND = tuple(m for m in BEYOND if METRICS[m].kind == "list")
DEFAULT_METRICS = (*ACCURACY, "coverage", "novelty", "diversity", "arp", "gini", "personalization")
KNOWN = tuple(METRICS)


def measure(
    ranking: Ranking, ks: Sequence[int], names: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Measure the metrics `names` (rows of METRICS) of a ranking at each k: per-user values
    keyed "metric@k" (by k, then in the order of `names`; "ranking" metrics once, without k)
    and list-level values keyed the same way."""
    per_user: dict[str, np.ndarray] = {}
    overall: dict[str, float] = {}
    for kk in ks:
        for m in names:
            row = METRICS[m]
            if row.kind == "ranking":
                continue
            value = row.fn(ranking, kk)
            if value is None:
                continue
            if row.kind == "overall":
                overall[f"{m}@{kk}"] = float(value)  # type: ignore[arg-type]
            else:
                per_user[f"{m}@{kk}"] = value  # type: ignore[assignment]
    for m in names:
        if METRICS[m].kind == "ranking":
            value = METRICS[m].fn(ranking, 0)
            if value is not None:
                per_user[m] = value  # type: ignore[assignment]
    return per_user, overall


@dataclass
class EvalResult:
    """Per-user metric values of one model on one split part, plus list-level metrics.

    users: (U,) user indices (of the split's vocabulary) that were evaluated, in order.
    per_user: "metric@k" -> (U,) values aligned with `users` (NaN where undefined, e.g. the
    diversity of a one-item list). overall: list-level metrics (coverage, gini, personalization).
    sampled: None for full ranking, else a label such as "sampled: 100 negatives, uniform".
    lists: (U, depth) recommended item indices (-1 pads), for further analysis.
    hits, n_rel: (U, depth) relevance of each ranked item and (U,) number of relevant items,
    from which `curve` computes accuracy metrics at any k <= depth without ranking again.
    breakdown: "popularity" / "history" -> the accuracy metrics by bucket, when asked
    (`evaluate(..., breakdown=...)`, `lmrec.evaluation.breakdown`).
    """

    model: str
    on: str
    k: tuple[int, ...]
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    overall: dict[str, float] = field(default_factory=dict)
    sampled: str | None = None
    candidates: str = "all items"
    n_candidates: int = 0
    seconds: float = 0.0
    fallback_users: int = 0
    lists: np.ndarray | None = field(default=None, repr=False)
    hits: np.ndarray | None = field(default=None, repr=False)
    n_rel: np.ndarray | None = field(default=None, repr=False)
    breakdown: dict[str, Breakdown] = field(default_factory=dict, repr=False)

    def curve(self, metric: str, ks: Iterable[int]) -> np.ndarray:
        """Mean `metric` (one of ACCURACY) at each k of `ks` (each <= the ranking depth)."""
        if self.hits is None or self.n_rel is None:
            raise LmrecError("this result kept no hits (evaluate(..., keep_lists=False))")
        ks = list(ks)
        depth = self.hits.shape[1]
        if max(ks) > depth:
            raise LmrecError(f"curve up to k={max(ks)} needs evaluate(..., depth>={max(ks)})")
        row = METRICS.get(metric)
        if row is None or row.kind != "accuracy":
            raise LmrecError(f"curve: {metric!r} is not one of {', '.join(ACCURACY)}")
        r = Ranking(self.users, self.lists, sp.csr_matrix((0, 0)), self.hits, self.n_rel)
        return np.array([float(np.mean(row.fn(r, kk))) for kk in ks])

    def summary(self) -> dict[str, float | int]:
        """Mean of each per-user metric (NaN ignored), the list-level metrics and the number
        of users, keyed "metric@k"."""
        means: dict[str, float | int] = {}
        for name, vals in self.per_user.items():
            ok = vals[~np.isnan(vals)]
            means[name] = float(ok.mean()) if len(ok) else float("nan")
        means.update(self.overall)
        # By k, then in the order the metrics were asked for.
        order = {m: i for i, m in enumerate(KNOWN)}

        def key(name: str) -> tuple[int, int]:
            base, _, k = name.partition("@")
            return (int(k) if k else 10**9, order.get(base, len(order)))

        out: dict[str, float | int] = {n: means[n] for n in sorted(means, key=key)}
        out["users"] = len(self.users)
        return out

    def to_dict(self, per_user: bool = False) -> dict[str, Any]:
        """JSON-ready: protocol labels, the summary, and (optionally) the per-user arrays."""
        d: dict[str, Any] = {
            "model": self.model,
            "on": self.on,
            "k": list(self.k),
            "ranking": self.sampled or "full",
            "candidates": self.candidates,
            "n_candidates": self.n_candidates,
            "seconds": round(self.seconds, 4),
            "fallback_users": self.fallback_users,
            "metrics": {k: _json_num(v) for k, v in self.summary().items()},
        }
        if per_user:
            d["users"] = self.users.tolist()
            d["per_user"] = {k: [_json_num(x) for x in v] for k, v in self.per_user.items()}
        if self.breakdown:
            d["breakdown"] = {by: b.to_dict() for by, b in self.breakdown.items()}
        return d


def _json_num(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else float(x)
    return int(x) if isinstance(x, (np.integer,)) else x


def item_category_matrix(dataset: Dataset) -> sp.csr_matrix | None:
    """(n_items, n_categories) binary CSR of the items' categories (ML-100K: genres), or None
    when no item has any."""
    cats = dataset.item_features.categories
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, cs in enumerate(cats):
        for c in cs:
            rows.append(i)
            cols.append(vocab.setdefault(str(c), len(vocab)))
    if not rows:
        return None
    data = np.ones(len(rows), np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(len(cats), len(vocab)))
    m.data[:] = 1.0  # a category repeated on one item counts once
    return m


def _ks(k: int | Iterable[int]) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, int | np.integer) else tuple(k)
    if not ks or any(isinstance(x, bool) or not isinstance(x, int | np.integer) for x in ks):
        raise LmrecError(f"k must be a positive integer or a list of them, got {k!r}")
    if min(ks) < 1:
        raise LmrecError(f"k must be >= 1, got {k!r}")
    return tuple(sorted({int(x) for x in ks}))


def _metric_names(metrics: Sequence[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return DEFAULT_METRICS
    names = []
    for m in metrics:
        base = m.split("@")[0].strip().lower()
        base = {"hit": "hr", "hitrate": "hr", "personalisation": "personalization"}.get(base, base)
        if base not in KNOWN:
            raise LmrecError(f"unknown metric {m!r}; available: {', '.join(KNOWN)}")
        if base not in names:
            names.append(base)
    return tuple(names)


class _Aligner:
    """Maps between the split's item/user indices and the model's (which differ only for a
    model trained on another snapshot, e.g. loaded from disk)."""

    def __init__(self, model: Ranker, ds: Dataset):
        items = getattr(model, "items", None)
        users = getattr(model, "users", None)
        if items is None:
            raise LmrecError(f"model {_name(model)} is not fitted: call fit(dataset) first")
        self.same_items = items is ds.items or items == ds.items
        self.same_users = users is None or users is ds.users or users == ds.users
        self.n_model_items = len(items)
        if not self.same_items:
            self.to_model = items.indices(ds.items.ids.tolist())  # ds item -> model item
            self.to_ds = ds.items.indices(items.ids.tolist())  # model item -> ds item
            if (self.to_model >= 0).sum() == 0:
                raise LmrecError(
                    f"model {_name(model)} knows none of the split's items: wrong model or data"
                )
        if not self.same_users:
            self.user_to_model = users.indices(ds.users.ids.tolist())

    def matrix(self, m: sp.csr_matrix) -> sp.csr_matrix:
        if self.same_items:
            return m
        coo = m.tocoo()
        c = self.to_model[coo.col]
        ok = c >= 0
        return sp.csr_matrix(
            (coo.data[ok], (coo.row[ok], c[ok])), shape=(m.shape[0], self.n_model_items)
        )

    def sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        if self.same_items:
            return seqs
        out = []
        for s in seqs:
            m = self.to_model[s]
            out.append(m[m >= 0])
        return out

    def users(self, u: np.ndarray) -> np.ndarray:
        return u if self.same_users else self.user_to_model[u]

    def mask(self, mask: np.ndarray | None) -> np.ndarray | None:
        if mask is None or self.same_items:
            return mask
        out = np.zeros(self.n_model_items, bool)
        ok = self.to_ds >= 0
        out[ok] = mask[self.to_ds[ok]]
        return out

    def to_model_items(self, idx: np.ndarray) -> np.ndarray:
        """Split item indices (-1 pads) as the model's (-1 where the model lacks the item)."""
        if self.same_items:
            return idx
        return np.where(idx >= 0, self.to_model[np.maximum(idx, 0)], -1)

    def lists(self, idx: np.ndarray) -> np.ndarray:
        if self.same_items:
            return idx
        return np.where(idx >= 0, self.to_ds[np.maximum(idx, 0)], -1)


def _name(model: Ranker) -> str:
    return str(getattr(model, "name", type(model).__name__))


def _history(model: Ranker, ds: Dataset, users: np.ndarray, al: _Aligner):
    """The History rows of `users` in the model's index space; rows without any history get
    user -1 (an unseen user, answered by the model's fallback) unless the model reads side
    information (stored user attributes), which needs the user's index."""
    from lmrec.models.base import History

    h = History.from_dataset(ds, users)
    mu = al.users(h.users.copy())
    if not getattr(model, "uses_side_information", False):
        mu[np.diff(h.matrix.indptr) == 0] = -1
    return History(
        users=mu,
        matrix=al.matrix(h.matrix),
        sequences=al.sequences(h.sequences),
        queries=[None] * len(users),
    )


def _candidate_mask(candidates: Any, train: Dataset, n_items: int) -> tuple[np.ndarray | None, str]:
    if candidates is None:
        return None, "all items"
    if isinstance(candidates, str):
        if candidates != "cold":
            raise LmrecError(
                f"candidates must be None, 'cold' or a boolean mask, not {candidates!r}"
            )
        mask = train.item_counts() == 0
        if not mask.any():
            raise LmrecError("candidates='cold': every item occurs in split.train; no cold items")
        return mask, "cold items (absent from train)"
    mask = np.asarray(candidates)
    if mask.dtype != bool or mask.shape != (n_items,):
        raise LmrecError(
            f"candidates mask must be a boolean array of length {n_items} (one per item), "
            f"got dtype {mask.dtype} shape {mask.shape}"
        )
    if not mask.any():
        raise LmrecError("the candidates mask selects no item")
    return mask, "masked items"


def _sample_negatives(
    n: int,
    seen: sp.csr_matrix,
    eligible: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """(B, n_items) bool: n items per row drawn without replacement from the eligible items
    not in the row of `seen`, with probability proportional to `weights` (Gumbel top-k,
    Kool et al., ICML 2019). Rows with fewer eligible items get all of them."""
    b, n_items = seen.shape
    keys = np.log(np.maximum(weights, 1e-12))[None, :] + rng.gumbel(size=(b, n_items))
    keys[:, ~eligible] = -np.inf
    coo = seen.tocoo()
    keys[coo.row, coo.col] = -np.inf
    n = min(n, n_items)
    top = np.argpartition(-keys, n - 1, axis=1)[:, :n]
    out = np.zeros((b, n_items), bool)
    rows = np.repeat(np.arange(b), n)
    ok = np.isfinite(keys[rows, top.ravel()])
    out[rows[ok], top.ravel()[ok]] = True
    return out


#: Above this many items, sampled evaluation draws each user's negatives as index lists
#: (`_sample_negative_lists`) instead of a (users x items) array of keys.
SPARSE_SAMPLER_ITEMS = 50_000


def _sample_negative_lists(
    n: int,
    seen: sp.csr_matrix,
    eligible: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """(B, n) item indices (-1 pads): per row, n items drawn one after another without
    replacement from the eligible items not in the row of `seen`, with probability
    proportional to `weights` (the distribution of `_sample_negatives`; another random
    stream). Memory and time grow with B x n, not with the catalogue: all rows draw at once
    with replacement, repeats and seen items are dropped, and the few rows left short
    finish one by one."""
    seen = sp.csr_matrix(seen)
    b, n_items = seen.shape
    w = np.where(eligible, np.maximum(weights, 0.0), 0.0)
    cdf = np.cumsum(w)
    total = float(cdf[-1]) if len(cdf) else 0.0
    out = np.full((b, n), -1, np.int64)
    if b == 0 or n <= 0 or total <= 0:
        return out
    m = 2 * n + 16
    draw = np.minimum(np.searchsorted(cdf, rng.random((b, m)) * total, side="right"), n_items - 1)
    rows = np.repeat(np.arange(b), m)
    ok = np.asarray(seen[rows, draw.ravel()]).reshape(b, m) == 0
    order = np.argsort(draw, axis=1, kind="stable")  # repeats after their first draw
    s = np.take_along_axis(draw, order, axis=1)
    rep = np.zeros_like(ok)
    rep[:, 1:] = s[:, 1:] == s[:, :-1]
    first = np.ones_like(ok)
    np.put_along_axis(first, order, ~rep, axis=1)
    ok &= first
    take = ok & (np.cumsum(ok, axis=1) <= n)
    count = take.sum(axis=1)
    r_idx, c_idx = np.nonzero(take)
    out[r_idx, np.cumsum(take, axis=1)[r_idx, c_idx] - 1] = draw[r_idx, c_idx]
    n_eligible = int((w > 0).sum())
    for r in np.flatnonzero(count < n):  # short rows: finish over the items still available
        own = seen.indices[seen.indptr[r] : seen.indptr[r + 1]]
        got = out[r, : count[r]]
        rest = np.setdiff1d(np.flatnonzero(w > 0), np.concatenate([own, got]))
        want = min(n, count[r] + len(rest)) - count[r]
        if want > 0 and n_eligible:
            keys = np.log(w[rest]) + rng.gumbel(size=len(rest))
            out[r, count[r] : count[r] + want] = rest[np.argsort(-keys)[:want]]
    return out


def _rank_sampled(
    model: Any, h: Any, bu: np.ndarray, rel: sp.csr_matrix, b: _Batch
) -> tuple[np.ndarray, Any]:
    """Sampled ranking from the candidates alone: each user's targets and sampled negatives,
    ranked by `model.rank_among` (the same order as ranking every item and keeping the
    candidates, without scoring the whole catalogue)."""
    seen = b.hist_m[bu]
    n_items = seen.shape[1]
    if n_items > SPARSE_SAMPLER_ITEMS:
        neg = _sample_negative_lists(int(b.sampled), seen, b.eligible, b.weights, b.rng)
    else:  # the dense sampler: the same negatives as every earlier sampled evaluation
        mask = _sample_negatives(int(b.sampled), seen + rel, b.eligible, b.weights, b.rng)
        width = max(int(mask.sum(axis=1).max(initial=0)), 1)
        neg = np.full((len(bu), width), -1, np.int64)
        rows, cols = np.nonzero(mask)
        first = np.searchsorted(rows, np.arange(len(bu)))
        neg[rows, np.arange(len(rows)) - first[rows]] = cols
    rel = sp.csr_matrix(rel)
    n_rel = np.diff(rel.indptr)
    tgt = np.full((len(bu), max(int(n_rel.max(initial=0)), 1)), -1, np.int64)
    rr = np.repeat(np.arange(len(bu)), n_rel)
    tgt[rr, np.arange(len(rr)) - rel.indptr[rr]] = rel.indices
    tgt[(tgt >= 0) & ~b.eligible[np.maximum(tgt, 0)]] = -1  # targets outside the candidates
    items = np.concatenate([tgt, neg], axis=1)
    # a target drawn as a negative too (the list sampler does not see the targets) counts once
    dup = np.zeros_like(items, bool)
    for j in range(tgt.shape[1]):
        dup[:, tgt.shape[1] :] |= (neg == tgt[:, j : j + 1]) & (tgt[:, j : j + 1] >= 0)
    items[dup] = -1
    model_items = b.al.to_model_items(items)
    idx, _, used = model.rank_among(h, model_items, exclude_seen=True)
    return b.al.lists(np.asarray(idx)), used


def _check_call(
    model: Ranker, split: Any, on: str, batch_size: int, sampled: int | None, sampler: str
) -> None:
    if on not in ("valid", "test"):
        raise LmrecError(f"on must be 'valid' or 'test', not {on!r}")
    for part in ("train", "valid", "test"):
        if not isinstance(getattr(split, part, None), Dataset):
            raise LmrecError(f"evaluate needs a Split (train, valid, test), got {type(split)}")
    if not callable(getattr(model, "rank", None)):
        raise LmrecError(f"{type(model).__name__} has no rank(history, k, ...) method")
    if batch_size < 1:
        raise LmrecError(f"batch_size must be >= 1, got {batch_size}")
    if sampled is not None and (isinstance(sampled, bool) or int(sampled) < 1):
        raise LmrecError(f"sampled must be a positive number of negatives, got {sampled!r}")
    if sampler not in ("uniform", "popularity"):
        raise LmrecError(f"sampler must be 'uniform' or 'popularity', got {sampler!r}")


def _item_data(
    names: Sequence[str],
    hist: Dataset,
    item_categories: sp.spmatrix | Literal["auto"] | None,
    item_vectors: np.ndarray | None,
) -> tuple[sp.csr_matrix | None, np.ndarray | None]:
    """The item categories and vectors the diversity metrics among `names` read, checked."""
    n_items = hist.n_items
    cats = None
    if "diversity" in names:
        cats = item_category_matrix(hist) if item_categories == "auto" else item_categories
        if cats is not None and cats.shape[0] != n_items:
            raise LmrecError(f"item_categories has {cats.shape[0]} rows for {n_items} items")
    if "diversity_emb" in names:
        if item_vectors is None:
            raise LmrecError("metric 'diversity_emb' needs item_vectors (n_items, d)")
        if len(item_vectors) != n_items:
            raise LmrecError(f"item_vectors has {len(item_vectors)} rows for {n_items} items")
    return cats, item_vectors


def _progress_bar(progress: Any, total: int, label: str) -> Any:
    if progress is not True:
        return None
    from tqdm import tqdm

    return tqdm(  # disable=None: no bar when stderr is not a terminal (logs, make)
        total=total, desc=f"evaluate {label}", unit="user", leave=False, disable=None
    )


@dataclass
class _Batch:
    """What ranking one batch of users needs besides the model."""

    hist_m: sp.csr_matrix
    al: _Aligner
    cand: np.ndarray | None
    n_cand: int
    eligible: np.ndarray
    weights: np.ndarray
    rng: np.random.Generator
    sampled: int | None
    auc: bool


def _rank_full(
    model: Ranker, h: Any, bu: np.ndarray, rel: sp.csr_matrix, b: _Batch
) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Rank every rankable item (for sampled ranking and AUC): the lists, best first, and the
    per-user AUC when asked."""
    idx, _, used = model.rank(
        h, b.al.n_model_items, exclude_seen=True, candidates=b.al.mask(b.cand)
    )
    full = b.al.lists(np.asarray(idx))  # (B, n) every rankable item, best first
    if b.sampled is not None:
        neg = _sample_negatives(int(b.sampled), b.hist_m[bu] + rel, b.eligible, b.weights, b.rng)
        keep = neg | (rel.toarray() > 0)
        rows = np.arange(len(bu))[:, None]
        inset = (full >= 0) & keep[rows, np.maximum(full, 0)]
        order = np.argsort(~inset, axis=1, kind="stable")
        full = np.where(
            np.take_along_axis(inset, order, axis=1),
            np.take_along_axis(full, order, axis=1),
            -1,
        )
        n_u = keep.sum(axis=1)
    else:
        seen = b.hist_m[bu].multiply(b.eligible[None, :]) != 0
        n_u = np.full(len(bu), b.n_cand) - np.asarray(seen.sum(axis=1)).ravel()
    if not b.auc:
        return full, None, used
    hit_full = M.hits_matrix(full, rel)
    ranks = [np.flatnonzero(r) + 1 for r in hit_full]
    # Relevant items that could not be ranked (seen / not candidates) count last.
    n_rel = np.diff(rel.indptr)
    ranks = [
        np.concatenate([r, np.full(n_rel[i] - len(r), n_u[i])]) if len(r) < n_rel[i] else r
        for i, r in enumerate(ranks)
    ]
    return full, M.auc(ranks, n_u), used


class UserRanker:
    """The ranking step of `evaluate` for any subset of the evaluated users, built once per
    process (the Ray workers of `lmrec.cluster` each build one, and rank their chunks of
    users with it). `users` are every user with targets in split.<on>; `rank` gives the
    top lists of some of them, batch by batch, exactly as one pass over all of them does
    (the same batches give the same lists); `ranking` puts all the lists together."""

    def __init__(
        self,
        model: Ranker,
        split: Any,
        on: Literal["valid", "test"] = "test",
        candidates: str | np.ndarray | None = None,
        *,
        sampled: int | None = None,
        sampler: Literal["uniform", "popularity"] = "uniform",
        seed: int = 0,
        auc: bool = False,
    ):
        #: The arguments, for building the same ranker elsewhere (a Ray worker).
        self.options: dict[str, Any] = {
            "on": on,
            "candidates": candidates,
            "sampled": sampled,
            "sampler": sampler,
            "seed": seed,
            "auc": auc,
        }
        self.model = model
        target = split.test if on == "test" else split.valid
        self.hist = hist = split.train_valid() if on == "test" else split.train
        n_items = hist.n_items
        if target.n_interactions == 0:
            raise LmrecError(f"split {getattr(split, 'name', '')!r} has no {on} interactions")
        rel_all = sp.csr_matrix(
            (np.ones(target.n_interactions, np.float32), (target.user, target.item)),
            shape=(target.n_users, n_items),
        )
        rel_all.data[:] = 1.0
        self.rel_all = rel_all
        self.users = np.flatnonzero(np.diff(rel_all.indptr) > 0)
        cand, _ = _candidate_mask(candidates, split.train, n_items)
        self.cand = cand
        self.pop = hist.item_counts().astype(np.float64)
        self.b = _Batch(
            hist_m=hist.matrix(),
            al=_Aligner(model, hist),
            cand=cand,
            n_cand=int(cand.sum()) if cand is not None else n_items,
            eligible=cand if cand is not None else np.ones(n_items, bool),
            weights=self.pop if sampler == "popularity" else np.ones(n_items),
            rng=np.random.default_rng(seed),
            sampled=sampled,
            auc=auc,
        )

    def rank(
        self,
        users: np.ndarray,
        depth: int,
        batch_size: int,
        step: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(len(users), depth) top lists (-1 pads), per-user AUC (NaN unless asked) and the
        number of users answered by the model's fallback; `step(n)` after each batch."""
        model, b = self.model, self.b
        lists = np.full((len(users), depth), -1, np.int64)
        auc_vals = np.full(len(users), np.nan)
        fallback = 0
        if b.sampled is None and not b.auc:  # dense (B, n_items) scores: bound their size
            batch_size = rows_per_batch(b.al.n_model_items, batch_size)
        for s in range(0, len(users), batch_size):
            bu = users[s : s + batch_size]
            h = _history(model, self.hist, bu, b.al)
            if b.sampled is None and not b.auc:
                idx, _, used = model.rank(h, depth, exclude_seen=True, candidates=b.al.mask(b.cand))
                top = b.al.lists(np.asarray(idx))
            elif not b.auc and callable(getattr(model, "rank_among", None)):
                full, used = _rank_sampled(model, h, bu, self.rel_all[bu], b)
                top = full[:, :depth]
            else:
                full, auc_b, used = _rank_full(model, h, bu, self.rel_all[bu], b)
                top = full[:, :depth]
                if auc_b is not None:
                    auc_vals[s : s + len(bu)] = auc_b
            if top.shape[1] < depth:
                top = np.pad(top, ((0, 0), (0, depth - top.shape[1])), constant_values=-1)
            lists[s : s + len(bu)] = top
            fallback += sum(1 for x in used if x)
            if step is not None:
                step(len(bu))
        return lists, auc_vals, fallback

    def ranking(self, lists: np.ndarray, auc_vals: np.ndarray, fallback: int) -> Ranking:
        """The Ranking of all `users` from their lists (in the order of `users`)."""
        rel_users = self.rel_all[self.users]
        return Ranking(
            users=self.users,
            lists=lists,
            relevant=rel_users,
            hits=M.hits_matrix(lists, rel_users),
            n_rel=np.diff(rel_users.indptr),
            popularity=self.pop,
            n_hist_users=int((np.diff(self.hist.user_ptr) > 0).sum()),
            n_items=self.hist.n_items,
            n_candidates=self.b.n_cand,
            auc=auc_vals if self.b.auc else None,
            fallback_users=fallback,
        )


def rank_targets(
    model: Ranker,
    split: Any,
    on: Literal["valid", "test"] = "test",
    depth: int = 10,
    candidates: str | np.ndarray | None = None,
    batch_size: int = 1024,
    *,
    sampled: int | None = None,
    sampler: Literal["uniform", "popularity"] = "uniform",
    seed: int = 0,
    auc: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    label: str = "",
    ray: RayConfig | None = None,
) -> Ranking:
    """The ranking step of `evaluate`: the top-`depth` lists of every user with targets in
    split.<on> (history: train for "valid", train + valid for "test"; history items
    excluded), with what the metrics read. Arguments as for `evaluate`; auc: also measure the
    per-user AUC over the whole ranking."""
    if ray is not None and sampled is not None:
        raise LmrecError(
            "evaluation on Ray ranks the whole catalogue: sampled negatives are drawn from one "
            "random stream in user order, so --sampled runs in one process (drop --ray)"
        )
    r = UserRanker(
        model, split, on, candidates, sampled=sampled, sampler=sampler, seed=seed, auc=auc
    )
    total = len(r.users)
    bar = _progress_bar(progress, total, label or _name(model))
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if bar is not None:
            bar.update(n)
        elif callable(progress):
            progress(done, total)

    try:
        if ray is None:
            lists, auc_vals, fallback = r.rank(r.users, depth, batch_size, step)
        else:
            from lmrec.cluster import rank_on_ray

            lists, auc_vals, fallback = rank_on_ray(r, split, depth, batch_size, ray, step)
    finally:
        if bar is not None:
            bar.close()
    return r.ranking(lists, auc_vals, fallback)


def evaluate(
    model: Ranker,
    split: Any,
    on: Literal["valid", "test"] = "test",
    k: int | Iterable[int] = 10,
    metrics: Sequence[str] | None = None,
    candidates: str | np.ndarray | None = None,
    batch_size: int = 1024,
    *,
    sampled: int | None = None,
    sampler: Literal["uniform", "popularity"] = "uniform",
    seed: int = 0,
    item_categories: sp.spmatrix | Literal["auto"] | None = "auto",
    item_vectors: np.ndarray | None = None,
    progress: bool | Callable[[int, int], None] = False,
    name: str | None = None,
    keep_lists: bool = True,
    depth: int | None = None,
    breakdown: Sequence[str] = (),
    ray: RayConfig | None = None,
) -> EvalResult:
    """Rank, measure and keep per-user values of a fitted model on a split part.

    model: anything with `rank(history, k, exclude_seen=True, candidates=mask)` (every
    Recommender). on="valid": history = split.train, targets = split.valid; on="test":
    history = train + valid, targets = split.test. k: one cut-off or several (all measured
    from one ranking at max k). candidates: None (the whole catalogue), "cold" (only items
    absent from split.train: item cold start) or a boolean mask over items. sampled=N: rank
    the targets among N negatives per user, drawn (seeded) from the candidates the user has
    not seen, uniformly or by training popularity; labelled in the result.
    item_categories: (n_items, n_categories) binary matrix for category diversity ("auto":
    from the dataset's item categories); item_vectors: (n_items, d) for embedding diversity.
    progress: True for a tqdm bar on stderr, or a callback(done_users, total_users).
    depth: rank this many items (default max k) and keep them for `EvalResult.curve`.
    breakdown: any of "popularity", "history": the accuracy metrics also by item popularity
    bucket and by history length (`lmrec.evaluation.breakdown`), in `EvalResult.breakdown`.
    ray: rank the users on a Ray cluster (`lmrec.cluster`), in chunks of `batch_size` users
    (the batches of one process, so the same lists and metrics); not with `sampled`.
    """
    t0 = time.perf_counter()
    _check_call(model, split, on, batch_size, sampled, sampler)
    ks = _ks(k)
    kmax = max(ks[-1], int(depth or 0))
    names = _metric_names(metrics)
    by = _breakdowns(breakdown)
    hist = split.train_valid() if on == "test" else split.train
    _, cand_label = _candidate_mask(candidates, split.train, hist.n_items)
    cats, vectors = _item_data(names, hist, item_categories, item_vectors)
    ranking = rank_targets(
        model,
        split,
        on,
        kmax,
        candidates,
        batch_size,
        sampled=sampled,
        sampler=sampler,
        seed=seed,
        auc=any(METRICS[m].kind == "ranking" for m in names),
        progress=progress,
        label=name or _name(model),
        ray=ray,
    )
    ranking.categories, ranking.item_vectors = cats, vectors
    per_user, overall = measure(ranking, ks, names)
    parts = {}
    if by:
        from lmrec.evaluation.breakdown import breakdown as breakdown_of

        acc = [m for m in names if METRICS[m].kind == "accuracy"]
        acc += [m for m in ("ndcg", "recall") if m not in acc]
        parts = {b: breakdown_of(ranking, split.train, b, ks, acc) for b in by}
    return EvalResult(
        model=name or _name(model),
        on=on,
        k=ks,
        users=ranking.users,
        per_user=per_user,
        overall=overall,
        sampled=f"sampled: {int(sampled)} negatives, {sampler}" if sampled is not None else None,
        candidates=cand_label,
        n_candidates=ranking.n_candidates,
        seconds=time.perf_counter() - t0,
        fallback_users=ranking.fallback_users,
        lists=ranking.lists if keep_lists else None,
        hits=ranking.hits if keep_lists else None,
        n_rel=ranking.n_rel if keep_lists else None,
        breakdown=parts,
    )


def _breakdowns(breakdown: Sequence[str] | str) -> tuple[str, ...]:
    items = [breakdown] if isinstance(breakdown, str) else list(breakdown or ())
    if not items:
        return ()
    from lmrec.evaluation.breakdown import BREAKDOWNS

    for b in items:
        if b not in BREAKDOWNS:
            raise LmrecError(f"unknown breakdown {b!r}; available: {', '.join(BREAKDOWNS)}")
    return tuple(dict.fromkeys(items))


def leave_one_out_metrics(
    model: Ranker, split: Any, on: Literal["valid", "test"] = "test", k: int = 10
) -> dict[str, float | int]:
    """Full-ranking NDCG@k and Recall@k (and the number of users) of a fitted model on a
    split part: `evaluate(model, split, on, k, metrics=("ndcg", "recall")).summary()`.

    valid: history = train; test: history = train + valid. History items are excluded and
    every other item of the catalogue is ranked.
    """
    return evaluate(model, split, on=on, k=k, metrics=("ndcg", "recall")).summary()


def rating_metrics(model: Ranker, split: Any, on: Literal["valid", "test"] = "test") -> dict:
    """MSE, RMSE and MAE of a rating predictor on the rated target interactions.

    The model must expose `predict(users, items) -> (n,) ratings` over index arrays of the
    split's vocabularies (no registered lmrec model does yet: they rank, not rate).
    """
    predict = getattr(model, "predict", None)
    if not callable(predict):
        raise LmrecError(
            f"model {_name(model)} does not predict ratings (no predict(users, items) method); "
            "rating metrics apply only to rating predictors"
        )
    if on not in ("valid", "test"):
        raise LmrecError(f"on must be 'valid' or 'test', not {on!r}")
    target = split.test if on == "test" else split.valid
    rated = ~np.isnan(target.value)
    if not rated.any():
        raise LmrecError(f"the {on} part holds no rated interactions")
    pred = np.asarray(predict(target.user[rated], target.item[rated]), dtype=np.float64)
    true = target.value[rated]
    return {
        "mse": M.mse(pred, true),
        "rmse": M.rmse(pred, true),
        "mae": M.mae(pred, true),
        "ratings": int(rated.sum()),
    }
