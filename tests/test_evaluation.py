"""The evaluation runner, protocols and paired statistics on tiny synthetic data with known
answers (and one check on ML-100K)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lmrec.data import Dataset, Vocabulary
from lmrec.data.dataset import ItemFeatures
from lmrec.data.split import Split, cold_start_items, cold_start_users, leave_one_out
from lmrec.errors import LmrecError
from lmrec.evaluation import evaluate, paired_test, rating_metrics, run_protocol
from lmrec.evaluation.protocols import make_splits
from lmrec.models import create_model
from lmrec.models.base import History, Recommender


class ByItemId(Recommender):
    """Scores item i by -int(id): a fixed preference for small ids, the same whatever the
    vocabulary order (no ties)."""

    name = "by_item_id"

    def _fit(self, dataset: Dataset) -> None:
        pass

    def score(self, history: History) -> np.ndarray:
        assert self.items is not None
        s = -self.items.ids.astype(np.float32)
        return np.broadcast_to(s, (len(history), len(s))).copy()


def _ds(rows: list[tuple[str, str, float]], items: list[str] | None = None) -> Dataset:
    users = Vocabulary(dict.fromkeys(r[0] for r in rows))
    items_v = Vocabulary(items or sorted({r[1] for r in rows}, key=int))
    cats = [[f"c{int(i) % 3}"] for i in items_v.ids]
    feats = ItemFeatures(
        title=list(items_v.ids),
        description=[""] * len(items_v),
        categories=cats,
        attributes=[{} for _ in items_v.ids],
        created_at=np.zeros(len(items_v)),
    )
    return Dataset(
        users,
        items_v,
        users.indices([r[0] for r in rows]),
        items_v.indices([r[1] for r in rows]),
        ts=np.array([r[2] for r in rows]),
        item_features=feats,
    )


TINY = [
    ("u0", "0", 1), ("u0", "1", 2), ("u0", "2", 3),
    ("u1", "3", 1), ("u1", "4", 2),
    ("u2", "5", 1), ("u2", "0", 2), ("u2", "1", 3), ("u2", "4", 4),
]  # fmt: skip


def test_leave_one_out_known_answer() -> None:
    split = leave_one_out(_ds(TINY))
    model = ByItemId().fit(split.train)
    res = evaluate(model, split, "test", k=(3, 10))
    # Test, history = train + valid, seen items excluded, ranking by id:
    # u0 seen {0, 1}: 2 3 4 5 -> target 2 at rank 1
    # u1 seen {3}: 0 1 2 4 5 -> target 4 at rank 4
    # u2 seen {5, 0, 1}: 2 3 4 -> target 4 at rank 3
    assert res.users.tolist() == [0, 1, 2] and res.sampled is None
    np.testing.assert_allclose(res.per_user["ndcg@10"], [1, 1 / math.log2(5), 0.5])
    np.testing.assert_allclose(res.per_user["recall@3"], [1, 0, 1])
    np.testing.assert_allclose(res.per_user["mrr@10"], [1, 0.25, 1 / 3])
    np.testing.assert_allclose(res.per_user["precision@3"], [1 / 3, 0, 1 / 3])
    assert res.lists[1, :5].tolist() == [0, 1, 2, 4, 5] and res.lists[2, 3] == -1
    s = res.summary()
    assert s["users"] == 3
    assert s["ndcg@10"] == pytest.approx((1.5 + 1 / math.log2(5)) / 3)
    # Coverage@3: union of top-3 lists {2,3,4} | {0,1,2} | {2,3,4} = 5 of 6 items.
    assert s["coverage@3"] == pytest.approx(5 / 6)
    # Valid: history = train; u1 has no valid interaction and is skipped.
    v = evaluate(model, split, "valid", k=1, metrics=["hr"])
    assert v.users.tolist() == [0, 2] and v.per_user["hr@1"].tolist() == [1.0, 1.0]
    assert set(v.per_user) == {"hr@1"}


def test_many_relevant_items_and_curves() -> None:
    ds = _ds(TINY)
    parts = np.array([0, 2, 2, 0, 2, 0, 0, 0, 2], np.int8)  # u0 targets {1, 2}
    split = Split(ds.subset(parts == 0), ds.subset(parts == 1), ds.subset(parts == 2), "manual")
    res = evaluate(ByItemId().fit(split.train), split, k=(1, 2), depth=5)
    # u0 seen {0}: ranking 1 2 3 ... both targets in the top 2.
    assert res.per_user["recall@1"][0] == 0.5 and res.per_user["ndcg@2"][0] == 1.0
    assert res.per_user["map@2"][0] == 1.0 and res.per_user["precision@2"][0] == 1.0
    assert res.curve("recall", [1, 2]).tolist() == [
        pytest.approx(res.summary()["recall@1"]),
        pytest.approx(res.summary()["recall@2"]),
    ]
    with pytest.raises(LmrecError, match="depth"):
        res.curve("ndcg", [6])


def test_sampled_ranking_is_labelled_and_restricted() -> None:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", str(i), float(t)) for u in range(30) for t, i in
            enumerate(rng.choice(40, size=8, replace=False))]  # fmt: skip
    ds = _ds(rows, items=[str(i) for i in range(40)])
    split = leave_one_out(ds)
    model = create_model("popularity").fit(split.train)
    full = evaluate(model, split, k=10)
    samp = evaluate(model, split, k=10, sampled=5, metrics=["ndcg", "recall", "auc"])
    assert full.sampled is None
    assert samp.sampled == "sampled: 5 negatives, uniform"
    assert samp.to_dict()["ranking"] == "sampled: 5 negatives, uniform"
    hist = split.train_valid().matrix()
    for r, u in enumerate(samp.users):
        listed = samp.lists[r][samp.lists[r] >= 0]
        assert len(listed) == 6  # 5 negatives + the target
        assert not set(listed) & set(hist[u].indices)
        assert split.test.item[split.test.user == u][0] in listed
    # Fewer competitors can only move the target up.
    assert np.all(samp.per_user["recall@10"] >= full.per_user["recall@10"])
    assert np.all((samp.per_user["auc"] >= 0) & (samp.per_user["auc"] <= 1))
    again = evaluate(model, split, k=10, sampled=5, metrics=["ndcg"])
    np.testing.assert_array_equal(again.lists, samp.lists)
    pop = evaluate(model, split, k=10, sampled=5, sampler="popularity", metrics=["ndcg"])
    assert pop.sampled == "sampled: 5 negatives, popularity"
    with pytest.raises(LmrecError, match="sampled must be"):
        evaluate(model, split, sampled=0)


def test_full_auc_matches_ranks() -> None:
    split = leave_one_out(_ds(TINY))
    res = evaluate(ByItemId().fit(split.train), split, metrics=["auc"])
    # u0: 2 of 4 rankable first -> 1; u1: target 4th of 5 -> 1 - 3/4; u2: 3rd of 3 -> 0.
    np.testing.assert_allclose(res.per_user["auc"], [1.0, 0.25, 0.0])


def test_cold_users_are_ranked_by_the_fallback() -> None:
    rng = np.random.default_rng(1)
    rows = [(f"u{u}", str(i), float(t)) for u in range(20) for t, i in
            enumerate(rng.choice(15, size=5, replace=False))]  # fmt: skip
    split = cold_start_users(_ds(rows, [str(i) for i in range(15)]), 0.25, seed=0)
    model = ByItemId().fit(split.train)
    res = evaluate(model, split, k=5)
    assert len(res.users) == 5 and res.fallback_users == 5
    order = np.lexsort((np.arange(15), -model.popularity))[:5]
    assert all(row.tolist() == order.tolist() for row in res.lists)


def test_cold_items_rank_only_cold_items() -> None:
    rng = np.random.default_rng(2)
    rows = [(f"u{u}", str(i), float(t)) for u in range(20) for t, i in
            enumerate(rng.choice(15, size=6, replace=False))]  # fmt: skip
    split = cold_start_items(_ds(rows, [str(i) for i in range(15)]), 0.2, seed=0)
    cold = np.flatnonzero(split.train.item_counts() == 0)
    res = evaluate(ByItemId().fit(split.train), split, k=10, candidates="cold")
    assert res.candidates.startswith("cold") and res.n_candidates == len(cold)
    listed = res.lists[res.lists >= 0]
    assert set(listed) <= set(cold)
    assert res.summary()["hr@10"] == 1.0  # every target is cold and there are < 10 cold items
    with pytest.raises(LmrecError, match="boolean array"):
        evaluate(ByItemId().fit(split.train), split, candidates=np.ones(3, bool))


def test_model_with_another_vocabulary_is_aligned() -> None:
    ds = _ds(TINY)
    split = leave_one_out(ds)
    reordered = _ds(TINY, items=["5", "4", "3", "2", "1", "0"])
    other = ByItemId().fit(leave_one_out(reordered).train)
    a = evaluate(ByItemId().fit(split.train), split)
    b = evaluate(other, split)
    np.testing.assert_array_equal(a.lists, b.lists)
    assert a.summary() == b.summary()


def test_paired_test_against_scipy() -> None:
    rng = np.random.default_rng(3)
    rows = [(f"u{u}", str(i), float(t)) for u in range(60) for t, i in
            enumerate(rng.choice(30, size=7, replace=False))]  # fmt: skip
    split = leave_one_out(_ds(rows, [str(i) for i in range(30)]))
    a = evaluate(create_model("popularity").fit(split.train), split, metrics=["ndcg"])
    b = evaluate(create_model("itemknn").fit(split.train), split, metrics=["ndcg"])
    t = paired_test(a, b, "ndcg@10", test="ttest")
    ref = stats.ttest_rel(b.per_user["ndcg@10"], a.per_user["ndcg@10"])
    assert t["p_value"] == pytest.approx(ref.pvalue) and t["n"] == 60
    assert t["diff"] == pytest.approx(b.summary()["ndcg@10"] - a.summary()["ndcg@10"])
    w = paired_test(a, b, "ndcg@10", test="wilcoxon")
    d = b.per_user["ndcg@10"] - a.per_user["ndcg@10"]
    assert w["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert paired_test(a, a)["p_value"] == 1.0
    with pytest.raises(LmrecError, match="no per-user 'auc'"):
        paired_test(a, b, "auc")


def test_kfold_mean_and_std_and_protocols() -> None:
    rng = np.random.default_rng(4)
    rows = [(f"u{u}", str(i), float(t)) for u in range(25) for t, i in
            enumerate(rng.choice(20, size=6, replace=False))]  # fmt: skip
    ds = _ds(rows, [str(i) for i in range(20)])
    res = run_protocol(["popularity", "itemknn"], ds, "kfold", k=5, folds=3, seed=1,
                       metrics=["ndcg", "recall"])  # fmt: skip
    run = res.runs["itemknn"]
    assert res.folds == 3 and len(run.test) == 3 and len(run.fit_seconds) == 3
    folds = [r.summary()["ndcg@5"] for r in run.test]
    s = run.summary()
    assert s["ndcg@5"] == pytest.approx(np.mean(folds))
    assert s["ndcg@5_std"] == pytest.approx(np.std(folds, ddof=1))
    cmp = res.compare(metric="ndcg@5", test="ttest", n_boot=200)
    assert cmp["popularity"].get("p_value") is None and 0 <= cmp["itemknn"]["p_value"] <= 1
    assert cmp["itemknn"]["diff_ci"][0] <= cmp["itemknn"]["diff"] <= cmp["itemknn"]["diff_ci"][1]
    d = res.to_dict()
    assert d["folds"] == 3 and "ndcg@5_std" in d["models"]["itemknn"]["test"]
    # Test NDCG@5 of popularity and test users per protocol, as measured (deterministic: seed
    # 0). Every user's 6 interactions share the times 0..5, so temporal cuts where LOO does.
    measured = {
        "loo": (0.3433, 25),
        "temporal": (0.3433, 25),
        "random": (0.2849, 25),
        "cold_users": (0.3988, 5),
        "cold_items": (0.5988, 23),
    }
    for protocol, (ndcg, users) in measured.items():
        r = run_protocol(["popularity"], ds, protocol, k=5, metrics=["ndcg"], valid=True)
        got = r.runs["popularity"].summary()
        assert got["users"] == users and got["ndcg@5"] == pytest.approx(ndcg, abs=1e-4), protocol
        # The same numbers as evaluating by hand on the protocol's split.
        (split,) = make_splits(ds, protocol)
        fitted = create_model("popularity").fit(split.train)
        hand = evaluate(fitted, split, k=5, metrics=["ndcg"], candidates=_candidates(protocol))
        assert hand.summary() == pytest.approx(got), protocol
        assert users == len(np.unique(split.test.user)), protocol
        train_users, train_items = set(split.train.user), set(split.train.item)
        if protocol == "cold_users":
            assert not train_users & set(split.test.user)
        if protocol == "cold_items":
            assert not train_items & set(split.test.item)
    assert (
        run_protocol(["popularity"], ds, "cold_items", metrics=["hr"])
        .runs["popularity"]
        .test[0]
        .candidates.startswith("cold")
    )
    with pytest.raises(LmrecError, match="unknown protocol"):
        run_protocol(["popularity"], ds, "nope")
    with pytest.raises(LmrecError, match="invalid parameters"):
        run_protocol(["ease"], ds, params={"ease": {"regg": 1}})
    with pytest.raises(LmrecError, match="not evaluated"):
        run_protocol(["ease"], ds, params={"als": {"factors": 4}})


def _candidates(protocol: str) -> str | None:
    return "cold" if protocol == "cold_items" else None


def test_bad_arguments_are_messages() -> None:
    split = leave_one_out(_ds(TINY))
    model = ByItemId().fit(split.train)
    with pytest.raises(LmrecError, match="unknown metric 'nd'"):
        evaluate(model, split, metrics=["nd"])
    with pytest.raises(LmrecError, match="on must be"):
        evaluate(model, split, on="train")  # type: ignore[arg-type]
    with pytest.raises(LmrecError, match="k must be"):
        evaluate(model, split, k=0)
    with pytest.raises(LmrecError, match="not fitted"):
        evaluate(ByItemId(), split)
    with pytest.raises(LmrecError, match="needs item_vectors"):
        evaluate(model, split, metrics=["diversity_emb"])


def test_popularity_on_ml100k_loo(ml100k) -> None:
    """RecBole-comparable setting: LOO by time, full ranking, history excluded."""
    res = run_protocol(["popularity"], ml100k, "loo", k=10, metrics=["ndcg", "recall"])
    s = res.runs["popularity"].summary()
    assert s["users"] == 943
    # Ties in the counts are broken by item index (the order items first appear in the data).
    assert s["ndcg@10"] == pytest.approx(0.0449, abs=5e-4)
    assert s["recall@10"] == pytest.approx(0.0859, abs=5e-4)


class UserMean(ByItemId):
    """Predicts each user's mean training rating (a rating predictor for the RMSE path)."""

    def _fit(self, dataset: Dataset) -> None:
        sums = np.bincount(dataset.user, dataset.value, minlength=dataset.n_users)
        counts = np.bincount(dataset.user, minlength=dataset.n_users)
        self.means = sums / np.maximum(counts, 1)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.means[users]


def test_rating_metrics() -> None:
    ds = _ds(TINY)
    ds = Dataset(ds.users, ds.items, ds.user, ds.item, ts=ds.ts,
                 value=np.array([4, 2, 5, 3, 3, 1, 5, 3, 4], np.float32))  # fmt: skip
    split = leave_one_out(ds)
    # Train means: u0 4 (item 0), u1 3, u2 (1 + 5) / 2 = 3; test ratings 5, 3, 4.
    r = rating_metrics(UserMean().fit(split.train), split)
    assert r["ratings"] == 3
    assert r["mse"] == pytest.approx((1 + 0 + 1) / 3) and r["mae"] == pytest.approx(2 / 3)
    assert r["rmse"] == pytest.approx(math.sqrt(2 / 3))
    with pytest.raises(LmrecError, match="does not predict ratings"):
        rating_metrics(ByItemId().fit(split.train), split)
