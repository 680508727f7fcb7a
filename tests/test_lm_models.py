"""The language-model recommenders (lmcontent, lmmf, coldstart_user) on a small structured
synthetic set whose item texts and user attributes carry the taste clusters; the real bundled
all-MiniLM-L6-v2 encodes them (a few dozen short texts)."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset
from lmrec.data.dataset import ItemFeatures, UserFeatures
from lmrec.data.split import cold_start_items, cold_start_users, leave_one_out
from lmrec.errors import LmrecError
from lmrec.evaluation import evaluate
from lmrec.models import create_model
from lmrec.models.base import Query, Recommender

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = [
    ("space", "rockets, astronauts, planets and the exploration of distant galaxies", "astronaut"),
    ("cooking", "recipes, kitchens, pasta sauces and baking bread at home", "chef"),
    ("football", "soccer matches, goals, league tables and famous strikers", "footballer"),
    ("jazz", "saxophone solos, swing bands, improvisation and live concerts", "musician"),
]
ITEMS_PER, USERS_PER, SEEN = 10, 12, 7


def _shop(seed: int = 0) -> Dataset:
    """4 clusters: users of cluster c (occupation = its job, interest tag = its topic) rate 7
    of the topic's 10 items; items carry the topic in their text."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for c in range(len(TOPICS)):
        for u in range(USERS_PER):
            for j in rng.permutation(ITEMS_PER)[:SEEN]:
                rows.append((f"u{c}_{u}", f"i{c}_{j}", "rating", float(rng.integers(3, 6)), t))
                t += 1
    ds = Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"]))
    ic = [int(i[1]) for i in ds.items.ids]
    uc = [int(u[1]) for u in ds.users.ids]
    items = ItemFeatures(
        title=[
            f"{TOPICS[c][0].title()} story number {i[3:]}"
            for c, i in zip(ic, ds.items.ids, strict=True)
        ],
        description=[TOPICS[c][1] for c in ic],
        categories=[[TOPICS[c][0]] for c in ic],
        attributes=[{} for _ in ic],
        created_at=np.zeros(ds.n_items),
    )
    users = UserFeatures(
        attributes=[{"occupation": TOPICS[c][2]} for c in uc], tags=[[TOPICS[c][0]] for c in uc]
    )
    return Dataset(
        ds.users, ds.items, ds.user, ds.item, event=ds.event, value=ds.value, ts=ds.ts,
        event_names=ds.event_names, item_features=items, user_features=users, name="shop",
        _sorted=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shop() -> Dataset:
    import torch

    # One thread: on a shared 2-core machine, 2 OpenMP threads on these tiny tensors made the
    # suite 3-4x slower (measured on test_text.py: 58 s vs 17 s); the work here is too small to
    # gain from a second thread.
    torch.set_num_threads(1)
    return _shop()


def _cluster(item_ids: list[str]) -> list[int]:
    return [int(i[1]) for i in item_ids]


# -- quality on the structured set ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params",
    [
        ("lmcontent", {}),
        ("lmcontent", {"scoring": "cosine", "rating_weight": "linear"}),
        ("lmmf", {"epochs": 30, "embedding_size": 16}),
        ("coldstart_user", {}),
    ],
)
def test_lm_models_beat_random_on_leave_one_out(shop: Dataset, name: str, params: dict) -> None:
    split = leave_one_out(shop)
    model = create_model(name, **params).fit(split.train)
    rnd = create_model("random").fit(split.train)
    ours = evaluate(model, split, "test", k=10, metrics=["ndcg", "recall"]).summary()
    base = evaluate(rnd, split, "test", k=10, metrics=["ndcg", "recall"]).summary()
    # 3 unseen items of the user's topic remain among 33: random finds one in 10 about 30%
    # of the time; a model that reads the text puts the topic's items first.
    assert ours["recall@10"] >= 0.9, (name, ours)
    assert ours["ndcg@10"] > 2 * base["ndcg@10"], (name, ours, base)


def test_lmcontent_ratings_user_text_and_threshold(shop: Dataset) -> None:
    m = create_model("lmcontent", rating_weight="centered").fit(shop)
    # A disliked item's topic is pushed down; a liked one's comes up.
    liked = m.recommend(Query(items=["i0_1", "i1_1"], values=[5.0, 1.0]), n=5)
    assert _cluster(liked.items) == [0] * 5
    # No history: the user text (tags or free text) alone.
    r = m.recommend(Query(tags=["jazz"]), n=5)
    assert r.fallback is None and _cluster(r.items) == [3] * 5
    r = m.recommend(Query(text="I love cooking pasta"), n=5)
    assert _cluster(r.items) == [1] * 5
    # A stored user's attributes and tags serve them when their history is empty.
    h = m.history_of([Query(user="u2_0")])
    h.matrix = h.matrix[:, :] * 0
    h.matrix.eliminate_zeros()
    h.sequences = [np.zeros(0, np.int64)]
    idx, _, used = m.rank(h, 5)
    assert used == [None] and _cluster(m.items.ids_of(idx[0])) == [2] * 5
    # A threshold removes items unlike the interest vector altogether.
    strict = create_model("lmcontent", threshold=0.5).fit(shop)
    r = strict.recommend(Query(items=["i0_1", "i0_2"]), n=40)
    assert 0 < len(r) < 38 and set(_cluster(r.items)) == {0}


def test_coldstart_user_serves_users_by_attributes(shop: Dataset) -> None:
    split = cold_start_users(shop, 0.25, seed=0)
    model = create_model("coldstart_user").fit(split.train)
    cold = np.unique(split.test.user)
    recs = model.recommend_many(shop.users.ids_of(cold), n=5)
    by_cluster: dict[int, list[list[str]]] = {}
    for u, r in zip(shop.users.ids_of(cold), recs, strict=True):
        assert r.fallback is None
        by_cluster.setdefault(int(u[1]), []).append(r.items)
        assert _cluster(r.items).count(int(u[1])) >= 4, (u, r.items)
    for lists in by_cluster.values():  # the same attributes give the same list
        assert all(lst == lists[0] for lst in lists)
    firsts = [lists[0] for lists in by_cluster.values()]
    assert len({tuple(x) for x in firsts}) == len(firsts)  # other attributes, other lists
    # Popularity gives every cold user one list; ours beats it on these users.
    pop = create_model("popularity").fit(split.train)
    ours = evaluate(model, split, "test", k=5, metrics=["ndcg"]).summary()["ndcg@5"]
    theirs = evaluate(pop, split, "test", k=5, metrics=["ndcg"]).summary()["ndcg@5"]
    assert ours > theirs + 0.3, (ours, theirs)
    # An anonymous query with attributes only, or onboarding from two chosen items.
    r = model.recommend(Query(attributes={"occupation": "chef"}), n=5)
    assert r.fallback is None and _cluster(r.items).count(1) >= 4
    r = model.recommend(Query(items=["i3_0", "i3_1"]), n=5)
    assert _cluster(r.items) == [3] * 5


def test_new_items_get_scores_from_their_text(shop: Dataset) -> None:
    split = cold_start_items(shop, 0.25, seed=0)
    cold = split.train.item_counts() == 0
    model = create_model("lmmf", epochs=30, embedding_size=16).fit(split.train)
    assert np.array_equal(model.active, ~cold)
    # Cold items ranked for each user only among cold items: their own topic first.
    res = evaluate(model, split, "test", k=3, metrics=["ndcg"], candidates="cold")
    rnd = create_model("random").fit(split.train)
    base = evaluate(rnd, split, "test", k=3, metrics=["ndcg"], candidates="cold")
    assert res.summary()["ndcg@3"] > base.summary()["ndcg@3"] + 0.2
    # A brand-new item known only by its text: factors from the text map.
    f, b = model.factors_from_text(["Jazz story number 99. saxophone solos and swing bands"])
    fans = [Query(user=u) for u in ("u3_0", "u0_0", "u1_0", "u2_0")]
    users = model.user_vectors_of(model.history_of(fans))
    s = users @ f[0] + b[0]
    assert s[0] == s.max(), s  # the jazz fan scores it highest
    h = model.history_of(fans[:1])
    np.testing.assert_allclose(
        model.score(h)[0, cold], (users[:1] @ model.item_factors[cold].T + model.item_bias[cold])[0],
        rtol=1e-5,
    )  # fmt: skip


# -- persistence and the encoder version -----------------------------------------------------------


def test_saved_model_records_and_checks_its_encoder(shop: Dataset, tmp_path) -> None:
    from lmrec.text.finetune import finetune

    enc_dir = tmp_path / "enc"
    res = finetune(shop, enc_dir, epochs=1, batch_size=64)
    model = create_model("lmcontent", encoder=str(enc_dir)).fit(shop)
    assert model.config.encoder == str(enc_dir.resolve())
    assert model.config.encoder_version == res.name
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert cfg["encoder"] == str(enc_dir.resolve()) and cfg["encoder_version"] == res.name
    loaded = Recommender.load(tmp_path / "m")
    q = Query(text="saxophone and swing")
    assert loaded.recommend(q, n=5).items == model.recommend(q, n=5).items

    shutil.move(enc_dir, tmp_path / "moved")
    with pytest.raises(LmrecError, match=r"trained with encoder .*enc.* cannot be loaded"):
        Recommender.load(tmp_path / "m")
    finetune(shop, enc_dir, epochs=1, batch_size=64, seed=1)  # another version, same place
    with pytest.raises(LmrecError, match=re.escape(f"version {res.name}), but")):
        Recommender.load(tmp_path / "m")


@pytest.mark.parametrize("name", ["lmcontent", "lmmf", "coldstart_user"])
def test_tfidf_encoder_round_trip(shop: Dataset, name: str, tmp_path) -> None:
    params = {"encoder": "tfidf:16"} | ({"epochs": 2} if name == "lmmf" else {})
    model = create_model(name, **params).fit(shop)
    assert model.config.encoder_version.startswith("tfidf-")
    loaded = Recommender.load(model.save(tmp_path / name))
    q = Query(user="u1_1", text="pasta recipes")
    assert loaded.recommend(q, n=5).items == model.recommend(q, n=5).items


# -- the command line ---------------------------------------------------------------------------


def test_cli_encode_finetune_train(shop: Dataset, tmp_path, capsys) -> None:
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
    pd.DataFrame(
        {
            "item_id": shop.items.ids,
            "title": f.title,
            "description": f.description,
            "genres": ["|".join(c) for c in f.categories],
        }
    ).to_csv(tmp_path / "items.csv", index=False)
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    args = ["--db", db]
    assert main([*args, "import", "--interactions", str(tmp_path / "inter.csv"),
                 "--items", str(tmp_path / "items.csv"), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()

    assert main([*args, "encode", "--what", "items,behaviour", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["items"]["encoded"] == shop.n_items and first["behaviour"]["encoded"] > 0
    assert main([*args, "encode", "--what", "items,behaviour", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["items"]["encoded"] == 0 and second["behaviour"]["encoded"] == 0
    assert second["items"]["store"] == shop.n_items

    out = tmp_path / "enc"
    assert main([*args, "finetune", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert "encoder version" in capsys.readouterr().out
    assert main([*args, "train", "--model", "lmcontent", "--param", f"encoder={out}",
                 "--param", f"cache_db={db}", "--out", str(tmp_path / "m"), "--json"]) == 0  # fmt: skip
    trained = json.loads(capsys.readouterr().out)
    assert trained["params"]["encoder_version"].startswith("all-MiniLM-L6-v2@")
    assert main([*args, "recommend", "--model", str(tmp_path / "m"), "--items", "i2_1,i2_2",
                 "--json"]) == 0  # fmt: skip
    recs = json.loads(capsys.readouterr().out)["items"]
    assert _cluster([r["item"] for r in recs][:8]) == [2] * 8  # the topic's 8 other items

    assert main([*args, "encode", "--what", "items,nonsense"]) == 1
    assert "--what takes a comma list" in capsys.readouterr().err
    assert main([*args, "finetune", "--out", str(tmp_path / "x"), "--encoder", "tfidf"]) == 1
    assert "cannot be fine-tuned" in capsys.readouterr().err

    top = tmp_path / "top"
    assert main([*args, "finetune", "--out", str(top), "--mode", "top", "--pairs", "item",
                 "--layers", "1", "--steps", "1", "--batch-size", "8", "--device", "cpu",
                 "--quiet"]) == 0  # fmt: skip
    assert "1 steps on cpu" in capsys.readouterr().out
    meta = json.loads((top / "lmrec_encoder.json").read_text())
    assert (meta["mode"], meta["pair_kind"], meta["config"]["layers"]) == ("top", "item", 1)
    assert main([*args, "finetune", "--out", str(tmp_path / "y"), "--mode", "top",
                 "--layers", "9", "--quiet"]) == 1  # fmt: skip
    assert "layers=9 but the encoder has only 6 layers" in capsys.readouterr().err


# -- structured side features (`side_features`) ------------------------------------------------------


def _years(seed: int = 0) -> Dataset:
    """Taste follows only the release year: users of cluster c watch films of 1991 + c, whose
    titles say nothing about it ("Film number 17"); MiniLM reads 1991..1994 as near-equal."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for c in range(4):
        for u in range(USERS_PER):
            for j in rng.permutation(ITEMS_PER)[:SEEN]:
                rows.append((f"u{c}_{u}", f"i{c}_{j}", "rating", 4.0, t))
                t += 1
    ds = Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"]))
    ic = [int(i[1]) for i in ds.items.ids]
    number = rng.permutation(ds.n_items)
    items = ItemFeatures(
        title=[f"Film number {number[k]}" for k in range(ds.n_items)],
        description=["" for _ in ic],
        categories=[["Drama"] for _ in ic],
        attributes=[{"release_year": 1991 + c} for c in ic],
        created_at=np.zeros(ds.n_items),
    )
    return Dataset(
        ds.users, ds.items, ds.user, ds.item, event=ds.event, value=ds.value, ts=ds.ts,
        event_names=ds.event_names, item_features=items, name="years", _sorted=True,
    )  # fmt: skip


def test_side_features_match_structured_fields_exactly(tmp_path) -> None:
    import torch

    torch.set_num_threads(1)
    split = cold_start_items(_years(), 0.25, seed=0)
    ndcg = {}
    # The text leaves the year out; only the side features carry it.
    text = {"item_template": "{title}. {categories}."}
    for w in (0.0, 1.0):
        for name, extra in (("lmcontent", {}), ("lmmf", {"epochs": 30, "embedding_size": 16})):
            m = create_model(name, side_features=w, **text, **extra).fit(split.train)
            res = evaluate(m, split, "test", k=3, metrics=["ndcg"], candidates="cold")
            ndcg[name, w] = res.summary()["ndcg@3"]
    for name in ("lmcontent", "lmmf"):
        # The exact year finds the cluster's new films (measured: 0.47 -> 0.91 and 0.44 -> 0.78).
        assert ndcg[name, 1.0] > 0.7, ndcg
        assert ndcg[name, 1.0] > ndcg[name, 0.0] + 0.2, ndcg
    # The side vocabulary holds the category and attribute tokens; rows are unit vectors.
    assert {"cat_drama", "attr_release_year_1993"} <= set(m.side_vocab.tolist())
    np.testing.assert_allclose(np.linalg.norm(m.side_vectors, axis=1), 1.0, rtol=1e-5)
    # A brand-new item: its attributes reach the factors; the 1993 fan scores it highest.
    fans = [Query(user=f"u{c}_0") for c in (2, 0, 1, 3)]
    users = m.user_vectors_of(m.history_of(fans))
    f, b = m.factors_from_text(["Film number 999"], attributes=[{"release_year": 1993}])
    s = users @ f[0] + b[0]
    assert s[0] == s.max(), s
    with pytest.raises(LmrecError, match="1 texts but 2 category lists"):
        m.factors_from_text(["Film number 999"], categories=[["Drama"], ["Drama"]])
    # Saved and loaded: the same scores.
    m.save(tmp_path / "lmmf")
    back = Recommender.load(tmp_path / "lmmf")
    h = m.history_of(fans)
    np.testing.assert_allclose(back.score(h), m.score(h), rtol=1e-5)
    with pytest.raises(LmrecError, match="side_features"):
        create_model("lmcontent", side_features=-1.0)
