"""The rating task: rating models on small synthetic ratings, the Pearson-baseline similarity
against its definition, cold items rated from their text, `lmrec evaluate --task rating`, and
the service's predicted ratings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmrec.cli import main
from lmrec.data import Dataset
from lmrec.data.dataset import ItemFeatures
from lmrec.data.split import random_split
from lmrec.errors import DataError, LmrecError
from lmrec.models import create_model
from lmrec.models.base import Query
from lmrec.models.rating import pearson_baseline, ratings_of

SGD = {"epochs": 60, "batch_size": 64}  # SGD models on ~2,400 ratings
BAYES = {"sweeps": 60, "burn_in": 20}
FAST = {"biasedmf": SGD, "svdpp": SGD, "bayesmf": BAYES}


def _frame(n_users: int = 80, n_items: int = 60, per_user: int = 30, seed: int = 0) -> pd.DataFrame:
    """Ratings 1..5 of a rank-2 taste model plus item biases, with noise."""
    rng = np.random.default_rng(seed)
    pu, qi = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    bi = rng.normal(0, 0.5, n_items)
    rows = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            r = 3.2 + bi[i] + 0.8 * pu[u] @ qi[i] + rng.normal(0, 0.3)
            rows.append((f"u{u}", f"i{i}", "rating", float(np.clip(np.rint(r), 1, 5)), float(t)))
    return pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"])


@pytest.fixture(scope="module")
def split():
    return random_split(Dataset.from_frame(_frame(), name="synthetic"), (0.8, 0.0, 0.2), seed=1)


def _rmse(model, split) -> float:
    t = split.test
    pred = model.predict_ratings(t.user.astype(np.int64), t.item.astype(np.int64))
    return float(np.sqrt(np.mean((pred - t.value) ** 2)))


def test_models_beat_the_global_mean_and_factors_beat_biases(split) -> None:
    mean = float(np.sqrt(np.mean((split.test.value - split.train.value.mean()) ** 2)))
    got = {
        name: _rmse(create_model(name, **FAST.get(name, {})).fit(split.train), split)
        for name in ("baseline", "knnbaseline", "biasedmf", "svdpp", "bayesmf")
    }
    assert got["baseline"] < mean - 0.05, (got, mean)
    for name in ("knnbaseline", "biasedmf", "svdpp", "bayesmf"):
        assert got[name] < got["baseline"] - 0.05, got


def test_predictions_are_clipped_and_unknown_users_get_the_baseline(split) -> None:
    m = create_model("biasedmf", **SGD).fit(split.train)
    n = len(m.items)
    users = np.repeat(np.arange(len(m.users)), n)
    pred = m.predict_ratings(users, np.tile(np.arange(n), len(m.users)))
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    anon = m.predict_ratings(np.full(n, -1), np.arange(n))
    np.testing.assert_allclose(anon, np.clip(m.mu_ + m.bi_, 1, 5))
    r = m.rate("u3", ["i1", "nope", "i2"])
    assert r[1] is None and all(1 <= x <= 5 for x in (r[0], r[2]))
    # A new user who rated items high is predicted higher than one who rated them low.
    items = ["i1", "i2", "i3", "i4"]
    hi = m.score(m.history_of([Query(items=items, values=[5, 5, 5, 5])]))[0]
    lo = m.score(m.history_of([Query(items=items, values=[1, 1, 1, 1])]))[0]
    assert hi.mean() > lo.mean() + 0.2
    with pytest.raises(LmrecError, match="does not predict ratings"):
        create_model("popularity").fit(split.train).predict_ratings(np.zeros(1), np.zeros(1))


def test_bayesmf_is_seeded_keeps_its_rank_and_rates_the_unrated_by_the_prior(split) -> None:
    a = create_model("bayesmf", **BAYES, rank=8).fit(split.train)
    b = create_model("bayesmf", **BAYES, rank=8).fit(split.train)
    c = create_model("bayesmf", **BAYES, rank=8, seed=1).fit(split.train)
    users = np.arange(len(a.users))
    items = users % len(a.items)
    np.testing.assert_array_equal(a.predict_ratings(users, items), b.predict_ratings(users, items))
    assert not np.allclose(a.predict_ratings(users, items), c.predict_ratings(users, items))
    assert a.user_vec_.shape[1] == a.item_vec_.shape[1] == 8
    # The posterior is sharper than the noise: the sampled noise precision is near 1 / 0.3^2
    # of the generating model, well above the prior's mean (1).
    assert a.noise_precision_ > 2.0
    with pytest.raises(LmrecError, match=r"burn_in \(10\) must be below sweeps \(10\)"):
        create_model("bayesmf", sweeps=10, burn_in=10)


def test_low_rank_average_is_the_best_approximation_of_the_sum() -> None:
    from lmrec.models.rating_bayes import _truncate

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 12)), rng.normal(size=(20, 12))
    full = a @ b.T
    ta, tb = _truncate(a, b, 12)  # rank 12 keeps the product exactly
    np.testing.assert_allclose(ta @ tb.T, full, atol=1e-9)
    ta, tb = _truncate(a, b, 3)
    u, s, vt = np.linalg.svd(full)
    np.testing.assert_allclose(ta @ tb.T, (u[:, :3] * s[:3]) @ vt[:3], atol=1e-9)


def test_other_events_are_ignored_and_no_ratings_is_a_data_error() -> None:
    frame = _frame(n_users=30, n_items=20, per_user=10)
    views = frame.assign(event="view", value=np.nan, ts=frame.ts + 100)
    rated = Dataset.from_frame(frame)
    both = Dataset.from_frame(pd.concat([frame, views]))
    assert len(ratings_of(both)) == len(ratings_of(rated)) == len(frame)
    a = create_model("knnbaseline").fit(rated)
    b = create_model("knnbaseline").fit(both)
    users = np.arange(len(a.users))
    np.testing.assert_allclose(
        a.predict_ratings(users, users % 20), b.predict_ratings(users, users % 20)
    )
    for name in ("baseline", "svdpp"):
        with pytest.raises(DataError, match="no 'rating' events to learn ratings from"):
            create_model(name).fit(Dataset.from_frame(views))
    # A later rating of the same item replaces the earlier one.
    again = frame.iloc[:1].assign(value=1.0 if frame.value.iloc[0] != 1 else 5.0, ts=1e6)
    r = ratings_of(Dataset.from_frame(pd.concat([frame, again])))
    assert len(r) == len(frame) and again.value.iloc[0] in r.value


def test_pearson_baseline_similarity_matches_its_definition() -> None:
    rng = np.random.default_rng(3)
    dense = np.where(rng.random((12, 7)) < 0.6, rng.normal(size=(12, 7)), 0.0)
    import scipy.sparse as sp

    got = pearson_baseline(sp.csr_matrix(dense), shrinkage=5.0, min_support=1)
    rated = dense != 0
    for i in range(7):
        for j in range(7):
            common = rated[:, i] & rated[:, j]
            n = int(common.sum())
            ei, ej = dense[common, i], dense[common, j]
            den = np.sqrt((ei**2).sum() * (ej**2).sum())
            want = 0.0 if i == j or den == 0 else (ei @ ej) / den * max(n - 1, 0) / (n - 1 + 5.0)
            assert got[i, j] == pytest.approx(want, abs=1e-6), (i, j)


def _text_dataset() -> tuple[Dataset, np.ndarray]:
    """40 films, half described as wonderful (rated 4-5), half as dreadful (rated 1-2); the
    last 5 of each kind have no ratings (cold). Returns the dataset and the good mask."""
    rng = np.random.default_rng(0)
    good = np.arange(40) % 2 == 0
    rows = []
    for u in range(40):
        for i in rng.choice(30, 15, replace=False):
            r = rng.integers(4, 6) if good[i] else rng.integers(1, 3)
            rows.append((f"u{u}", f"i{i}", "rating", float(r), float(len(rows))))
    frame = pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"])
    ds = Dataset.from_frame(frame)
    from lmrec.data import Vocabulary

    items = Vocabulary([f"i{i}" for i in range(40)])
    idx = items.indices(ds.items.ids_of(ds.item))
    words = {True: "a wonderful, moving masterpiece", False: "a dreadful, boring mess"}
    feats = ItemFeatures(
        title=[f"Film {i}" for i in range(40)],
        description=[words[bool(g)] for g in good],
        categories=[[] for _ in range(40)],
        attributes=[{} for _ in range(40)],
        created_at=np.zeros(40),
    )
    full = Dataset(
        ds.users,
        items,
        ds.user,
        idx,
        event=ds.event,
        value=ds.value,
        ts=ds.ts,
        event_names=ds.event_names,
        item_features=feats,
    )
    return full, good


def test_lmrating_rates_cold_items_from_their_text() -> None:
    ds, good = _text_dataset()
    m = create_model("lmrating", epochs=80, batch_size=64, text_learning_rate=1e-2).fit(ds)
    cold = np.arange(30, 40)
    pred = m.predict_ratings(np.zeros(10, np.int64), cold)
    assert pred[good[cold]].min() > pred[~good[cold]].max(), pred
    base = create_model("baseline").fit(ds).predict_ratings(np.zeros(10, np.int64), cold)
    assert np.ptp(base) < 1e-9  # without text every cold item gets the same rating


def _described_items(informative: bool) -> tuple[Dataset, Dataset, np.ndarray]:
    """60 items with biases b_i, 12 of them cold (no training ratings); item text says how
    good an item is (informative) or is random words. (train, cold test ratings, cold items)"""
    rng = np.random.default_rng(5)
    n_items, cold = 60, np.arange(48, 60)
    bi = rng.normal(0, 0.8, n_items)
    bu = rng.normal(0, 0.4, 60)
    rows, test = [], []
    for u in range(60):
        for i in rng.choice(n_items, 25, replace=False):
            r = float(np.clip(np.rint(3.4 + bu[u] + bi[i] + rng.normal(0, 0.5)), 1, 5))
            (test if i in cold else rows).append((f"u{u}", f"i{i}", "rating", r, 0.0))
    cols = ["user", "item", "event", "value", "ts"]
    frames = [pd.DataFrame(x, columns=cols) for x in (rows, test)]
    from lmrec.data import Vocabulary

    items = Vocabulary([f"i{i}" for i in range(n_items)])
    users = Vocabulary([f"u{u}" for u in range(60)])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    nonsense = ["".join(rng.choice(letters, 7)) for _ in range(3 * n_items)]
    if informative:
        words = [
            "a superb, moving masterpiece"
            if b > 0.4
            else "a dreadful, boring mess"
            if b < -0.4
            else "an ordinary film"
            for b in bi
        ]
    else:
        words = [" ".join(nonsense[3 * i : 3 * i + 3]) for i in range(n_items)]
    feats = ItemFeatures(
        title=[f"Film {i}" for i in range(n_items)],
        description=words,
        categories=[[] for _ in range(n_items)],
        attributes=[{} for _ in range(n_items)],
        created_at=np.zeros(n_items),
    )
    out = []
    for f in frames:
        ds = Dataset.from_frame(f)
        out.append(
            Dataset(
                users,
                items,
                users.indices(ds.users.ids_of(ds.user)),
                items.indices(ds.items.ids_of(ds.item)),
                event=ds.event,
                value=ds.value,
                ts=ds.ts,
                event_names=ds.event_names,
                item_features=feats,
            )
        )
    return out[0], out[1], cold


@pytest.mark.parametrize("informative", [False, True])
def test_lmrating_text_map_uses_text_only_when_it_predicts(informative: bool, tmp_path) -> None:
    from lmrec.models.base import Recommender

    train, test, cold = _described_items(informative)
    m = create_model("lmrating", epochs=40, batch_size=64).fit(train)
    users = np.zeros(len(cold), np.int64)
    pred = m.predict_ratings(users, cold)
    info = m.text_map_
    assert info is not None and info["cold_items"] == len(cold) and info["rated_items"] == 48
    base = create_model("baseline").fit(train)

    def rmse(model) -> float:
        p = model.predict_ratings(test.user.astype(np.int64), test.item.astype(np.int64))
        return float(np.sqrt(np.mean((p - test.value) ** 2)))

    if informative:
        assert info["alpha_bias"] is not None, info
        assert min(info["cv_rmse_bias"]) < info["cv_rmse_bias"][-1] - 0.1, info
        assert np.ptp(pred) > 0.5, pred
        assert rmse(m) < rmse(base) - 0.1, (rmse(m), rmse(base))
    else:  # random words: the map keeps the intercept alone, every cold item rated alike
        assert info["alpha_bias"] is None and info["alpha_factors"] is None, info
        assert np.ptp(pred) < 1e-9, pred
        # the jointly trained text projection without the map rates them apart
        params = {"epochs": 40, "batch_size": 64, "text_training": True, "text_map": False}
        raw = create_model("lmrating", **params).fit(train)
        assert raw.text_map_ is None and np.ptp(raw.predict_ratings(users, cold)) > 1e-3
    m.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.text_map_ == info
    np.testing.assert_allclose(loaded.predict_ratings(users, cold), pred)


def test_evaluate_rating_task_cli(tmp_path: Path, capsys) -> None:
    frame = _frame(n_users=50, n_items=30, per_user=15)
    csv = tmp_path / "r.csv"
    pd.DataFrame(
        {"user_id": frame.user, "item_id": frame.item, "rating": frame.value, "timestamp": frame.ts}
    ).to_csv(csv, index=False)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--db", url, "import", "-q", "--interactions", str(csv)]) == 0
    out = tmp_path / "r.json"
    args = ["--db", url, "evaluate", "--task", "rating", "--models", "baseline,knnbaseline"]
    assert main([*args, "--protocol", "kfold", "--folds", "3", "-q", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RMSE" in text and "knnbaseline" in text
    report = json.loads(out.read_text())
    s = report["models"]["knnbaseline"]["summary"]
    assert len(report["models"]["baseline"]["per_fold"]) == 3
    assert (
        0 < s["mae"] < s["rmse"]
        and s["rmse_std"] > 0
        and s["mse"]
        == pytest.approx(np.mean([f["mse"] for f in report["models"]["knnbaseline"]["per_fold"]]))
    )
    assert "ndcg@10" in s and 0 <= report["comparison"]["knnbaseline"]["se"]["p_value"] <= 1
    # A ranking-only model is refused, and so is a store without ratings.
    assert main([*args[:-1], "popularity", "-q"]) == 1
    assert "does not predict ratings" in capsys.readouterr().err
    views = tmp_path / "v.csv"
    pd.DataFrame({"user_id": frame.user, "item_id": frame.item}).to_csv(views, index=False)
    url2 = f"sqlite:///{tmp_path / 'v.db'}"
    assert main(["--db", url2, "import", "-q", "--interactions", str(views)]) == 0
    assert main(["--db", url2, "evaluate", "--task", "rating", "-q"]) == 1
    assert "no 'rating' events" in capsys.readouterr().err


def test_service_returns_predicted_ratings(tmp_path: Path) -> None:
    from lmrec.service import Settings
    from lmrec.store import Store
    from test_service import ADMIN, READ, Server

    frame = _frame(n_users=30, n_items=20, per_user=10)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store(url) as store, store.begin() as conn:
        items = sorted(set(frame.item))
        store.upsert(conn, "item", [{"ext_id": i, "title": f"Film {i}"} for i in items])
        store.upsert(conn, "user", [{"ext_id": u} for u in sorted(set(frame.user))])
        umap = store.id_map(conn, "user", sorted(set(frame.user)))
        imap = store.id_map(conn, "item", items)
        store.insert_interactions(
            conn,
            np.array([umap[u] for u in frame.user]),
            np.array([imap[i] for i in frame.item]),
            np.array(frame.event),
            frame.value.to_numpy(),
            frame.ts.to_numpy() + 1000.0,
        )
    with Store(url) as store:
        ds = Dataset.from_store(store)
    models = tmp_path / "models"
    knn = create_model("knnbaseline").fit(ds)
    knn.save(models / "knn")
    create_model("popularity").fit(ds).save(models / "pop")
    srv = Server(
        Settings(
            db=url,
            models=[f"knn={models / 'knn'}", f"pop={models / 'pop'}"],
            models_dir=str(models),
            api_keys={READ: "read", ADMIN: "admin"},
        )
    )
    try:
        with srv.client(READ) as c:
            r = c.get("/users/u3/ratings", params={"item": ["i1", "i2", "nope"]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == "knn" and body["known_user"] is True
            got = [x["rating"] for x in body["items"]]
            want = knn.rate("u3", ["i1", "i2"])
            assert got[:2] == pytest.approx(want) and got[2] is None
            new = c.get("/users/stranger/ratings", params={"item": "i1"}).json()
            assert new["known_user"] is False and 1 <= new["items"][0]["rating"] <= 5
            bad = c.get("/users/u3/ratings", params={"item": "i1", "model": "pop"})
            assert bad.status_code == 409 and "does not predict ratings" in bad.json()["detail"]
            assert c.get("/users/u3/ratings").status_code == 422
    finally:
        srv.stop()
