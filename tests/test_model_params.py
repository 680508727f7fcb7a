"""One vocabulary of parameters across models, old names still loading, runtime settings kept
out of saved artifacts, `fit(dataset, valid=None)` on every model, and the `Ranker` protocol."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.errors import LmrecError
from lmrec.evaluation.protocols import fit_on
from lmrec.models import create_model, get_model_class, model_names
from lmrec.models.base import Query, Ranker, Recommender

#: Names the shared vocabulary replaced (LensKit's: embedding_size, epochs, learning_rate, reg,
#: n_neighbors); no model may use them as a field name again.
RETIRED = {"factors", "iterations", "regularization", "lr", "k", "nnbrs", "neighbors"}


def _data(seed: int = 0) -> Dataset:
    """30 users in 3 taste groups over 15 items, 6 interactions each, in time order."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for u in range(30):
        group = u % 3
        for j in rng.permutation(5)[:4].tolist() + rng.integers(0, 15, 2).tolist():
            item = group * 5 + j if j < 5 else j
            rows.append((f"u{u}", f"i{item}", "view", 1.0, float(t)))
            t += 1
    return Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item", "event", "value", "ts"]))


@pytest.mark.parametrize("name", model_names())
def test_no_model_uses_a_retired_parameter_name(name: str) -> None:
    fields = set(get_model_class(name).config_class.model_fields)
    assert not fields & RETIRED, (name, fields & RETIRED)


def test_old_names_are_accepted_as_aliases() -> None:
    als = create_model("als", factors=8, iterations=3)
    assert (als.config.embedding_size, als.config.epochs) == (8, 3)
    # A config dict as an old config.json holds it, and the new names beside it.
    bpr = get_model_class("bpr")({"factors": 4, "iterations": 2, "learning_rate": 0.05})
    assert (bpr.config.embedding_size, bpr.config.epochs) == (4, 2)
    assert create_model("bpr", embedding_size=4).config.embedding_size == 4
    cold = create_model("coldstart_item", factors=5, target="svd")
    assert cold.config.embedding_size == 5
    # Overriding a config object by an old name reaches the renamed field.
    again = type(als)(als.config, iterations=7)
    assert (again.config.embedding_size, again.config.epochs) == (8, 7)
    assert create_model("als").config_class.aliases() == {
        "factors": "embedding_size",
        "iterations": "epochs",
    }
    with pytest.raises(LmrecError, match="'embedding_size' given twice"):
        create_model("als", factors=8, embedding_size=16)
    with pytest.raises(LmrecError, match=r"invalid parameters for model 'als'.*embedding_size"):
        create_model("als", factors=0)


def test_old_artifacts_load_and_runtime_fields_are_not_saved(tmp_path) -> None:
    ds = _data()
    model = create_model("als", embedding_size=6, epochs=4, num_threads=1).fit(ds)
    model.save(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())["config"]
    assert saved["embedding_size"] == 6 and saved["epochs"] == 4
    assert "num_threads" not in saved  # a runtime setting
    # The artifact as an older lmrec wrote it: old names, runtime fields inside.
    meta = json.loads((tmp_path / "new" / "config.json").read_text())
    cfg = meta["config"]
    cfg["factors"], cfg["iterations"] = cfg.pop("embedding_size"), cfg.pop("epochs")
    cfg["num_threads"] = 7
    (tmp_path / "new" / "config.json").write_text(json.dumps(meta))
    old = Recommender.load(tmp_path / "new")
    assert (old.config.embedding_size, old.config.epochs) == (6, 4)
    assert old.config.num_threads == 2  # runtime fields: the defaults of where it loads
    queries = ["u0", "u4", Query(items=["i1", "i2"])]
    for a, b in zip(old.recommend_many(queries, 5), model.recommend_many(queries, 5), strict=True):
        assert a.items == b.items
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "xlnet", "dualsasrec", "als", "bpr"])
def test_runtime_fields_are_declared_and_left_out(name: str) -> None:
    cls = get_model_class(name).config_class
    runtime = cls.runtime_fields()
    expected = {"num_threads"} | ({"device", "progress", "checkpoint_dir"} if name in
                                  ("sasrec", "bert4rec", "xlnet", "dualsasrec") else set())  # fmt: skip
    assert runtime == expected
    assert not set(cls().saved()) & runtime
    assert set(cls().saved()) | runtime == set(cls.model_fields)


@pytest.mark.parametrize("name", ["popularity", "itemknn", "ease", "tfidf"])
def test_fit_takes_valid_and_checks_it(name: str) -> None:
    ds = _data()
    split = leave_one_out(ds)
    a = create_model(name).fit(split.train, valid=split.valid)
    b = create_model(name).fit(split.train)
    h = split.train
    users = [str(u) for u in h.users.ids[:5]]
    assert [r.items for r in a.recommend_many(users, 5)] == [
        r.items for r in b.recommend_many(users, 5)
    ]
    assert fit_on(create_model(name), split) >= 0
    other = Dataset.from_frame(
        pd.DataFrame(
            {"user": ["x"], "item": ["i0"], "event": ["view"], "value": [1.0], "ts": [0.0]}
        )
    )
    with pytest.raises(LmrecError, match="valid must share the training set's"):
        create_model(name).fit(split.train, valid=other)


def test_models_and_reranked_models_are_rankers() -> None:
    from lmrec.rerank import RerankConfig, diversify

    model = create_model("itemknn").fit(_data())
    wrapped = diversify(model, RerankConfig())
    for ranker in (model, wrapped):
        assert isinstance(ranker, Ranker)
        ranker.check_fitted()
        r = ranker.recommend(Query(items=["i0", "i1"]), 3)
        assert len(r) == 3 and "i0" not in r.items
    assert not isinstance(object(), Ranker)


def test_lmmf_trains_through_the_shared_trainer() -> None:
    ds = _data()
    m = create_model("lmmf", encoder="tfidf:8", epochs=6, embedding_size=4, batch_size=32)
    m.fit(ds)
    assert len(m.losses) == 6 and m.losses[-1] < m.losses[0], m.losses
    assert m.train_seconds > 0
    # use_offset=False: the offsets are not trained, so factors come from the text alone.
    text_only = create_model("lmmf", encoder="tfidf:8", epochs=2, use_offset=False).fit(ds)
    x = text_only.item_vectors
    np.testing.assert_allclose(text_only.item_factors, x @ text_only.proj["wq"], atol=1e-5)
    # A stronger decay of the offsets pulls the factors towards the text projection.
    gaps = []
    for offset_reg in (0.0, 100.0):
        mm = create_model("lmmf", encoder="tfidf:8", epochs=6, batch_size=16, offset_reg=offset_reg)
        mm.fit(ds)
        gaps.append(np.abs(mm.item_factors - mm.item_vectors @ mm.proj["wq"]).mean())
    assert gaps[1] < 0.5 * gaps[0], gaps
