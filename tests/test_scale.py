"""The synthetic shop generator (lmrec.io.synthetic, `lmrec synth`) and the sparse item kNN
fit that large catalogues need (its neighbours equal the dense fit's)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmrec import Dataset, Store
from lmrec.cli import main
from lmrec.errors import LmrecError
from lmrec.io.synthetic import synthetic_files
from lmrec.models import create_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return synthetic_files(out, users=400, items=600, interactions=8000, seed=3)


def test_files_have_the_asked_sizes_and_are_reproducible(files, tmp_path):
    inter = pd.read_csv(files.interactions)
    items = pd.read_csv(files.items)
    users = pd.read_csv(files.users)
    assert len(inter) == files.n_interactions == 8000
    assert len(items) == 600 and len(users) == 400
    assert inter.groupby("user").size().min() >= 2
    again = synthetic_files(tmp_path, users=400, items=600, interactions=8000, seed=3)
    assert again.interactions.read_bytes() == files.interactions.read_bytes()
    other = synthetic_files(tmp_path / "o", users=400, items=600, interactions=8000, seed=4)
    assert other.interactions.read_bytes() != files.interactions.read_bytes()


def test_popularity_is_skewed_and_order_carries_signal(files):
    inter = pd.read_csv(files.interactions)
    counts = inter["item"].value_counts().to_numpy()
    top = counts[: len(counts) // 10].sum() / counts.sum()
    assert top > 0.35  # the top 10% of items take far more than 10% of the traffic
    # successors: next item id = last one + 1 (same category) far above chance
    num = inter["item"].str[1:].astype(int).to_numpy()
    same_user = inter["user"].to_numpy()[1:] == inter["user"].to_numpy()[:-1]
    step = (num[1:] - num[:-1] == 1) & same_user
    assert step.sum() / same_user.sum() > 0.15


def test_titles_share_their_category_words(files):
    items = pd.read_csv(files.items)
    words = items["title"].str.split().map(lambda w: set(w[1:3]))
    cat = items["categories"].to_numpy()
    same = [len(words[i] & words[j]) > 0 for i in range(0, 200, 7) for j in range(200)]
    pairs = [cat[i] == cat[j] for i in range(0, 200, 7) for j in range(200)]
    same, pairs = np.array(same), np.array(pairs)
    assert same[pairs].mean() > 3 * same[~pairs].mean()


def test_cli_writes_files_that_import(tmp_path, capsys):
    out = tmp_path / "shop"
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = ["synth", "--out", str(out), "--users", "60", "--items", "50", "--interactions", "500"]
    assert main(args) == 0
    assert "lmrec import --interactions" in capsys.readouterr().out
    imp = ["--db", db, "import", "-q", "--interactions", str(out / "interactions.csv"),
           "--items", str(out / "items.csv"), "--users", str(out / "users.csv")]  # fmt: skip
    assert main(imp) == 0
    with Store(db) as s:
        c = s.counts()
        ds = Dataset.from_store(s)
    assert c["users"] == 60 and c["items"] == 50
    assert c["interactions"] <= 500
    assert ds.item_features is not None and all(ds.item_features.title)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 10, "items": 5, "interactions": 5}, "interactions >= users x min_per_user"),
        ({"p_next": 1.5}, "p_next and p_favourite lie in [0, 1]"),
        ({"fmt": "xlsx"}, "fmt is 'csv' or 'parquet'"),
    ],
)
def test_bad_arguments_say_what_is_wrong(tmp_path, kwargs, message):
    with pytest.raises(LmrecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        synthetic_files(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("similarity", ["asymmetric", "cosine", "jaccard", "pearson"])
def test_sparse_item_knn_finds_the_dense_neighbours(files, similarity):
    frame = pd.read_csv(files.interactions).rename(columns={"time": "ts"})
    ds = Dataset.from_frame(frame[["user", "item", "ts"]])
    kw = {"similarity": similarity, "n_neighbors": 15}
    dense = create_model("itemknn", sparse=False, **kw).fit(ds)
    sparse = create_model("itemknn", sparse=True, **kw).fit(ds)
    a, b = dense.sim.toarray(), sparse.sim.toarray()
    assert dense.sim.nnz == sparse.sim.nnz > 0
    # the same k best similarities in every column (ties may pick different items)
    np.testing.assert_allclose(-np.sort(-a, axis=0)[:15], -np.sort(-b, axis=0)[:15], rtol=1e-6)
    everything = create_model("itemknn", sparse=True, similarity=similarity, n_neighbors=600)
    full = create_model("itemknn", sparse=False, similarity=similarity, n_neighbors=600)
    np.testing.assert_allclose(
        everything.fit(ds).sim.toarray(), full.fit(ds).sim.toarray(), rtol=1e-6, atol=1e-7
    )


# -- sampled evaluation from the candidates alone ---------------------------------------------


@pytest.fixture(scope="module")
def split(files):
    from lmrec.data.split import leave_one_out

    frame = pd.read_csv(files.interactions).rename(columns={"time": "ts"})
    return leave_one_out(Dataset.from_frame(frame[["user", "item", "ts"]]))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("popularity", {}),
        ("itemknn", {}),
        ("ease", {}),
        ("als", {"epochs": 3}),
        ("sasrec", {"epochs": 1, "patience": None, "embedding_size": 16, "max_len": 20}),
    ],
)
def test_sampled_ranking_from_candidates_equals_ranking_everything(split, name, params):
    """rank_among (score_columns of the targets and negatives only) gives exactly the lists
    of ranking the whole catalogue and keeping the candidates: the same negatives (the dense
    sampler below SPARSE_SAMPLER_ITEMS), the same order, ties by item index."""
    from lmrec.evaluation import evaluate

    model = create_model(name, **params).fit(split.train)
    kw = {"on": "test", "k": 10, "sampled": 50, "metrics": ["ndcg", "recall"], "seed": 1}
    for sampler in ("uniform", "popularity"):
        fast = evaluate(model, split, sampler=sampler, **kw)
        cls = type(model)
        keep = cls.rank_among
        try:
            cls.rank_among = None  # evaluate falls back to ranking the whole catalogue
            slow = evaluate(model, split, sampler=sampler, **kw)
        finally:
            cls.rank_among = keep
        np.testing.assert_array_equal(fast.lists, slow.lists)
        assert fast.sampled == slow.sampled == f"sampled: 50 negatives, {sampler}"
        np.testing.assert_allclose(fast.per_user["ndcg@10"], slow.per_user["ndcg@10"])


def test_score_columns_are_the_columns_of_score(split):
    from lmrec.models.base import History

    hist = History.from_dataset(split.train, np.arange(30))
    cols = np.array([0, 3, 4, 50, split.train.n_items - 1])
    for name, params in [("itemknn", {}), ("ease", {}), ("als", {"epochs": 2}),
                         ("popularity", {}), ("sasrec", {"epochs": 1, "patience": None})]:  # fmt: skip
        model = create_model(name, **params).fit(split.train)
        np.testing.assert_allclose(
            model.score_columns(hist, cols), model.score(hist)[:, cols], rtol=1e-5, atol=1e-6
        )


def test_list_sampler_draws_distinct_unseen_eligible_items_by_weight():
    import scipy.sparse as sp

    from lmrec.evaluation.runner import _sample_negative_lists, _sample_negatives

    rng = np.random.default_rng(0)
    n_items, rows = 300, 4000
    seen = sp.random(rows, n_items, density=0.05, format="csr", random_state=1)
    eligible = np.ones(n_items, bool)
    eligible[::7] = False
    weights = 1.0 / np.arange(1, n_items + 1)
    lists = _sample_negative_lists(20, seen, eligible, weights, rng)
    assert lists.shape == (rows, 20) and (lists >= 0).all()
    for r in range(0, rows, 97):
        row = lists[r]
        assert len(set(row)) == 20 and eligible[row].all()
        assert not set(row) & set(seen.indices[seen.indptr[r] : seen.indptr[r + 1]])
    # the same inclusion frequencies as the dense (Gumbel top-k) sampler
    freq_lists = np.bincount(lists.ravel(), minlength=n_items) / rows
    dense = _sample_negatives(20, seen, eligible, weights, np.random.default_rng(1))
    freq_dense = dense.mean(axis=0)
    assert np.abs(freq_lists - freq_dense).max() < 0.04
    assert freq_lists[1] > 5 * freq_lists[200]
    # a row with fewer available items than asked gets all of them, padded with -1
    few = np.zeros(n_items, bool)
    few[:5] = True
    short = _sample_negative_lists(20, seen[:3], few, weights, rng)
    for r in range(3):
        own = set(seen.indices[seen.indptr[r] : seen.indptr[r + 1]])
        expect = {i for i in range(5) if i not in own}
        assert set(short[r][short[r] >= 0]) == expect and (short[r] == -1).sum() == 20 - len(expect)


def test_sampled_evaluation_on_a_large_catalogue_ranks_only_candidates(tmp_path, monkeypatch):
    """Above SPARSE_SAMPLER_ITEMS items the negatives are index lists and the model scores
    only the candidates: `score` (the whole catalogue) is never called."""
    from lmrec.data.split import leave_one_out
    from lmrec.evaluation import evaluate, runner

    f = synthetic_files(tmp_path, users=300, items=2000, interactions=6000, seed=5)
    frame = pd.read_csv(f.interactions).rename(columns={"time": "ts"})
    split = leave_one_out(Dataset.from_frame(frame[["user", "item", "ts"]]))
    monkeypatch.setattr(runner, "SPARSE_SAMPLER_ITEMS", 100)
    model = create_model("itemknn").fit(split.train)
    pop = create_model("popularity").fit(split.train)

    def no_full_scores(history):
        raise AssertionError("scored the whole catalogue")

    monkeypatch.setattr(model, "score", no_full_scores)
    res = evaluate(model, split, on="test", k=10, sampled=100, metrics=["ndcg"])
    base = evaluate(pop, split, on="test", k=10, sampled=100, metrics=["ndcg"])
    ndcg, ndcg_pop = np.nanmean(res.per_user["ndcg@10"]), np.nanmean(base.per_user["ndcg@10"])
    assert 0 < ndcg_pop < ndcg <= 1  # the successor structure is learnable by item kNN


def test_ranking_batches_shrink_with_the_catalogue_and_answer_the_same(split, monkeypatch):
    """Dense ranking batches hold at most RANK_CELLS scores (16 users at 1M items); smaller
    batches give the same lists and metrics as one batch of everything."""
    import lmrec.models.base as base
    from lmrec.evaluation import evaluate

    assert base.rows_per_batch(1_000_000, 512) == 16
    assert base.rows_per_batch(12_101, 1024) == 1024
    assert base.rows_per_batch(10**9, 512) == 1
    model = create_model("itemknn").fit(split.train)
    users = [str(u) for u in split.train.users.ids[:40]]
    kw = {"on": "test", "k": 10, "metrics": ["ndcg", "recall"]}
    whole, full = model.recommend_many(users, 10), evaluate(model, split, **kw)
    monkeypatch.setattr(base, "RANK_CELLS", 3 * split.train.n_items)  # batches of 3 users
    assert base.rows_per_batch(split.train.n_items, 512) == 3
    small = model.recommend_many(users, 10)
    assert [r.items for r in small] == [r.items for r in whole]
    np.testing.assert_array_equal(evaluate(model, split, **kw).lists, full.lists)
