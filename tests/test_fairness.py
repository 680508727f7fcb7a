"""Fairness metrics (by hand on tiny cases) and FA*IR re-ranking (prefix minimums hold)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from lmrec.errors import LmrecError
from lmrec.evaluation.fairness import (
    catalogue_shares,
    exposure_gap,
    exposure_shares,
    group_gap,
)
from lmrec.rerank.greedy import CategoryConstraints, top_k_constrained


def test_group_gap_by_hand() -> None:
    vals = np.array([1.0, 0.5, 0.0, 0.2, np.nan, 0.9])
    got = group_gap(vals, ["F", "F", "M", "M", "M", None])
    assert got["groups"] == {"F": {"users": 2, "mean": 0.75}, "M": {"users": 2, "mean": 0.1}}
    assert got["gap"] == pytest.approx(0.65) and got["best"] == "F" and got["worst"] == "M"
    assert got["test"] == "welch" and 0 < got["p_value"] < 1
    same = group_gap(np.array([0.3, 0.3, 0.3, 0.3]), ["a", "b", "a", "b"])
    assert same["gap"] == 0.0
    with pytest.raises(LmrecError):
        group_gap(np.ones(2), ["a", "a"])


def test_exposure_shares_and_gap_by_hand() -> None:
    groups = ["big", "big", "small", "small"]
    lists = np.array([[0, 2], [1, -1]])
    w1, w2 = 1.0, 1 / np.log2(3)
    shares = exposure_shares(lists, groups, k=2)
    assert shares["small"] == pytest.approx(w2 / (2 * w1 + w2))
    assert catalogue_shares(groups) == {"big": 0.5, "small": 0.5}
    gap = exposure_gap(shares, catalogue_shares(groups))
    assert gap == pytest.approx(abs(shares["small"] - 0.5))
    assert exposure_gap({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0


def test_fair_prefix_minimums_hold() -> None:
    """FA*IR: with p = 0.5 every prefix of the re-ranked list holds at least
    binom.ppf(alpha, t, p) protected items, though the model scores them all lower."""
    n, k = 40, 10
    cats = [["minor"] if i % 4 == 0 else ["major"] for i in range(n)]
    items = np.arange(n)
    scores = np.where(items % 4 == 0, 0.0, 1.0) - items * 1e-3
    plain = items[top_k_constrained(items, scores, k)]
    assert not any(i % 4 == 0 for i in plain)
    c = CategoryConstraints(cats, fair_categories=("minor",), fair_share=0.5, fair_alpha=0.1)
    fair = items[top_k_constrained(items, scores, k, c)]
    need = binom.ppf(0.1, np.arange(1, k + 1), 0.5)
    got = np.cumsum([i % 4 == 0 for i in fair])
    assert (got >= need).all() and got[-1] < k, (fair, need)
    # The protected items chosen are the best protected ones, the others the best others.
    assert sorted(i for i in fair if i % 4 == 0) == [0, 4, 8, 12][: int(got[-1])]
