"""Item similarity for re-ranking: sim(i, i) = 1, from categories (cosine or Jaccard of the
category sets, both positive semi-definite kernels as DPP needs) or from vectors (cosine).

Under cosine, items without categories are similar to nothing but themselves; under Jaccard,
two such items are alike (1), as in `lmrec.evaluation.metrics.intra_list_diversity`.
"""

from __future__ import annotations

__all__ = ["DENSE_CELLS", "ItemSimilarity", "item_similarity"]

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError
from lmrec.rerank.config import SimilaritySource

if TYPE_CHECKING:
    from lmrec.data import Dataset
    from lmrec.models.base import Recommender

#: Sparse item features (categories) are kept dense up to this many cells (float32).
DENSE_CELLS = 50_000_000


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


def item_similarity(
    model: Recommender,
    source: SimilaritySource = "categories",
    *,
    categories: Sequence[Sequence[str]] | None = None,
) -> ItemSimilarity:
    """The similarity of a fitted model's items, from their categories (cosine, or "jaccard":
    the Jaccard index of the category sets) or text vectors (the model's own text vectors when
    it has them, else the default encoder over item texts). `categories` (per item index)
    replace the model's own, e.g. the service's live catalogue."""
    if source in ("categories", "jaccard"):
        if categories is None:
            if model.history is None:
                raise LmrecError("the model carries no item data: categories are unknown")
            categories = model.history.item_features.categories
        if not any(categories):
            raise LmrecError(
                "no item has categories: use similarity 'text', or import items with categories"
            )
        measure: Literal["cosine", "jaccard"] = "jaccard" if source == "jaccard" else "cosine"
        return ItemSimilarity.from_categories(categories, measure)
    if source == "text":
        vectors = getattr(model, "item_vectors", None)
        if vectors is not None:
            return ItemSimilarity.from_vectors(vectors, name="text")
        if model.history is None:
            raise LmrecError("the model carries no item data: texts are unknown")
        return ItemSimilarity.from_text(model.history)
    raise LmrecError(f"unknown similarity source {source!r}; use categories, jaccard or text")


def _check_similarity(similarity: ItemSimilarity | None, items: np.ndarray) -> ItemSimilarity:
    if similarity is None:
        raise LmrecError("diversity re-ranking needs an item similarity (categories or text)")
    if len(items) and (items.min() < 0 or items.max() >= similarity.n_items):
        raise LmrecError(f"candidate item index out of the similarity's {similarity.n_items} items")
    return similarity
