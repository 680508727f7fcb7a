"""Explanations: the reasons given are true (named items are in the history, drove the score and
are similar to the recommended item; named attributes are shared with the similar users)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lmrec.cli import main
from lmrec.data import Dataset, Vocabulary
from lmrec.data.dataset import ItemFeatures, UserFeatures
from lmrec.explain import contributions, explain, explain_history
from lmrec.models import create_model
from lmrec.models.base import History, ModelConfig, Query, Recommender
from lmrec.rerank import RerankConfig, diversify

N_USERS, N_ITEMS = 80, 48
GROUPS = ["horror", "comedy", "drama", "scifi"]


@pytest.fixture(scope="module")
def ds() -> Dataset:
    """Users of four taste groups (their 'group' attribute), items of four genres."""
    rng = np.random.default_rng(1)
    users, items, events = [], [], []
    for u in range(N_USERS):
        g = u % 4
        mine = [i for i in range(N_ITEMS) if i % 4 == g]
        picks = list(rng.choice(mine, 7, replace=False)) + list(rng.choice(N_ITEMS, 2))
        for i in dict.fromkeys(int(x) for x in picks):
            users.append(u)
            items.append(i)
            events.append(int(rng.integers(0, 2)))
    cats = [[GROUPS[i % 4].capitalize()] for i in range(N_ITEMS)]
    return Dataset(
        Vocabulary([f"u{u}" for u in range(N_USERS)]),
        Vocabulary([f"i{i}" for i in range(N_ITEMS)]),
        np.array(users),
        np.array(items),
        event=np.array(events),
        ts=np.arange(len(users), dtype=float),
        event_names=["view", "purchase"],
        user_features=UserFeatures(
            [{"group": GROUPS[u % 4], "city": f"c{u % 5}"} for u in range(N_USERS)],
            [[GROUPS[u % 4]] for u in range(N_USERS)],
        ),
        item_features=ItemFeatures(
            [f"Title {i}" for i in range(N_ITEMS)],
            [f"a {GROUPS[i % 4]} story number {i}" for i in range(N_ITEMS)],
            cats,
            [{} for _ in range(N_ITEMS)],
            np.zeros(N_ITEMS),
        ),
    )


EXACT = {
    "itemknn": {},
    "ease": {},
    "als": {"iterations": 3, "factors": 8, "num_threads": 1},
    "bpr": {"iterations": 5, "factors": 8, "num_threads": 1},
    "lmcontent": {"encoder": "tfidf"},
    "lmmf": {"encoder": "tfidf", "epochs": 2, "embedding_size": 8},
}


@pytest.mark.parametrize("name", list(EXACT))
def test_contributions_add_up_to_the_score(ds, name):
    model = create_model(name, **EXACT[name]).fit(ds)
    hist = model.history_of([Query(user="u5", items=["i3", "i7"])])
    items = np.arange(N_ITEMS)
    dec = contributions(model, hist, items)
    assert dec.exact
    score = model.score(hist)[0].astype(np.float64)
    np.testing.assert_allclose(dec.contrib.sum(axis=1) + dec.rest, score, rtol=1e-4, atol=1e-5)
    assert set(dec.hist.tolist()) == set(hist.matrix.indices.tolist())
    if name in ("itemknn", "ease", "als", "bpr"):
        np.testing.assert_allclose(dec.rest, 0.0)  # nothing but the history
    if name == "lmcontent":  # only the popularity tie-break is left over
        # What is left is the tie-break (at most 1e-6), up to the rounding of the float32
        # scores (a kernel sum over the history: a few ulps of the largest score).
        f32 = 32 * np.finfo(np.float32).eps * max(1.0, float(np.abs(score).max()))
        assert np.abs(dec.parts["popular"]).max() <= 1e-6
        np.testing.assert_allclose(dec.rest, dec.parts["popular"], rtol=0, atol=f32)


def _score_without(model: Recommender, hist: History, item: str, target: int) -> float:
    """The score of `target` when the one-row history forgets `item` (matrix and sequence)."""
    j = model.items.index(item)
    m = sp.lil_matrix(hist.matrix)
    m[0, j] = 0
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    without = History(hist.users, m, [hist.sequences[0][hist.sequences[0] != j]], hist.queries)
    return float(model.score(without)[0, target])


@pytest.mark.parametrize("name", ["itemknn", "ease", "als", "bpr"])
def test_named_items_are_in_the_history_and_drove_the_score(ds, name):
    model = create_model(name, **EXACT[name]).fit(ds)
    for user in ("u2", "u7", "u13"):
        exps = explain(model, user, n=5)
        assert len(exps) == 5
        u = model.users.index(user)
        own = set(model.items.ids_of(ds.matrix()[u].indices))
        hist = model.history_of([Query(user=user)])
        for e in exps:
            r = e.reasons[0]
            assert r.kind == "history" and r.items
            assert set(r.items) <= own
            i = model.items.index(e.item)
            dec = contributions(model, hist, [i])
            byitem = dict(zip(model.items.ids_of(dec.hist), dec.contrib[0], strict=True))
            named = [byitem[x] for x in r.items]
            assert all(c > 0 for c in named)
            # The strongest contributions whose removal really lowers the score (a fold-in
            # contribution can be positive while removing the item raises the score).
            full = float(model.score(hist)[0, i])
            drops = {x: full - _score_without(model, hist, x, i) for x in byitem}
            true = [c for x, c in byitem.items() if drops[x] > 1e-6]
            assert all(drops[x] > 1e-6 for x in r.items)
            assert named == sorted(true, reverse=True)[: len(named)]
            assert r.contributions == pytest.approx(named)
            for t in r.titles:
                assert f'"{t}"' in e.sentence
            assert e.score == pytest.approx(float(model.score(hist)[0, i]), rel=1e-5)
            if name == "itemknn":  # named items are neighbours of the recommended item
                assert all(model.sim[model.items.index(x), i] > 0 for x in r.items)
            if name == "ease":
                assert all(model.weights[model.items.index(x), i] > 0 for x in r.items)


def test_verbs_follow_the_event_types(ds):
    model = create_model("itemknn").fit(ds)
    e = explain(model, Query(items=["i4", "i8"], events=["purchase", "purchase"]), n=1)[0]
    assert e.sentence.startswith("Because you bought ")


class SquaredKNN(Recommender):
    """A non-linear test model without its own explainer: (h S)^2 from an item kNN."""

    name = "squared_knn"
    config_class = ModelConfig

    def _fit(self, dataset: Dataset) -> None:
        self.knn = create_model("itemknn", half_life=None).fit(dataset)

    def score(self, history: History) -> np.ndarray:
        return self.knn.score(history) ** 2


def test_leave_one_out_fallback_is_true_by_construction(ds):
    model = SquaredKNN().fit(ds)
    q = Query(user="u9")
    hist = model.history_of([q])
    for e in explain(model, q, n=4):
        assert e.method == "leave-one-out"
        r = e.reasons[0]
        i = model.items.index(e.item)
        full = float(model.score(hist)[0, i])
        for item, c in zip(r.items, r.contributions, strict=True):
            j = model.items.index(item)
            m = sp.lil_matrix(hist.matrix)
            m[0, j] = 0
            without = History(
                hist.users, sp.csr_matrix(m), [hist.sequences[0][hist.sequences[0] != j]]
            )
            drop = full - float(model.score(without)[0, i])
            assert drop == pytest.approx(c, rel=1e-5) and drop > 0


def test_leave_one_out_equals_the_exact_decomposition_of_a_linear_model(ds):
    model = create_model("itemknn", half_life=None).fit(ds)
    hist = model.history_of([Query(user="u4")])
    from lmrec.explain import _leave_one_out

    items = np.arange(N_ITEMS)
    exact = contributions(model, hist, items)
    loo = _leave_one_out(model, hist, items, limit=100)
    order = np.argsort(loo.hist)
    np.testing.assert_allclose(
        loo.contrib[:, order], exact.contrib[:, np.argsort(exact.hist)], atol=1e-5
    )


def test_similar_users_name_shared_attributes(ds):
    model = create_model("userknn", n_neighbors=10).fit(ds)
    for user in ("u1", "u6"):
        for e in explain(model, user, n=3):
            r = e.reasons[0]
            assert r.kind == "similar_users" and r.count and r.count > 0
            u = model.users.index(user)
            mine = ds.user_features.attributes[u]
            assert r.attributes, e.sentence  # taste groups share their 'group'
            assert all(mine[k] == v for k, v in r.attributes.items())
            assert "city" not in r.attributes  # cities are spread over all groups
            assert "popular with users like you" in e.sentence.lower()


def test_coldstart_reasons_and_weights(ds):
    model = create_model("coldstart_user", encoder="tfidf", n_neighbors=10).fit(ds)
    exps = explain(model, Query(attributes={"group": "drama", "city": "c1"}), n=3)
    for e in exps:
        assert e.reasons and sum(r.weight for r in e.reasons) == pytest.approx(1.0)
        sim = [r for r in e.reasons if r.kind == "similar_users"]
        assert sim, e.sentence  # the neighbours found by attributes share the group
        assert sim[0].attributes.get("group") == "drama"
        assert "city" not in sim[0].attributes


def test_interest_tags_and_popularity_fallback(ds):
    model = create_model("lmcontent", encoder="tfidf").fit(ds)
    exps = explain(model, Query(tags=["scifi", "zzzz"]), n=3)
    for e in exps:
        r = e.reasons[0]
        assert r.kind == "interest" and r.tags == ["scifi"]
        assert e.sentence == "Matches your interest in scifi."
    pop = explain(create_model("ease").fit(ds), "nobody", n=2)
    assert all(e.reasons[0].kind == "popular" and e.method == "popularity" for e in pop)


def test_reranked_models_are_explained_by_their_base_model(ds):
    model = create_model("ease").fit(ds)
    rr = diversify(model, RerankConfig(method="dpp", diversity=0.5, pool=20))
    exps = explain(rr, "u3", n=5)
    assert [e.item for e in exps] == rr.recommend("u3", 5).items
    hist = model.history_of([Query(user="u3")])
    again = explain_history(rr, hist, model.items.indices([e.item for e in exps]))
    assert [e.sentence for e in again] == [e.sentence for e in exps]


def test_cli_recommend_with_diversity_and_explanations(ds, tmp_path, capsys):
    path = tmp_path / "knn"
    create_model("itemknn").fit(ds).save(path)
    args = ["recommend", "--model", str(path), "--user", "u2", "-n", "4"]
    assert main([*args, "--diversity", "0.8", "--method", "dpp", "--explain", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["items"]) == 4
    genres = {ds.item_features.categories[int(x["item"][1:])][0] for x in out["items"]}
    assert len(genres) >= 3  # diversified across the four genres
    for row in out["items"]:
        reasons = row["explanation"]["reasons"]
        assert reasons and reasons[0]["kind"] == "history"
        assert row["explanation"]["sentence"].startswith("Because you ")
    assert main([*args, "--exclude-categories", "Drama", "--explain"]) == 0
    text = capsys.readouterr().out
    assert "Because you" in text
    assert main([*args, "--include-categories", "Nope"]) == 1
    assert "unknown categories in include_categories: Nope" in capsys.readouterr().err
