"""Content-based filtering with TF-IDF item vectors (scikit-learn's TfidfVectorizer).

Each item's text is its title, categories (one token each), description and, optionally, its
attribute values (one token each). A history's profile is the weighted mean of its items'
L2-normalised TF-IDF vectors, plus the vector of the query's free text; items score by their
dot product with the profile. New items need only text; new users only a history or a text.
"""

from __future__ import annotations

__all__ = ["TfidfContent", "TfidfContentConfig", "item_text"]

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset
from lmrec.data.dataset import ItemFeatures
from lmrec.models.base import (
    History,
    ModelConfig,
    Recommender,
    recency_weighted,
    sparse_from_state,
    sparse_state,
)
from lmrec.text.encoders import word_tokens

_NON_WORD = re.compile(r"\W+")


def _token(prefix: str, value: Any) -> str:
    return prefix + _NON_WORD.sub("_", str(value).strip().lower()).strip("_")


def item_text(features: ItemFeatures, i: int, *, attributes: bool = True) -> str:
    """One item's document: title, category tokens (cat_x), description, attribute tokens."""
    parts = [features.title[i] or ""]
    parts += [_token("cat_", c) for c in features.categories[i] if str(c).strip()]
    parts.append(features.description[i] or "")
    if attributes:
        for k, v in sorted(features.attributes[i].items()):
            if v is not None and str(v).strip():
                parts.append(_token(f"attr_{_token('', k)}_", v))
    return " ".join(p for p in parts if p)


class TfidfContentConfig(ModelConfig):
    min_df: int = Field(1, ge=1)
    """Ignore terms that occur in fewer items."""
    max_df: float = Field(1.0, gt=0, le=1)
    """Ignore terms that occur in more than this fraction of items."""
    max_features: int | None = Field(None, ge=1)
    """Keep only this many most frequent terms (None: all)."""
    ngram_max: int = Field(1, ge=1, le=3)
    """Use word n-grams up to this length."""
    sublinear_tf: bool = True
    """Use 1 + log(tf) instead of raw term counts."""
    attributes: bool = True
    """Add item attribute values (e.g. release_year) as tokens."""
    stop_words: bool = True
    """Drop English stop words."""
    half_life: float | None = Field(5.0, gt=0)
    """Weigh history items by 0.5 ** (steps back from the newest / half_life); None: equal."""


class TfidfContent(Recommender):
    """TF-IDF content-based recommender: profile = weighted mean of the history's item vectors."""

    name = "tfidf"
    config_class = TfidfContentConfig
    config: TfidfContentConfig
    uses_side_information = True

    def _vectorizer(self, vocabulary: list[str] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.config
        return TfidfVectorizer(
            min_df=c.min_df if vocabulary is None else 1,
            max_df=c.max_df if vocabulary is None else 1.0,
            max_features=c.max_features if vocabulary is None else None,
            ngram_range=(1, c.ngram_max),
            sublinear_tf=c.sublinear_tf,
            stop_words="english" if c.stop_words else None,
            tokenizer=word_tokens,  # CJK characters one by one; else sklearn's default tokens
            token_pattern=None,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def _fit(self, dataset: Dataset) -> None:
        docs = [
            item_text(dataset.item_features, i, attributes=self.config.attributes)
            for i in range(dataset.n_items)
        ]
        vec = self._vectorizer()
        try:
            self.item_vectors = sp.csr_matrix(vec.fit_transform(docs), dtype=np.float32)
            self.terms = np.asarray(vec.get_feature_names_out(), dtype=str)
            self.idf = np.asarray(vec.idf_, np.float32)
        except ValueError:  # no item has any text: every item vector is empty
            self.item_vectors = sp.csr_matrix((dataset.n_items, 0), dtype=np.float32)
            self.terms = np.zeros(0, dtype=str)
            self.idf = np.zeros(0, np.float32)
        self._vec = None

    def _text_vectors(self, texts: list[str]) -> sp.csr_matrix:
        """TF-IDF vectors of free texts over the fitted vocabulary."""
        if len(self.terms) == 0:
            return sp.csr_matrix((len(texts), 0), dtype=np.float32)
        if self._vec is None:
            self._vec = self._vectorizer(self.terms.tolist())
            self._vec.idf_ = self.idf
        return sp.csr_matrix(self._vec.transform(texts), dtype=np.float32)

    def score(self, history: History) -> np.ndarray:
        h = recency_weighted(history, self.config.half_life)
        h = sp.csr_matrix(h, dtype=np.float32)
        h.data = np.abs(h.data)
        total = np.asarray(h.sum(axis=1)).ravel()
        total[total == 0] = 1.0
        profile = sp.diags(1.0 / total) @ h @ self.item_vectors
        texts = [(q.text or "") + " " + " ".join(q.tags) if q else "" for q in history.queries]
        if any(t.strip() for t in texts):
            profile = profile + self._text_vectors(texts)
        return np.asarray((profile @ self.item_vectors.T).toarray(), np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {**sparse_state("items", self.item_vectors), "terms": self.terms, "idf": self.idf}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.item_vectors = sparse_from_state(state, "items")
        self.terms = state["terms"]
        self.idf = state["idf"]
        self._vec = None
