"""`blend`: weighted standardised scores of several registered models, weights chosen on the
validation part."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.errors import LmrecError
from lmrec.models import create_model
from lmrec.models.base import History, Recommender
from lmrec.models.blend import standardise
from test_lm_models import _shop

FAST = {"components": ["ease", "itemknn", "popularity"]}


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return _shop()


def test_standardise_rows_and_unplaced_items() -> None:
    s = np.array([[1.0, 2.0, 3.0, -1e4], [5.0, 5.0, 5.0, 5.0]], np.float32)
    z = standardise(s)
    placed = z[0, :3]
    np.testing.assert_allclose(placed.mean(), 0, atol=1e-6)
    np.testing.assert_allclose(placed.std(), 1, rtol=1e-5)
    assert z[0, 3] == placed.min()  # an item the model cannot place: the row's lowest
    assert np.all(z[1] == 0)  # a constant row stays finite


def test_weights_chosen_on_validation(shop: Dataset, tmp_path) -> None:
    split = leave_one_out(shop)
    m = create_model("blend", **FAST, weight_steps=4).fit(split.train, valid=split.valid)
    assert m.weights_from_ == "validation"
    np.testing.assert_allclose(m.weights_.sum(), 1.0)
    # Every simplex point on the grid was scored, and the best one was kept.
    search = m.weight_search_
    assert len(search) == 15  # C(4 + 2, 2) weight vectors of 3 components in steps of 1/4
    best = search[np.argmax(search[:, -1])]
    np.testing.assert_allclose(best[:-1], m.weights_)
    # The scores are the weighted sum of the components' standardised scores.
    h = History.from_dataset(split.train, np.arange(5))
    want = sum(w * standardise(c.score(h)) for w, c in zip(m.weights_, m.models, strict=True))
    np.testing.assert_allclose(m.score(h), want, rtol=1e-5, atol=1e-5)
    # Saved and loaded (components included), it answers the same.
    again = Recommender.load(m.save(tmp_path / "blend"))
    assert [c.name for c in again.models] == FAST["components"]
    np.testing.assert_allclose(again.score(h), m.score(h), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "blend" / "components" / "ease" / "config.json").exists()


def test_fixed_weights_and_one_component(shop: Dataset) -> None:
    only = create_model("blend", **FAST, weights=[1, 0, 0]).fit(shop)
    assert only.weights_from_ == "config"
    ease = create_model("ease").fit(shop)
    h = History.from_dataset(shop, np.arange(8))
    a, _, _ = only.rank(h, 5)
    b, _, _ = ease.rank(h, 5)
    np.testing.assert_array_equal(a, b)


def test_without_validation_holds_out_last_items(shop: Dataset) -> None:
    m = create_model("blend", **FAST, weight_steps=2).fit(shop)
    assert m.weights_from_ == "validation"
    # Components trained without each user's last item, and answer from the whole data.
    assert m.models[0].popularity.sum() == shop.n_interactions - shop.n_users
    assert all(c.history is shop for c in m.models)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"components": ["ease", "ease"]}, "must differ"),
        ({"components": ["ease", "blend"]}, "cannot contain a blend"),
        ({"components": ["ease"], "params": {"sasrec": {}}}, "not components"),
        ({"components": ["ease", "itemknn"], "weights": [1.0]}, "1 weights for 2"),
        ({"components": ["ease", "itemknn"], "weights": [0, 0]}, "not all 0"),
        ({"components": ["ease", "nope"]}, "unknown model"),
    ],
)
def test_bad_settings_are_refused(params: dict, words: str) -> None:
    with pytest.raises(LmrecError, match=words):
        create_model("blend", **params)


def test_chosen_reports_what_fit_decided(shop: Dataset) -> None:
    """`chosen()` names the settings fit picked on validation (the blend's weights, and each
    component's own, here EASE's text weight), and no weights when they are fixed."""
    split = leave_one_out(shop)
    params = {"ease": {"text_weight": None, "encoder": "tfidf", "text_weights": [0, 4]}}
    m = create_model("blend", components=["ease", "popularity"], params=params, weight_steps=4)
    got = m.fit(split.train, valid=split.valid).chosen()
    assert set(got["weights"]) == {"ease", "popularity"}
    np.testing.assert_allclose(sum(got["weights"].values()), 1.0)
    assert got["ease"]["text_weight"] in (0.0, 4.0)
    fixed = create_model("blend", components=["ease", "popularity"], weights=[1, 1])
    assert "weights" not in fixed.fit(split.train).chosen()
