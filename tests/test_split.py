"""Splitters: Hypothesis properties on small random datasets, hand cases, and ML-100K."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.data import (
    SPLITTERS,
    Dataset,
    Split,
    Vocabulary,
    cold_start_items,
    cold_start_users,
    kfold,
    leave_one_out,
    random_split,
    temporal_split,
)
from lmrec.errors import LmrecError


def make(users: list[int], items: list[int], ts: list[float], n_users: int = 0, n_items: int = 0):
    """A dataset whose `value` is each interaction's original position (its identity)."""
    n_users = max(n_users, max(users, default=-1) + 1)
    n_items = max(n_items, max(items, default=-1) + 1)
    return Dataset(
        Vocabulary([f"u{i}" for i in range(n_users)]),
        Vocabulary([f"i{i}" for i in range(n_items)]),
        np.array(users, dtype=np.int64),
        np.array(items, dtype=np.int64),
        value=np.arange(len(users), dtype=np.float32),
        ts=np.array(ts, dtype=np.float64),
        name="t",
    )


@st.composite
def datasets(draw: st.DrawFn, max_n: int = 60) -> Dataset:
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 8))
    n = draw(st.integers(0, max_n))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 6).map(float), min_size=n, max_size=n))  # many ties
    return make(users, items, ts, n_users, n_items)


def ids(ds: Dataset) -> np.ndarray:
    return ds.value.astype(np.int64)


def assert_partition(ds: Dataset, split: Split) -> None:
    """Every interaction lands in exactly one part; all parts share vocabularies and features."""
    parts = [split.train, split.valid, split.test]
    got = np.sort(np.concatenate([ids(p) for p in parts]))
    np.testing.assert_array_equal(got, np.sort(ids(ds)))
    for p in parts:
        assert p.users is ds.users and p.items is ds.items
        assert p.user_features is ds.user_features and p.item_features is ds.item_features
        assert p.event_names == ds.event_names
        # Each part stays sorted by (user, time), with storage order on ties.
        key = np.lexsort((p.value, p.ts, p.user))
        np.testing.assert_array_equal(key, np.arange(len(p)))
    tv = split.train_valid()
    assert tv is split.train_valid()
    np.testing.assert_array_equal(
        np.sort(ids(tv)), np.sort(np.concatenate([ids(split.train), ids(split.valid)]))
    )


def same(a: Split, b: Split) -> bool:
    return all(
        np.array_equal(ids(x), ids(y))
        for x, y in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test))
    )


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(datasets(), st.booleans())
def test_loo_properties(ds: Dataset, valid: bool) -> None:
    split = leave_one_out(ds, valid=valid)
    assert split.name == "loo" and split.cold is None
    assert_partition(ds, split)
    counts = ds.user_counts()
    test_users = np.bincount(split.test.user, minlength=ds.n_users)
    valid_users = np.bincount(split.valid.user, minlength=ds.n_users)
    np.testing.assert_array_equal(test_users, (counts >= 2).astype(int))
    np.testing.assert_array_equal(valid_users, ((counts >= 3) & valid).astype(int))
    for u in np.flatnonzero(counts >= 2):
        block = ids(ds)[ds.user_ptr[u] : ds.user_ptr[u + 1]]  # the user's time order
        assert ids(split.test)[split.test.user == u].tolist() == [block[-1]]
        newest = ds.ts[ds.user_ptr[u + 1] - 1]
        assert newest == ds.ts[ds.user == u].max()
        if valid and counts[u] >= 3:
            assert ids(split.valid)[split.valid.user == u].tolist() == [block[-2]]
        # Nothing in train is newer than the test interaction.
        assert split.train.ts[split.train.user == u].max() <= newest


@settings(max_examples=60, deadline=None)
@given(datasets(), st.floats(0.05, 0.5), st.floats(0.0, 0.4))
def test_temporal_properties(ds: Dataset, test: float, valid: float) -> None:
    split = temporal_split(ds, test=test, valid=valid)
    assert_partition(ds, split)
    tr, va, te = split.train.ts, split.valid.ts, split.test.ts
    if len(tr) and len(te):
        assert tr.max() <= te.min()
        assert tr.max() < te.min()  # ties at a cut go to the later part
    if len(tr) and len(va):
        assert tr.max() < va.min()
    if len(va) and len(te):
        assert va.max() < te.min()
    n = len(ds)
    # Ties only ever enlarge the later part.
    assert len(te) >= np.floor(test * n + 0.5)
    assert len(te) + len(va) >= np.floor(test * n + 0.5) + np.floor(valid * n + 0.5)


@settings(max_examples=60, deadline=None)
@given(datasets(), st.integers(0, 2**32 - 1))
def test_random_split_properties(ds: Dataset, seed: int) -> None:
    split = random_split(ds, (0.6, 0.2, 0.2), seed=seed)
    assert_partition(ds, split)
    assert same(split, random_split(ds, (0.6, 0.2, 0.2), seed=seed))
    n_u = ds.user_counts()
    n_train = np.floor(n_u * 0.6 + 0.5)
    n_valid = np.floor(n_u * 0.8 + 0.5) - n_train
    np.testing.assert_array_equal(split.train.user_counts(), n_train)
    np.testing.assert_array_equal(split.valid.user_counts(), n_valid)
    np.testing.assert_array_equal(split.test.user_counts(), n_u - n_train - n_valid)


@settings(max_examples=40, deadline=None)
@given(datasets(), st.integers(2, 6), st.integers(0, 1000))
def test_kfold_properties(ds: Dataset, k: int, seed: int) -> None:
    folds = kfold(ds, k, seed=seed)
    assert [f.name for f in folds] == [f"kfold-{i}/{k}" for i in range(1, k + 1)]
    times_in_test = np.zeros(len(ds), dtype=int)
    for f in folds:
        assert_partition(ds, f)
        assert len(f.valid) == 0
        times_in_test[ids(f.test)] += 1
        # Per user, folds differ in size by at most one.
    np.testing.assert_array_equal(times_in_test, np.ones(len(ds), dtype=int))
    per_user = np.stack([f.test.user_counts() for f in folds])
    assert (per_user.max(axis=0) - per_user.min(axis=0) <= 1).all()
    again = kfold(ds, k, seed=seed)
    assert all(same(a, b) for a, b in zip(folds, again, strict=True))


@settings(max_examples=60, deadline=None)
@given(datasets(), st.floats(0.1, 0.6), st.sampled_from([0.0, 0.2]), st.integers(0, 99))
def test_cold_start_properties(ds: Dataset, fraction: float, vf: float, seed: int) -> None:
    for fn, attr, kind in (
        (cold_start_users, "user", "users"),
        (cold_start_items, "item", "items"),
    ):
        split = fn(ds, fraction, valid_fraction=vf, seed=seed)
        assert split.cold == kind and split.name == f"cold-{kind}"
        assert_partition(ds, split)
        train_keys = set(getattr(split.train, attr).tolist())
        test_keys = set(getattr(split.test, attr).tolist())
        valid_keys = set(getattr(split.valid, attr).tolist())
        assert not train_keys & test_keys
        assert not train_keys & valid_keys
        assert not test_keys & valid_keys
        active = len(set(getattr(ds, attr).tolist()))
        assert len(test_keys) == np.floor(fraction * active + 0.5)
        assert len(valid_keys) == np.floor(vf * active + 0.5)
        assert same(split, fn(ds, fraction, valid_fraction=vf, seed=seed))


# -- hand cases --------------------------------------------------------------------------------


def test_loo_by_hand_with_equal_timestamps() -> None:
    # u0: x@1, y@2, z@2 (z stored after y) -> test z, valid y; u1: one interaction -> train;
    # u2: two -> one train, one test.
    ds = make([0, 0, 1, 0, 2, 2], [0, 1, 0, 2, 1, 0], [1, 2, 5, 2, 9, 3])
    split = leave_one_out(ds)
    assert ids(split.test).tolist() == [3, 4]
    assert ids(split.valid).tolist() == [1]
    assert sorted(ids(split.train).tolist()) == [0, 2, 5]
    no_valid = leave_one_out(ds, valid=False)
    assert len(no_valid.valid) == 0 and sorted(ids(no_valid.train).tolist()) == [0, 1, 2, 5]
    # train_valid keeps storage order of the tie at ts=2 for u0: x, y (valid) then nothing else.
    assert split.train_valid().sequence(0).tolist() == [0, 1]


def test_temporal_by_hand() -> None:
    ds = make([0] * 10, list(range(10)), list(range(1, 11)))
    split = temporal_split(ds, test=0.2, valid=0.2)
    assert split.test.ts.tolist() == [9, 10]
    assert split.valid.ts.tolist() == [7, 8]
    assert split.train.ts.tolist() == [1, 2, 3, 4, 5, 6]
    # A tie at the cut: three interactions at t=3 all go to test.
    tied = make([0, 1, 0, 1, 0], [0, 0, 1, 1, 2], [1, 2, 3, 3, 3])
    s = temporal_split(tied, test=0.2, valid=0.0)
    assert sorted(s.test.ts.tolist()) == [3, 3, 3] and len(s.valid) == 0
    # The valid cut lands inside the test tie: valid stays empty rather than overlap.
    s = temporal_split(tied, test=0.2, valid=0.2)
    assert len(s.valid) == 0 and len(s.test) == 3


def test_random_split_by_hand() -> None:
    ds = make([0] * 10 + [1] * 3 + [2], [*range(10), 0, 1, 2, 5], list(range(14)))
    split = random_split(ds, (0.8, 0.1, 0.1), seed=7)
    assert split.train.user_counts().tolist() == [8, 2, 1]
    assert split.valid.user_counts().tolist() == [1, 1, 0]
    assert split.test.user_counts().tolist() == [1, 0, 0]
    assert same(split, random_split(ds, (0.8, 0.1, 0.1), seed=7))
    assert any(not same(split, random_split(ds, (0.8, 0.1, 0.1), seed=s)) for s in range(8, 12))


def test_empty_dataset_splits_to_empty_parts() -> None:
    ds = make([], [], [], n_users=2, n_items=2)
    for name, fn in SPLITTERS.items():
        split = fn(ds)
        assert (len(split.train), len(split.valid), len(split.test)) == (0, 0, 0), name
    assert len(kfold(ds, 3)) == 3


def test_splitters_registry() -> None:
    assert set(SPLITTERS) == {"loo", "temporal", "random", "cold-users", "cold-items"}
    ds = make([0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [1, 2, 3, 4, 5])
    assert SPLITTERS["loo"](ds).name == "loo"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ds: random_split(ds, (0.8, 0.1, 0.2)), "sum to 1"),
        (lambda ds: random_split(ds, (0.5, 0.5)), "three"),
        (lambda ds: random_split(ds, (1.2, -0.1, -0.1)), "non-negative"),
        (lambda ds: random_split(ds, (0.0, 0.5, 0.5)), "train ratio"),
        (lambda ds: random_split(ds, "abc"), "three numbers"),
        (lambda ds: random_split(ds, seed=1.5), "seed"),
        (lambda ds: random_split(ds, seed=True), "seed"),
        (lambda ds: kfold(ds, 1), "k must be an integer >= 2"),
        (lambda ds: kfold(ds, 2.0), "k must be"),
        (lambda ds: temporal_split(ds, test=0.0), r"test must be in \(0, 1\)"),
        (lambda ds: temporal_split(ds, test=1.0), "test must be in"),
        (lambda ds: temporal_split(ds, test=float("nan")), "test must be a number"),
        (lambda ds: temporal_split(ds, test=0.5, valid=0.5), "below 1"),
        (lambda ds: temporal_split(ds, valid=-0.1), r"valid must be in \[0, 1\)"),
        (lambda ds: cold_start_users(ds, 0.0), "fraction must be in"),
        (lambda ds: cold_start_users(ds, 1.5), "fraction must be in"),
        (lambda ds: cold_start_items(ds, 0.6, valid_fraction=0.4), "below 1"),
        (lambda ds: cold_start_items(ds, "half"), "fraction must be a number"),
        (lambda ds: leave_one_out([1, 2, 3]), "expected a Dataset"),
    ],
)
def test_bad_arguments_raise_lmrec_error(call, message: str) -> None:
    ds = make([0, 0, 1], [0, 1, 1], [1, 2, 3])
    with pytest.raises(LmrecError, match=message):
        call(ds)


# -- ML-100K -----------------------------------------------------------------------------------


def test_ml100k_splits(ml100k: Dataset) -> None:
    t0 = time.perf_counter()
    loo = leave_one_out(ml100k)
    elapsed = time.perf_counter() - t0
    assert (len(loo.train), len(loo.valid), len(loo.test)) == (98114, 943, 943)
    assert len(loo.train_valid()) == 99057
    # Every user's test interaction is their newest one.
    newest = np.maximum.reduceat(ml100k.ts, ml100k.user_ptr[:-1])
    np.testing.assert_array_equal(loo.test.ts, newest)
    assert elapsed < 1.0

    tmp = temporal_split(ml100k, test=0.1, valid=0.1)
    assert tmp.train.ts.max() < tmp.valid.ts.min() <= tmp.valid.ts.max() < tmp.test.ts.min()
    assert 10_000 <= len(tmp.test) < 10_100

    cu = cold_start_users(ml100k, 0.2, seed=3)
    assert len(np.unique(cu.test.user)) == round(0.2 * 943)
    assert not set(cu.train.user.tolist()) & set(cu.test.user.tolist())
    ci = cold_start_items(ml100k, 0.2, seed=3)
    assert not set(ci.train.item.tolist()) & set(ci.test.item.tolist())
