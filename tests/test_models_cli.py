"""`lmrec train`, `recommend`, `similar` and `tune` on the ML-100K sample in a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec.cli import main
from lmrec.commands.models import parse_params
from lmrec.errors import LmrecError


@pytest.fixture(scope="module")
def db(ml100k_dir, tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'ml.db'}"
    assert main(["--db", url, "sample", "ml-100k"]) == 0
    return url


def test_parse_params() -> None:
    assert parse_params(["reg=2", "half_life=null", "similarity=cosine", "binary=false"]) == {
        "reg": 2,
        "half_life": None,
        "similarity": "cosine",
        "binary": False,
    }
    with pytest.raises(LmrecError, match="NAME=VALUE"):
        parse_params(["reg"])


def test_train_recommend_similar(db: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ease"
    assert (
        main(["--db", db, "train", "--model", "ease", "--param", "reg=8", "--out", str(out)]) == 0
    )
    assert "trained ease on 100000 interactions" in capsys.readouterr().out
    assert main(["recommend", "--model", str(out), "--user", "1", "-n", "10", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs["items"]) == 10 and recs["fallback"] is None
    assert all(r["title"] for r in recs["items"])
    assert main(["recommend", "--model", str(out), "--items", "50,172,181", "-n", "3"]) == 0
    text = capsys.readouterr().out
    assert "Raiders of the Lost Ark" in text or "Indiana Jones" in text, text
    assert main(["recommend", "--model", str(out), "--user", "nobody", "-n", "3"]) == 0
    assert "fallback: popularity" in capsys.readouterr().out
    assert main(["similar", "--model", str(out), "--item", "50", "-n", "5"]) == 0
    assert "Empire Strikes Back" in capsys.readouterr().out


def test_train_with_protocol_reports_metrics(db: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "knn"
    args = ["--db", db, "train", "--model", "itemknn", "--protocol", "loo", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["trained_on"] == "loo train split" and res["interactions"] == 100000 - 2 * 943
    assert res["test"]["users"] == 943 and res["valid"]["users"] == 943
    # ItemKNN's defaults measure NDCG@10 0.0979, Recall@10 0.1835 (tests/test_models_quality.py).
    assert 0.97 <= res["test"]["ndcg@10"] / 0.0979 <= 1.10, res["test"]
    assert 0.97 <= res["test"]["recall@10"] / 0.1835 <= 1.10, res["test"]


def test_tune_grid(db: str, capsys) -> None:
    args = ["--db", db, "tune", "--model", "ease", "--grid", "reg=2,8", "--param", "half_life=5"]
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [t["params"] for t in res["trials"]] == [{"reg": 2}, {"reg": 8}]
    best = max(res["trials"], key=lambda t: t["ndcg@10"])
    assert res["best"]["params"] == best["params"] and "test" in res["best"]


def test_errors_are_messages(db: str, tmp_path: Path, capsys) -> None:
    assert main(["train", "--model", "nope", "--out", str(tmp_path / "x")]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["train", "--model", "ease", "--param", "regg=1", "--out", str(tmp_path)]) == 1
    assert "regg" in capsys.readouterr().err
    assert main(["recommend", "--model", str(tmp_path / "missing"), "--user", "1"]) == 1
    assert "no saved model" in capsys.readouterr().err
    assert main(["--db", db, "tune", "--model", "ease", "--grid", "reg"]) == 1
    assert "--grid expects" in capsys.readouterr().err


def test_recommend_options_are_the_rerank_config(db: str, tmp_path: Path, capsys) -> None:
    """`lmrec recommend`'s re-ranking options build a `RerankConfig` field by field: the CLI's
    list is the library's `diversify(model, config)` list."""
    from lmrec.models.base import Recommender
    from lmrec.rerank import Filters, RerankConfig, diversify

    out = tmp_path / "knn"
    assert main(["--db", db, "train", "--model", "itemknn", "--out", str(out)]) == 0
    capsys.readouterr()
    opts = ["--diversity", "0.4", "--method", "mmr", "--similarity", "jaccard", "--pool", "30"]
    opts += ["--max-per-category", "4", "--exclude-categories", "Drama", "--no-discount"]
    assert main(["recommend", "--model", str(out), "--user", "7", "-n", "8", "--json", *opts]) == 0
    got = [r["item"] for r in json.loads(capsys.readouterr().out)["items"]]
    config = RerankConfig(
        diversity=0.4,
        method="mmr",
        similarity="jaccard",
        pool=30,
        max_per_category=4,
        discount=False,
        filters=Filters(exclude_categories=("Drama",)),
    )
    model = Recommender.load(out)
    assert got == diversify(model, config).recommend("7", 8).items
    assert got != model.recommend("7", 8).items
    cats = model.history.item_features.categories
    assert all("Drama" not in cats[model.items.index(i)] for i in got)
    assert main(["recommend", "--model", str(out), "--user", "7", "--pool", "0"]) == 1
    assert "invalid re-ranking options: pool" in capsys.readouterr().err


def test_recommend_new_items_from_the_store(db: str, tmp_path: Path, capsys) -> None:
    """`recommend --new-items` adds the store's items the model was not trained on, by their
    text (as the service does), and prints their titles; models that cannot score items they
    were not trained on say so; the store is left as it was."""
    import shutil

    src = Path(db.removeprefix("sqlite:///"))
    copy = tmp_path / "new.db"
    shutil.copy(src, copy)
    url = f"sqlite:///{copy}"
    lm, ease = tmp_path / "lm", tmp_path / "ease"
    assert main(["--db", url, "train", "--model", "lmcontent", "--out", str(lm)]) == 0
    assert main(["--db", url, "train", "--model", "ease", "--out", str(ease)]) == 0
    items = tmp_path / "new.csv"
    items.write_text(
        "item_id,title,genres,release_year\n"
        "new-sw1,Star Wars: Episode I - The Phantom Menace,Action|Adventure|Sci-Fi,1999\n"
    )
    assert main(["--db", url, "import", "--items", str(items)]) == 0
    capsys.readouterr()
    args = ["recommend", "--new-items", "--items", "50,172,181", "-n", "1682", "--json"]
    assert main(["--db", url, *args, "--model", str(lm)]) == 0
    out = capsys.readouterr()
    recs = json.loads(out.out)["items"]
    assert "added 1 new item(s)" in out.err
    rows = {r["item"]: r for r in recs}
    assert rows["new-sw1"]["title"] == "Star Wars: Episode I - The Phantom Menace"
    # Placed by its text: it reads like the Star Wars films, so it ranks in the top tenth.
    assert [r["item"] for r in recs].index("new-sw1") < len(recs) // 10, recs[:20]
    assert main(["--db", url, *args, "--model", str(ease)]) == 1
    err = capsys.readouterr().err
    assert "holds 1 items the 'ease' model was not trained on" in err
    assert "cannot score items from their text; retrain it" in err


def test_dp_train_shows_budget_and_users_delete(db: str, tmp_path: Path, capsys) -> None:
    """`lmrec train` shows the privacy budget a DP model spent; `lmrec users delete` erases a
    user from the store and rewrites the saved model without them."""
    out = tmp_path / "dp"
    argv = ["--db", db, "train", "--model", "ease", "--param", "epsilon=4", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["privacy"]["epsilon"] <= 4.0001 and got["privacy"]["delta"] == 1e-5
    assert main(["--db", db, "users", "delete", "943", "--models", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["found"] and rep["store"]["users"] == 1 and rep["models"] == ["dp"]
    assert main(["--db", db, "users", "delete", "943"]) == 1  # the CLI prints the error
    assert "unknown user '943'" in capsys.readouterr().err


def test_dpsgd_train_shows_the_accountants_figures(db: str, tmp_path: Path, capsys) -> None:
    """`lmrec train` of a DP-SGD model prints the budget, the accountant's figures and what
    the guarantee does not cover."""
    out = tmp_path / "dpmf"
    argv = ["--db", db, "train", "--model", "biasedmf", "--out", str(out)]
    argv += ["--param", "epsilon=8", "--param", "epochs=1", "--param", "embedding_size=8"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "-DP by the RDP accountant" in text
    assert "per user: noise multiplier" in text and "sample rate 0.0679, 15 steps" in text
    assert "not covered: user factors are each user's own (joint DP)" in text
