"""`coldstart_item`: new items scored through their text mapped into the collaborative space,
on the small structured sets of test_lm_models (the real bundled all-MiniLM-L6-v2 encodes a
few dozen short texts)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset
from lmrec.data.split import cold_start_items
from lmrec.errors import LmrecError
from lmrec.evaluation import evaluate
from lmrec.models import create_model
from lmrec.models.base import Query, Recommender
from test_lm_models import TOPICS, _cluster, _shop, _years

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def shop() -> Dataset:
    import torch

    torch.set_num_threads(1)
    return _shop()


@pytest.mark.parametrize("target", ["ease", "svd"])
def test_cold_items_ranked_by_their_mapped_text(shop: Dataset, target: str, tmp_path) -> None:
    split = cold_start_items(shop, 0.25, seed=0)
    cold = split.train.item_counts() == 0
    params = {"target": target, "factors": 4, "reg": 0.3}
    model = create_model("coldstart_item", **params).fit(split.train)
    assert np.array_equal(model.warm, ~cold)
    # Every row scores every item, cold ones included, with finite numbers.
    h = model.history_of([Query(user=u) for u in shop.users.ids[:6]])
    s = model.score(h)
    assert s.shape == (6, shop.n_items) and np.isfinite(s).all()
    # Among the cold items only: a user's own topic first, far above random.
    res = evaluate(model, split, "test", k=3, metrics=["ndcg"], candidates="cold")
    rnd = create_model("random").fit(split.train)
    base = evaluate(rnd, split, "test", k=3, metrics=["ndcg"], candidates="cold")
    assert res.summary()["ndcg@3"] > 0.8, res.summary()  # measured: 0.88 (ease)
    assert res.summary()["ndcg@3"] > base.summary()["ndcg@3"] + 0.3, base.summary()
    # The score depends on the text: the same item with another topic's text maps elsewhere.
    jazz = "Jazz story number 99. saxophone solos, swing bands, improvisation and live concerts"
    chef = "Cooking story number 99. recipes, kitchens, pasta sauces and baking bread at home"
    p = model.map_items([jazz, chef], categories=[["jazz"], ["cooking"]])
    assert p.shape[0] == 2 and np.isfinite(p).all() and not np.allclose(p[0], p[1])
    fans = model.history_of([Query(user=u) for u in ("u3_0", "u1_0")])
    one = model.score_mapped(fans, p[:1])  # each new item scored alone
    assert one.shape == (2, 1) and np.isfinite(one).all()
    both = model.score_mapped(fans, p)
    np.testing.assert_allclose(both[:, :1], one, rtol=1e-5)  # not relative to the others
    assert both[0, 0] > both[0, 1] and both[1, 1] > both[1, 0], both  # each fan: their topic
    # The model's own cold items are scored the same way.
    np.testing.assert_allclose(
        model.score_mapped(h, model.item_params[cold]), s[:, cold], rtol=1e-5, atol=1e-6
    )
    # Saved and loaded: the same scores.
    back = Recommender.load(model.save(tmp_path / target))
    np.testing.assert_allclose(back.score(h), s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back.map_items([jazz], [["jazz"]]), p[:1], rtol=1e-5, atol=1e-6)


def test_popularity_and_tokens_only(shop: Dataset) -> None:
    split = cold_start_items(_years(), 0.25, seed=0)
    # Tokens only (no language-model vector): the exact year finds each cluster's new films.
    m = create_model("coldstart_item", text_weight=0.0, side_features=1.0, reg=0.3)
    m.fit(split.train)
    res = evaluate(m, split, "test", k=3, metrics=["ndcg"], candidates="cold")
    assert res.summary()["ndcg@3"] > 0.8, res.summary()  # measured: 0.90
    # A huge popularity weight makes the ranking the same for everybody (predicted log count).
    pop = create_model("coldstart_item", popularity_weight=1e4).fit(split.train)
    h = pop.history_of([Query(user=u) for u in ("u0_0", "u1_0", "u2_0", "u3_0")])
    idx, _, _ = pop.rank(h, 5, candidates=~pop.warm)
    assert all(list(r) == list(idx[0]) for r in idx)
    # The predicted log count of new items comes from the features (not all equal).
    assert np.ptp(pop.item_params[~pop.warm, -1]) > 0


def test_errors(shop: Dataset) -> None:
    with pytest.raises(LmrecError, match=r"no item features .*text_weight=0 and side_features=0"):
        create_model("coldstart_item", text_weight=0.0, side_features=0.0).fit(shop)
    with pytest.raises(LmrecError, match="more than max_items=10"):
        create_model("coldstart_item", max_items=10).fit(shop)
    with pytest.raises(LmrecError, match=r"target: Input should be 'ease' or 'svd'"):
        create_model("coldstart_item", target="als")
    with pytest.raises(LmrecError, match="popularity_weight"):
        create_model("coldstart_item", popularity_weight=-1)
    with pytest.raises(LmrecError, match="not fitted"):
        create_model("coldstart_item").map_items(["x"])
    m = create_model("coldstart_item").fit(shop)
    with pytest.raises(LmrecError, match="1 texts but 2 category lists"):
        m.map_items(["Film"], categories=[["Drama"], ["Drama"]])


def test_cli_train_and_evaluate_cold_items(shop: Dataset, tmp_path, capsys) -> None:
    from lmrec.cli import main

    inter = pd.DataFrame(
        {
            "user_id": shop.users.ids_of(shop.user),
            "item_id": shop.items.ids_of(shop.item),
            "rating": shop.value,
            "timestamp": shop.ts.astype(int),
        }
    )
    inter.to_csv(tmp_path / "inter.csv", index=False)
    f = shop.item_features
    # Two items nobody has touched yet, known by their text only.
    new = {"new_jazz": TOPICS[3], "new_cook": TOPICS[1]}
    pd.DataFrame(
        {
            "item_id": [*shop.items.ids, *new],
            "title": [*f.title, *(f"{t[0].title()} story number 99" for t in new.values())],
            "description": [*f.description, *(t[1] for t in new.values())],
            "genres": [*("|".join(c) for c in f.categories), *(t[0] for t in new.values())],
        }
    ).to_csv(tmp_path / "items.csv", index=False)
    db = ["--db", f"sqlite:///{tmp_path / 'shop.db'}"]
    assert main([*db, "import", "--interactions", str(tmp_path / "inter.csv"),
                 "--items", str(tmp_path / "items.csv"), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    ev = [*db, "evaluate", "--models", "random,coldstart_item", "--protocol", "cold_items"]
    assert main([*ev, "--param", "coldstart_item.reg=0.3", "-q", "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    ours = rep["models"]["coldstart_item"]["test"]["ndcg@10"]
    assert ours > rep["models"]["random"]["test"]["ndcg@10"] + 0.2, rep["models"]
    out = tmp_path / "m"
    assert main([*db, "train", "--model", "coldstart_item", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main([*db, "recommend", "--model", str(out), "--items", "i2_1,i2_2", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["items"]
    assert _cluster([r["item"] for r in recs][:5]).count(2) >= 4
    # The saved model scores the untouched items from their text: each fan gets their topic.
    model = Recommender.load(out)
    assert model.warm.sum() == shop.n_items and not model.warm[model.items.indices(list(new))].any()
    for user, first in (("u3_0", "new_jazz"), ("u1_0", "new_cook")):
        r = model.recommend(Query(user=user), n=2, candidates=list(new))
        assert r.items[0] == first and np.isfinite(r.scores).all(), (user, r)
    assert main([*ev, "--param", "coldstart_item.target=als", "-q"]) == 1
    assert "target" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name,params",
    [
        ("coldstart_item", {"reg": 0.3, "side_features": 0.5}),
        ("lmmf", {"epochs": 3, "side_features": 1.0}),
        ("lmcontent", {"side_features": 1.0}),
    ],
)
def test_service_adds_items_with_their_categories(shop: Dataset, name: str, params) -> None:
    """What the service does for PUT /items: the new item joins the model's catalogue with its
    text and its categories, is scored for everyone, and can then sit in a history."""
    from lmrec.service.live import extend_catalogue, supports_new_items

    model = create_model(name, **params).fit(shop)
    assert supports_new_items(model)
    jazz = "Jazz story number 99. saxophone solos, swing bands, improvisation and live concerts"
    cook = "Cooking story number 99. recipes, kitchens, pasta sauces and baking bread at home"
    new = extend_catalogue(model, ["new_jazz", "new_cook"], [jazz, cook], [["jazz"], ["cooking"]])
    assert len(new.items) == shop.n_items + 2 and len(model.items) == shop.n_items  # a copy
    fans = [Query(user="u3_0"), Query(user="u1_0")]  # jazz fan, cooking fan
    s = new.score(new.history_of(fans))
    assert s.shape == (2, shop.n_items + 2) and np.isfinite(s).all()
    j, c = new.items.get("new_jazz"), new.items.get("new_cook")
    assert s[0, j] > s[0, c] and s[1, c] > s[1, j], s[:, [j, c]]  # each fan: their topic
    # A history that holds a new item (feedback after it was added) is answered too.
    h = new.history_of([Query(user="u3_0", items=["new_jazz"])])
    assert np.isfinite(new.score(h)).all()
    assert new.recommend(Query(user="u3_0", items=["new_jazz"]), 5).items
