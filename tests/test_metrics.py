"""Metric functions: hand-computed cases, scikit-learn where the definitions agree, brute force
and Hypothesis properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

from lmrec.errors import LmrecError
from lmrec.evaluation import bootstrap_ci
from lmrec.evaluation import metrics as M

L2 = math.log2


def test_hand_computed_ranking_metrics() -> None:
    # User 0: relevant {a, b}; ranked list hits at ranks 2 and 4 (k = 5).
    # User 1: one relevant item at rank 1.  User 2: one relevant item, not in the top 5.
    hits = np.array(
        [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        dtype=bool,
    )
    n_rel = np.array([2, 1, 1])
    dcg0 = 1 / L2(3) + 1 / L2(5)
    idcg0 = 1 / L2(2) + 1 / L2(3)
    np.testing.assert_allclose(M.ndcg(hits, n_rel, 5), [dcg0 / idcg0, 1.0, 0.0])
    np.testing.assert_allclose(M.precision(hits, 5), [0.4, 0.2, 0.0])
    np.testing.assert_allclose(M.recall(hits, n_rel, 5), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(M.hit_rate(hits, 5), [1, 1, 0])
    np.testing.assert_allclose(M.mrr(hits, 5), [0.5, 1.0, 0.0])
    # AP@5 of user 0: (P@2 + P@4) / min(2, 5) = (1/2 + 2/4) / 2.
    np.testing.assert_allclose(M.map_at_k(hits, n_rel, 5), [0.5, 1.0, 0.0])
    np.testing.assert_allclose(M.f1(hits, n_rel, 5), [2 * 0.4 / 1.4, 2 * 0.2 / 1.2, 0.0])
    # Cut at k = 2: user 0 has one hit of two relevant items; IDCG over min(2, 2) ranks.
    np.testing.assert_allclose(M.ndcg(hits, n_rel, 2), [(1 / L2(3)) / idcg0, 1.0, 0.0])
    np.testing.assert_allclose(M.recall(hits, n_rel, 2), [0.5, 1.0, 0.0])
    np.testing.assert_allclose(M.map_at_k(hits, n_rel, 2), [0.25, 1.0, 0.0])
    # k beyond the list: the missing ranks are misses, precision divides by k.
    np.testing.assert_allclose(M.precision(hits, 10), [0.2, 0.1, 0.0])


def test_hits_matrix_and_padding() -> None:
    lists = np.array([[3, 1, -1], [0, 2, 4]])
    rel = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [1, 0, 0, 0, 1]], np.float32))
    np.testing.assert_array_equal(
        M.hits_matrix(lists, rel), [[False, True, False], [True, False, True]]
    )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(5, 40),
    st.integers(1, 12),
    st.integers(0, 2**31 - 1),
)
def test_ndcg_and_ap_agree_with_scikit_learn(n_users: int, n_items: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    scores = rng.random((n_users, n_items))  # distinct almost surely: no tie handling differences
    truth = rng.random((n_users, n_items)) < 0.2
    truth[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    order = np.argsort(-scores, axis=1)
    hits = np.take_along_axis(truth, order, axis=1)
    n_rel = truth.sum(axis=1)
    k = min(k, n_items)
    ours = M.ndcg(hits, n_rel, k)
    theirs = [ndcg_score(truth[u : u + 1], scores[u : u + 1], k=k) for u in range(n_users)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    # MAP@k with k = catalogue size is scikit-learn's average precision.
    full = M.map_at_k(hits, n_rel, n_items)
    ap = [average_precision_score(truth[u], scores[u]) for u in range(n_users)]
    np.testing.assert_allclose(full, ap, rtol=1e-9)
    # AUC from the ranks of the relevant items equals ROC AUC over the scores.
    ranks = [np.flatnonzero(h) + 1 for h in hits]
    mine = M.auc(ranks, np.full(n_users, n_items))
    for u in range(n_users):
        if 0 < truth[u].sum() < n_items:
            assert mine[u] == pytest.approx(roc_auc_score(truth[u], scores[u]))
        else:
            assert np.isnan(mine[u])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_ranking_metrics_are_bounded_and_perfect_ranking_scores_one(data) -> None:
    n_users = data.draw(st.integers(1, 5))
    k = data.draw(st.integers(1, 15))
    width = data.draw(st.integers(1, 20))
    hits = np.array(
        data.draw(
            st.lists(
                st.lists(st.booleans(), min_size=width, max_size=width),
                min_size=n_users,
                max_size=n_users,
            )
        ),
        dtype=bool,
    )
    extra = np.array(data.draw(st.lists(st.integers(0, 5), min_size=n_users, max_size=n_users)))
    n_rel = np.maximum(hits.sum(axis=1) + extra, 1)
    for vals in (
        M.ndcg(hits, n_rel, k),
        M.recall(hits, n_rel, k),
        M.precision(hits, k),
        M.hit_rate(hits, k),
        M.mrr(hits, k),
        M.map_at_k(hits, n_rel, k),
        M.f1(hits, n_rel, k),
    ):
        assert vals.shape == (n_users,)
        assert np.all((vals >= 0) & (vals <= 1 + 1e-12))
    # A perfect ranking: the relevant items fill the first ranks.
    perfect = np.arange(k)[None, :] < n_rel[:, None]
    np.testing.assert_allclose(M.ndcg(perfect, n_rel, k), 1.0)
    np.testing.assert_allclose(M.map_at_k(perfect, n_rel, k), 1.0)
    np.testing.assert_allclose(M.recall(perfect, n_rel, k), np.minimum(n_rel, k) / n_rel)
    np.testing.assert_allclose(M.mrr(perfect, k), 1.0)
    # Metrics never decrease with k, except precision; NDCG can, so only recall/HR here.
    assert np.all(M.recall(hits, n_rel, k + 1) >= M.recall(hits, n_rel, k))
    assert np.all(M.hit_rate(hits, k + 1) >= M.hit_rate(hits, k))


def test_ranking_metric_errors() -> None:
    with pytest.raises(LmrecError, match="k must be >= 1"):
        M.precision(np.zeros((2, 3), bool), 0)
    with pytest.raises(LmrecError, match="n_rel >= 1"):
        M.recall(np.zeros((2, 3), bool), np.array([1, 0]))
    with pytest.raises(LmrecError, match="one entry per user"):
        M.ndcg(np.zeros((2, 3), bool), np.array([1]))


def test_rating_metrics() -> None:
    pred, true = np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0])
    assert M.mse(pred, true) == pytest.approx(5 / 3)
    assert M.rmse(pred, true) == pytest.approx(math.sqrt(5 / 3))
    assert M.mae(pred, true) == pytest.approx(1.0)
    with pytest.raises(LmrecError, match="equal 1-d arrays"):
        M.mae(pred, true[:2])


def test_coverage_gini_personalization_by_hand() -> None:
    same = np.array([[0, 1], [0, 1], [0, 1]])
    assert M.catalog_coverage(same, 4) == 0.5
    assert M.personalization(same) == pytest.approx(0.0)
    # Items 0 and 1 shown 3 times each, items 2, 3 never: sorted c = 0, 0, 3, 3.
    # G = ((2-4-1)*0 + (4-4-1)*0 + (6-4-1)*3 + (8-4-1)*3) / (4 * 6) = 12 / 24.
    assert M.gini_exposure(same, 4) == pytest.approx(0.5)
    disjoint = np.array([[0, 1], [2, 3]])
    assert M.personalization(disjoint) == pytest.approx(1.0)
    assert M.gini_exposure(disjoint, 4) == pytest.approx(0.0)
    assert M.catalog_coverage(np.array([[0, -1]]), 4) == 0.25


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_personalization_matches_pairwise_brute_force(n_users: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lists = np.stack([rng.choice(12, size=k, replace=False) for _ in range(n_users)])
    pairs = [1 - len(set(a) & set(b)) / k for a, b in itertools.combinations(lists.tolist(), 2)]
    assert M.personalization(lists) == pytest.approx(np.mean(pairs))


def test_novelty_and_mean_popularity() -> None:
    pop = np.array([8.0, 4.0, 1.0, 0.0])  # out of 8 users
    lists = np.array([[0, 1], [2, 3]])
    # -log2(8/8) = 0, -log2(4/8) = 1; -log2(1/8) = 3 and an unseen item is floored at 1/8.
    np.testing.assert_allclose(M.novelty(lists, pop, 8), [0.5, 3.0])
    np.testing.assert_allclose(M.mean_popularity(lists, pop), [6.0, 0.5])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_intra_list_diversity_matches_brute_force(n_users: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items, n_cat = 15, 5
    cats = (rng.random((n_items, n_cat)) < 0.4).astype(np.float32)
    vecs = rng.normal(size=(n_items, 4))
    lists = np.stack([rng.choice(n_items, size=k, replace=False) for _ in range(n_users)])
    got_c = M.intra_list_diversity(lists, categories=sp.csr_matrix(cats))
    got_v = M.intra_list_diversity(lists, vectors=vecs)
    for u in range(n_users):
        dc, dv = [], []
        for i, j in itertools.combinations(lists[u], 2):
            a, b = set(np.flatnonzero(cats[i])), set(np.flatnonzero(cats[j]))
            dc.append(1 - len(a & b) / len(a | b) if a | b else 0.0)
            cos = vecs[i] @ vecs[j] / (np.linalg.norm(vecs[i]) * np.linalg.norm(vecs[j]))
            dv.append(1 - cos)
        assert got_c[u] == pytest.approx(np.mean(dc), abs=1e-6)
        assert got_v[u] == pytest.approx(np.mean(dv), abs=1e-5)


def test_diversity_needs_one_source_and_short_lists_are_nan() -> None:
    with pytest.raises(LmrecError, match="exactly one"):
        M.intra_list_diversity(np.zeros((1, 2), int))
    assert np.isnan(M.intra_list_diversity(np.array([[3, -1]]), vectors=np.eye(4))[0])


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(1)
    v = rng.random(500)
    lo, hi = bootstrap_ci(v, n_boot=2000, seed=3)
    assert lo < v.mean() < hi
    # The normal approximation of the 95% interval of a mean: +-1.96 sd / sqrt(n).
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    assert bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25)
    with pytest.raises(LmrecError, match="at least one value"):
        bootstrap_ci(np.array([np.nan]))


def _recbole(pos_index: np.ndarray, pos_len: np.ndarray) -> dict[str, np.ndarray]:
    """RecBole 1.2.1's `metric_info` of ndcg, map, mrr, recall and precision
    (recbole/evaluator/metrics.py), written out: column j holds the metric at k = j + 1."""
    width = pos_index.shape[1]
    ranks = np.tile(np.arange(1, width + 1, dtype=float), (len(pos_index), 1))
    idcg_len = np.minimum(pos_len, width)
    idcg = np.cumsum(1.0 / np.log2(ranks + 1), axis=1)
    for row, idx in enumerate(idcg_len):
        idcg[row, idx:] = idcg[row, idx - 1]
    dcg = np.cumsum(np.where(pos_index, 1.0 / np.log2(ranks + 1), 0), axis=1)
    pre = pos_index.cumsum(axis=1) / np.arange(1, width + 1)
    sum_pre = np.cumsum(pre * pos_index.astype(float), axis=1)
    mapv = np.zeros_like(pre)
    for row, lens in enumerate(idcg_len):
        r = np.arange(1, width + 1)
        r[lens:] = r[lens - 1]
        mapv[row] = sum_pre[row] / r
    mrr = np.zeros_like(pre)
    for row, idx in enumerate(pos_index.argmax(axis=1)):
        mrr[row, idx:] = 1 / (idx + 1) if pos_index[row, idx] > 0 else 0
    return {
        "ndcg": dcg / idcg,
        "map": mapv,
        "mrr": mrr,
        "recall": np.cumsum(pos_index, axis=1) / pos_len.reshape(-1, 1),
        "precision": pre,
    }


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_metrics_match_recbole_formulas(n_users: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hits = rng.random((n_users, width)) < 0.3
    n_rel = hits.sum(axis=1) + rng.integers(0, 4, n_users)
    n_rel = np.maximum(n_rel, 1)
    ref = _recbole(hits, n_rel)
    for k in range(1, width + 1):
        np.testing.assert_allclose(M.ndcg(hits, n_rel, k), ref["ndcg"][:, k - 1])
        np.testing.assert_allclose(M.map_at_k(hits, n_rel, k), ref["map"][:, k - 1])
        np.testing.assert_allclose(M.mrr(hits, k), ref["mrr"][:, k - 1])
        np.testing.assert_allclose(M.recall(hits, n_rel, k), ref["recall"][:, k - 1])
        np.testing.assert_allclose(M.precision(hits, k), ref["precision"][:, k - 1])
