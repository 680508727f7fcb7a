"""`lmrec evaluate` end to end, in process, on a small store imported from CSV files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lmrec.cli import main
from lmrec.data import Dataset
from lmrec.data.split import leave_one_out
from lmrec.evaluation import leave_one_out_metrics
from lmrec.models import create_model
from lmrec.store import Store


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("evalcli")
    rng = np.random.default_rng(0)
    n_items = 40
    # Items 0..9 are popular; every user also has a few of the rest.
    weights = np.where(np.arange(n_items) < 10, 6.0, 1.0)
    with (d / "events.csv").open("w") as fh:
        fh.write("user_id,item_id,rating,timestamp\n")
        for u in range(60):
            items = rng.choice(n_items, size=8, replace=False, p=weights / weights.sum())
            for t, i in enumerate(items):
                fh.write(f"{u},{i},{1 + (u + i) % 5},{1000 + 10 * t + u}\n")
    genres = ["Action", "Comedy", "Drama", "Horror"]
    with (d / "items.csv").open("w") as fh:
        fh.write("item_id,title,genres\n")
        for i in range(n_items):
            fh.write(f"{i},Movie {i},{genres[i % 4]}|{genres[(i // 4) % 4]}\n")
    url = f"sqlite:///{d / 'store.db'}"
    args = ["--db", url, "import", "-q", "--interactions", str(d / "events.csv")]
    assert main([*args, "--items", str(d / "items.csv")]) == 0
    return url


def test_evaluate_writes_table_json_csv_and_plots(db: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    args = ["--db", db, "evaluate", "--models", "popularity,itemknn,ease", "--k", "5,10"]
    args += ["--param", "ease.reg=2", "--json", str(out), "--csv", str(tmp_path / "r.csv")]
    assert main([*args, "--plots", str(tmp_path / "plots"), "--test", "ttest"]) == 0
    cap = capsys.readouterr()
    text = cap.out
    assert "protocol loo" in text and "ranking: full" in text and "60 users" in text
    assert "paired test against popularity" in text and "ttest p=" in text
    assert "itemknn fitted in" in cap.err  # progress lines (the bar only shows on a terminal)
    rep = json.loads(out.read_text())
    assert rep["protocol"] == "loo" and rep["ranking"] == "full" and rep["k"] == [5, 10]
    assert list(rep["models"]) == ["popularity", "itemknn", "ease"]
    assert rep["models"]["ease"]["params"] == {"reg": 2}
    ease = rep["models"]["ease"]["test"]
    assert ease["users"] == 60 and "diversity@10" in ease
    # The numbers are the library's for the same split and parameters ...
    with Store(db) as store:
        split = leave_one_out(Dataset.from_store(store))
    lib = leave_one_out_metrics(create_model("ease", reg=2).fit(split.train), split)
    assert ease["ndcg@10"] == pytest.approx(lib["ndcg@10"], abs=1e-9)
    assert ease["recall@10"] == pytest.approx(lib["recall@10"], abs=1e-9)
    # ... and stay where they were measured (NDCG@10 of this data, deterministic models).
    for model, measured in (("popularity", 0.3089), ("itemknn", 0.3207), ("ease", 0.3165)):
        got = rep["models"][model]["test"]["ndcg@10"]
        assert got == pytest.approx(measured, rel=0.03), (model, got)
    cmp = rep["comparison"]
    assert cmp["popularity"]["ci"][0] <= cmp["popularity"]["mean"] <= cmp["popularity"]["ci"][1]
    assert 0 <= cmp["ease"]["p_value"] <= 1 and cmp["ease"]["test"] == "ttest"
    assert cmp["ease"]["diff"] == pytest.approx(ease["ndcg@5"] - rep["models"]["popularity"][
        "test"]["ndcg@5"])  # fmt: skip
    with (tmp_path / "r.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["popularity", "itemknn", "ease"]
    assert float(rows[2]["ndcg@10"]) == pytest.approx(ease["ndcg@10"])
    assert all(r["ranking"] == "full" and r["protocol"] == "loo" for r in rows)
    import matplotlib.image as mpimg

    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "ndcg_at_k.png" in pngs and "recall_at_k.png" in pngs
    assert "ndcg_vs_diversity.png" in pngs
    img = mpimg.imread(tmp_path / "plots" / "ndcg_at_k.png")
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0  # something was drawn


def test_evaluate_sampled_kfold_and_compare(db: str, tmp_path: Path, capsys) -> None:
    args = ["--db", db, "evaluate", "--models", "popularity,itemknn", "--protocol", "kfold"]
    args += ["--folds", "3", "--sampled", "10", "--compare", "itemknn", "-q"]
    args += ["--metrics", "ndcg,recall", "--csv", str(tmp_path / "k.csv"), "--json", "-"]
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ranking"] == "sampled: 10 negatives, uniform" and rep["folds"] == 3
    assert rep["comparison"]["popularity"]["baseline"] == "itemknn"
    assert "ndcg@10_std" in rep["models"]["popularity"]["test"]
    # Sampled NDCG@10, mean of the 3 folds, as measured (180 test users in all).
    for model, measured in (("popularity", 0.6727), ("itemknn", 0.6706)):
        got = rep["models"][model]["test"]
        assert got["ndcg@10"] == pytest.approx(measured, rel=0.03), (model, got)
        assert got["users"] == 180
    assert len(rep["models"]["popularity"]["folds"]) == 3
    with (tmp_path / "k.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["fold"] for r in rows[:5]] == ["1", "2", "3", "mean", "std"]
    assert all(r["ranking"] == "sampled: 10 negatives, uniform" for r in rows)
    assert set(rows[0]) >= {"ndcg@10", "recall@10"} and "novelty@10" not in rows[0]


def test_evaluate_saved_model(db: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "knn"
    args = ["--db", db, "train", "--model", "itemknn", "--protocol", "loo", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    ev = ["--db", db, "evaluate", "--models", "itemknn", "--model-dir", str(out), "-q"]
    assert main([*ev, "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    fresh, saved = rep["models"]["itemknn"]["test"], rep["models"]["knn"]["test"]
    assert saved == fresh  # fitted on the same LOO train split: the same numbers
    # A model trained on everything has seen the test items: a warning says so.
    full = tmp_path / "full"
    assert main(["--db", db, "train", "--model", "itemknn", "--out", str(full)]) == 0
    capsys.readouterr()
    assert main(["--db", db, "evaluate", "--model-dir", str(full), "-q"]) == 0
    assert "trained on 60 of the 60 test interactions" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "nope"], "unknown model 'nope'"),
        (["--models", "ease", "--param", "ease.regg=1"], "regg"),
        (["--models", "ease", "--param", "als.factors=2"], "not one of the evaluated"),
        (["--models", "ease", "--param", "reg=2"], "MODEL.NAME=VALUE"),
        (["--models", "ease", "--k", "ten"], "--k expects integers"),
        (["--models", "ease", "--metrics", "ndgc"], "unknown metric 'ndgc'"),
        (["--models", "popularity,ease", "--compare", "als"], "--compare 'als'"),
        ([], "give --models"),
    ],
)
def test_evaluate_errors(db: str, capsys, extra: list[str], message: str) -> None:
    assert main(["--db", db, "evaluate", "-q", *extra]) == 1
    assert message in capsys.readouterr().err


def test_diversity_settings_side_by_side(db: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.json"
    args = ["--db", db, "evaluate", "--models", "itemknn", "--diversity", "0,0.6", "--method"]
    args += ["mmr", "--metrics", "ndcg,diversity", "--json", str(out), "-q"]
    assert main([*args, "--plots", str(tmp_path / "p")]) == 0
    rep = json.loads(out.read_text())["models"]
    assert list(rep) == ["itemknn", "itemknn mmr=0", "itemknn mmr=0.6"]
    base, same, diverse = (rep[m]["test"] for m in rep)
    # Weight 0 re-ranks by relevance alone: the model's own lists.
    assert same["ndcg@10"] == pytest.approx(base["ndcg@10"])
    assert same["diversity@10"] == pytest.approx(base["diversity@10"])
    assert diverse["diversity@10"] > base["diversity@10"]
    assert (tmp_path / "p" / "ndcg_vs_diversity.png").stat().st_size > 1000
    assert main([*args[:5], "--diversity", "0.5,2"]) == 1
    assert "--diversity values must lie in [0, 1]" in capsys.readouterr().err


def test_diversity_relevance_option(db: str, tmp_path: Path) -> None:
    out = {}
    for rel in ("scores", "rank"):
        path = tmp_path / f"{rel}.json"
        args = ["--db", db, "evaluate", "--models", "itemknn", "--diversity", "0.4", "--method"]
        args += ["maxsum", "--similarity", "jaccard", "--relevance", rel, "--pool", "30"]
        assert main([*args, "--metrics", "ndcg,diversity", "--json", str(path), "-q"]) == 0
        out[rel] = json.loads(path.read_text())["models"]["itemknn maxsum=0.4"]["test"]
    # The option reaches the re-ranker: the two relevances choose different lists.
    assert out["rank"]["diversity@10"] != pytest.approx(out["scores"]["diversity@10"], abs=1e-9)
