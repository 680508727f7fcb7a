"""`VectorIndex`: exact and approximate (HNSW, IVF) inner-product retrieval through FAISS."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.errors import LmrecError
from lmrec.service.index import VectorIndex


def clustered(n: int, d: int, seed: int = 0, unit: bool = False) -> np.ndarray:
    """Vectors around 50 centres with unequal norms (like MF item factors)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d))
    x = centres[rng.integers(50, size=n)] + 0.7 * rng.normal(size=(n, d))
    x *= rng.uniform(0.5, 2.0, size=(n, 1))
    if unit:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def brute(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ x.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(r)) / len(r) for g, r in zip(got, ref, strict=True)]))


def test_flat_is_exact_and_scores_are_inner_products() -> None:
    x = clustered(2000, 16)
    q = np.random.default_rng(1).normal(size=(20, 16)).astype(np.float32)
    idx = VectorIndex(x, kind="auto")
    assert idx.kind == "flat"
    got, scores = idx.search(q, 10)
    assert recall(got, brute(x, q, 10)) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, got, axis=1), rtol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_against_exact(kind: str) -> None:
    x = clustered(8000, 16)
    q = clustered(100, 16, seed=2)
    idx = VectorIndex(x, kind=kind, ef_construction=100, nprobe=100 if kind == "ivf" else None)
    got, scores = idx.search(q, 100)
    assert recall(got, brute(x, q, 100)) >= 0.95
    # Scores are the true inner products of what was returned (HNSW undoes the augmentation).
    np.testing.assert_allclose(
        scores, np.take_along_axis(q @ x.T, got, axis=1), rtol=1e-3, atol=1e-3
    )
    assert (np.diff(scores, axis=1) <= 1e-4).all()  # best first


def test_auto_picks_ivf_above_the_exact_limit() -> None:
    x = clustered(3000, 8, unit=True)
    idx = VectorIndex(x, exact_limit=1000)
    assert idx.kind == "ivf" and idx.index.nprobe == idx.index.nlist // 8


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_add_hide_and_exclude(kind: str) -> None:
    x = clustered(500, 8)
    idx = VectorIndex(x, [f"i{i}" for i in range(500)], kind=kind)
    q = x[:1] * 10
    top = idx.search(q, 5)[0][0]
    idx.hide([top[0]])
    assert top[0] not in idx.search(q, 5)[0][0]
    got = idx.search(q, 5, exclude=[top[1:3]])[0][0]
    assert not set(top[:3]) & set(got)
    idx.add(q / 5, ["new"])  # points the same way, longer than anything: the new best
    assert idx.ids[idx.search(q, 1)[0][0][0]] == "new"
    # Asking for more than there is pads with -1.
    small = VectorIndex(x[:3], kind=kind)
    got = small.search(q, 5)[0][0]
    assert sorted(got[:3].tolist()) == [0, 1, 2] and (got[3:] == -1).all()


def test_bad_input_is_refused() -> None:
    with pytest.raises(LmrecError, match="finite"):
        VectorIndex(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(LmrecError, match="2-d"):
        VectorIndex(np.ones(4, np.float32))
    with pytest.raises(LmrecError, match="unknown index kind"):
        VectorIndex(np.ones((4, 2), np.float32), kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(LmrecError, match="3 ids for 4 vectors"):
        VectorIndex(np.ones((4, 2), np.float32), ["a", "b", "c"])
