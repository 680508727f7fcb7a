"""Differential privacy: the RDP accountant of the Gaussian mechanism, and DP-EASE."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.models import create_model
from lmrec.models.base import History, Recommender
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


# -- DP-SGD (issue 18 item 3) ------------------------------------------------------------------


def test_dpsgd_noise_reaches_the_target_epsilon() -> None:
    from lmrec.privacy import dpsgd_noise, dpsgd_spent

    q, steps = 64 / 943, 300
    for eps in (1.0, 4.0, 8.0):
        z = dpsgd_noise(eps, 1e-5, q, steps)
        assert dpsgd_spent(z, q, steps, 1e-5) <= eps
        assert dpsgd_spent(z * 0.99, q, steps, 1e-5) > eps  # the smallest such z (to 1%)
    # Subsampling amplifies: the same z at q = 1 spends far more.
    z = dpsgd_noise(4.0, 1e-5, q, steps)
    assert dpsgd_spent(z, 1.0, steps, 1e-5) > 10 * 4.0
    # At q = 1, T steps of noise z are one Gaussian release of noise z / sqrt(T): the
    # independent accountant of DP-EASE (`spent`) must agree (its orders grid differs).
    z = dpsgd_noise(2.0, 1e-5, 1.0, 25)
    assert spent(z / 5.0, 1e-5) == pytest.approx(2.0, rel=0.02)


class _Linear(torch.nn.Module):
    """loss = w . x of the batch's one user: that user's gradient is x."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, batch: dict) -> torch.Tensor:
        return (self.w * batch["x"]).sum()


class _Users:
    """A `PrivateTrainTask` whose user k contributes gradient xs[k]."""

    def __init__(self, xs: np.ndarray):
        self.xs = torch.from_numpy(xs)

    def batches(self, epoch: int, rank: int, world: int) -> list:
        return []

    def validate(self, module: object, rank: int, world: int) -> tuple[float, float]:
        return 0.0, 0.0

    def unit_batches(self, units: np.ndarray, epoch: int) -> list:
        return [{"x": self.xs[u]} for u in units.tolist()]


def _clipped_sum(xs: np.ndarray, clip: float) -> np.ndarray:
    """What one DP-SGD step of the trainer applies, times q N, with the noise set to 0."""
    from lmrec.nn.trainer import Trainer
    from lmrec.privacy import DPSGD

    n = len(xs)
    dp = DPSGD(8.0, 1e-5, clip, n, batch_size=n, epochs=1, seed=0, where="test")
    assert dp.sample_rate == 1.0 and dp.max_steps == 1
    dp.noise_multiplier = 0.0  # to see the clipped sum itself
    module = _Linear(xs.shape[1])
    Trainer(epochs=1, patience=None, device="cpu").fit(module, _Users(xs), dp=dp)
    assert dp.steps == 1
    return module.w.grad.numpy() * dp.expected_batch


def test_dpsgd_clips_each_users_contribution() -> None:
    xs = np.zeros((5, 2))
    xs[0, 0] = 1000.0  # one user with an outsized gradient
    xs[1:, 1] = 0.1
    total = _clipped_sum(xs, clip=1.0)
    # Clipped: user 0 counts for 1, the others (under the clip) unchanged. Unclipped would
    # give 1000 in the first coordinate.
    assert total == pytest.approx([1.0, 0.4])
    # Removing the outlier moves the released sum by at most the clip (the sensitivity).
    without = _clipped_sum(xs[1:], clip=1.0)
    assert np.linalg.norm(total - without) <= 1.0 + 1e-9


def _sequences(n_users: int = 120, n_items: int = 24) -> Dataset:
    return _data(n_users, n_items)


def test_dp_sasrec_fits_saves_and_loads_with_its_budget(tmp_path: Path) -> None:
    ds = _sequences()
    kw = dict(epochs=3, patience=None, batch_size=24, embedding_size=16, heads=1, layers=1)
    kw |= dict(progress=False, num_threads=1, device="cpu")
    dp = create_model("sasrec", epsilon=4.0, max_grad_norm=0.5, **kw).fit(ds)
    p = dp.privacy_
    assert p["epsilon"] <= 4.0 and p["delta"] == 1e-5 and p["unit"] == "user"
    assert p["sample_rate"] == pytest.approx(24 / 120) and p["steps"] == 3 * 5
    assert p["sensitivity"] == 0.5 and p["sigma"] == pytest.approx(0.5 * p["noise_multiplier"])
    assert "early stopping" not in p["note"]  # patience=None: nothing read validation
    back = Recommender.load(dp.save(tmp_path / "dp"))
    assert back.privacy_ == p
    h = History.from_dataset(ds, np.arange(5))
    assert np.allclose(back.score(h), dp.score(h))
    plain = create_model("sasrec", **kw).fit(ds)
    assert plain.privacy_ is None
    assert not np.allclose(plain.score(h), dp.score(h))


def test_dp_biasedmf_fits_saves_and_loads_with_its_budget(tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{i}", "rating", float(rng.integers(1, 6)), float(t))
        for t, (u, i) in enumerate((u, i) for u in range(150) for i in rng.choice(30, 6, False))
    ]
    frame = pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"])
    ds = Dataset.from_frame(frame, name="rated")
    dp = create_model("biasedmf", epsilon=2.0, epochs=3, dp_batch_size=30).fit(ds)
    p = dp.privacy_
    assert p["epsilon"] <= 2.0 and p["sample_rate"] == pytest.approx(30 / 150)
    assert p["steps"] == 15 and "joint DP" in p["note"]
    back = Recommender.load(dp.save(tmp_path / "mf"))
    assert back.privacy_ == p
    assert np.allclose(
        back.predict_ratings(np.arange(4), np.arange(4)),
        dp.predict_ratings(np.arange(4), np.arange(4)),
    )
    with pytest.raises(LmrecError, match="biasedmf only"):
        create_model("svdpp", epsilon=2.0, epochs=1).fit(ds)


def test_bad_dp_options_are_refused_with_the_reason() -> None:
    from lmrec.privacy import check_dp_options

    ds = _sequences()  # 120 users: delta must be below 1/120
    with pytest.raises(LmrecError, match="delta must be in"):
        create_model("sasrec", epsilon=1.0, delta=0.01, epochs=1, progress=False).fit(ds)
    for bad in ({"epsilon": 0.0}, {"epsilon": -1.0}, {"delta": 1.0}, {"max_grad_norm": 0.0}):
        with pytest.raises((LmrecError, ValueError), match=next(iter(bad))):
            create_model("sasrec", **{"epsilon": 1.0, **bad})
        with pytest.raises((LmrecError, ValueError), match=next(iter(bad))):
            create_model("biasedmf", **{"epsilon": 1.0, **bad})
    with pytest.raises(LmrecError, match="positive finite"):
        check_dp_options(math.inf, 1e-5, 100, "here")
    with pytest.raises(LmrecError, match="at least 2 users"):
        check_dp_options(1.0, 1e-5, 1, "here")


def test_dp_with_early_stopping_says_what_is_not_covered() -> None:
    kw = dict(epochs=2, patience=1, batch_size=24, embedding_size=16, heads=1, layers=1)
    m = create_model("sasrec", epsilon=4.0, progress=False, num_threads=1, device="cpu", **kw)
    p = m.fit(_sequences()).privacy_
    assert p["note"].startswith("early stopping read held-out last items (not covered")
    assert p["steps"] <= 2 * 5 and p["epsilon"] <= 4.0
