"""Differential privacy: the RDP accountant of the Gaussian mechanism, and DP-EASE."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.models import create_model
from lmrec.models.base import Recommender
from lmrec.privacy import clip_rows, gaussian_sigma, spent


def test_accountant_is_tighter_than_the_classic_bound_and_consistent() -> None:
    for eps in (0.5, 1.0, 4.0, 8.0):
        sigma = gaussian_sigma(eps, 1e-5)
        assert spent(sigma, 1e-5) <= eps * 1.0001
        assert spent(sigma * 0.99, 1e-5) > eps  # the smallest such sigma (to 1%)
    classic = math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5  # Dwork & Roth Thm 3.22, eps < 1
    assert 5.0 < gaussian_sigma(0.5, 1e-5) < classic
    assert gaussian_sigma(1.0, 1e-5, sensitivity=3.0) == pytest.approx(
        3 * gaussian_sigma(1.0, 1e-5), rel=2e-3
    )
    with pytest.raises(LmrecError):
        gaussian_sigma(0.0, 1e-5)


def test_clip_keeps_the_latest_items() -> None:
    import scipy.sparse as sp

    x = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 1, 0, 0]], float))
    ts = np.array([3.0, 1.0, 2.0, 9.0])  # user 0's items 0, 1, 2 at times 3, 1, 2
    c = clip_rows(x, ts, 2).toarray()
    assert c.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]


def _data(n_users: int = 300, n_items: int = 40, seed: int = 0) -> Dataset:
    from lmrec.data import Vocabulary

    rng = np.random.default_rng(seed)
    u, i = [], []
    for user in range(n_users):
        g = user % 4
        items = rng.choice(np.arange(g, n_items, 4), 6, replace=False)
        u += [user] * 6
        i += items.tolist()
    users = Vocabulary([f"u{k}" for k in range(n_users)])
    return Dataset(
        users,
        Vocabulary([f"i{k}" for k in range(n_items)]),
        np.array(u),
        np.array(i),
        ts=np.arange(len(u), dtype=float),
    )


def test_dp_ease_spends_its_budget_and_keeps_it(tmp_path: Path) -> None:
    ds = _data()
    plain = create_model("ease", half_life=None).fit(ds)
    dp = create_model("ease", half_life=None, epsilon=1.0, dp_max_items=8).fit(ds)
    assert dp.privacy_["epsilon"] <= 1.0001 and dp.privacy_["delta"] == 1e-5
    assert dp.privacy_["sensitivity"] == pytest.approx(6.0)  # sqrt(8 * 9 / 2)
    assert not np.allclose(dp.weights, plain.weights)
    loose = create_model("ease", half_life=None, epsilon=1e6, dp_max_items=8).fit(ds)
    assert np.abs(loose.weights - plain.weights).max() < 1e-2
    back = Recommender.load(dp.save(tmp_path / "dp"))
    assert back.privacy_ == dp.privacy_
    assert np.array_equal(back.weights, dp.weights)
    # Strong noise still gives a model that ranks; same seed, same noise.
    again = create_model("ease", half_life=None, epsilon=1.0, dp_max_items=8).fit(ds)
    assert np.array_equal(again.weights, dp.weights)
