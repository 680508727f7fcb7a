"""EASE with the items' text as side information (`text_weight`): the real bundled MiniLM
encodes the small topic shop of test_lm_models."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lmrec.data import Dataset
from lmrec.data.split import cold_start_items, leave_one_out
from lmrec.evaluation import evaluate
from lmrec.models import create_model
from lmrec.models.base import Recommender
from lmrec.models.ease import text_side
from test_lm_models import _shop

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def shop() -> Dataset:
    import torch

    torch.set_num_threads(1)
    return _shop()


def test_text_side_is_centred_and_unit(shop: Dataset) -> None:
    f, _ = text_side(shop, "minilm", None)
    assert f.shape == (shop.n_items, 384)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-6)
    # Centred: the mean vector is (near) zero before scaling, so the mean cosine is low.
    cos = f @ f.T
    assert abs(cos[~np.eye(len(f), dtype=bool)].mean()) < 0.1


def test_text_places_items_without_interactions(shop: Dataset, tmp_path) -> None:
    """Items with no training interaction get no EASE weight from interactions alone; with
    the text view they are scored by their textual neighbours among the user's history."""
    split = cold_start_items(shop, 0.25, seed=0)
    plain = create_model("ease").fit(split.train)
    text = create_model("ease", text_weight=1.0).fit(split.train)
    cold = split.train.item_counts() == 0
    assert cold.any()
    assert np.all(plain.weights[:, cold] == 0)
    assert np.abs(text.weights[:, cold]).sum() > 0
    res = evaluate(text, split, "test", k=3, metrics=["ndcg"], candidates="cold")
    rnd = evaluate(create_model("random").fit(split.train), split, "test", k=3,
                   metrics=["ndcg"], candidates="cold")  # fmt: skip
    assert res.summary()["ndcg@3"] > rnd.summary()["ndcg@3"] + 0.3, (res.summary(), rnd.summary())
    # The weights survive save / load, text settings included.
    again = Recommender.load(text.save(tmp_path / "m"))
    assert again.config.text_weight == 1.0
    np.testing.assert_array_equal(again.weights, text.weights)


def test_zero_text_weight_is_plain_ease(shop: Dataset) -> None:
    a = create_model("ease").fit(shop)
    b = create_model("ease", text_weight=0.0, encoder="no-such-encoder").fit(shop)
    np.testing.assert_array_equal(a.weights, b.weights)  # the encoder is not even loaded


def test_text_weight_with_tfidf(shop: Dataset) -> None:
    m = create_model("ease", text_weight=2.0, encoder="tfidf").fit(shop)
    assert np.isfinite(m.weights).all()
    assert not np.allclose(m.weights, create_model("ease").fit(shop).weights)


def test_text_weight_chosen_on_validation(shop: Dataset, tmp_path) -> None:
    split = leave_one_out(shop)
    m = create_model("ease", text_weight=None).fit(split.train, valid=split.valid)
    search = m.text_search_
    assert search[:, 0].tolist() == m.config.text_weights
    assert m.text_weight_ == search[np.argmax(search[:, 1]), 0]
    # The Woodbury update of one inverse gives the weights of a direct fit at that weight.
    direct = create_model("ease", text_weight=m.text_weight_).fit(split.train)
    np.testing.assert_allclose(m.weights, direct.weights, rtol=1e-3, atol=1e-5)
    again = Recommender.load(m.save(tmp_path / "m"))
    assert again.text_weight_ == m.text_weight_ and again.config.text_weight is None


def test_text_weight_without_validation_refits_on_everything(shop: Dataset) -> None:
    m = create_model("ease", text_weight=None, text_weights=[0.0, 4.0]).fit(shop)
    assert len(m.text_search_) == 2  # chosen on each user's held-out last item
    direct = create_model("ease", text_weight=m.text_weight_).fit(shop)
    np.testing.assert_array_equal(m.weights, direct.weights)


def test_new_items_placed_by_text_neighbours(shop: Dataset) -> None:
    m = create_model("ease", text_weight=1.0).fit(shop)
    assert m.accepts_new_items and not create_model("ease").fit(shop).accepts_new_items
    jazz = "Jazz story number 99. saxophone solos, swing bands, improvisation and live concerts"
    new = m.with_items(["new-jazz"], [jazz])
    assert new is not m and len(new.items) == len(m.items) + 1 and len(m.items) == shop.n_items
    np.testing.assert_array_equal(new.weights[: shop.n_items, : shop.n_items], m.weights)
    # Among the users of each topic, the new jazz item scores highest for the jazz fans.
    from lmrec.models.base import Query

    topic = np.array([u.split("_")[0] for u in shop.users.ids])
    h = new.history_of([Query(user=u) for u in shop.users.ids])
    s = new.score(h)[:, -1]
    means = {t: s[topic == t].mean() for t in np.unique(topic)}
    assert max(means, key=means.get) == "u3", means  # TOPICS[3] is jazz
