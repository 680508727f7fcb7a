"""Accuracy by item popularity bucket and by history length (`lmrec.evaluation.breakdown`),
in the runner, the protocol driver and `lmrec evaluate --breakdown`, on small synthetic data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.cli import main
from lmrec.data import Dataset, Vocabulary
from lmrec.data.split import leave_one_out, random_split
from lmrec.errors import LmrecError
from lmrec.evaluation import evaluate, paired_test, run_protocol
from lmrec.evaluation.breakdown import (
    HISTORY_EDGES,
    breakdown,
    bucket_items_by_popularity,
    bucket_metrics,
    bucket_users_by_history,
    compare_breakdowns,
)
from lmrec.evaluation.runner import rank_targets
from lmrec.models import create_model
from lmrec.models.base import History, Recommender


class PreferLargeIds(Recommender):
    """Scores item i by int(id): recommends the rare items 20..29 of `_catalogue` first."""

    name = "prefer_large_ids"

    def _fit(self, dataset: Dataset) -> None:
        pass

    def score(self, history: History) -> np.ndarray:
        assert self.items is not None
        s = self.items.ids.astype(np.float32)
        return np.broadcast_to(s, (len(history), len(s))).copy()


def _catalogue() -> Dataset:
    """60 users with 4 interactions in time order over 30 items: items 0..19 occur 6 times in
    training, items 20..29 once (users 0..9) and are the test item of every even user."""
    rows: list[tuple[str, str, float]] = []
    for u in range(60):
        seq = [u % 20, (u + 5) % 20]
        if u < 10:
            seq.append(20 + (u + 3) % 10)
        seq.append((u + 11) % 20)  # valid
        seq.append(20 + u % 10 if u % 2 == 0 else (u + 3) % 20)  # test
        rows += [(f"u{u}", str(i), float(t)) for t, i in enumerate(seq)]
    users = Vocabulary(dict.fromkeys(r[0] for r in rows))
    items = Vocabulary([str(i) for i in range(30)])
    return Dataset(
        users,
        items,
        users.indices([r[0] for r in rows]),
        items.indices([r[1] for r in rows]),
        ts=np.array([r[2] for r in rows]),
    )


def _skewed(n_users: int = 40, n_items: int = 50, per_user: int = 20) -> Dataset:
    """Users with `per_user` distinct items each, drawn (seeded) with Zipf-like popularity."""
    rng = np.random.default_rng(3)
    p = 1.0 / np.arange(1, n_items + 1)
    user, item = [], []
    for u in range(n_users):
        user += [u] * per_user
        item += rng.choice(n_items, size=per_user, replace=False, p=p / p.sum()).tolist()
    users = Vocabulary([f"u{u}" for u in range(n_users)])
    items = Vocabulary([str(i) for i in range(n_items)])
    return Dataset(users, items, np.array(user), np.array(item), ts=np.arange(len(user)) * 1.0)


def test_popularity_buckets_known_answer() -> None:
    counts = np.array([5, 0, 9, 9, 1, 3, 0, 7])
    names, b = bucket_items_by_popularity(counts)
    # Sorted: 2 (9), 3 (9, tie: by index), 7 | 0, 5, 4 | 1 (0), 6 (0): 3 / 3 / 2 items
    assert names == ["head", "torso", "tail"]
    assert b.tolist() == [1, 2, 0, 0, 1, 1, 2, 0]
    # Zero-count items go to the tail even when the cut would put them higher.
    _, b = bucket_items_by_popularity(np.array([4, 0, 0, 0, 0, 0]))
    assert b.tolist() == [0, 2, 2, 2, 2, 2]
    assert bucket_items_by_popularity(counts, 1)[1].tolist() == [0] * 8
    with pytest.raises(LmrecError, match="n_buckets"):
        bucket_items_by_popularity(counts, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=60), st.integers(1, 5))
def test_popularity_buckets_partition_the_catalogue(counts: list[int], n: int) -> None:
    c = np.array(counts, dtype=np.int64)
    names, b = bucket_items_by_popularity(c, n)
    assert len(names) == n and b.shape == c.shape
    assert ((b >= 0) & (b < n)).all()  # every item in exactly one bucket
    assert (b[c == 0] == n - 1).all()  # no training data: tail
    for lo in range(n - 1):  # more popular buckets hold items at least as popular
        upper, lower = c[(b == lo) & (c > 0)], c[b > lo]
        if len(upper) and len(lower):
            assert upper.min() >= lower.max()
    if (c > 0).all():  # thirds (as equal as possible) of the catalogue
        sizes = np.bincount(b, minlength=n)
        assert sizes.tolist() == [len(p) for p in np.array_split(np.arange(len(c)), n)]


def test_history_buckets_known_answer() -> None:
    lengths = np.array([0, 3, 3, 7, 12, 25, 60, 60, 700])
    names, b = bucket_users_by_history(lengths, min_users=1)
    assert names == ["0", "1-4", "5-9", "10-19", "20-49", "50-99", "500+"]
    assert b.tolist() == [0, 1, 1, 2, 3, 4, 5, 5, 6]
    # At least 3 users per bucket: 0+1-4 (3), 5-9+10-19+20-49 (3), then 50-99+500+ (3).
    names, b = bucket_users_by_history(lengths, min_users=3)
    assert names == ["0-4", "5-49", "50+"] and b.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # A short last group joins the one before.
    names, b = bucket_users_by_history(lengths, min_users=4)
    assert names == ["0-9", "10+"] and b.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    with pytest.raises(LmrecError, match="edges"):
        bucket_users_by_history(lengths, edges=(1, 5))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 800), min_size=1, max_size=80), st.integers(1, 30))
def test_history_buckets_partition_the_users(lengths: list[int], min_users: int) -> None:
    x = np.array(lengths)
    names, b = bucket_users_by_history(x, min_users=min_users)
    assert ((b >= 0) & (b < len(names))).all()
    sizes = np.bincount(b, minlength=len(names))
    assert (sizes > 0).all()
    if len(names) > 1:
        assert (sizes >= min_users).all()
    for g in range(len(names) - 1):  # contiguous ranges, shortest first
        assert x[b == g].max() < x[b == g + 1].min()
    for g, name in enumerate(names):  # the name is the range of lengths
        lo, _, hi = name.rstrip("+").partition("-")
        assert x[b == g].min() >= int(lo)
        if not name.endswith("+"):
            assert x[b == g].max() <= int(hi or lo)
    # The default: 5% of the users.
    _, b5 = bucket_users_by_history(x)
    assert np.bincount(b5).min() >= (np.ceil(0.05 * len(x)) if np.bincount(b5).size > 1 else 1)
    assert HISTORY_EDGES[0] == 0


def test_a_popularity_model_scores_zero_on_the_tail() -> None:
    split = leave_one_out(_catalogue())
    pop = create_model("popularity").fit(split.train)
    res = evaluate(pop, split, k=10, breakdown=("popularity", "history"))
    bd = res.breakdown["popularity"]
    assert bd.names == ["head", "torso", "tail"]
    assert [b.items for b in bd.buckets] == [10, 10, 10]
    assert bd["tail"].range == "1-1" and bd["head"].range == "6-6"
    tail = bd["tail"].summary()
    assert tail["users"] == 30  # the even users, whose test item is rare
    assert tail["ndcg@10"] == 0 and tail["recall@10"] == 0
    assert bd["head"].summary()["users"] + bd["torso"].summary()["users"] == 30
    assert res.summary()["ndcg@10"] > 0
    rare = evaluate(PreferLargeIds().fit(split.train), split, k=10, breakdown=["popularity"])
    assert rare.breakdown["popularity"]["tail"].summary()["ndcg@10"] > 0.3
    # The reference's ratio is 1, the p-value that of the paired test on the bucket's users.
    rows = compare_breakdowns(
        {"pop": bd, "rare": rare.breakdown["popularity"]}, "pop", metric="ndcg@10"
    )
    assert [(r["bucket"], r["model"]) for r in rows][:2] == [("head", "pop"), ("head", "rare")]
    by = {(r["bucket"], r["model"]): r for r in rows}
    assert by["head", "pop"]["ratio"] == 1 and by["head", "pop"]["p_value"] is None
    assert by["tail", "rare"]["ratio"] is None  # the reference scores 0 there
    want = paired_test(bd["tail"], rare.breakdown["popularity"]["tail"], "ndcg@10")
    assert by["tail", "rare"]["p_value"] == pytest.approx(want["p_value"])
    assert 0 <= want["p_value"] < 0.05


def test_one_bucket_is_the_overall_metric_and_buckets_add_up() -> None:
    split = random_split(_skewed(), seed=1)  # several test items per user
    assert np.bincount(split.test.user).max() > 1
    model = create_model("itemknn").fit(split.train)
    ks = (3, 10)
    res = evaluate(model, split, k=ks, metrics=["ndcg", "recall", "mrr"])
    ranking = rank_targets(model, split, "test", 10)
    for b in (
        breakdown(ranking, split.train, "popularity", ks, ["ndcg", "recall", "mrr"], n_buckets=1),
        breakdown(ranking, split.train, "history", ks, ["ndcg", "recall", "mrr"], edges=(0,)),
    ):
        assert len(b.buckets) == 1
        only = b.buckets[0]
        assert only.users.tolist() == res.users.tolist()
        for key in ("ndcg@3", "ndcg@10", "recall@10", "mrr@10"):
            np.testing.assert_allclose(only.per_user[key], res.per_user[key])
    # History buckets split the users: their means, weighted by size, are the overall mean.
    hist = breakdown(ranking, split.train, "history", ks, ["ndcg"], min_users=1)
    assert sum(len(b.users) for b in hist.buckets) == len(res.users)
    total = sum(b.per_user["ndcg@10"].sum() for b in hist.buckets)
    assert total / len(res.users) == pytest.approx(res.summary()["ndcg@10"])
    # Popularity buckets: a user counts in every bucket holding one of their test items.
    pb = breakdown(ranking, split.train, "popularity", ks, ["recall"])
    _, item_bucket = bucket_items_by_popularity(split.train)
    for b, bucket in enumerate(pb.buckets):
        rel = ranking.relevant[:, item_bucket == b]
        assert bucket.users.tolist() == ranking.users[np.diff(rel.indptr) > 0].tolist()
    with pytest.raises(LmrecError, match="accuracy metrics only"):
        bucket_metrics(ranking.lists, ranking.relevant, ks, ["coverage"])


def test_bucket_metrics_count_only_the_bucket_items() -> None:
    import scipy.sparse as sp

    lists = np.array([[4, 1, 2], [0, 3, -1]])
    rel = sp.csr_matrix(np.array([[0, 1, 0, 0, 1], [1, 0, 0, 1, 0]]))
    rows, pu = bucket_metrics(lists, rel, [3], ["ndcg", "recall"], items=np.arange(5) >= 3)
    # Bucket {3, 4}: user 0 has target 4 at rank 1; user 1 target 3 at rank 2.
    assert rows.tolist() == [0, 1]
    np.testing.assert_allclose(pu["recall@3"], [1, 1])
    np.testing.assert_allclose(pu["ndcg@3"], [1, 1 / np.log2(3)])
    rows, pu = bucket_metrics(lists, rel, [3], ["recall"], items=np.arange(5) == 1)
    assert rows.tolist() == [0] and pu["recall@3"].tolist() == [1.0]


def test_run_protocol_pools_the_breakdown_over_folds() -> None:
    res = run_protocol(
        ["popularity", "itemknn"],
        _catalogue(),
        "kfold",
        k=5,
        folds=2,
        metrics=["ndcg", "recall"],
        breakdown=["popularity", "history"],
    )
    rows = res.breakdown(metric="ndcg@5")
    assert set(rows) == {"popularity", "history"}
    pooled = res.runs["itemknn"].pooled()
    assert sum(len(b.users) for b in pooled.breakdown["history"].buckets) == len(pooled.users)
    models = {r["model"] for r in rows["popularity"]}
    assert models == {"popularity", "itemknn"}
    assert all(r["reference"] == "popularity" for r in rows["history"])
    sampled = run_protocol(["popularity"], _catalogue(), k=5, sampled=5, breakdown=["history"])
    assert {r["ranking"] for r in sampled.breakdown()["history"]} == {
        "sampled: 5 negatives, uniform"
    }
    with pytest.raises(LmrecError, match="unknown breakdown"):
        evaluate(
            create_model("popularity").fit(_catalogue()),
            leave_one_out(_catalogue()),
            breakdown=["genre"],
        )


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("breakdown")
    ds = _catalogue()
    with (d / "events.csv").open("w") as fh:
        fh.write("user_id,item_id,timestamp\n")
        for u, i, t in zip(ds.user, ds.item, ds.ts, strict=True):
            fh.write(f"{ds.users.ids[u]},{ds.items.ids[i]},{int(t)}\n")
    url = f"sqlite:///{d / 'store.db'}"
    assert main(["--db", url, "import", "-q", "--interactions", str(d / "events.csv")]) == 0
    return url


def test_cli_prints_and_writes_the_breakdown(db: str, tmp_path: Path, capsys) -> None:
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    args = ["--db", db, "evaluate", "--models", "popularity,itemknn", "--metrics", "ndcg,recall"]
    args += ["--breakdown", "popularity,history", "-q", "--json", str(out), "--csv", str(table)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "popularity breakdown by item popularity" in text
    assert "history breakdown by user history length" in text
    assert "ranking: full; against popularity" in text
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("bucket  items"))
    assert lines[head].split()[:6] == [
        "bucket",
        "items",
        "interactions",
        "model",
        "users",
        "ndcg@10",
    ]
    tail_pop = next(
        line for line in lines[head:] if line.startswith("tail") and "popularity" in line
    )
    assert tail_pop.split()[1:5] == ["10", "1-1", "popularity", "30"]
    assert tail_pop.split()[5:7] == ["0.0000", "0.0000"]
    rep = json.loads(out.read_text())
    rows = rep["breakdown"]["popularity"]
    assert {(r["bucket"], r["model"]) for r in rows} >= {
        ("tail", "itemknn"),
        ("head", "popularity"),
    }
    assert rep["models"]["itemknn"]["folds"][0]["breakdown"]["history"]["by"] == "history"
    with (tmp_path / "r-breakdown.csv").open() as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == len(rows) + len(rep["breakdown"]["history"])
    tail = next(r for r in got if r["bucket"] == "tail" and r["model"] == "popularity")
    assert float(tail["ndcg@10"]) == 0 and tail["by"] == "popularity" and tail["users"] == "30"
    assert tail["ranking"] == "full" and all(r["ranking"] == "full" for r in rows)
    # The main CSV keeps its rows, one per model.
    with table.open() as fh:
        assert [r["model"] for r in csv.DictReader(fh)] == ["popularity", "itemknn"]


def test_cli_refuses_an_unknown_breakdown(db: str, capsys) -> None:
    assert main(["--db", db, "evaluate", "--models", "popularity", "--breakdown", "genre"]) == 1
    assert "--breakdown takes popularity and/or history" in capsys.readouterr().err
