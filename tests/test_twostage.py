"""The two-stage model: candidate merging, context from the query, the ranker's feature
contributions, configuration errors, the DCN-v2 ranker (learning, saving, explanations). Small synthetic data, no text encoder (the contract test
in test_model_contract.py covers the text features)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset, Vocabulary
from lmrec.data.dataset import ItemFeatures, UserFeatures
from lmrec.errors import LmrecError
from lmrec.models import create_model
from lmrec.models.base import History, Query
from lmrec.models.rankers import RANKERS, DCNRanker, RankRows
from lmrec.models.twostage import FEATURE_GROUPS, TwoStage
from lmrec.models.twostage_attributes import AttributeTable

NO_TEXT = [g for g in FEATURE_GROUPS if g != "text"]
HOUR = 3600.0


def _day_night(n_users: int = 120, seed: int = 0) -> Dataset:
    """Items 0-29 are taken in the morning (hour 8), items 30-59 in the evening (hour 20).
    Every user takes both kinds, on random days."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        days = np.sort(rng.choice(200, 12, replace=False))
        for d in days:
            evening = rng.random() < 0.5
            item = 30 + rng.integers(30) if evening else rng.integers(30)
            hour = 20 if evening else 8
            rows.append((f"u{u}", f"i{item}", "view", 1.0, d * 86400.0 + hour * HOUR))
    frame = pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"])
    return Dataset.from_frame(frame, name="day-night")


@pytest.fixture(scope="module")
def day_night() -> tuple[Dataset, TwoStage]:
    ds = _day_night()
    # 120 users are too few to early-stop on: a fixed number of rounds.
    model = create_model(
        "twostage", features=NO_TEXT, candidates=15, epochs=60, targets=3, ranker_valid=0
    )
    assert isinstance(model, TwoStage)
    return ds, model.fit(ds)


def test_candidates_merge_retrievers_distinct_and_unseen(day_night) -> None:
    ds, model = day_night
    hist = History.from_dataset(ds, np.arange(10))
    cands = model.candidates_of(hist)
    assert cands.shape == (10, 15)
    seen = ds.matrix()
    for r in range(10):
        row = cands[r][cands[r] >= 0]
        assert len(set(row.tolist())) == len(row)
        assert not set(row.tolist()) & set(seen[r].indices.tolist())
        for m in model.models:  # each retriever's best item is a candidate
            best = m.rank(History.from_dataset(ds, [r]), 1)[0][0, 0]
            assert best in row


def test_request_time_changes_the_answer(day_night) -> None:
    """The ranker learned that evening requests want evening items: the request hour (a
    context feature of the query) moves evening items up."""
    ds, model = day_night
    users = ds.users.ids[:40].tolist()
    day0 = 300 * 86400.0
    share = {}
    for hour in (8, 20):
        recs = model.recommend_many([Query(user=u, time=day0 + hour * HOUR) for u in users], n=3)
        share[hour] = np.mean([int(i[1:]) >= 30 for r in recs for i in r.items])
    assert share[20] > share[8] + 0.5, share


def test_feature_contributions_add_up_to_the_score(day_night) -> None:
    ds, model = day_night
    hist = model.history_of([Query(user=ds.users.ids[3], time=1e7)])
    scores = model.score(hist)[0]
    cands = model.candidates_of(hist)[0]
    fc = model.feature_contributions(hist, cands[cands >= 0])
    total = sum(fc[n] for n in [*model.feature_names, "bias"])
    np.testing.assert_allclose(total, scores[fc["item"]], rtol=1e-4, atol=1e-4)
    assert set(fc) == {"item", "bias", *model.feature_names}


def test_saved_ranker_is_text_and_round_trips(day_night, tmp_path) -> None:
    ds, model = day_night
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "ranker.txt").read_text().startswith("tree")
    loaded = TwoStage.load(tmp_path / "m")
    q = [Query(user=ds.users.ids[5], time=2e7, context={"event": "view"})]
    np.testing.assert_allclose(loaded.score(loaded.history_of(q)), model.score(model.history_of(q)))


def test_compiled_trees_score_as_lightgbm_does(day_night) -> None:
    """The ranker scores through its trees compiled by lleaves; LightGBM's own predict (with
    `compile_trees` off, or where lleaves cannot build them) gives the same numbers, also for
    missing values."""
    ds, model = day_night
    ranker = model.ranker
    hist = model.history_of([Query(user=u, time=3e7) for u in ds.users.ids[:30]])
    scores, tops, cands = model._stage_one(hist)
    x = model._features(hist, scores, tops, cands, model._context(hist))
    rows = model._rows(hist, x, cands)
    rows.x[::7, ::3] = np.nan
    ranker.prepare()
    compiled = ranker._compiled_trees()
    assert compiled is not None and type(compiled).__module__.startswith("lleaves")
    got = ranker.predict(rows)
    want = ranker.booster.predict(rows.x, num_threads=1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    off = RANKERS["lightgbm"](
        model.config.model_copy(update={"compile_trees": False}), model.feature_names, 0
    )
    off.booster = ranker.booster
    assert off._compiled_trees() is None
    np.testing.assert_array_equal(off.predict(rows), want)


def test_trees_lleaves_gets_wrong_are_left_to_lightgbm(day_night, caplog) -> None:
    """lleaves builds linear trees as if they were plain ones; the probe against LightGBM
    catches it, and LightGBM predicts."""
    import lightgbm as lgb

    _, model = day_night
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, len(model.feature_names)))
    y = 3 * x[:, 0] + x[:, 1] ** 2
    params = {"objective": "regression", "linear_tree": True, "verbosity": -1, "num_leaves": 4}
    ranker = RANKERS["lightgbm"](model.config, model.feature_names, 0)
    ranker.booster = lgb.train(params, lgb.Dataset(x, y), 5)
    with caplog.at_level("WARNING", logger="lmrec.twostage"):
        assert ranker._compiled_trees() is None
    assert "differ from LightGBM" in caplog.text
    rows = RankRows(x, np.zeros(len(x), np.int64), np.zeros(len(x), np.int64))
    np.testing.assert_array_equal(ranker.predict(rows), ranker.booster.predict(x, num_threads=1))


def _brands(n_users: int = 150, n_items: int = 60, seed: int = 0) -> Dataset:
    """Users loyal to one of four brands (nine in ten of their items); items with a brand,
    a price (as a string for a third of them), a free-text id (left out: one value each),
    users with a segment and an age, some without either."""
    rng = np.random.default_rng(seed)
    brand = [f"b{i % 4}" for i in range(n_items)]
    users, items = [], []
    for u in range(n_users):
        mine = [i for i in range(n_items) if i % 4 == u % 4]
        picks = [int(rng.choice(mine)) if rng.random() < 0.9 else int(rng.integers(n_items))
                 for _ in range(12)]  # fmt: skip
        for i in dict.fromkeys(picks):
            users.append(u)
            items.append(i)
    attrs = [
        {"brand": brand[i], "price": str(5.0 + i) if i % 3 == 0 else 5.0 + i, "sku": f"s{i}"}
        for i in range(n_items)
    ]
    user_attrs = [{"segment": f"g{u % 4}", "age": 20 + u % 30} if u % 5 else {} for u in
                  range(n_users)]  # fmt: skip
    return Dataset(
        Vocabulary([f"u{u}" for u in range(n_users)]),
        Vocabulary([f"i{i}" for i in range(n_items)]),
        np.array(users),
        np.array(items),
        ts=np.arange(len(users), dtype=float) * 3600.0,
        user_features=UserFeatures(user_attrs, [[] for _ in range(n_users)]),
        item_features=ItemFeatures(
            [f"t{i}" for i in range(n_items)],
            [""] * n_items,
            [[] for _ in range(n_items)],
            attrs,
            np.zeros(n_items),
        ),
    )


def test_attribute_columns_are_chosen_from_the_data_and_computed() -> None:
    ds = _brands()
    table = AttributeTable.of(ds)
    assert table.item_numeric == ["price"] and table.item_categorical == ["brand"]
    assert table.user_numeric == ["age"] and table.user_categorical == ["segment"]
    assert table.names == ["item.attr.price", "match.brand", "user.attr.age", "affinity.segment"]
    assert np.allclose(table.item_num[:, 0], 5.0 + np.arange(ds.n_items))  # "5.0" read as 5.0
    # User 1 (segment g1, loyal to b1): history shares by brand, affinity of each item.
    hist = History.from_dataset(ds, [1, 5])  # user 5 has no attributes
    item = np.array([[1, 2, 5], [1, 2, 5]])
    price, match, age, affinity = table.columns(hist, item, ds.user_features.attributes)
    seq = ds.sequence(1)
    share = np.mean([int(i) % 4 == 1 for i in seq])
    assert np.allclose(match[0], [share, np.mean([int(i) % 4 == 2 for i in seq]), share])
    assert np.allclose(price[0], [6.0, 7.0, 10.0]) and age[0, 0] == 21 and np.isnan(age[1, 0])
    by_g1 = [u for u in range(ds.n_users) if u % 5 and u % 4 == 1]
    users_of_1 = ds.user[ds.item == 1]
    assert np.isclose(affinity[0, 0], np.isin(users_of_1, by_g1).mean())
    assert np.isnan(affinity[1]).all()
    # A request's attributes stand for the stored ones.
    q = History(hist.users, hist.matrix, hist.sequences, [None, Query(attributes={"age": 44})])
    assert table.columns(q, item, ds.user_features.attributes)[2][1, 0] == 44


def test_the_ranker_learns_brand_loyalty_and_saves_the_attribute_table(tmp_path) -> None:
    ds = _brands()
    model = create_model(
        "twostage", retrievers=["popularity"], features=["retrievers", "attributes"],
        candidates=30, epochs=40, targets=3, ranker_valid=0,
    ).fit(ds)  # fmt: skip
    assert model.feature_names[-4:] == [
        "item.attr.price", "match.brand", "user.attr.age", "affinity.segment"
    ]  # fmt: skip
    imp = model.ranker.booster.feature_importance("gain")
    gain = dict(zip(model.feature_names, imp, strict=True))
    assert gain["match.brand"] == max(gain.values())

    # Popularity alone proposes the same list to everybody; with the attributes the ranker
    # puts the user's brand first (a quarter of the items are of it).
    def own_brand(m: TwoStage) -> float:
        recs = m.recommend_many([Query(user=f"u{u}") for u in range(40)], n=5)
        return float(
            np.mean([int(i[1:]) % 4 == u % 4 for u, r in enumerate(recs) for i in r.items])
        )

    plain = create_model(
        "twostage", retrievers=["popularity"], features=["retrievers"],
        candidates=30, epochs=40, targets=3, ranker_valid=0,
    ).fit(ds)  # fmt: skip
    assert own_brand(model) > 0.6 and own_brand(model) > 2 * own_brand(plain)
    model.save(tmp_path / "m")
    loaded = TwoStage.load(tmp_path / "m")
    assert loaded.feature_names == model.feature_names
    q = [Query(user="u7"), Query(user=None, items=["i3", "i7"], attributes={"segment": "g3"})]
    np.testing.assert_allclose(loaded.score(loaded.history_of(q)), model.score(model.history_of(q)))


def test_feature_groups_choose_the_columns() -> None:
    m = TwoStage(features=["retrievers"], retrievers=["ease", "popularity"])
    ease = ["ease.score", "ease.raw", "ease.rank"]
    pop = ["popularity.score", "popularity.raw", "popularity.rank"]
    assert m.feature_names == [*ease, *pop]
    assert "context.hour" in TwoStage(features=["context"]).feature_names


def test_configuration_errors() -> None:
    for params, match in [
        ({"retrievers": ["ease", "ease"]}, "must differ"),
        ({"retrievers": ["twostage"]}, "cannot retrieve with a two-stage"),
        ({"retrievers": ["nope"]}, "unknown model"),
        ({"params": {"als": {}}}, "not retrievers"),
        ({"features": ["weather"]}, "features"),
    ]:
        with pytest.raises(LmrecError, match=match):
            create_model("twostage", **params)


def test_too_short_histories_are_refused() -> None:
    frame = pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "ts": [1.0, 2.0]})
    ds = Dataset.from_frame(frame)
    with pytest.raises(LmrecError, match="no user has two interactions"):
        create_model("twostage", features=NO_TEXT).fit(ds)


def test_service_query_carries_time_and_flat_context() -> None:
    from pydantic import ValidationError

    from lmrec.service.schemas import QueryBody

    body = QueryBody(items=["i1"], time=1.7e9, context={"event": "cart", "device": "mobile"})
    assert body.time == 1.7e9 and body.context == {"event": "cart", "device": "mobile"}
    with pytest.raises(ValidationError, match="context"):
        QueryBody(context={"event": {"nested": 1}})


# -- the DCN-v2 ranker ---------------------------------------------------------------------------


def _signal_rows(n_groups: int, seed: int) -> tuple[RankRows, np.ndarray, list[np.ndarray]]:
    """20 candidates per query; the 2 relevant ones have feature 0 raised by 4 (features 1-2
    are noise) and their item's text vector equal to the query's user vector (the others are
    random unit vectors)."""
    rng = np.random.default_rng(seed)
    n_items, dim, per = 400, 8, 20
    item_text = rng.normal(size=(n_items, dim)).astype(np.float32)
    item_text /= np.linalg.norm(item_text, axis=1, keepdims=True)
    xs, ys, items, groups, users = [], [], [], [], []
    for g in range(n_groups):
        cand = rng.choice(n_items, per, replace=False)
        y = np.zeros(per, np.float32)
        y[:2] = 1.0
        x = rng.normal(size=(per, 3)).astype(np.float32)
        x[:2, 0] += 4.0
        users.append(item_text[cand[:2]].mean(axis=0))
        xs.append(x), ys.append(y), items.append(cand)
        groups.append(np.arange(g * per, (g + 1) * per))
    rows = RankRows(
        np.concatenate(xs),
        np.concatenate(items),
        np.repeat(np.arange(n_groups), per),
        item_text,
        np.stack(users),
    )
    return rows, np.concatenate(ys), groups


def test_dcn_ranker_learns_a_feature_and_a_text_signal() -> None:
    names = ["f0", "f1", "f2"]
    config = TwoStage(ranker="dcn", dcn={"epochs": 12, "patience": 12}, seed=1).config
    train, y, groups = _signal_rows(80, seed=0)
    test, _, test_groups = _signal_rows(40, seed=1)
    is_valid = np.arange(len(groups)) % 5 == 0
    dims = train.item_text.shape[1]
    for with_text in (False, True):
        ranker = DCNRanker(config, names, dims if with_text else 0)
        fitted = ranker.fit(train, y, groups, is_valid)
        assert 1 <= fitted.best_iteration <= 12 and 0 < fitted.valid_ndcg <= 1
        rows = test if with_text else RankRows(test.x, test.item, test.query)
        pred = ranker.predict(rows)
        tops = [set(np.argsort(-pred[g])[:2].tolist()) for g in test_groups]
        first = np.mean([len(t & {0, 1}) / 2 for t in tops])
        # Feature 0 alone puts most relevant pairs on top; text adds an exact match.
        assert first > (0.9 if with_text else 0.7), (with_text, first)


@pytest.fixture(scope="module")
def day_night_dcn() -> tuple[Dataset, TwoStage]:
    ds = _day_night()
    model = create_model(
        "twostage",
        features=NO_TEXT,
        candidates=15,
        targets=3,
        ranker="dcn",
        dcn={"epochs": 8, "patience": 8, "deep_layers": [32]},
    )
    assert isinstance(model, TwoStage)
    return ds, model.fit(ds)


def test_dcn_saved_as_arrays_round_trips(day_night_dcn, tmp_path) -> None:
    ds, model = day_night_dcn
    model.save(tmp_path / "m")
    assert not (tmp_path / "m" / "ranker.txt").exists()
    with np.load(tmp_path / "m" / "state.npz", allow_pickle=False) as z:
        assert any(k.startswith("state__ranker.cross.0.") for k in z.files)
    loaded = TwoStage.load(tmp_path / "m")
    assert loaded.config.ranker == "dcn" and loaded.best_iteration_ == model.best_iteration_
    q = [Query(user=u, time=2e7, context={"event": "view"}) for u in ds.users.ids[:5]]
    np.testing.assert_array_equal(
        loaded.score(loaded.history_of(q)), model.score(model.history_of(q))
    )


def test_dcn_explanations_have_lightgbms_shape_and_add_up(day_night_dcn) -> None:
    ds, model = day_night_dcn
    hist = model.history_of([Query(user=ds.users.ids[3], time=1e7)])
    scores = model.score(hist)[0]
    cands = model.candidates_of(hist)[0]
    fc = model.feature_contributions(hist, cands[cands >= 0])
    assert set(fc) == {"item", "bias", *model.feature_names}  # no text: LightGBM's keys
    assert all(fc[n].shape == fc["item"].shape for n in fc)
    total = sum(fc[n] for n in [*model.feature_names, "bias"])
    spread = np.ptp(scores[fc["item"]])
    np.testing.assert_allclose(total, scores[fc["item"]], atol=0.02 * spread + 1e-4)
    assert model.contributions(hist, fc["item"]).method.startswith("twostage: DCN-v2")


def test_ranker_choice_and_old_lightgbm_parameters() -> None:
    with pytest.raises(LmrecError, match="unknown ranker 'xgb'; available: dcn, lightgbm"):
        create_model("twostage", ranker="xgb")
    with pytest.raises(LmrecError, match=r"dcn\.structure"):
        create_model("twostage", ranker="dcn", dcn={"structure": "diagonal"})
    old = create_model("twostage", ranker={"feature_fraction": 0.8})  # before the DCN ranker
    assert old.config.ranker == "lightgbm" and old.config.lightgbm == {"feature_fraction": 0.8}
    with pytest.raises(LmrecError, match="given twice"):
        create_model("twostage", ranker={"feature_fraction": 0.8}, lightgbm={})
    assert set(RANKERS) == {"lightgbm", "dcn"}
