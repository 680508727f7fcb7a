"""The contract every registered recommender must pass, on tiny synthetic data, in seconds.

The suite is parametrised over `lmrec.models.REGISTRY`, so a newly registered model is tested
without any change here.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset
from lmrec.data.dataset import ItemFeatures
from lmrec.errors import LmrecError
from lmrec.models import REGISTRY, create_model, get_model_class, model_names
from lmrec.models.base import History, Query, Recommender

N_CLUSTERS, ITEMS_PER, USERS_PER, SEEN = 4, 10, 15, 8
N_LOW = 10  # items of other clusters that each user of the rated variant rates low


def _blocks(rated: bool = False) -> tuple[Dataset, dict[str, str]]:
    """Users in 4 taste clusters, each seeing 8 of its cluster's 10 items; one more item of the
    cluster per user is held out (and returned as user -> item).

    rated: the same users and held-out items as star ratings for the rating models: the 8 seen
    items rated 4 or 5, and N_LOW items of other clusters rated 1 or 2."""
    rng = np.random.default_rng(7)
    stars = np.random.default_rng(8)
    rows, held = [], {}
    t = 0
    for c in range(N_CLUSTERS):
        items = [f"i{c * ITEMS_PER + j}" for j in range(ITEMS_PER)]
        for u in range(USERS_PER):
            user = f"u{c}_{u}"
            perm = rng.permutation(ITEMS_PER)
            for j in perm[:SEEN]:
                if rated:
                    rows.append((user, items[j], "rating", float(stars.integers(4, 6)), float(t)))
                else:
                    rows.append((user, items[j], "view", 1.0, float(t)))
                t += 1
            held[user] = items[perm[SEEN]]
            if rated:
                others = [i for i in range(N_CLUSTERS * ITEMS_PER) if i // ITEMS_PER != c]
                for i in stars.choice(others, N_LOW, replace=False):
                    rows.append((user, f"i{i}", "rating", float(stars.integers(1, 3)), float(t)))
                    t += 1
    frame = pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"])
    ds = Dataset.from_frame(frame, name="blocks")
    n = ds.n_items
    cluster = [int(i[1:]) // ITEMS_PER for i in ds.items.ids]
    feats = ItemFeatures(
        title=[f"Item {i}" for i in ds.items.ids],
        description=[f"a story about theme{c} and more theme{c}" for c in cluster],
        categories=[[f"genre{c}"] for c in cluster],
        attributes=[{"cluster": c} for c in cluster],
        created_at=np.zeros(n),
    )
    ds = Dataset(
        ds.users,
        ds.items,
        ds.user,
        ds.item,
        event=ds.event,
        value=ds.value,
        ts=ds.ts,
        event_names=ds.event_names,
        item_features=feats,
        name="blocks",
        _sorted=True,
    )
    return ds, held


@pytest.fixture(scope="module")
def blocks() -> tuple[Dataset, dict[str, str]]:
    return _blocks()


@pytest.fixture(scope="module")
def rated_blocks() -> tuple[Dataset, dict[str, str]]:
    return _blocks(rated=True)


@pytest.fixture(scope="module", params=model_names())
def fitted(request: pytest.FixtureRequest, blocks, rated_blocks) -> Recommender:
    """Each registered model fitted on the blocks: rating models on their rated variant
    (`fitted.history` is the dataset it was fitted on)."""
    return fit_on_blocks(request.param, blocks[0], rated_blocks[0])


def fit_on_blocks(name: str, blocks: Dataset, rated: Dataset) -> Recommender:
    """A registered model fitted on the blocks, a rating model on their rated variant."""
    cls = get_model_class(name)
    if not cls.predicts_ratings:
        return create_model(name).fit(blocks)
    # SGD-trained rating models take more passes over these 660 ratings than their defaults
    # (tuned for ML-100K's 80,000) to learn the clusters.
    sgd = {"epochs": 100, "batch_size": 64}
    fields = cls.config_class.model_fields
    params: dict = {k: v for k, v in sgd.items() if k in fields}
    if "components" in fields:  # a blend of rating models: two components, to stay fast
        params.update(components=["knnbaseline", "biasedmf"], params={"biasedmf": sgd})
    return create_model(name, **params).fit(rated)


def _same_ranking(a, b) -> None:
    """Equal scores, and equal items wherever the scores are not tied."""
    assert len(a.items) == len(b.items)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    sa = np.asarray(a.scores)
    for pos, (x, y) in enumerate(zip(a.items, b.items, strict=True)):
        tied = np.sum(np.isclose(sa, sa[pos], rtol=1e-5, atol=1e-6)) > 1
        if not tied:
            assert x == y, (pos, a, b)


def test_registry_is_explicit_and_complete() -> None:
    for name in ("popularity", "random", "itemknn", "userknn", "ease", "als", "bpr", "tfidf"):
        assert name in REGISTRY
    for name in model_names():
        cls = get_model_class(name)
        assert issubclass(cls, Recommender) and cls.name == name
    with pytest.raises(LmrecError, match="unknown model 'nope'"):
        get_model_class("nope")


def test_recovers_held_out_item(fitted: Recommender, blocks) -> None:
    ds, held = fitted.history, blocks[1]
    recs = fitted.recommend_many(list(held), n=2)
    hits = np.mean([held[u] in r.items for u, r in zip(held, recs, strict=True)])
    if fitted.personalized:
        # 2 unseen items are left in each user's cluster: the held-out one is one of them.
        assert hits >= 0.9, f"{fitted.name}: hit rate {hits:.2f}"
    for r, u in zip(recs, held, strict=True):
        assert len(r) == 2
        assert not set(r.items) & set(ds.items.ids_of(ds.sequence(ds.users.index(u))))


def test_batch_equals_single(fitted: Recommender, blocks) -> None:
    _ds, held = blocks
    queries: list[Query | str] = [
        *list(held)[:: USERS_PER // 2],
        "nobody",
        Query(items=["i3", "i5"]),
        Query(user="u1_2", items=["i31"]),
        Query(items=["i12"], events=["view"], timestamps=[1e9]),
        Query(),
    ]
    many = fitted.recommend_many(queries, n=5, batch_size=3)
    for q, m in zip(queries, many, strict=True):
        _same_ranking(fitted.recommend(q, n=5), m)


def test_unknown_user_and_empty_history_fall_back(fitted: Recommender) -> None:
    for q in ("nobody", Query(), Query(items=["not-an-item"]), Query(user="x", items=[])):
        r = fitted.recommend(q, n=5)
        assert len(r) == 5 and r.fallback == "popularity"
        assert all(np.isfinite(r.scores))
    # An unknown user with a known history is answered by the model from that history.
    r = fitted.recommend(Query(user="nobody", items=["i1", "i2"]), n=5)
    assert len(r) == 5 and r.fallback is None and not {"i1", "i2"} & set(r.items)


def test_exclude_seen_and_candidates(fitted: Recommender, blocks) -> None:
    ds, held = fitted.history, blocks[1]
    user = next(iter(held))
    seen = set(ds.items.ids_of(ds.sequence(ds.users.index(user))))
    all_items = fitted.recommend(user, n=ds.n_items, exclude_seen=False)
    assert len(all_items) == ds.n_items
    assert len(fitted.recommend(user, n=ds.n_items)) == ds.n_items - len(seen)
    cands = ["i0", "i11", "i25", "i39", "unknown"]
    r = fitted.recommend(user, n=10, candidates=cands)
    assert set(r.items) <= set(cands) - seen and len(r) == len(set(cands[:-1]) - seen)
    assert r.scores == sorted(r.scores, reverse=True)


def test_rank_on_dataset_histories(fitted: Recommender) -> None:
    ds = fitted.history
    users = np.arange(ds.n_users)
    idx, val, used = fitted.rank(History.from_dataset(ds, users), 3, exclude_seen=True)
    assert idx.shape == val.shape == (ds.n_users, 3) and len(used) == ds.n_users
    seen = ds.matrix()
    for u in users:
        assert not set(idx[u].tolist()) & set(seen[u].indices.tolist())
        assert np.all(np.diff(val[u]) <= 0)


def test_similar_items(fitted: Recommender) -> None:
    r = fitted.similar_items("i3", n=4)
    assert len(r) == 4 and "i3" not in r.items
    if fitted.personalized:
        assert sum(int(i[1:]) // ITEMS_PER == 0 for i in r.items) >= 3, r
    with pytest.raises(LmrecError, match="unknown item"):
        fitted.similar_items("nope")


def test_save_load_round_trip(fitted: Recommender, blocks, tmp_path) -> None:
    ds, held = fitted.history, blocks[1]
    fitted.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["model"] == fitted.name
    assert not list((tmp_path / "m").rglob("*.pkl"))
    loaded = Recommender.load(tmp_path / "m")
    assert type(loaded) is type(fitted) and loaded.config == fitted.config
    h = History.from_dataset(ds, np.arange(ds.n_users))
    np.testing.assert_allclose(loaded.score(h), fitted.score(h), rtol=1e-5, atol=1e-6)
    queries = [*list(held)[:5], Query(items=["i1", "i17"]), "nobody"]
    for a, b in zip(
        loaded.recommend_many(queries, n=5), fitted.recommend_many(queries, n=5), strict=True
    ):
        _same_ranking(a, b)


def test_config_round_trip(fitted: Recommender) -> None:
    cls = type(fitted)
    dumped = json.loads(json.dumps(fitted.config.model_dump(mode="json")))
    assert cls(dumped).config == fitted.config
    assert cls(**dumped).config == fitted.config
    with pytest.raises(LmrecError, match=f"invalid parameters for model '{cls.name}'"):
        cls(no_such_parameter=1)
    for field, info in cls.config_class.model_fields.items():
        assert info.description, f"{cls.name}.{field} has no docstring"


def test_load_refuses_non_artifacts(tmp_path) -> None:
    with pytest.raises(LmrecError, match="not a saved lmrec model"):
        Recommender.load(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "other"}')
    with pytest.raises(LmrecError, match="not a model artifact"):
        Recommender.load(tmp_path)


def test_unfitted_model_refuses_to_answer() -> None:
    for name in model_names():
        with pytest.raises(LmrecError, match="not fitted"):
            create_model(name).recommend("u", n=3)
