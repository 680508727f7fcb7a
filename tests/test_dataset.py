"""`Dataset`: matrix, sequences, filters, construction, persistence and stats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset, Vocabulary
from lmrec.data.dataset import ItemFeatures, UserFeatures
from lmrec.errors import LmrecError
from lmrec.store import Store

EVENTS = ("cart", "purchase", "view")


def shop() -> Dataset:
    """Two users, three items, three event types; user a has two events on item x."""
    return Dataset(
        Vocabulary(["a", "b"]),
        Vocabulary(["x", "y", "z"]),
        np.array([0, 0, 0, 1, 1, 0]),
        np.array([0, 0, 1, 1, 2, 2]),
        event=np.array([2, 1, 0, 2, 2, 2]),  # view, purchase, cart, view, view, view
        value=np.array([np.nan, 3.0, np.nan, np.nan, 2.0, 0.5], np.float32),
        ts=np.array([1.0, 2.0, 3.0, 1.0, 2.0, 4.0]),
        event_names=EVENTS,
        name="shop",
    )


# -- matrix ------------------------------------------------------------------------------------


def test_matrix_default_weighs_every_event_one() -> None:
    m = shop().matrix()
    assert m.shape == (2, 3) and m.dtype == np.float32
    np.testing.assert_array_equal(m.toarray(), [[1, 1, 1], [0, 1, 1]])


def test_matrix_event_weights_drop_missing_events_and_aggregate() -> None:
    ds = shop()
    w = {"view": 1.0, "purchase": 5.0}  # cart is missing -> dropped
    np.testing.assert_array_equal(ds.matrix(w).toarray(), [[5, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(ds.matrix(w, aggregate="sum").toarray(), [[6, 0, 1], [0, 1, 1]])
    # last: user a saw x (1) then bought it (5) -> 5; count: two events on (a, x).
    np.testing.assert_array_equal(ds.matrix(w, aggregate="last").toarray(), [[5, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(ds.matrix(w, aggregate="count").toarray(), [[2, 0, 1], [0, 1, 1]])
    # The dropped cart event leaves no explicit zero behind.
    assert ds.matrix(w).nnz == 4


def test_matrix_last_follows_time_not_size() -> None:
    ds = Dataset(
        Vocabulary(["a"]),
        Vocabulary(["x"]),
        [0, 0],
        [0, 0],
        event=[1, 0],
        ts=[5.0, 9.0],
        event_names=("click", "purchase"),
    )
    w = {"purchase": 4.0, "click": 1.0}
    assert ds.matrix(w, aggregate="last").toarray().tolist() == [[1.0]]
    assert ds.matrix(w, aggregate="max").toarray().tolist() == [[4.0]]


def test_matrix_use_value_and_dataset_event_weights() -> None:
    ds = shop()
    m = ds.matrix(use_value=True, aggregate="sum")  # NaN values count as 1
    np.testing.assert_array_equal(m.toarray(), [[4, 1, 0.5], [0, 1, 2]])
    weighted = ds.with_event_weights({"view": 2.0})
    np.testing.assert_array_equal(weighted.matrix().toarray(), [[2, 0, 2], [0, 2, 2]])
    np.testing.assert_array_equal(weighted.matrix(use_value=True).toarray(), [[2, 0, 1], [0, 2, 4]])
    assert weighted.matrix() is weighted.matrix()  # cached
    with pytest.raises(ValueError, match="aggregate"):
        ds.matrix(aggregate="mean")  # type: ignore[arg-type]


def test_item_and_user_counts() -> None:
    ds = shop()
    assert ds.item_counts().tolist() == [1, 2, 2]  # distinct users
    assert ds.user_counts().tolist() == [4, 2]  # interactions


# -- sequences ---------------------------------------------------------------------------------


def test_sequences_are_time_ordered_and_stable_on_ties() -> None:
    ds = Dataset(
        Vocabulary(["a", "b"]),
        Vocabulary(["p", "q", "r", "s"]),
        [1, 0, 0, 0, 1, 0],
        [0, 3, 1, 2, 3, 0],
        ts=[5.0, 2.0, 1.0, 2.0, 5.0, 2.0],
    )
    # a: q@1, then s, r, p all at t=2 in the order given; b: p, s both at t=5.
    assert ds.sequence(0).tolist() == [1, 3, 2, 0]
    assert ds.sequence(1).tolist() == [0, 3]
    assert [s.tolist() for s in ds.sequences()] == [[1, 3, 2, 0], [0, 3]]
    assert ds.user_ptr.tolist() == [0, 4, 6]
    with pytest.raises(ValueError):
        ds.user[0] = 1  # read-only


def test_sequences_of_users_without_interactions() -> None:
    ds = Dataset(Vocabulary(["a", "b", "c"]), Vocabulary(["x"]), [2], [0])
    assert [s.tolist() for s in ds.sequences()] == [[], [], [0]]
    empty = Dataset(Vocabulary([]), Vocabulary([]), [], [])
    assert empty.sequences() == []


def test_constructor_rejects_bad_arrays() -> None:
    v = Vocabulary(["a"])
    with pytest.raises(ValueError, match="same length"):
        Dataset(v, v, [0, 0], [0])
    with pytest.raises(ValueError, match="user vocabulary"):
        Dataset(v, v, [1], [0])
    with pytest.raises(ValueError, match="event"):
        Dataset(v, v, [0], [0], event=[1])


# -- filters, subsets ---------------------------------------------------------------------------


def test_filter_counts_iterates_to_a_k_core() -> None:
    # Items x, y each have 2 users (a, b); item z only c. Users: a {x, y}, b {x, y}, c {x, z}.
    # min 2: z drops (1 interaction) -> c has 1 left -> c drops -> x still has a, b.
    ds = Dataset(
        Vocabulary(["a", "b", "c"]),
        Vocabulary(["x", "y", "z"]),
        [0, 0, 1, 1, 2, 2],
        [0, 1, 0, 1, 0, 2],
        ts=np.arange(6.0),
    )
    core = ds.filter_counts(min_user=2, min_item=2)
    assert core.users.ids.tolist() == ["a", "b"] and core.items.ids.tolist() == ["x", "y"]
    assert len(core) == 4
    assert core.user_counts().min() >= 2 and np.bincount(core.item).min() >= 2
    # A single pass would have kept c's interaction with x.
    assert ds.filter_counts() is ds
    assert ds.filter_counts(min_item=2).users.ids.tolist() == ["a", "b", "c"]


def test_reindex_in_any_order_keeps_sequences() -> None:
    ds = Dataset(
        Vocabulary(["a", "b", "c"]),
        Vocabulary(["x", "y", "z"]),
        [0, 1, 2, 0],
        [0, 1, 2, 2],
        ts=[1.0, 2.0, 3.0, 4.0],
        user_features=UserFeatures([{"n": 0}, {"n": 1}, {"n": 2}], [[], [], ["t"]]),
    )
    r = ds.reindex(np.array([2, 0]), np.array([2, 0]))
    assert r.users.ids.tolist() == ["c", "a"] and r.items.ids.tolist() == ["z", "x"]
    assert r.sequence(0).tolist() == [0]  # c: z
    assert r.sequence(1).tolist() == [1, 0]  # a: x, z
    assert r.user_features.attributes == [{"n": 2}, {"n": 0}]
    assert r.user_features.tags == [["t"], []]
    masked = ds.reindex(np.arange(3), np.arange(3), mask=np.array([True, False, True, True]))
    assert len(masked) == 3 and masked.users == ds.users


def test_subset_and_concat() -> None:
    ds = shop()
    first = ds.subset(ds.ts <= 2)
    rest = ds.subset(np.flatnonzero(ds.ts > 2))
    assert len(first) == 4 and len(rest) == 2
    assert first.users is ds.users and first.name == "shop"
    assert ds.subset(np.array([5, 0]), name="two").name == "two"
    both = rest.concat(first)
    assert both.equals(ds)
    with pytest.raises(ValueError, match="one entry per interaction"):
        ds.subset(np.array([True]))
    other = Dataset(Vocabulary(["a"]), Vocabulary(["x", "y", "z"]), [0], [0], event_names=EVENTS)
    with pytest.raises(ValueError, match="vocabularies"):
        ds.concat(other)


# -- construction ------------------------------------------------------------------------------


def test_from_frame() -> None:
    frame = pd.DataFrame(
        {
            "user": [10, 20, 10],
            "item": ["x", "y", "y"],
            "event": ["view", "buy", "view"],
            "value": [1.0, np.nan, 2.0],
            "ts": [3, 1, 2],
        }
    )
    ds = Dataset.from_frame(frame, name="f")
    assert ds.users.ids.tolist() == ["10", "20"] and ds.items.ids.tolist() == ["x", "y"]
    assert ds.event_names == ("buy", "view")
    assert ds.sequence(0).tolist() == [1, 0]  # y@2, x@3
    assert ds.ts.tolist() == [2.0, 3.0, 1.0]
    np.testing.assert_array_equal(ds.value, [2.0, 1.0, np.nan])
    bare = Dataset.from_frame(frame[["user", "item"]])
    assert bare.event_names == ("interaction",) and np.isnan(bare.value).all()
    assert (bare.ts == 0).all()
    with pytest.raises(LmrecError, match="no column 'uid'"):
        Dataset.from_frame(frame, user="uid")
    with pytest.raises(LmrecError, match="column 'ts' must hold finite numbers; row 1"):
        Dataset.from_frame(frame.assign(ts=[1.0, np.nan, 2.0]))
    with pytest.raises(LmrecError, match="column 'item' is empty at row 2"):
        Dataset.from_frame(frame.assign(item=["x", "y", None]))


def _fill(store: Store) -> None:
    with store.begin() as conn:
        store.upsert(
            conn,
            "user",
            [
                {"ext_id": "ann", "attributes": {"age": 31}, "tags": ["jazz"]},
                {"ext_id": "bob"},
                {"ext_id": "cid"},
                {"ext_id": "dee"},  # no interactions
            ],
        )
        store.upsert(
            conn,
            "item",
            [
                {"ext_id": "i1", "title": "Alien", "categories": ["sci-fi"], "created_at": 5.0},
                {"ext_id": "i2", "title": "Heat", "description": "Crime"},
                {"ext_id": "i3"},
            ],
        )
        u = store.id_map(conn, "user", ["ann", "bob", "cid"])
        i = store.id_map(conn, "item", ["i1", "i2", "i3"])
        rows = [
            ("ann", "i1", "view", np.nan, 10.0),
            ("ann", "i2", "view", np.nan, 20.0),
            ("ann", "i2", "purchase", 9.5, 20.0),
            ("bob", "i1", "view", np.nan, 15.0),
            ("bob", "i3", "view", np.nan, 30.0),
            ("cid", "i1", "purchase", 4.0, 40.0),
        ]
        store.insert_interactions(
            conn,
            np.array([u[r[0]] for r in rows]),
            np.array([i[r[1]] for r in rows]),
            np.array([r[2] for r in rows], dtype=object),
            np.array([r[3] for r in rows]),
            np.array([r[4] for r in rows]),
        )


def test_from_store_snapshot_and_limits(store: Store) -> None:
    _fill(store)
    ds = Dataset.from_store(store, event_weights={"purchase": 3.0, "view": 1.0}, name="s")
    assert ds.users.ids.tolist() == ["ann", "bob", "cid", "dee"]
    assert ds.items.ids.tolist() == ["i1", "i2", "i3"]
    assert ds.event_names == ("purchase", "view") and len(ds) == 6
    # ann's view and purchase of i2 share t=20: storage order (view first) is kept.
    assert ds.sequence(0).tolist() == [0, 1, 1]
    assert [ds.event_names[e] for e in ds.event[ds.user == 0]] == ["view", "view", "purchase"]
    np.testing.assert_array_equal(ds.matrix().toarray()[0], [1, 3, 0])
    assert ds.user_features.attributes[0] == {"age": 31} and ds.user_features.tags[0] == ["jazz"]
    assert ds.item_features.title[:2] == ["Alien", "Heat"]
    assert ds.item_features.description[1] == "Crime"
    assert ds.item_features.categories[0] == ["sci-fi"] and ds.item_features.created_at[0] == 5.0
    assert ds.name == "s"

    window = Dataset.from_store(store, since=15.0, until=40.0)  # [15, 40)
    assert sorted(window.ts.tolist()) == [15.0, 20.0, 20.0, 30.0]
    assert window.n_users == 4  # inactive users stay by default
    active = Dataset.from_store(store, since=15.0, until=40.0, include_inactive=False)
    assert active.users.ids.tolist() == ["ann", "bob"]
    assert active.items.ids.tolist() == ["i1", "i2", "i3"]

    views = Dataset.from_store(store, events=["view"])
    assert views.event_names == ("view",) and len(views) == 4

    core = Dataset.from_store(store, min_user_interactions=2, min_item_interactions=2)
    # cid (1 interaction) drops; then i3 (only bob) drops; then bob keeps only i1 -> drops;
    # then i1 keeps only ann -> drops; then ann keeps only i2 twice -> stays (2 interactions).
    assert core.users.ids.tolist() == ["ann"] and core.items.ids.tolist() == ["i2"]
    assert len(core) == 2

    none = Dataset.from_store(store, since=1000.0)
    assert len(none) == 0 and none.event_names == ("interaction",)


# -- persistence -------------------------------------------------------------------------------


def _featured() -> Dataset:
    ds = shop()
    return Dataset(
        ds.users,
        ds.items,
        ds.user,
        ds.item,
        event=ds.event,
        value=ds.value,
        ts=ds.ts,
        event_names=ds.event_names,
        user_features=UserFeatures([{"age": 31, "city": "Köln"}, {}], [["jazz", "rock"], []]),
        item_features=ItemFeatures(
            ["Alien", "Heat", ""],
            ["In space", "", ""],
            [["sci-fi", "horror"], [], ["x"]],
            [{"year": 1979}, {"year": 1995}, {}],
            np.array([1.5, 2.5, 3.5]),
        ),
        event_weights={"purchase": 5.0, "view": 1.0},
        name="shop",
        _sorted=True,
    )


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    ds = _featured()
    path = ds.save(tmp_path / "snap")
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    back = Dataset.load(path)
    assert back.equals(ds)
    np.testing.assert_array_equal(back.matrix().toarray(), ds.matrix().toarray())
    assert back.event_weights == {"purchase": 5.0, "view": 1.0}
    assert back.user.dtype == np.int32 and back.ts.dtype == np.float64
    # equals notices a difference.
    assert not back.equals(ds.with_event_weights(None))
    assert not back.equals(ds.subset(ds.ts < 4))


def test_save_load_ml100k(ml100k: Dataset, tmp_path: Path) -> None:
    back = Dataset.load(ml100k.save(tmp_path / "ml"))
    assert back.equals(ml100k)
    assert back.user_features.attributes[0] == ml100k.user_features.attributes[0]


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(LmrecError, match="not a saved lmrec dataset"):
        Dataset.load(tmp_path)
    path = _featured().save(tmp_path / "d")
    meta = json.loads((path / "dataset.json").read_text())
    (path / "dataset.json").write_text(json.dumps({**meta, "n_interactions": 99}))
    with pytest.raises(LmrecError, match=r"do not match dataset\.json"):
        Dataset.load(path)
    (path / "dataset.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(LmrecError, match="unsupported format"):
        Dataset.load(path)
    (path / "dataset.json").write_text(json.dumps(meta))
    (path / "arrays.npz").write_bytes(b"not a zip")
    with pytest.raises(LmrecError, match="cannot read the saved dataset"):
        Dataset.load(path)


# -- stats -------------------------------------------------------------------------------------


def test_stats_values() -> None:
    ds = Dataset(
        Vocabulary(["a", "b", "c"]),
        Vocabulary(["x", "y", "z", "w"]),
        [0, 0, 0, 1],
        [0, 0, 1, 2],
        event=[0, 1, 0, 0],
        value=[np.nan, 2.0, 4.0, np.nan],
        ts=[10.0, 20.0, 30.0, 5.0],
        event_names=("click", "like"),
    )
    s = ds.stats()
    assert (s["users"], s["items"], s["interactions"]) == (3, 4, 4)
    assert s["user_item_pairs"] == 3
    assert s["density"] == pytest.approx(3 / 12) and s["sparsity"] == pytest.approx(9 / 12)
    assert s["events"] == {"click": 3, "like": 1}
    assert s["users_without_interactions"] == 1 and s["items_without_interactions"] == 1
    assert s["interactions_per_user"]["max"] == 3 and s["interactions_per_user"]["min"] == 0
    assert s["interactions_per_user"]["mean"] == pytest.approx(4 / 3)
    assert s["interactions_per_item"]["median"] == 1.0
    assert s["time_range"] == [5.0, 30.0]
    assert s["values"]["mean"] == 3.0
    json.dumps(s)  # plain JSON types only


def test_stats_ml100k(ml100k: Dataset) -> None:
    s = ml100k.stats()
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)
    assert s["user_item_pairs"] == 100_000
    assert s["interactions_per_user"]["min"] == 20
    assert s["values"]["min"] == 1.0 and s["values"]["max"] == 5.0


def test_save_is_all_or_nothing(tmp_path, monkeypatch) -> None:
    from lmrec.data import dataset as dmod
    from lmrec.errors import LmrecError

    ds = Dataset(Vocabulary(["u1", "u2"]), Vocabulary(["i1", "i2"]), [0, 1], [0, 1])
    target = ds.save(tmp_path / "snap")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dmod.np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        ds.save(target)
    monkeypatch.undo()
    # The earlier snapshot is intact and no staging directory is left behind.
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]
    assert Dataset.load(target).n_interactions == 2
    # A folder that is not a snapshot is never replaced.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(LmrecError, match="not an lmrec artifact"):
        ds.save(other)
    assert (other / "notes.txt").read_text() == "keep me"
