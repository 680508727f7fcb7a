"""Business-rule filters (`Filters`, a field of `RerankConfig`): the mask of allowed items."""

from __future__ import annotations

__all__ = ["Filters", "allowed_items"]

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.rerank.config import Filters
from lmrec.rerank.similarity import _category_matrix


def allowed_items(
    filters: Filters, item_ids: Any, categories: Sequence[Sequence[str]] | None
) -> np.ndarray:
    """Boolean mask over the catalogue (a `Vocabulary` of item ids) of the items `filters`
    allow; `categories` per item index (needed by the category rules). Unknown ids or
    categories raise `LmrecError` naming them."""
    f = filters
    n = len(item_ids)
    allowed = np.ones(n, bool)

    def idx(ids: Sequence[str], what: str) -> np.ndarray:
        ix = item_ids.indices(list(ids))
        unknown = [i for i, x in zip(ids, ix, strict=True) if x < 0]
        if unknown:
            raise LmrecError(f"unknown item ids in {what}: {', '.join(map(str, unknown))}")
        return ix

    if f.exclude_items:
        allowed[idx(f.exclude_items, "exclude_items")] = False
    if f.include_items is not None:
        keep = np.zeros(n, bool)
        keep[idx(f.include_items, "include_items")] = True
        allowed &= keep
    if f.exclude_categories or f.include_categories is not None:
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

        if f.exclude_categories:
            c = cols(f.exclude_categories, "exclude_categories")
            allowed &= np.asarray(m[:, c].sum(axis=1)).ravel() == 0
        if f.include_categories is not None:
            c = cols(f.include_categories, "include_categories")
            allowed &= np.asarray(m[:, c].sum(axis=1)).ravel() > 0
    return allowed
