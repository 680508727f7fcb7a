"""Re-rankers (`Reranker`, `MMR`, `MaxSum`, `DPP`, built by `make_reranker` from a
`RerankConfig`) and `Reranked`, a fitted model whose lists are filtered and re-ranked: it has
the `rank(history, k, exclude_seen, candidates)` of a `Recommender`, so the evaluation and the
service use it like any model. `diversify(model, config)` builds it in one call.
"""

from __future__ import annotations

__all__ = [
    "DPP",
    "METHODS",
    "MMR",
    "MaxSum",
    "Reranked",
    "Reranker",
    "TopK",
    "diversify",
    "make_reranker",
]

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.rerank.config import RerankConfig
from lmrec.rerank.greedy import CategoryConstraints, dpp, maxsum, mmr, top_k_constrained
from lmrec.rerank.similarity import ItemSimilarity, item_similarity

if TYPE_CHECKING:
    from lmrec.data import Dataset, Vocabulary
    from lmrec.models.base import History, Query, Recommendations, Recommender


class Reranker:
    """Picks k of a candidate pool: `select(items, scores, k)` -> positions into `items`.

    `config.order`: "relevance" (default) shows the chosen items by the model's score, best
    first (the set is chosen for diversity, the order for relevance: intra-list diversity at k
    is unchanged and a likely item is never shown below a less likely one); "greedy" keeps the
    order in which they were chosen.
    """

    name = "none"

    def __init__(
        self,
        constraints: CategoryConstraints | None = None,
        config: RerankConfig | None = None,
    ):
        self.config = config or RerankConfig()
        self.constraints = constraints
        self.order = self.config.order

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
        config: RerankConfig,
        constraints: CategoryConstraints | None = None,
    ):
        super().__init__(constraints, config)
        if config.local_search and type(self) is not MaxSum:
            raise LmrecError(f"local search is for maxsum only, not {self.name}")
        if config.local_search and constraints is not None:
            raise LmrecError("max-sum local search does not support category constraints")
        self.similarity = similarity
        self.diversity = config.diversity
        self.relevance = config.relevance

    def _choose(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        return type(self)._fn(items, scores, k, self.similarity, self.config, self.constraints)

    def __repr__(self) -> str:
        c = self.config
        prob = (
            f", temperature={c.temperature:g}, rank_power={c.rank_power:g}"
            if c.relevance == "prob"
            else ""
        )
        ls = ", local_search=True" if c.local_search else ""
        return (
            f"{type(self).__name__}(diversity={c.diversity}, "
            f"similarity={self.similarity.name}, discount={c.discount}, "
            f"relevance={c.relevance}{prob}{ls})"
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
    config: RerankConfig,
    similarity: ItemSimilarity | None = None,
    constraints: CategoryConstraints | None = None,
) -> Reranker:
    """The re-ranker `config.method` names: maxsum, mmr, dpp, or none (relevance order under
    the constraints); a diversity of 0 is relevance order too. Diversity needs `similarity`."""
    if not config.diversifies:
        return Reranker(constraints, config)
    if similarity is None:
        raise LmrecError(
            f"{config.method} re-ranking needs an item similarity (categories or text)"
        )
    return METHODS[config.method](similarity, config, constraints)


# -- a model with re-ranking -------------------------------------------------------------------


class Reranked:
    """A fitted model whose lists are filtered and re-ranked; answers like a `Recommender`.

    `rank` asks the model for its top `config.pool` items (under `config.filters`' mask and
    `candidates`), drops items below `filters.min_score`, and lets `reranker` choose k of them.
    The scores returned are the model's own, in the re-ranked order. `categories` (per item
    index) replace the model's own for the category filters.
    """

    def __init__(
        self,
        model: Recommender,
        reranker: Reranker | None = None,
        config: RerankConfig | None = None,
        *,
        categories: Sequence[Sequence[str]] | None = None,
    ):
        model.check_fitted()
        self.model = model
        self.config = config or RerankConfig()
        self.reranker = reranker or TopK(None, self.config)
        self.pool = self.config.pool
        self.filters = self.config.filters
        if categories is None and model.history is not None:
            categories = model.history.item_features.categories
        self.categories = categories
        self._mask = (
            None if self.filters.only_min_score else self.filters.mask(model.items, categories)
        )

    # The parts of the model that callers read.
    @property
    def name(self) -> str:
        return self.model.name

    @property
    def items(self) -> Vocabulary | None:
        return self.model.items

    @property
    def users(self) -> Vocabulary | None:
        return self.model.users

    @property
    def history(self) -> Dataset | None:
        return self.model.history

    @property
    def popularity(self) -> np.ndarray | None:
        return self.model.popularity

    @property
    def uses_side_information(self) -> bool:
        return bool(self.model.uses_side_information)

    def check_fitted(self) -> None:
        self.model.check_fitted()

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

        # The base implementation needs only what a `Ranker` has (items, history_of, rank,
        # check_fitted).
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


def diversify(
    model: Recommender,
    config: RerankConfig | None = None,
    *,
    similarity: ItemSimilarity | None = None,
    categories: Sequence[Sequence[str]] | None = None,
) -> Reranked:
    """`model` wrapped with the re-ranking, constraints and filters `config` describes: the
    one-call entry point of the CLI, the evaluation runner and the service.

    The item similarity is built from `config.similarity` (`item_similarity`) unless given
    (e.g. one computed once for many settings, or the service's); `categories` (per item
    index) replace the model's own for the similarity, constraints and filters. For
    relevance="prob", pass `config.replace(**calibrate(...).params())`."""
    config = config or RerankConfig()
    sim = None
    if config.diversifies:
        sim = similarity or item_similarity(model, config.similarity, categories=categories)
    constraints = None
    if config.constrained:
        if categories is None:
            if model.history is None:
                raise LmrecError("category constraints need item categories (the model has none)")
            categories = model.history.item_features.categories
        constraints = CategoryConstraints(
            categories,
            config.max_per_category,
            dict(config.min_per_category),
            fair_categories=config.fair_categories,
            fair_share=config.fair_share,
            fair_alpha=config.fair_alpha,
        )
    return Reranked(model, make_reranker(config, sim, constraints), config, categories=categories)
