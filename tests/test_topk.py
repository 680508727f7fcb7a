"""top_k: the single ranking primitive, checked against a full sort."""

from __future__ import annotations

import sys
from unittest import mock

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.models import base
from lmrec.models.base import top_k


def _reference(scores: np.ndarray, k: int) -> np.ndarray:
    n = scores.shape[1]
    order = np.lexsort((np.broadcast_to(np.arange(n), scores.shape), -scores), axis=1)[:, :k]
    return np.where(np.isneginf(np.take_along_axis(scores, order, axis=1)), -1, order)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 80),
    st.integers(1, 60),
    st.integers(1, 65),
    st.integers(0, 2**32 - 1),
)
def test_matches_full_sort_with_ties_by_index(rows: int, n: int, k: int, seed: int) -> None:
    """Both ways of selecting the candidate columns (torch's top-k where torch is loaded,
    numpy's argpartition where not) give the full sort's answer."""
    import torch  # noqa: F401 - loaded: top_k selects with it

    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (rows, n)).astype(np.float32)  # many ties
    scores[scores == 0] = -np.inf
    with mock.patch.object(base, "TORCH_TOPK_CELLS", 1):
        with_torch = top_k(scores, k)
    with mock.patch.dict(sys.modules, {"torch": None}):
        without = top_k(scores, k)
    for idx, val in (with_torch, without):
        assert np.array_equal(idx, _reference(scores, min(k, n)))
        got = np.take_along_axis(scores, np.maximum(idx, 0), axis=1)
        assert np.array_equal(np.where(idx >= 0, got, -np.inf), val)


def test_top_k_is_a_prefix_of_a_deeper_ranking() -> None:
    scores = np.zeros((2, 100), np.float32)
    scores[1, 50:] = 1.0
    a, _ = top_k(scores, 10)
    b, _ = top_k(scores, 60)
    assert np.array_equal(a, b[:, :10])
    assert a[1].tolist() == list(range(50, 60))


def test_excluded_items_never_come_back() -> None:
    scores = np.arange(10, dtype=np.float32)[None, :].repeat(2, axis=0)
    exclude = sp.csr_matrix(np.eye(2, 10, 8) + np.eye(2, 10, 9))
    idx, _ = top_k(scores, 10, exclude)
    assert idx[0, :3].tolist() == [7, 6, 5] and 8 not in idx[0].tolist()
    assert idx[0, -1] == -1
