"""Evaluation metrics as small pure functions over arrays, usable without any model.

Ranking metrics take `hits`, a boolean (B, K) matrix with hits[u, j] = "the item user u got at
rank j + 1 is relevant", and `n_rel`, the (B,) number of relevant items of each user (one for
leave-one-out, many for ratio splits). They return one value per user; a result is their mean.
The definitions are those of RecBole 1.2.1 (`recbole/evaluator/metrics.py`) and of the
survey by Zhao et al., "A Revisiting Study of Appropriate Offline Evaluation for Top-N
Recommendation Algorithms", ACM TOIS 2022. Notation: rel_j = hits[u, j - 1] for rank j = 1..k,
R_u = n_rel[u], H_u(k) = sum_{j<=k} rel_j.

Beyond-accuracy metrics take `lists`, an integer (B, K) matrix of recommended item indices
(-1 pads a short list), plus item popularity, categories or vectors.
"""

from __future__ import annotations

__all__ = [
    "auc",
    "catalog_coverage",
    "f1",
    "gini_exposure",
    "hit_rate",
    "hits_matrix",
    "intra_list_diversity",
    "mae",
    "map_at_k",
    "mean_popularity",
    "mrr",
    "mse",
    "ndcg",
    "novelty",
    "personalization",
    "precision",
    "recall",
    "rmse",
]

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError


def _check(hits: np.ndarray, k: int | None) -> tuple[np.ndarray, int]:
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 2:
        raise LmrecError(f"hits must be a (users, K) matrix, got shape {hits.shape}")
    k = hits.shape[1] if k is None else int(k)
    if k < 1:
        raise LmrecError(f"the cut-off k must be >= 1, got {k}")
    # Lists shorter than k (small catalogues) count the missing ranks as misses.
    if hits.shape[1] < k:
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    return hits[:, :k], k


def _n_rel(n_rel: np.ndarray | Sequence[int], b: int) -> np.ndarray:
    n = np.asarray(n_rel, dtype=np.float64)
    if n.shape != (b,):
        raise LmrecError(f"n_rel must have one entry per user ({b}), got shape {n.shape}")
    if (n < 1).any():
        raise LmrecError("every user needs at least one relevant item (n_rel >= 1)")
    return n


def hits_matrix(lists: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """hits[u, j] = lists[u, j] is a nonzero of row u of `relevant` ((B, n_items) sparse);
    padding (-1) is never a hit."""
    lists = np.asarray(lists, dtype=np.int64)
    rel = sp.coo_matrix(relevant)
    rel.eliminate_zeros()
    if rel.shape[0] != lists.shape[0]:
        raise LmrecError(f"relevant has {rel.shape[0]} rows for {lists.shape[0]} lists")
    n = max(int(rel.shape[1]), 1)
    keys = np.unique(rel.row.astype(np.int64) * n + rel.col)
    q = np.arange(lists.shape[0], dtype=np.int64)[:, None] * n + lists
    pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
    found = keys[pos] == q if len(keys) else np.zeros(lists.shape, bool)
    return found & (lists >= 0)


def precision(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """Precision@k = H_u(k) / k."""
    h, k = _check(hits, k)
    return h.sum(axis=1) / k


def recall(hits: np.ndarray, n_rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """Recall@k = H_u(k) / R_u (RecBole's definition; with one relevant item it is the hit
    rate)."""
    h, k = _check(hits, k)
    return h.sum(axis=1) / _n_rel(n_rel, len(h))


def f1(hits: np.ndarray, n_rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """F1@k = 2 P R / (P + R) per user, with P = Precision@k, R = Recall@k (0 when both are 0)."""
    p = precision(hits, k)
    r = recall(hits, n_rel, k)
    s = p + r
    return np.divide(2 * p * r, s, out=np.zeros_like(s), where=s > 0)


def hit_rate(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """HR@k = 1 if H_u(k) > 0 else 0 (RecBole's `hit`)."""
    h, _ = _check(hits, k)
    return h.any(axis=1).astype(np.float64)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ndcg(hits: np.ndarray, n_rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """NDCG@k = DCG / IDCG with binary gains (Jarvelin & Kekalainen, TOIS 2002):
    DCG = sum_{j<=k} rel_j / log2(j + 1), IDCG = sum_{j<=min(R_u, k)} 1 / log2(j + 1)."""
    h, k = _check(hits, k)
    n = _n_rel(n_rel, len(h))
    disc = _discounts(k)
    ideal = np.cumsum(disc)[np.minimum(n, k).astype(np.int64) - 1]
    return (h * disc).sum(axis=1) / ideal


def mrr(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """MRR@k = 1 / (rank of the first relevant item), 0 if none is in the top k."""
    h, _ = _check(hits, k)
    found = h.any(axis=1)
    first = h.argmax(axis=1)
    return np.where(found, 1.0 / (first + 1), 0.0)


def map_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int | None = None) -> np.ndarray:
    """MAP@k = (1 / min(R_u, k)) sum_{j<=k} rel_j * Precision@j (RecBole's `map`)."""
    h, k = _check(hits, k)
    n = _n_rel(n_rel, len(h))
    prec_at = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    return (prec_at * h).sum(axis=1) / np.minimum(n, k)


def auc(ranks: Sequence[np.ndarray], n_candidates: np.ndarray | Sequence[int]) -> np.ndarray:
    """Per-user AUC from the 1-based ranks of the relevant items among n_candidates ranked
    items (all relevant ones included): the share of (relevant, non-relevant) pairs ordered
    correctly, AUC_u = 1 - sum_i (r_i - i) / (R_u (N_u - R_u)) with r_1 < r_2 < ... the sorted
    ranks (r_i - i non-relevant items precede the i-th relevant one). Relevant items missing
    from the ranking (excluded or not candidates) count as ranked last. NaN when R_u = 0 or
    every candidate is relevant."""
    n_cand = np.asarray(n_candidates, dtype=np.float64)
    out = np.full(len(ranks), np.nan)
    for u, r in enumerate(ranks):
        r = np.sort(np.asarray(r, dtype=np.float64))
        n_pos = len(r)
        n_neg = n_cand[u] - n_pos
        if n_pos == 0 or n_neg <= 0:
            continue
        above = np.clip(r - np.arange(1, n_pos + 1), 0, n_neg)
        out[u] = 1.0 - above.sum() / (n_pos * n_neg)
    return out


# -- rating prediction -------------------------------------------------------------------------


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1:
        raise LmrecError(f"predictions {p.shape} and ratings {t.shape} must be equal 1-d arrays")
    if not len(p):
        raise LmrecError("no ratings to compare")
    return p, t


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """MSE = (1/n) sum (p_i - r_i)^2."""
    p, t = _pair(pred, true)
    return float(np.mean((p - t) ** 2))


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """RMSE = sqrt(MSE)."""
    return float(np.sqrt(mse(pred, true)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """MAE = (1/n) sum |p_i - r_i|."""
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


# -- beyond accuracy ---------------------------------------------------------------------------


def _lists(lists: np.ndarray, k: int | None) -> np.ndarray:
    lists = np.asarray(lists, dtype=np.int64)
    if lists.ndim != 2:
        raise LmrecError(f"lists must be a (users, K) matrix, got shape {lists.shape}")
    return lists if k is None else lists[:, :k]


def catalog_coverage(lists: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Coverage@k = |union of all users' top-k lists| / n_items (the catalogue, or the
    candidate set when ranking is restricted)."""
    lst = _lists(lists, k)
    if n_items <= 0:
        raise LmrecError("coverage needs a catalogue of at least one item")
    return float(len(np.unique(lst[lst >= 0])) / n_items)


def novelty(lists: np.ndarray, popularity: np.ndarray, n_users: int, k: int | None = None):
    """Novelty@k per user = mean over the list of the self-information -log2(p_i), with
    p_i = (users who interacted with i) / n_users in training, floored at 1 / n_users (Zhou et
    al., PNAS 2010; Vargas & Castells, RecSys 2011). Higher = less popular recommendations."""
    lst = _lists(lists, k)
    pop = np.asarray(popularity, dtype=np.float64)
    p = np.maximum(pop, 1.0) / max(int(n_users), 1)
    info = -np.log2(np.minimum(p, 1.0))
    valid = lst >= 0
    vals = np.where(valid, info[np.maximum(lst, 0)], 0.0)
    cnt = valid.sum(axis=1)
    return np.divide(vals.sum(axis=1), cnt, out=np.full(len(lst), np.nan), where=cnt > 0)


def mean_popularity(lists: np.ndarray, popularity: np.ndarray, k: int | None = None):
    """ARP@k per user = mean training popularity (interaction count) of the recommended items
    (average recommendation popularity, Abdollahpouri et al., FLAIRS 2019)."""
    lst = _lists(lists, k)
    pop = np.asarray(popularity, dtype=np.float64)
    valid = lst >= 0
    vals = np.where(valid, pop[np.maximum(lst, 0)], 0.0)
    cnt = valid.sum(axis=1)
    return np.divide(vals.sum(axis=1), cnt, out=np.full(len(lst), np.nan), where=cnt > 0)


def gini_exposure(lists: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Gini@k of item exposure: with c_(1) <= ... <= c_(n) the sorted numbers of top-k lists
    each of the n catalogue items appears in, G = sum_i (2i - n - 1) c_(i) / (n sum_i c_i).
    0 = every item shown equally often; -> 1 = a few items take all exposure."""
    lst = _lists(lists, k)
    c = np.sort(np.bincount(lst[lst >= 0], minlength=n_items)[:n_items]).astype(np.float64)
    total = c.sum()
    if total == 0 or n_items < 1:
        return float("nan")
    i = np.arange(1, n_items + 1)
    return float(((2 * i - n_items - 1) * c).sum() / (n_items * total))


def personalization(lists: np.ndarray, k: int | None = None) -> float:
    """Personalisation@k = 1 - mean over user pairs (u, v) of |L_u & L_v| / k.

    Computed exactly in O(items): sum over pairs of |L_u & L_v| = sum_i C(c_i, 2), c_i = the
    number of lists holding item i. 0 = everyone gets the same list; 1 = no overlaps."""
    lst = _lists(lists, k)
    b, kk = lst.shape
    if b < 2 or kk == 0:
        return float("nan")
    c = np.bincount(lst[lst >= 0]).astype(np.float64)
    shared = (c * (c - 1) / 2).sum()
    pairs = b * (b - 1) / 2
    return float(1.0 - shared / (pairs * kk))


def intra_list_diversity(
    lists: np.ndarray,
    *,
    categories: sp.csr_matrix | None = None,
    vectors: np.ndarray | None = None,
    k: int | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """ILD@k per user = mean over pairs i < j of the list of d(i, j) (Ziegler et al., WWW 2005).

    With `categories` ((n_items, n_categories) binary): d = 1 - Jaccard of the two items'
    category sets (two items without categories: distance 0). With `vectors`
    ((n_items, d)): d = 1 - cosine. NaN for lists with fewer than two items."""
    if (categories is None) == (vectors is None):
        raise LmrecError("intra_list_diversity needs exactly one of categories or vectors")
    lst = _lists(lists, k)
    b, kk = lst.shape
    out = np.full(b, np.nan)
    if kk < 2:
        return out
    if vectors is not None:
        v = np.asarray(vectors, dtype=np.float32)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        feats = v / np.where(norm > 0, norm, 1.0)
    else:
        feats = sp.csr_matrix(categories, dtype=np.float32)
        feats.data[:] = 1.0
        feats = feats.toarray() if feats.shape[1] <= 4096 else feats
    iu = np.triu_indices(kk, 1)
    for s in range(0, b, chunk):
        part = lst[s : s + chunk]
        valid = part >= 0
        idx = np.maximum(part, 0)
        if sp.issparse(feats):
            gram = np.stack([(feats[r] @ feats[r].T).toarray() for r in idx])
            sizes = np.stack([np.asarray(feats[r].sum(axis=1)).ravel() for r in idx])
        else:
            f = feats[idx]  # (b', K, C)
            gram = np.einsum("bkc,blc->bkl", f, f)
            sizes = np.einsum("bkc,bkc->bk", f, f) if categories is not None else None
        if categories is not None:
            union = sizes[:, :, None] + sizes[:, None, :] - gram
            dist = np.where(union > 0, 1.0 - gram / np.where(union > 0, union, 1.0), 0.0)
        else:
            dist = 1.0 - gram
        pair_ok = valid[:, iu[0]] & valid[:, iu[1]]
        d = np.where(pair_ok, dist[:, iu[0], iu[1]], 0.0)
        cnt = pair_ok.sum(axis=1)
        out[s : s + chunk] = np.divide(
            d.sum(axis=1), cnt, out=np.full(len(part), np.nan), where=cnt > 0
        )
    return out
