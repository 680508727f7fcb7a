"""The text-aware `dualsasrec` sequence model (a component of `hybrid`) and the pieces it brought: dual-view item vectors,
logQ-corrected sampled softmax over partial item tables, pooled-bit dropout, adding items by
their text, data-scaled dropout and per-epoch progress lines (tiny synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmrec.data.split import cold_start_items, leave_one_out
from lmrec.errors import LmrecError
from lmrec.evaluation import evaluate
from lmrec.models import create_model
from lmrec.models.base import History, Query, Recommender
from lmrec.models.sequential import (
    PATIENCE_SPARSE,
    SHAPE_DENSE,
    SHAPE_FIELDS,
    SHAPE_SPARSE,
    auto_dropout,
    auto_patience,
    auto_shape,
)
from lmrec.nn import NETWORKS
from lmrec.nn.layers import Dropout, DualViewEmbedding, SASRecBlock, text_reduction
from test_sequential import FAST, _cycles, _themed


@pytest.fixture(scope="module")
def themed():
    return _themed()


def _net(**kw):
    torch.manual_seed(0)
    text = torch.randn(9, 16)
    net = NETWORKS["SASRecNet"](9, width=8, layers=1, heads=2, max_len=6, text=text, **kw)
    net.set_item_counts(torch.tensor([5, 0, 3, 1, 8, 2, 0, 4, 1]))
    return net


def test_dual_view_items_are_text_plus_gated_ids() -> None:
    net = _net(text_mode="dual", views="both")
    emb = net.item_emb
    assert isinstance(emb, DualViewEmbedding)
    emb.eval()
    items = emb.items()
    gate = emb.id_gate()
    torch.testing.assert_close(items, emb.text_view() + gate * emb.table.weight[1:10])
    assert bool(((gate > 0) & (gate < 1))[[0, 2, 3, 4, 5, 7, 8]].all())
    # Items without training data (1 and 6) are placed by their text alone.
    torch.testing.assert_close(items[[1, 6]], emb.text_view()[[1, 6]])
    assert torch.equal(gate[[1, 6]], torch.zeros(2, 8))
    text_only = _net(text_mode="dual", views="text").item_emb
    text_only.eval()
    torch.testing.assert_close(text_only.items(), text_only.text_view())
    with pytest.raises(ValueError, match="views"):
        DualViewEmbedding(3, 4, torch.randn(3, 5), views="ids")


def test_text_reduction_whitens_and_maps_new_vectors() -> None:
    torch.manual_seed(0)
    text = torch.randn(200, 12) @ torch.randn(12, 12)
    mean, proj = text_reduction(text, 6, whiten=True)
    z = (text - mean) @ proj
    assert z.shape == (200, 6)
    ev_in = torch.linalg.eigvalsh(torch.cov((text - mean).T))[-6:]
    ev = torch.linalg.eigvalsh(torch.cov(z.T))
    cov = torch.cov(z.T)
    torch.testing.assert_close(cov, torch.diag(torch.diag(cov)), atol=1e-4, rtol=1e-3)
    assert ev.max() / ev.min() < 0.5 * ev_in.max() / ev_in.min()  # more isotropic
    assert abs(float(z.norm(dim=1).mean()) - 1.0) < 1e-4
    # Fewer items than dimensions: the width stays, the unused directions are zero.
    mean, proj = text_reduction(text[:4], 6, whiten=True)
    assert proj.shape == (12, 6) and torch.all(proj[:, 4:] == 0)


def test_sampled_loss_on_partial_tables_equals_the_full_table() -> None:
    """The sampled softmax computes only the vectors a step needs; with the same negatives
    its loss and gradients equal those over the whole table, and the logQ correction equals
    the sampled-softmax formula written out."""
    for mode in ("dual", "fuse"):
        net = _net(text_mode=mode, loss="sampled", negatives=5, sampler="popularity")
        net.train()
        tokens = torch.tensor([[0, 1, 3, 5], [2, 4, 8, 9]])
        targets = torch.tensor([[0, 3, 5, 1], [4, 8, 9, 1]])
        torch.manual_seed(3)
        w_part, neg = net.step_weight(tokens, targets)
        torch.manual_seed(3)
        _ = torch.multinomial(net.log_q.exp(), net.negatives, replacement=True)  # same draw
        net.item_emb.id_dropout = 0.0
        w_full = net.item_weight()
        hidden = torch.randn(8, 8, requires_grad=True)
        tgt = targets.reshape(-1) - 1
        loss_p = net.prediction_loss(hidden, tgt, w_part, neg)
        loss_f = net.prediction_loss(hidden, tgt, w_full, neg)
        torch.testing.assert_close(loss_p, loss_f)
        items = net.item_emb.items(w_full)
        pos = (hidden * items[tgt]).sum(-1, keepdim=True) - net.log_q[tgt][:, None]
        negl = hidden @ items[neg].T - net.log_q[neg][None]
        negl = negl.masked_fill(neg[None] == tgt[:, None], float("-inf"))
        ref = torch.nn.functional.cross_entropy(
            torch.cat([pos, negl], 1), torch.zeros(8, dtype=torch.long)
        )
        torch.testing.assert_close(loss_f, ref)
        # Items without training data (counts 0) are never drawn.
        assert not bool(torch.isin(neg, torch.tensor([1, 6])).any())


def test_pooled_dropout_keeps_the_chance_and_the_scale() -> None:
    torch.manual_seed(0)
    d = Dropout(0.3)
    x = torch.ones(64, 50, 32)
    kept = [(d(x) > 0).float().mean().item() for _ in range(20)]
    assert abs(np.mean(kept) - 0.7) < 0.01
    y = d(x)
    assert torch.allclose(y[y > 0], torch.tensor(1 / 0.7))
    masks = {tuple((d(x[0, 0]) > 0).tolist()) for _ in range(50)}
    assert len(masks) > 45  # masks differ from call to call
    d.eval()
    assert torch.equal(d(x), x)
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_auto_dropout_scales_with_history_length() -> None:
    short = [np.arange(6)] * 10
    long = [np.arange(120)] * 10
    assert auto_dropout(short) == 0.5
    assert auto_dropout(long) == 0.2
    assert 0.2 < auto_dropout([np.arange(35)] * 10) < 0.5
    fast = {k: v for k, v in FAST.items() if k != "dropout"}
    m = create_model("sasrec", **fast, epochs=2).fit(_cycles(length=6))
    assert m.dropout_ == 0.5
    m = create_model("sasrec", **fast, epochs=2, dropout=0.1).fit(_cycles(length=6))
    assert m.dropout_ == 0.1


def test_auto_patience_scales_with_history_length_and_users() -> None:
    assert auto_patience([np.arange(7)] * 5000) == PATIENCE_SPARSE  # Beauty-like
    assert auto_patience([np.arange(104)] * 5000) == 10  # MovieLens-like
    assert 10 < auto_patience([np.arange(35)] * 5000) < PATIENCE_SPARSE
    assert auto_patience([np.arange(7)] * 100) == 10  # small data: short epochs
    m = create_model("sasrec", **FAST, epochs=2).fit(_cycles(length=6))
    assert m.patience_ == 10 and m.chosen()["patience"] == 10
    assert create_model("sasrec", **FAST, epochs=2, patience=3).fit(_cycles()).patience_ == 3
    with pytest.raises(LmrecError, match="patience must be at least 1"):
        create_model("sasrec", patience=0)


def test_auto_shape_scales_with_history_length_and_users(tmp_path) -> None:
    assert auto_shape([np.arange(7)] * 5000) == SHAPE_SPARSE  # Beauty-like
    assert auto_shape([np.arange(104)] * 5000) == SHAPE_DENSE  # MovieLens-like
    assert auto_shape([np.arange(7)] * 100) == SHAPE_DENSE  # small data: few steps an epoch
    assert SHAPE_SPARSE != SHAPE_DENSE
    sparse = _cycles(n_users=1200, n_items=40, length=6)
    base = {"embedding_size": 16, "max_len": 8, "num_threads": 1, "epochs": 1, "patience": None}
    m = create_model("sasrec", **base).fit(sparse)
    fields = {k: SHAPE_SPARSE[k] for k in SHAPE_FIELDS}
    assert m.shape_ == fields and len(m.net.encoder.blocks) == SHAPE_SPARSE["layers"]
    # The sparse shape is the SASRec authors' block with dropout 0.3 and item dropout 0.2.
    assert isinstance(m.net.encoder.blocks[0], SASRecBlock)
    assert m.dropout_ == SHAPE_SPARSE["dropout"] == 0.3
    assert m.net.item_drop.p == 0.2
    assert {k: m.chosen()[k] for k in SHAPE_SPARSE} == SHAPE_SPARSE
    m.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.shape_ == fields and loaded.dropout_ == 0.3
    assert isinstance(loaded.net.encoder.blocks[0], SASRecBlock)
    h = History.from_dataset(sparse, np.arange(20))
    np.testing.assert_allclose(loaded.score(h), m.score(h), rtol=1e-5, atol=1e-5)
    # The same as that setting given by hand (the benchmark's sasrec-block-d3 rows).
    explicit = create_model("sasrec", **base, block="sasrec", dropout=0.3, item_dropout=0.2)
    np.testing.assert_allclose(explicit.fit(sparse).score(h), m.score(h), rtol=1e-5, atol=1e-6)
    # A value given is kept, and only the settings left open are reported as chosen.
    m2 = create_model(
        "sasrec", **base, layers=2, learning_rate=5e-3, block="pre_ln", dropout=0.4
    ).fit(sparse)
    assert m2.shape_ == {**fields, "layers": 2, "learning_rate": 5e-3, "block": "pre_ln"}
    assert not isinstance(m2.net.encoder.blocks[0], SASRecBlock) and m2.dropout_ == 0.4
    assert "layers" not in m2.chosen() and m2.chosen()["batch_size"] == 128
    assert "block" not in m2.chosen() and "dropout" not in m2.chosen()
    # The dense shape leaves the dropout to `auto_dropout` and keeps pre-LN blocks.
    dense = create_model("sasrec", **base).fit(_cycles(length=6))
    assert dense.shape_ == SHAPE_DENSE and "dropout" not in SHAPE_DENSE
    assert dense.dropout_ == 0.5  # `auto_dropout` of short histories
    # dualsasrec keeps the dense shape (and dropout) it was measured with, whatever the data.
    d = create_model("dualsasrec", **base, views="id").fit(sparse)
    assert d.shape_ == SHAPE_DENSE and d.dropout_ == 0.5
    # bert4rec's config sets its shape; the sparse shape's dropout is SASRec's only.
    b = create_model("bert4rec", **base).fit(sparse)
    assert b.shape_["block"] == "pre_ln" and b.dropout_ == 0.5
    with pytest.raises(
        LmrecError, match="not divisible by the 2 attention heads chosen for this data"
    ):
        create_model("sasrec", **{**base, "embedding_size": 15}).fit(_cycles(length=6))


def test_sampled_negatives_per_target_learn_order() -> None:
    m = create_model(
        "sasrec", **FAST, loss="sampled", negatives=8, negatives_per="token", epochs=40,
        patience=None,
    ).fit(_cycles())  # fmt: skip
    assert m.net.negatives_per == "token"
    hits = 0
    for a in range(0, 30, 3):  # the next item of a cycle walk i(a), i(a+1), i(a+2)
        seq = [f"i{(a + t) % 30}" for t in range(3)]
        hits += m.recommend(Query(items=seq), n=1).items[0] == f"i{(a + 3) % 30}"
    assert hits >= 8, hits
    with pytest.raises(ValueError, match="negatives_per"):
        NETWORKS["SASRecNet"](5, negatives_per="user")


def test_hybrid_learns_order_and_saves(tmp_path) -> None:
    cycles = _cycles()
    m = create_model("dualsasrec", **FAST, encoder="tfidf:16", seed=1).fit(cycles)
    rec = m.recommend(Query(items=["i3", "i4", "i5"]), n=3)
    assert rec.items[0] == "i6", rec
    m.save(tmp_path / "h")
    back = type(m).load(tmp_path / "h")
    q = Query(items=["i10", "i11"])
    assert back.recommend(q, n=5).items == m.recommend(q, n=5).items
    assert back.dropout_ == m.dropout_


def test_hybrid_text_view_ranks_cold_items_and_ablations(themed) -> None:
    """Themes are in the titles only: the text views rank items absent from training by
    their text; the id-only ablation cannot."""
    split = cold_start_items(themed, 0.25, seed=0)
    params = {**FAST, "max_len": 10, "epochs": 40, "encoder": "minilm"}
    hr = {}
    for views in ("both", "text", "id"):
        m = create_model("dualsasrec", **params, views=views).fit(split.train)
        hr[views] = evaluate(m, split, on="test", k=3, candidates="cold").summary()["hr@3"]
    assert hr["both"] > 0.8 and hr["text"] > 0.8, hr
    assert hr["id"] < min(hr["both"], hr["text"]) - 0.3, hr


def test_hybrid_adds_new_items_by_text_only(themed) -> None:
    ids = themed.items.ids.tolist()
    params = {**FAST, "max_len": 10, "epochs": 40, "encoder": "minilm"}
    m = create_model("dualsasrec", **params).fit(themed)
    assert m.accepts_new_items
    hist = [i for i in ids if i.startswith("t2_")][:3]
    before = m.score(m.history_of([Query(items=hist)]))[0]
    new = m.with_items(
        ["new-match", "new-space"],
        ["football league match number 99. all about football league match. football.",
         "space rockets and planets number 98. all about space rockets. space."],
    )  # fmt: skip
    assert len(new.items) == len(m.items) + 2 and len(m.items) == len(ids)  # original kept
    after = new.score(new.history_of([Query(items=hist)]))[0]
    np.testing.assert_allclose(after[: len(ids)], before, rtol=1e-5, atol=1e-5)
    rec = new.recommend(Query(items=hist), n=12, candidates=[*ids[:0], "new-match", "new-space"])
    assert rec.items[0] == "new-match", rec
    # A football fan's top list holds the new football item (placed by text alone).
    top = new.recommend(Query(items=hist), n=10)
    assert "new-match" in top.items and "new-space" not in top.items, top
    with pytest.raises(Exception, match="already in the catalogue"):
        new.with_items(["new-match"], ["x"])
    plain = create_model("dualsasrec", **FAST, epochs=2, views="id", encoder="minilm").fit(themed)
    assert not plain.accepts_new_items
    with pytest.raises(Exception, match="dualsasrec's items are set by views"):
        create_model("dualsasrec", text="fuse")


def test_progress_lines_per_epoch(capsys) -> None:
    split = leave_one_out(_cycles())
    create_model("sasrec", **FAST, epochs=3, patience=2).fit(split.train, valid=split.valid)
    err = capsys.readouterr().err.strip().splitlines()
    lines = [x for x in err if x.startswith("sasrec epoch")]
    assert len(lines) == 3, err
    assert "epoch 1/3" in lines[0] and "loss" in lines[0] and "valid ndcg@10" in lines[0]
    assert "best" in lines[-1] and "elapsed" in lines[-1] and "left ~" in lines[-1]
    create_model("sasrec", **FAST, epochs=2, progress=False).fit(split.train)
    assert "sasrec epoch" not in capsys.readouterr().err


def test_item_vectors_start_at_the_configured_scale(tmp_path) -> None:
    """init_std sets the spread of the initial id vectors (None: 1 / sqrt(width)), and a saved
    model loads with the same network arguments."""
    a = NETWORKS["SASRecNet"](4000, width=32, init_std=0.01)
    b = NETWORKS["SASRecNet"](4000, width=32)
    assert a.item_emb.table.weight[1:].std().item() == pytest.approx(0.01, rel=0.05)
    assert b.item_emb.table.weight[1:].std().item() == pytest.approx(32**-0.5, rel=0.05)
    m = create_model("sasrec", **{**FAST, "epochs": 2}, init_std=0.02).fit(_cycles())
    assert m.net.hparams["init_std"] == 0.02
    m.save(tmp_path / "m")
    again = type(m).load(tmp_path / "m")
    assert again.net.hparams["init_std"] == 0.02
    seq = ["i0", "i1", "i2"]
    assert again.recommend(Query(items=seq), n=5).items == m.recommend(Query(items=seq), n=5).items
    with pytest.raises(LmrecError, match="init_std"):
        create_model("sasrec", init_std=0)


def test_item_dropout_drops_item_vectors_in_training_only() -> None:
    """item_dropout zeroes a share of the item vectors' entries where a training step reads
    them (sequence input and softmax), rescaling the rest; inference reads them whole."""
    net = NETWORKS["SASRecNet"](500, width=16, layers=1, heads=1, item_dropout=0.5)
    net.set_item_counts(torch.ones(500))
    assert net.hparams["item_dropout"] == 0.5
    net.train()
    w, _ = net.step_weight(torch.tensor([[1, 2, 3]]))
    full = net.item_weight()
    kept = w[1:501] != 0
    assert 0.4 < kept.float().mean().item() < 0.6
    torch.testing.assert_close(w[1:501][kept], 2 * full[1:501][kept])
    net.eval()
    torch.testing.assert_close(net.step_weight(torch.tensor([[1, 2, 3]]))[0], full)
    plain = NETWORKS["SASRecNet"](500, width=16, layers=1, heads=1)
    plain.train()
    torch.testing.assert_close(plain.step_weight(torch.tensor([[1]]))[0], plain.item_weight())
    with pytest.raises(LmrecError, match="item_dropout"):
        create_model("sasrec", item_dropout=1.0)


def test_auto_loss_is_the_full_softmax_up_to_full_softmax_items() -> None:
    """loss="auto" trains a full softmax over catalogues of at most `full_softmax_items`
    items and the sampled softmax over larger ones; dualsasrec keeps its own threshold."""
    ds = _cycles()  # 30 items
    fast = {**FAST, "epochs": 1, "patience": None}
    assert create_model("sasrec", **fast).fit(ds).loss_ == "ce"
    m = create_model("sasrec", **fast, full_softmax_items=29, negatives=8).fit(ds)
    assert m.loss_ == "sampled" and m.net.loss_kind == "sampled"
    assert m.chosen()["loss"] == "sampled"
    assert create_model("sasrec", **fast, full_softmax_items=30).fit(ds).loss_ == "ce"
    assert create_model("sasrec").config.full_softmax_items == 20_000
    assert create_model("dualsasrec").config.full_softmax_items == 10_000
