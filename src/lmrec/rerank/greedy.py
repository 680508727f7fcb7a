"""The greedy selections: relevance order, MMR, max-sum (with swap local search) and DPP, one
slot at a time under category constraints.

- **MMR**, maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998): the item maximising
  (1 - d) w_t rel(i) - d max_{j in S} sim(i, j), with S the items already chosen and d the
  diversity weight in [0, 1] (0: relevance order; 1: the least similar item each time).
- **Max-sum** diversification (Gollapudi & Sharma, WWW 2009), greedy: (1 - d) w_t rel(i) +
  d / (k - 1) sum_{j in S} (1 - sim(i, j)), which builds up the mean pairwise distance that
  intra-list diversity measures.
- **DPP**, determinantal point process MAP inference with the greedy algorithm and incremental
  Cholesky factors of Chen, Zhang & Zhou, "Fast Greedy MAP Inference for Determinantal Point
  Process to Improve Recommendation Diversity", NeurIPS 2018 (their Algorithm 1, O(N k^2) after
  the similarity rows, plus O(N d) per step for rows of S = F F^T). The kernel is
  L = diag(q) S diag(q) with q_i = exp(alpha * rel(i)) and alpha = (1 - d) / (2 d); then
  log det L_Y = 2 alpha sum_{i in Y} rel(i) + log det S_Y, which is d^-1 times Chen et al.'s
  trade-off theta * sum rel + (1 - theta) * log det S_Y with theta = 1 - d. Each greedy step
  picks argmax (1 - d) w_t rel(i) + d log s_i, s_i the Cholesky residual of item i in S.

w_t, the weight of relevance when filling slot t (0-based), is the DCG discount
1 / log2(t + 2) by default (`RerankConfig.discount`): a likely item is worth more in an early
slot, so the first slots stay close to the model's order and the later ones diversify; without
it, w_t = 1 and the methods are the published ones.

`rel` is the model's score min-max scaled to [0, 1] over the pool (relevance="scores"), so one
diversity weight means the same for models whose scores live on different scales; or, with
relevance="rank", rel = (r + 1)^(-1/2) for the item at model rank r (0-based) in the pool,
min-max scaled: only the model's order counts. With relevance="prob", rel = softmax over the
pool of score / T - b log(r + 1), not rescaled: calibrated probabilities that the item is the
user's next one, T (`temperature`) and b (`rank_power`) fitted on held-out items by
`calibrate`. With the DCG discount, sum_t w_t rel is then the list's expected DCG.

The kernels take the config's diversity, discount, relevance, temperature, rank_power and
local_search; its `method` is what `make_reranker` dispatches on.
"""

from __future__ import annotations

__all__ = [
    "DPP_EPS",
    "LOCAL_SEARCH_SWAPS",
    "CategoryConstraints",
    "dpp",
    "maxsum",
    "mmr",
    "top_k_constrained",
]

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.rerank.config import Relevance, RerankConfig
from lmrec.rerank.similarity import ItemSimilarity, _category_matrix, _check_similarity

#: Below this Cholesky residual (1 - squared projection on the chosen items' span) an item adds
#: nothing new to a DPP selection; when only such items are left, relevance fills the list.
DPP_EPS = 1e-9

#: The most improving swaps `maxsum(local_search=True)` makes per list.
LOCAL_SEARCH_SWAPS = 100


# -- relevance ---------------------------------------------------------------------------------


def _check_prob_params(temperature: float, rank_power: float) -> None:
    if not (np.isfinite(temperature) and temperature > 0):
        raise LmrecError(f"temperature must be a finite number > 0, got {temperature}")
    if not np.isfinite(rank_power):
        raise LmrecError(f"rank_power must be finite, got {rank_power}")


def _ranks(s: np.ndarray) -> np.ndarray:
    """0-based rank of each score, best first (ties by position)."""
    r = np.empty(len(s))
    r[np.lexsort((np.arange(len(s)), -s))] = np.arange(len(s))
    return r


def _relevance(
    scores: np.ndarray,
    relevance: Relevance = "scores",
    temperature: float = 1.0,
    rank_power: float = 0.0,
) -> np.ndarray:
    """Scores min-max scaled to [0, 1] over the pool (all 1 when they are all equal); with
    relevance="rank", (r + 1)^(-1/2) of each item's rank r by score (ties by position), scaled
    the same way; with relevance="prob", the calibrated probabilities
    softmax(score / temperature - rank_power log(r + 1)) over the pool (not rescaled: their
    size is the model's confidence, see `calibrate`)."""
    s = np.asarray(scores, np.float64)
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise LmrecError("relevance scores must be finite (filter -inf items out first)")
    if relevance == "prob":
        _check_prob_params(temperature, rank_power)
        if not len(s):
            return s
        z = s / temperature - rank_power * np.log1p(_ranks(s))
        z = np.exp(z - z.max())
        return z / z.sum()
    if relevance == "rank":
        s = (_ranks(s) + 1.0) ** -0.5
        lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 0.0)
    elif relevance != "scores":
        raise LmrecError(f"unknown relevance {relevance!r}; use scores, rank or prob")
    if hi - lo <= 0:
        return np.ones_like(s)
    return (s - lo) / (hi - lo)


# -- category constraints ----------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryConstraints:
    """Limits on the categories of a chosen list.

    max_per_category: at most this many chosen items may carry any one category.
    min_per_category: category -> at least this many chosen items carrying it (when the pool
    has them). Greedy steps pick only admissible items; when none is left, the minimums and
    then the caps are relaxed, so a list is never cut short by its constraints.
    """

    categories: Sequence[Sequence[str]]
    max_per_category: int | None = None
    min_per_category: Mapping[str, int] = field(default_factory=dict)
    fair_categories: Sequence[str] = ()
    """Items carrying any of these categories form the protected group of FA*IR."""
    fair_share: float = 0.0
    """FA*IR (Zehlike et al. 2017): every prefix of length t holds at least
    `binom.ppf(fair_alpha, t, fair_share)` protected items (when the pool has them)."""
    fair_alpha: float = 0.1

    def __post_init__(self) -> None:
        if self.max_per_category is not None and self.max_per_category < 1:
            raise LmrecError(f"max_per_category must be at least 1, got {self.max_per_category}")
        m, names = _category_matrix(self.categories)
        object.__setattr__(self, "_matrix", m)
        object.__setattr__(self, "_names", names)
        col = {c: j for j, c in enumerate(names)}
        unknown = sorted(c for c in self.min_per_category if c not in col)
        if unknown:
            raise LmrecError(
                f"unknown categories in min_per_category: {', '.join(unknown)}; known: "
                f"{', '.join(names[:30])}{' ...' if len(names) > 30 else ''}"
            )
        bad = {c: v for c, v in self.min_per_category.items() if v < 0}
        if bad:
            raise LmrecError(f"min_per_category must be >= 0, got {bad}")
        need = np.zeros(len(names), np.int64)
        for c, v in self.min_per_category.items():
            need[col[c]] = v
        object.__setattr__(self, "_need", need)
        unknown = sorted(c for c in self.fair_categories if c not in col)
        if unknown:
            raise LmrecError(f"unknown categories in fair_categories: {', '.join(unknown)}")
        if not 0.0 <= self.fair_share < 1.0 or not 0.0 < self.fair_alpha < 1.0:
            raise LmrecError("fair_share must be in [0, 1) and fair_alpha in (0, 1)")
        object.__setattr__(self, "_fair", [col[c] for c in self.fair_categories])

    def fair_minimums(self, k: int) -> np.ndarray:
        """(k + 1,) the fewest protected items each prefix of length 0..k must hold."""
        from scipy.stats import binom

        if not self.fair_categories or self.fair_share <= 0:
            return np.zeros(k + 1, np.int64)
        t = np.arange(k + 1)
        return np.maximum(binom.ppf(self.fair_alpha, t, self.fair_share), 0).astype(np.int64)

    def start(self, items: np.ndarray, k: int) -> _Admission:
        g = self._matrix[np.asarray(items, np.int64)].toarray() > 0  # type: ignore[attr-defined]
        adm = _Admission(g, self.max_per_category, self._need, k)  # type: ignore[attr-defined]
        if self._fair:  # type: ignore[attr-defined]
            adm.protect(g[:, self._fair].any(axis=1), self.fair_minimums(k))  # type: ignore[attr-defined]
        return adm


class _Admission:
    """Which pool positions a greedy step may pick, given what was picked."""

    def __init__(self, g: np.ndarray, cap: int | None, need: np.ndarray, k: int):
        self.g = g  # (N, C) bool
        self.cap = cap
        self.need = need
        self.k = k
        self.counts = np.zeros(g.shape[1], np.int64)
        self.picked = 0
        # Minimums beyond what the pool can give are impossible: ask only for what exists.
        self.need = np.minimum(need, g.sum(axis=0))
        self.protected: np.ndarray | None = None
        self.fair_min = np.zeros(k + 1, np.int64)
        self.n_protected = 0

    def protect(self, protected: np.ndarray, minimums: np.ndarray) -> None:
        """FA*IR: the next pick must be protected while the prefix it ends would hold fewer
        protected items than `minimums` says (and the pool still has some)."""
        self.protected, self.fair_min = protected, minimums

    def mask(self, free: np.ndarray) -> np.ndarray:
        """Admissible among `free` (not yet chosen) positions; relaxed if nothing is."""
        if self.protected is not None and self.n_protected < self.fair_min[self.picked + 1]:
            must = free & self.protected
            if must.any():
                return must
        allowed = free.copy()
        if self.cap is not None:
            full = self.counts >= self.cap
            if full.any():
                allowed &= ~self.g[:, full].any(axis=1)
        unmet = np.maximum(self.need - self.counts, 0)
        if unmet.any() and unmet.sum() >= self.k - self.picked:
            needed = allowed & self.g[:, unmet > 0].any(axis=1)
            if needed.any():
                return needed
        if allowed.any():
            return allowed
        return free

    def add(self, pos: int) -> None:
        self.counts += self.g[pos]
        self.picked += 1
        if self.protected is not None and self.protected[pos]:
            self.n_protected += 1


class _NoConstraints:
    def mask(self, free: np.ndarray) -> np.ndarray:
        return free

    def add(self, pos: int) -> None:
        pass


def _admission(
    constraints: CategoryConstraints | None, items: np.ndarray, k: int
) -> _Admission | _NoConstraints:
    return _NoConstraints() if constraints is None else constraints.start(items, k)


# -- the greedy selections ---------------------------------------------------------------------


def _check(items: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    items = np.asarray(items, np.int64).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    if len(items) != len(scores):
        raise LmrecError(f"{len(items)} candidate items but {len(scores)} scores")
    if k < 0:
        raise LmrecError(f"k must be >= 0, got {k}")
    if len(np.unique(items)) != len(items):
        raise LmrecError("candidate items must be distinct")
    return items, scores, min(k, len(items))


def top_k_constrained(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    constraints: CategoryConstraints | None = None,
) -> np.ndarray:
    """Positions of the k best-scoring items (ties by position), under the constraints."""
    items, scores, k = _check(items, scores, k)
    order = np.lexsort((np.arange(len(scores)), -scores))
    if constraints is None:
        return order[:k]
    adm = constraints.start(items, k)
    free = np.ones(len(items), bool)
    rank = np.empty(len(items), np.int64)
    rank[order] = np.arange(len(items))
    out = np.empty(k, np.int64)
    for t in range(k):
        ok = adm.mask(free)
        pos = int(np.flatnonzero(ok)[np.argmin(rank[ok])])
        out[t] = pos
        free[pos] = False
        adm.add(pos)
    return out


def _slot_weights(k: int, discount: bool) -> np.ndarray:
    """Weight of relevance at slots 0..k-1: the DCG discount log2(2) / log2(t + 2), or 1."""
    if not discount:
        return np.ones(k)
    return 1.0 / np.log2(np.arange(k) + 2.0)


def _start(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    similarity: ItemSimilarity,
    config: RerankConfig,
) -> tuple[np.ndarray, np.ndarray, int, Any, np.ndarray]:
    items, scores, k = _check(items, scores, k)
    f = _check_similarity(similarity, items).rows(items)
    # Ties: higher relevance, then earlier position (the model's own order).
    rel = _relevance(scores, config.relevance, config.temperature, config.rank_power) + 1e-12 * (
        len(items) - np.arange(len(items))
    )
    return items, scores, k, f, rel


def mmr(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    similarity: ItemSimilarity,
    config: RerankConfig,
    constraints: CategoryConstraints | None = None,
) -> np.ndarray:
    """Maximal marginal relevance: positions (into `items`) of k items, in the chosen order.

    Step t picks argmax_i (1 - d) w_t rel(i) - d max_{j in S} sim(i, j) over the admissible
    items, d = `config.diversity`; rel = the config's relevance (see the module docstring),
    w_t = 1 / log2(t + 2) with `config.discount` (a likely item is worth more in an early slot,
    as in DCG), else 1 (Carbonell & Goldstein's MMR).
    """
    items, scores, k, f, rel = _start(items, scores, k, similarity, config)
    w = _slot_weights(k, config.discount)
    diversity = config.diversity
    adm = _admission(constraints, items, k)
    free = np.ones(len(items), bool)
    max_sim = np.zeros(len(items))
    out = np.empty(k, np.int64)
    for t in range(k):
        gain = (1 - diversity) * w[t] * rel - diversity * max_sim
        gain = np.where(adm.mask(free), gain, -np.inf)
        pos = int(np.argmax(gain))
        out[t] = pos
        free[pos] = False
        adm.add(pos)
        row = f(pos)
        max_sim = row if t == 0 else np.maximum(max_sim, row)
    return out


def maxsum(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    similarity: ItemSimilarity,
    config: RerankConfig,
    constraints: CategoryConstraints | None = None,
) -> np.ndarray:
    """Max-sum diversification, greedy (Gollapudi & Sharma, WWW 2009): positions of k items.

    Step t picks argmax_i (1 - d) w_t rel(i) + d / (k - 1) sum_{j in S} (1 - sim(i, j)): the
    relevance of the slot plus the item's share of the list's intra-list diversity (the mean
    pairwise distance). w_t as in `mmr`.

    `config.local_search`: then, while it improves the list's value
    F(S) = (1 - d) sum_t w_t rel_(t) + d / (k - 1) sum_{pairs in S} (1 - sim), with rel_(t) the
    t-th largest relevance in S (the list shown in relevance order), replace the one chosen
    item by the one pool item that improves F most (best-improvement swaps, at most
    `LOCAL_SEARCH_SWAPS`). With relevance="prob" and the discount, the first term is (1 - d)
    times the expected DCG@k of the list under the calibrated probabilities. Not with category
    constraints.
    """
    if config.local_search and constraints is not None:
        raise LmrecError("max-sum local search does not support category constraints")
    items, scores, k, f, rel = _start(items, scores, k, similarity, config)
    w = _slot_weights(k, config.discount)
    diversity = config.diversity
    adm = _admission(constraints, items, k)
    free = np.ones(len(items), bool)
    dist = np.zeros(len(items))
    out = np.empty(k, np.int64)
    for t in range(k):
        gain = (1 - diversity) * w[t] * rel + diversity * dist / max(k - 1, 1)
        gain = np.where(adm.mask(free), gain, -np.inf)
        pos = int(np.argmax(gain))
        out[t] = pos
        free[pos] = False
        adm.add(pos)
        row = f(pos)
        dist += 1.0 - row
    if config.local_search and diversity > 0 and 1 < k < len(items):
        out = _swap_search(out, rel, f, w, diversity)
    return out


def _swap_search(
    out: np.ndarray, rel: np.ndarray, f: Any, w: np.ndarray, diversity: float
) -> np.ndarray:
    """Best-improvement swap local search for `maxsum` (see there): a copy of `out` (k
    positions), one chosen item replaced at a time while F(S) grows."""
    n, k = len(rel), len(out)
    out = out.copy()
    rows = np.stack([f(int(p)) for p in out])  # (k, n) similarities of the chosen items
    a_rel, a_div = 1.0 - diversity, diversity / (k - 1)
    chosen = np.zeros(n, bool)
    for _ in range(LOCAL_SEARCH_SWAPS):
        chosen[:] = False
        chosen[out] = True
        cand = np.flatnonzero(~chosen)
        dss = 1.0 - rows[:, out]  # (k, k), zero diagonal
        np.fill_diagonal(dss, 0.0)
        rowsum = dss.sum(axis=1)
        total = rowsum.sum() / 2
        dcb = 1.0 - rows[:, cand]  # (k, m) distances of the candidates to the chosen
        dcb_sum = dcb.sum(axis=0)
        rc = rel[cand]
        current = a_rel * float(np.sort(rel[out])[::-1] @ w) + a_div * total
        best_gain, best = 1e-12 * max(1.0, abs(current)), None
        for a in range(k):
            q = np.sort(np.delete(rel[out], a))[::-1]  # the k - 1 kept, best first
            # Inserting b at position j: sum_{t<j} q_t w_t + rel_b w_j + sum_{t>=j} q_t w_{t+1}.
            head = np.concatenate([[0.0], np.cumsum(q * w[:-1])])
            tail = np.concatenate([np.cumsum((q * w[1:])[::-1])[::-1], [0.0]])
            j = np.searchsorted(-q, -rc, side="right")
            value = a_rel * (head[j] + rc * w[j] + tail[j]) + a_div * (
                total - rowsum[a] + dcb_sum - dcb[a]
            )
            b = int(np.argmax(value))
            if value[b] - current > best_gain:
                best_gain, best = value[b] - current, (a, int(cand[b]))
        if best is None:
            break
        a, b = best
        out[a] = b
        rows[a] = f(b)
    return out


def dpp(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    similarity: ItemSimilarity,
    config: RerankConfig,
    constraints: CategoryConstraints | None = None,
) -> np.ndarray:
    """Greedy DPP MAP with incremental Cholesky (Chen et al., NeurIPS 2018, Algorithm 1).

    Kernel L = diag(q) S diag(q), q = exp(alpha rel), alpha = (1 - d) / (2 d). The gain of
    adding item i to the chosen set Y is log det L_{Y+i} - log det L_Y = 2 alpha rel(i) +
    log s_i, where s_i = S_ii - |c_i|^2 is the residual of i's Cholesky row in S. Multiplied by
    d: the step picks argmax (1 - d) w_t rel(i) + d log s_i over admissible items (w_t as in
    `mmr`; 1 without `discount`, Chen et al.'s exact greedy), then updates
    e_i = (S_ji - <c_j, c_i>) / sqrt(s_j), c_i <- [c_i, e_i], s_i -= e_i^2 (O(N t) at step t).
    Factoring q out of the Cholesky keeps it exact for any alpha (no overflow of exp). Items
    whose residual is below `DPP_EPS` add nothing new; when only such items are left, the
    remaining slots go by relevance. d = 0 is relevance order.
    """
    if config.diversity == 0:
        return top_k_constrained(items, scores, k, constraints)
    items, scores, k, f, rel = _start(items, scores, k, similarity, config)
    w = _slot_weights(k, config.discount)
    diversity = config.diversity
    n = len(items)
    c = np.zeros((k, n))
    s = np.ones(n)  # S_ii = 1
    adm = _admission(constraints, items, k)
    free = np.ones(n, bool)
    out = np.empty(k, np.int64)
    for t in range(k):
        ok = adm.mask(free)
        new = ok & (s > DPP_EPS)
        base = (1.0 - diversity) * w[t] * rel
        if new.any():
            gain = np.full(n, -np.inf)
            gain[new] = base[new] + diversity * np.log(s[new])
        else:  # nothing new left in the pool: fill by relevance
            gain = np.where(ok, base, -np.inf)
        pos = int(np.argmax(gain))
        out[t] = pos
        free[pos] = False
        adm.add(pos)
        if t == k - 1 or s[pos] <= DPP_EPS:
            s[pos] = 0.0
            continue
        srow = f(pos)
        e = (srow - c[:t, pos] @ c[:t]) / np.sqrt(s[pos])
        c[t] = e
        s = s - e * e
        s[pos] = 0.0
    return out
