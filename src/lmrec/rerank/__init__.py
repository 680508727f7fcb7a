"""Re-ranking of any model's candidate list: diversity (MMR, max-sum, DPP), category
constraints, filters, calibrated relevance; one `RerankConfig` says how.

A re-ranker takes a candidate pool (item indices with the model's relevance scores) and picks
k of them in order, greedily, one slot at a time:

- `config`: `RerankConfig` (method, diversity, pool, similarity, relevance, constraints and
  `Filters`), the one validated configuration of the CLI, the evaluation runner and the service.
- `similarity`: `ItemSimilarity` from categories (cosine or Jaccard) or vectors (cosine), and
  `item_similarity(model, source)`.
- `greedy`: the kernels `mmr`, `maxsum` (with swap local search) and `dpp`, relevance scaling
  and `CategoryConstraints` (the formulas are in its docstring).
- `calibration`: `calibrate`, the fit of relevance="prob" on held-out items.
- `filters`: the mask of the items `Filters` allow.
- `wrappers`: the `Reranker` classes, `make_reranker(config, ...)`, `Reranked` (a model whose
  lists are re-ranked, with the `rank` of a `Recommender`) and `diversify(model, config)`.

Diversity of finished lists is measured by `lmrec.evaluation.metrics.intra_list_diversity`.
"""

from __future__ import annotations

from lmrec.rerank.calibration import Calibration, calibrate
from lmrec.rerank.config import METHOD_NAMES, RELEVANCES, SIMILARITIES, Filters, RerankConfig
from lmrec.rerank.greedy import (
    DPP_EPS,
    LOCAL_SEARCH_SWAPS,
    CategoryConstraints,
    dpp,
    maxsum,
    mmr,
    top_k_constrained,
)
from lmrec.rerank.similarity import DENSE_CELLS, ItemSimilarity, item_similarity
from lmrec.rerank.wrappers import (
    DPP,
    METHODS,
    MMR,
    MaxSum,
    Reranked,
    Reranker,
    TopK,
    diversify,
    make_reranker,
)

__all__ = [
    "DENSE_CELLS",
    "DPP",
    "DPP_EPS",
    "LOCAL_SEARCH_SWAPS",
    "METHODS",
    "METHOD_NAMES",
    "MMR",
    "RELEVANCES",
    "SIMILARITIES",
    "Calibration",
    "CategoryConstraints",
    "Filters",
    "ItemSimilarity",
    "MaxSum",
    "RerankConfig",
    "Reranked",
    "Reranker",
    "TopK",
    "calibrate",
    "diversify",
    "dpp",
    "item_similarity",
    "make_reranker",
    "maxsum",
    "mmr",
    "top_k_constrained",
]
