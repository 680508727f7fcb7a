"""Re-ranking of any model's candidate list: diversity (MMR, DPP), category constraints, filters.

A re-ranker takes a candidate pool (item indices with the model's relevance scores) and picks
k of them in order. Every selection here is greedy, one slot at a time:

- **Relevance** (`TopK`): the best remaining score.
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
1 / log2(t + 2) by default (`discount=True`): a likely item is worth more in an early slot, so
the first slots stay close to the model's order and the later ones diversify; with
`discount=False`, w_t = 1 and the methods are the published ones. The chosen set is then shown
by relevance (`order="relevance"`, default) or in the order chosen (`order="greedy"`).

`rel` is the model's score min-max scaled to [0, 1] over the pool (`relevance="scores"`,
default), so one diversity weight means the same for models whose scores live on different
scales; or, with `relevance="rank"`, rel = (r + 1)^(-1/2) for the item at model rank r (0-based)
in the pool, min-max scaled: only the model's order counts, and the head of the list weighs
more than under linear score scaling when the scores fall slowly. With `relevance="prob"`,
rel = softmax over the pool of score / T - b log(r + 1), not rescaled: calibrated probabilities
that the item is the user's next one, T (`temperature`) and b (`rank_power`) fitted on held-out
(validation) items by `calibrate`. With the DCG discount, sum_t w_t rel is then the list's
expected DCG, and a user whose probabilities are flat is diversified more than a confident one.
`maxsum(..., local_search=True)` improves the greedy list by single swaps (see `maxsum`).

Item similarity (`ItemSimilarity`) has sim(i, i) = 1: from categories (the cosine of the genre
indicator vectors, |A & B| / sqrt(|A| |B|), a positive semi-definite kernel as DPP needs; or
their Jaccard index |A & B| / |A | B|, also positive semi-definite, the similarity that
`lmrec.evaluation`'s diversity@k measures with) or from text vectors (cosine). Under cosine,
items without categories are similar to nothing but themselves; under Jaccard, two such items
are alike (1), as in the metric.

`CategoryConstraints` caps how many chosen items may share a category and asks for a minimum
of some categories; they restrict each greedy step to admissible items and are relaxed (first
the minimums, then the caps) only when the pool cannot meet them. `Filters` remove items
(by id or category) or keep only some, and drop items scoring below a threshold.

`Reranked(model, reranker, pool=...)` has the `rank(history, k, exclude_seen, candidates)` of a
`Recommender`: it asks the model for `pool` items and re-ranks each row, so the evaluation and
the service use it like any model.
"""

from __future__ import annotations

__all__ = [
    "DPP",
    "METHODS",
    "MMR",
    "Calibration",
    "CategoryConstraints",
    "Filters",
    "ItemSimilarity",
    "MaxSum",
    "Reranked",
    "Reranker",
    "TopK",
    "calibrate",
    "diversify",
    "dpp",
    "intra_list_diversity",
    "item_similarity",
    "make_reranker",
    "maxsum",
    "mmr",
]

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError

if TYPE_CHECKING:
    from lmrec.data import Dataset
    from lmrec.models.base import History, Query, Recommendations, Recommender

Method = Literal["mmr", "maxsum", "dpp", "none"]
Relevance = Literal["scores", "rank", "prob"]
RELEVANCES = ("scores", "rank", "prob")

#: Sparse item features (categories) are kept dense up to this many cells (float32).
DENSE_CELLS = 50_000_000

#: Below this Cholesky residual (1 - squared projection on the chosen items' span) an item adds
#: nothing new to a DPP selection; when only such items are left, relevance fills the list.
DPP_EPS = 1e-9


# -- item similarity ---------------------------------------------------------------------------


def _category_matrix(
    categories: Sequence[Sequence[str]],
) -> tuple[sp.csr_matrix, list[str]]:
    """(n_items, n_categories) binary CSR of category membership, and the category names."""
    names = sorted({c for cats in categories for c in cats})
    col = {c: j for j, c in enumerate(names)}
    rows, cols = [], []
    for i, cats in enumerate(categories):
        for c in set(cats):
            rows.append(i)
            cols.append(col[c])
    m = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)),
        shape=(len(categories), len(names)),
        dtype=np.float32,
    )
    return m, names


class ItemSimilarity:
    """sim(i, j) = F_i . F_j over unit feature rows F (n_items, d), or the Jaccard index of
    category sets (`measure="jaccard"`); sim(i, i) = 1 always.

    Build it `from_categories` (cosine or Jaccard of category sets), `from_vectors` (cosine
    of any vectors, e.g. a model's text or factor vectors) or `from_text` (encoded item texts).
    """

    def __init__(self, features: np.ndarray | sp.spmatrix, name: str = "features"):
        #: "cosine" (F_i . F_j of unit rows) or "jaccard" (set overlap; see `from_categories`).
        self.measure: Literal["cosine", "jaccard"] = "cosine"
        self._sets: np.ndarray | None = None
        self._sizes: np.ndarray | None = None
        if sp.issparse(features):
            f = sp.csr_matrix(features, dtype=np.float32)
            norms = np.sqrt(np.asarray(f.multiply(f).sum(axis=1)).ravel())
            f = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)) @ f
            self.features: np.ndarray | sp.csr_matrix = sp.csr_matrix(f, dtype=np.float32)
            if f.shape[0] * f.shape[1] <= DENSE_CELLS:  # dense rows are much faster to gather
                self.features = self.features.toarray()
        else:
            f = np.asarray(features, np.float32)
            if f.ndim != 2:
                raise LmrecError(f"item features must be a 2-d array, got shape {f.shape}")
            if not np.isfinite(f).all():
                raise LmrecError("item features hold NaN or infinite values")
            norms = np.linalg.norm(f, axis=1, keepdims=True)
            self.features = np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)
        self.name = name

    @property
    def n_items(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def from_categories(
        cls,
        categories: Sequence[Sequence[str]],
        measure: Literal["cosine", "jaccard"] = "cosine",
    ) -> ItemSimilarity:
        """Similarity of the items' category sets A, B.

        cosine: |A & B| / sqrt(|A| |B|). jaccard: |A & B| / |A | B| (the Tanimoto kernel,
        positive semi-definite on sets, so DPP can use it too: Gower, 1971; Bouchard et al.,
        "Proof of the positive definiteness of the Jaccard index matrix", 2013), the similarity
        behind `lmrec.evaluation`'s diversity@k, so max-sum then optimises the measured
        quantity. Two items without categories are similar (1) under jaccard, as there.
        """
        if measure not in ("cosine", "jaccard"):
            raise LmrecError(f"unknown category similarity {measure!r}; use cosine or jaccard")
        m, _ = _category_matrix(categories)
        sim = cls(m, name="categories" if measure == "cosine" else "categories-jaccard")
        if measure == "jaccard":
            sim.measure = "jaccard"
            sets = sim.features
            sim._sets = (
                (sets > 0).astype(np.float32)
                if not sp.issparse(sets)
                else sp.csr_matrix(sets > 0, dtype=np.float32)
            )
            sim._sizes = np.asarray(m.sum(axis=1), np.float64).ravel()
        return sim

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, name: str = "vectors") -> ItemSimilarity:
        """Cosine of the given item vectors (rows)."""
        return cls(np.asarray(vectors, np.float32), name=name)

    @classmethod
    def from_text(
        cls, dataset: Dataset, encoder: str = "minilm", template: str | None = None
    ) -> ItemSimilarity:
        """Cosine of the items' text vectors (title, description, categories) from `encoder`."""
        from lmrec.text import encode_cached, item_texts, load_encoder

        enc = load_encoder(encoder)
        texts = item_texts(dataset, template=template)
        if hasattr(enc, "fit") and not getattr(enc, "fitted", True):
            enc.fit(texts)
        return cls(encode_cached(enc, texts), name="text")

    def vectors(self, items: np.ndarray) -> np.ndarray:
        """Dense unit feature rows (N, d) of these items."""
        f = self.features[np.asarray(items, np.int64)]
        return f.toarray() if sp.issparse(f) else np.asarray(f)

    def matrix(self, items: np.ndarray) -> np.ndarray:
        """(N, N) similarities among these items (diagonal 1)."""
        row = self.rows(items)
        s = np.stack([row(p) for p in range(len(items))]) if len(items) else np.zeros((0, 0))
        np.fill_diagonal(s, 1.0)
        return s

    def rows(self, items: np.ndarray) -> Any:
        """A function pos -> (N,) float64 similarities of pool item `pos` to all of `items`
        (entry `pos` is 1): what the greedy re-rankers use."""
        items = np.asarray(items, np.int64)
        if self.measure == "jaccard":
            g = self._sets[items]  # type: ignore[index]
            g = (g.toarray() if sp.issparse(g) else np.asarray(g)).astype(np.float64)
            sz = self._sizes[items]  # type: ignore[index]

            def jaccard_row(pos: int) -> np.ndarray:
                inter = g @ g[pos]
                den = sz + sz[pos] - inter
                r = np.where(den > 0, inter / np.where(den > 0, den, 1.0), 1.0)
                r[pos] = 1.0
                return r

            return jaccard_row
        f = self.vectors(items).astype(np.float64)

        def cosine_row(pos: int) -> np.ndarray:
            r = f @ f[pos]
            r[pos] = 1.0
            return r

        return cosine_row


def _check_similarity(similarity: ItemSimilarity | None, items: np.ndarray) -> ItemSimilarity:
    if similarity is None:
        raise LmrecError("diversity re-ranking needs an item similarity (categories or text)")
    if len(items) and (items.min() < 0 or items.max() >= similarity.n_items):
        raise LmrecError(f"candidate item index out of the similarity's {similarity.n_items} items")
    return similarity


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

    def start(self, items: np.ndarray, k: int) -> _Admission:
        g = self._matrix[np.asarray(items, np.int64)].toarray() > 0  # type: ignore[attr-defined]
        return _Admission(g, self.max_per_category, self._need, k)  # type: ignore[attr-defined]


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

    def mask(self, free: np.ndarray) -> np.ndarray:
        """Admissible among `free` (not yet chosen) positions; relaxed if nothing is."""
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
    diversity: float,
    relevance: Relevance = "scores",
    temperature: float = 1.0,
    rank_power: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, int, Any, np.ndarray]:
    items, scores, k = _check(items, scores, k)
    if not 0 <= diversity <= 1:
        raise LmrecError(f"diversity must be in [0, 1], got {diversity}")
    f = _check_similarity(similarity, items).rows(items)
    # Ties: higher relevance, then earlier position (the model's own order).
    rel = _relevance(scores, relevance, temperature, rank_power) + 1e-12 * (
        len(items) - np.arange(len(items))
    )
    return items, scores, k, f, rel


def mmr(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    similarity: ItemSimilarity,
    diversity: float,
    constraints: CategoryConstraints | None = None,
    *,
    discount: bool = True,
    relevance: Relevance = "scores",
    temperature: float = 1.0,
    rank_power: float = 0.0,
) -> np.ndarray:
    """Maximal marginal relevance: positions (into `items`) of k items, in the chosen order.

    Step t picks argmax_i (1 - d) w_t rel(i) - d max_{j in S} sim(i, j) over the admissible
    items; rel = min-max scaled scores, w_t = 1 / log2(t + 2) with `discount` (a likely item is
    worth more in an early slot, as in DCG), else 1 (Carbonell & Goldstein's MMR).
    `relevance`: "scores" or "rank" (see the module docstring).
    """
    items, scores, k, f, rel = _start(
        items, scores, k, similarity, diversity, relevance, temperature, rank_power
    )
    w = _slot_weights(k, discount)
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
    diversity: float,
    constraints: CategoryConstraints | None = None,
    *,
    discount: bool = True,
    relevance: Relevance = "scores",
    temperature: float = 1.0,
    rank_power: float = 0.0,
    local_search: bool = False,
) -> np.ndarray:
    """Max-sum diversification, greedy (Gollapudi & Sharma, WWW 2009): positions of k items.

    Step t picks argmax_i (1 - d) w_t rel(i) + d / (k - 1) sum_{j in S} (1 - sim(i, j)): the
    relevance of the slot plus the item's share of the list's intra-list diversity (the mean
    pairwise distance). w_t as in `mmr`.

    local_search: then, while it improves the list's value
    F(S) = (1 - d) sum_t w_t rel_(t) + d / (k - 1) sum_{pairs in S} (1 - sim), with rel_(t) the
    t-th largest relevance in S (the list shown in relevance order), replace the one chosen
    item by the one pool item that improves F most (best-improvement swaps, at most
    `LOCAL_SEARCH_SWAPS`). With relevance="prob" and the discount, the first term is (1 - d)
    times the expected DCG@k of the list under the calibrated probabilities. Not with category
    constraints.
    """
    if local_search and constraints is not None:
        raise LmrecError("max-sum local search does not support category constraints")
    items, scores, k, f, rel = _start(
        items, scores, k, similarity, diversity, relevance, temperature, rank_power
    )
    w = _slot_weights(k, discount)
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
    if local_search and diversity > 0 and 1 < k < len(items):
        out = _swap_search(out, rel, f, w, diversity)
    return out


#: The most improving swaps `maxsum(local_search=True)` makes per list.
LOCAL_SEARCH_SWAPS = 100


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
    diversity: float,
    constraints: CategoryConstraints | None = None,
    *,
    discount: bool = True,
    relevance: Relevance = "scores",
    temperature: float = 1.0,
    rank_power: float = 0.0,
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
    if diversity == 0:
        return top_k_constrained(items, scores, k, constraints)
    items, scores, k, f, rel = _start(
        items, scores, k, similarity, diversity, relevance, temperature, rank_power
    )
    w = _slot_weights(k, discount)
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


# -- re-rankers --------------------------------------------------------------------------------


class Reranker:
    """Picks k of a candidate pool: `select(items, scores, k)` -> positions into `items`.

    order: "relevance" (default) shows the chosen items by the model's score, best first
    (the set is chosen for diversity, the order for relevance: intra-list diversity at k is
    unchanged and a likely item is never shown below a less likely one); "greedy" keeps the
    order in which they were chosen.
    """

    name = "none"

    def __init__(
        self,
        constraints: CategoryConstraints | None = None,
        order: Literal["relevance", "greedy"] = "relevance",
    ):
        if order not in ("relevance", "greedy"):
            raise LmrecError(f"order must be 'relevance' or 'greedy', got {order!r}")
        self.constraints = constraints
        self.order = order

    def _choose(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        return top_k_constrained(items, scores, k, self.constraints)

    def select(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        pos = self._choose(items, scores, k)
        if self.order == "relevance" and len(pos) > 1:
            s = np.asarray(scores, np.float64)[pos]
            pos = pos[np.lexsort((pos, -s))]
        return pos

    def __call__(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """The chosen item indices (not positions), in order."""
        items = np.asarray(items, np.int64)
        return items[self.select(items, scores, k)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: Relevance order (under the category constraints, if any).
TopK = Reranker


class _Diverse(Reranker):
    _fn: Any = None

    def __init__(
        self,
        similarity: ItemSimilarity,
        diversity: float = 0.3,
        constraints: CategoryConstraints | None = None,
        *,
        discount: bool = True,
        order: Literal["relevance", "greedy"] = "relevance",
        relevance: Relevance = "scores",
        temperature: float = 1.0,
        rank_power: float = 0.0,
        local_search: bool = False,
    ):
        super().__init__(constraints, order)
        if relevance not in RELEVANCES:
            raise LmrecError(f"unknown relevance {relevance!r}; use scores, rank or prob")
        _check_prob_params(temperature, rank_power)
        if local_search and type(self) is not MaxSum:
            raise LmrecError(f"local search is for maxsum only, not {self.name}")
        if local_search and constraints is not None:
            raise LmrecError("max-sum local search does not support category constraints")
        self.relevance: Relevance = relevance
        self.temperature = float(temperature)
        self.rank_power = float(rank_power)
        self.local_search = bool(local_search)
        if not 0 <= diversity <= 1:
            raise LmrecError(f"diversity must be in [0, 1], got {diversity}")
        self.similarity = similarity
        self.diversity = float(diversity)
        self.discount = discount

    def _choose(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        fn = type(self)._fn
        return fn(
            items,
            scores,
            k,
            self.similarity,
            self.diversity,
            self.constraints,
            discount=self.discount,
            relevance=self.relevance,
            temperature=self.temperature,
            rank_power=self.rank_power,
            **({"local_search": True} if self.local_search else {}),
        )

    def __repr__(self) -> str:
        prob = (
            f", temperature={self.temperature:g}, rank_power={self.rank_power:g}"
            if self.relevance == "prob"
            else ""
        )
        ls = ", local_search=True" if self.local_search else ""
        return (
            f"{type(self).__name__}(diversity={self.diversity}, "
            f"similarity={self.similarity.name}, discount={self.discount}, "
            f"relevance={self.relevance}{prob}{ls})"
        )


class MMR(_Diverse):
    """Maximal marginal relevance with diversity weight d (see `mmr`)."""

    name = "mmr"
    _fn = staticmethod(mmr)


class MaxSum(_Diverse):
    """Greedy max-sum diversification with diversity weight d (see `maxsum`)."""

    name = "maxsum"
    _fn = staticmethod(maxsum)


class DPP(_Diverse):
    """Greedy DPP MAP with diversity weight d (see `dpp`)."""

    name = "dpp"
    _fn = staticmethod(dpp)


METHODS: dict[str, type[_Diverse]] = {"mmr": MMR, "maxsum": MaxSum, "dpp": DPP}


def make_reranker(
    method: Method,
    diversity: float = 0.0,
    similarity: ItemSimilarity | None = None,
    constraints: CategoryConstraints | None = None,
    *,
    discount: bool = True,
    order: Literal["relevance", "greedy"] = "relevance",
    relevance: Relevance = "scores",
    temperature: float = 1.0,
    rank_power: float = 0.0,
    local_search: bool = False,
) -> Reranker:
    """A re-ranker by name: 'mmr', 'maxsum', 'dpp' or 'none' (relevance, constraints only).

    relevance "prob" uses `temperature` and `rank_power` (fit them with `calibrate`);
    `local_search` is for maxsum only."""
    if local_search and method != "maxsum":
        raise LmrecError(f"local search is for maxsum only, not {method!r}")
    if method != "none" and method not in METHODS:
        raise LmrecError(f"unknown re-ranking method {method!r}; use mmr, maxsum, dpp or none")
    if not 0 <= diversity <= 1:
        raise LmrecError(f"diversity must be in [0, 1], got {diversity}")
    if method == "none" or diversity == 0:
        return Reranker(constraints, order)
    if similarity is None:
        raise LmrecError(f"{method} re-ranking needs an item similarity (categories or text)")
    return METHODS[method](
        similarity,
        diversity,
        constraints,
        discount=discount,
        order=order,
        relevance=relevance,
        temperature=temperature,
        rank_power=rank_power,
        local_search=local_search,
    )


# -- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Business rules applied before ranking.

    exclude_items / include_items: item ids never to recommend / the only ones allowed.
    exclude_categories / include_categories: items carrying any of these categories are
    removed / only items carrying at least one of them are kept.
    min_score: items the model scores below this are dropped (lists may come out shorter).
    """

    exclude_items: Sequence[str] = ()
    include_items: Sequence[str] | None = None
    exclude_categories: Sequence[str] = ()
    include_categories: Sequence[str] | None = None
    min_score: float | None = None

    @property
    def empty(self) -> bool:
        return (
            not self.exclude_items
            and self.include_items is None
            and not self.exclude_categories
            and self.include_categories is None
            and self.min_score is None
        )

    def mask(self, item_ids: Any, categories: Sequence[Sequence[str]] | None) -> np.ndarray:
        """Boolean mask over the catalogue (a `Vocabulary` of item ids) of the allowed items."""
        n = len(item_ids)
        allowed = np.ones(n, bool)

        def idx(ids: Sequence[str], what: str) -> np.ndarray:
            ix = item_ids.indices(list(ids))
            unknown = [i for i, x in zip(ids, ix, strict=True) if x < 0]
            if unknown:
                raise LmrecError(f"unknown item ids in {what}: {', '.join(map(str, unknown))}")
            return ix

        if self.exclude_items:
            allowed[idx(self.exclude_items, "exclude_items")] = False
        if self.include_items is not None:
            keep = np.zeros(n, bool)
            keep[idx(self.include_items, "include_items")] = True
            allowed &= keep
        if self.exclude_categories or self.include_categories is not None:
            if categories is None:
                raise LmrecError("category filters need item categories (the model has none)")
            m, names = _category_matrix(categories)
            col = {c: j for j, c in enumerate(names)}

            def cols(cats: Sequence[str], what: str) -> list[int]:
                unknown = [c for c in cats if c not in col]
                if unknown:
                    raise LmrecError(
                        f"unknown categories in {what}: {', '.join(unknown)}; known: "
                        f"{', '.join(names[:30])}{' ...' if len(names) > 30 else ''}"
                    )
                return [col[c] for c in cats]

            if self.exclude_categories:
                c = cols(self.exclude_categories, "exclude_categories")
                allowed &= np.asarray(m[:, c].sum(axis=1)).ravel() == 0
            if self.include_categories is not None:
                c = cols(self.include_categories, "include_categories")
                allowed &= np.asarray(m[:, c].sum(axis=1)).ravel() > 0
        return allowed


# -- a model with re-ranking -------------------------------------------------------------------


class Reranked:
    """A fitted model whose lists are filtered and re-ranked; answers like a `Recommender`.

    `rank` asks the model for its top `pool` items (under the filters' mask and `candidates`),
    drops items below `filters.min_score`, and lets `reranker` choose k of them. The scores
    returned are the model's own, in the re-ranked order.
    """

    def __init__(
        self,
        model: Recommender,
        reranker: Reranker | None = None,
        *,
        pool: int = 100,
        filters: Filters | None = None,
        categories: Sequence[Sequence[str]] | None = None,
    ):
        if pool < 1:
            raise LmrecError(f"pool must be at least 1, got {pool}")
        model._check_fitted()
        self.model = model
        self.reranker = reranker or TopK()
        self.pool = int(pool)
        self.filters = filters or Filters()
        if categories is None and model.history is not None:
            categories = model.history.item_features.categories
        self.categories = categories
        self._mask = (
            None
            if self.filters.empty or self._only_min_score()
            else self.filters.mask(model.items, categories)
        )

    def _only_min_score(self) -> bool:
        return Filters(min_score=self.filters.min_score) == self.filters

    # The parts of the model that callers read.
    @property
    def name(self) -> str:
        return self.model.name

    @property
    def items(self) -> Any:
        return self.model.items

    @property
    def users(self) -> Any:
        return self.model.users

    @property
    def history(self) -> Dataset | None:
        return self.model.history

    @property
    def popularity(self) -> np.ndarray | None:
        return self.model.popularity

    @property
    def uses_side_information(self) -> bool:
        return bool(getattr(self.model, "uses_side_information", False))

    def _check_fitted(self) -> None:
        self.model._check_fitted()

    def history_of(self, queries: Sequence[Query]) -> History:
        return self.model.history_of(queries)

    def score(self, history: History) -> np.ndarray:
        return self.model.score(history)

    def __repr__(self) -> str:
        return f"Reranked({self.model!r}, {self.reranker!r}, pool={self.pool})"

    def rank(
        self,
        history: History,
        k: int,
        *,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Top-k (indices, scores, fallback per row) after filtering and re-ranking."""
        mask = self._mask
        if candidates is not None:
            mask = candidates if mask is None else (mask & candidates)
        idx, val, used = self.model.rank(
            history, max(self.pool, k), exclude_seen=exclude_seen, candidates=mask
        )
        b = len(idx)
        k_out = min(k, idx.shape[1])
        out_idx = np.full((b, k_out), -1, np.int64)
        out_val = np.full((b, k_out), -np.inf, np.float32)
        floor = self.filters.min_score
        for r in range(b):
            ok = idx[r] >= 0
            if floor is not None:
                ok &= val[r] >= floor
            items, scores = idx[r][ok], val[r][ok]
            if len(items) == 0:
                continue
            pos = self.reranker.select(items, scores, k_out)
            out_idx[r, : len(pos)] = items[pos]
            out_val[r, : len(pos)] = scores[pos]
        return out_idx, out_val, used

    def recommend_many(
        self,
        queries: Sequence[Query | str],
        n: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
        batch_size: int = 512,
    ) -> list[Recommendations]:
        """Like `Recommender.recommend_many`, with this object's `rank`."""
        from lmrec.models.base import Recommender

        # The base implementation needs only items, history_of, rank and _check_fitted.
        return Recommender.recommend_many(
            self,  # type: ignore[arg-type]
            queries,
            n,
            exclude_seen=exclude_seen,
            candidates=candidates,
            batch_size=batch_size,
        )

    def recommend(
        self,
        query: Query | str,
        n: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
    ) -> Recommendations:
        return self.recommend_many([query], n, exclude_seen=exclude_seen, candidates=candidates)[0]


def item_similarity(
    model: Recommender, source: Literal["categories", "jaccard", "text"] = "categories"
) -> ItemSimilarity:
    """The similarity of a fitted model's items, from their categories (cosine, or "jaccard":
    the Jaccard index of the category sets) or text vectors (the model's own text vectors when
    it has them, else the default encoder over item texts)."""
    if source in ("categories", "jaccard"):
        if model.history is None:
            raise LmrecError("the model carries no item data: categories are unknown")
        cats = model.history.item_features.categories
        if not any(cats):
            raise LmrecError(
                "no item has categories: use similarity 'text', or import items with categories"
            )
        return ItemSimilarity.from_categories(cats, "jaccard" if source == "jaccard" else "cosine")
    if source == "text":
        vectors = getattr(model, "item_vectors", None)
        if vectors is not None:
            return ItemSimilarity.from_vectors(vectors, name="text")
        if model.history is None:
            raise LmrecError("the model carries no item data: texts are unknown")
        return ItemSimilarity.from_text(model.history)
    raise LmrecError(f"unknown similarity source {source!r}; use categories, jaccard or text")


def diversify(
    model: Recommender,
    method: Method = "mmr",
    diversity: float = 0.3,
    *,
    similarity: ItemSimilarity | Literal["categories", "jaccard", "text"] = "categories",
    pool: int = 100,
    max_per_category: int | None = None,
    min_per_category: Mapping[str, int] | None = None,
    filters: Filters | None = None,
    discount: bool = True,
    order: Literal["relevance", "greedy"] = "relevance",
    relevance: Relevance = "scores",
    temperature: float = 1.0,
    rank_power: float = 0.0,
    local_search: bool = False,
) -> Reranked:
    """`model` wrapped with a re-ranker built from names: the one-call entry point.

    For relevance="prob", pass the `Calibration` fitted by `calibrate` as
    `temperature=cal.temperature, rank_power=cal.rank_power` (or `**cal.params()`)."""
    needs_sim = method in METHODS and diversity > 0
    sim = None
    if needs_sim:
        sim = (
            similarity
            if isinstance(similarity, ItemSimilarity)
            else item_similarity(model, similarity)
        )
    constraints = None
    if max_per_category is not None or min_per_category:
        if model.history is None:
            raise LmrecError("category constraints need item categories (the model has none)")
        constraints = CategoryConstraints(
            model.history.item_features.categories, max_per_category, dict(min_per_category or {})
        )
    return Reranked(
        model,
        make_reranker(
            method,
            diversity,
            sim,
            constraints,
            discount=discount,
            order=order,
            relevance=relevance,
            temperature=temperature,
            rank_power=rank_power,
            local_search=local_search,
        ),
        pool=pool,
        filters=filters,
    )


# -- calibrated relevance ----------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """The fitted relevance="prob" parameters and how the fit went (see `calibrate`)."""

    temperature: float
    rank_power: float
    pool: int
    #: held-out items whose user's pool contains them (the fit uses these) and all of them.
    targets_in_pool: int
    targets: int
    #: mean negative log-likelihood of the held-out items under the fitted softmax, and under
    #: the uniform one over the pool (a reference).
    nll: float
    nll_uniform: float

    def params(self) -> dict[str, float]:
        """`temperature` and `rank_power`, as keyword arguments of `diversify`."""
        return {"temperature": self.temperature, "rank_power": self.rank_power}


def calibrate(
    model: Recommender,
    history: Dataset,
    heldout: Dataset,
    pool: int = 100,
    *,
    fit_rank: bool = True,
    batch_size: int = 512,
) -> Calibration:
    """Fit relevance="prob": P(item i is the user's next item | it is in the pool) =
    softmax over the pool of score_i / temperature - rank_power log(r_i + 1), r_i the model's
    rank (0-based) of i in the pool, by maximum likelihood of the `heldout` items (e.g. the
    validation part of a split) given `history` (what the model saw, e.g. split.train).

    Only held-out items that are in their user's pool count (the conditional likelihood);
    with `fit_rank=False`, rank_power = 0 (a temperature alone). The likelihood is convex in
    (1 / temperature, rank_power). Fit on validation data, never on the test part.
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    from lmrec.models.base import History

    if pool < 2:
        raise LmrecError(f"calibration needs a pool of at least 2 items, got {pool}")
    model._check_fitted()
    if (history.n_users, history.n_items) != (heldout.n_users, heldout.n_items):
        raise LmrecError(
            f"history ({history.n_users} users, {history.n_items} items) and held-out data "
            f"({heldout.n_users} users, {heldout.n_items} items) are not over the same "
            "vocabularies: pass two parts of one split"
        )
    if len(model.items) != history.n_items:
        raise LmrecError(
            f"the model knows {len(model.items)} items but the data has {history.n_items}: "
            "calibrate with the data the model was fitted on (the same split)"
        )
    held = heldout.matrix().tocsr()
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    if len(users) == 0:
        raise LmrecError("the held-out data has no interactions to calibrate on")
    feats, tpos = [], []  # per pool row with targets: (scores, log(rank + 1)), target positions
    n_targets = 0
    for b0 in range(0, len(users), batch_size):
        ub = users[b0 : b0 + batch_size]
        idx, val, _ = model.rank(History.from_dataset(history, ub), pool)
        for r, u in enumerate(ub):
            ok = (idx[r] >= 0) & np.isfinite(val[r])
            items, sc = idx[r][ok], np.asarray(val[r][ok], np.float64)
            targets = held.indices[held.indptr[u] : held.indptr[u + 1]]
            n_targets += len(targets)
            hit = np.flatnonzero(np.isin(items, targets))
            if len(hit) and len(items) > 1:
                feats.append((sc, np.log1p(_ranks(sc))))
                tpos.append(hit)
    n_in = int(sum(len(h) for h in tpos))
    if n_in == 0:
        raise LmrecError(
            f"none of the {n_targets} held-out items is in its user's top {pool}: use a larger pool"
        )
    # Rows padded to the pool size: scores X, log ranks LR, validity V, target counts C.
    m = max(len(f[0]) for f in feats)
    x = np.zeros((len(feats), m))
    lr = np.zeros((len(feats), m))
    valid = np.zeros((len(feats), m), bool)
    cnt = np.zeros((len(feats), m))
    for r, ((sc, lrk), hit) in enumerate(zip(feats, tpos, strict=True)):
        x[r, : len(sc)], lr[r, : len(sc)], valid[r, : len(sc)] = sc, lrk, True
        cnt[r, hit] = 1.0
    scale = float(x[valid].std()) or 1.0  # fit 1 / temperature in units of the scores' spread
    x /= scale
    n_row = cnt.sum(axis=1)

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = theta[0], (theta[1] if fit_rank else 0.0)
        z = np.where(valid, a * x - b * lr, -np.inf)
        lse = logsumexp(z, axis=1)
        p = np.exp(z - lse[:, None])
        total = -float((cnt * np.where(valid, z, 0.0)).sum() - n_row @ lse)
        ga = -float((cnt * x).sum() - n_row @ (p * x).sum(axis=1))
        gb = float((cnt * lr).sum() - n_row @ (p * lr).sum(axis=1)) if fit_rank else 0.0
        return total / n_in, np.array([ga, gb]) / n_in

    res = minimize(
        nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(1e-6, None), (None, None)]
    )
    a, b = float(res.x[0]), float(res.x[1]) if fit_rank else 0.0
    uniform = float(n_row @ np.log(valid.sum(axis=1)) / n_in)
    return Calibration(
        temperature=scale / a,
        rank_power=b,
        pool=int(pool),
        targets_in_pool=n_in,
        targets=int(n_targets),
        nll=float(res.fun),
        nll_uniform=uniform,
    )


# -- measuring diversity -----------------------------------------------------------------------


def intra_list_diversity(
    lists: np.ndarray,
    categories: Sequence[Sequence[str]],
    measure: Literal["jaccard", "cosine"] = "jaccard",
) -> np.ndarray:
    """Per list: the mean over pairs of distinct items of 1 - sim(genres_i, genres_j).

    lists: (B, k) item indices (-1 = padding, ignored). jaccard: sim = |A & B| / |A | B|;
    cosine: |A & B| / sqrt(|A| |B|); two items without categories are at distance 0 (as in
    `lmrec.evaluation`'s diversity@k), one without and one with at distance 1. Lists with
    fewer than two items get NaN (Ziegler et al., WWW 2005, intra-list similarity).
    """
    m, _ = _category_matrix(categories)
    lists = np.asarray(lists, np.int64)
    out = np.full(len(lists), np.nan)
    sizes = np.asarray(m.sum(axis=1)).ravel()
    for r, row in enumerate(lists):
        row = row[row >= 0]
        if len(row) < 2:
            continue
        g = m[row].toarray()
        inter = g @ g.T
        s = sizes[row]
        if measure == "jaccard":
            den = s[:, None] + s[None, :] - inter
        elif measure == "cosine":
            den = np.sqrt(s[:, None] * s[None, :])
        else:
            raise LmrecError(f"unknown diversity measure {measure!r}; use jaccard or cosine")
        both_empty = (s[:, None] == 0) & (s[None, :] == 0)
        sim = np.where(den > 0, inter / np.where(den > 0, den, 1.0), np.where(both_empty, 1, 0))
        iu = np.triu_indices(len(row), 1)
        out[r] = float(np.mean(1.0 - sim[iu]))
    return out
