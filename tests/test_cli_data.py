"""The data commands of the real CLI: `lmrec sample`, `lmrec import`, `lmrec stats`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.cli import main
from lmrec.store import Store

GOOD = "user_id,item_id,rating,timestamp\nu1,i1,4,100\nu1,i2,3,200\nu2,i1,5,300\n"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def stats(db: str, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["--db", db, "stats", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_sample_ml100k_then_stats(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db, "sample", "ml-100k"]) == 0
    out = capsys.readouterr().out
    assert "943 users, 1682 items, 100000 interactions" in out
    s = stats(db, capsys)
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)
    # A second run adds nothing.
    assert main(["--db", db, "sample", "ml-100k"]) == 0
    s = stats(db, capsys)
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)


def test_bad_csv_exits_1_naming_file_and_line(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert main(["--db", db, "import", "--interactions", str(good), "-q"]) == 0
    before = Store(db).counts()
    bad = tmp_path / "bad.csv"
    bad.write_text(GOOD + "u3,i3,4,400\nu4,i4,four,500\n")
    capsys.readouterr()
    assert main(["--db", db, "import", "--interactions", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:6: column 'rating': expected a number (got 'four')" in err
    assert "nothing was written" in err
    assert Store(db).counts() == before


def test_bad_csv_in_a_real_process(db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,ts\na,x,1\nb,y,when\n")
    res = subprocess.run(
        [sys.executable, "-m", "lmrec.cli", "--db", db, "import", "--interactions", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert f"{bad}:3: column 'ts': expected a Unix time" in res.stderr
    assert Store(db).counts() == {"users": 0, "items": 0, "interactions": 0}


def test_import_twice_same_counts_and_json(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "i.csv"
    f.write_text(GOOD)
    items = tmp_path / "items.csv"
    items.write_text("sku,name,genres\ni1,Alien,sci-fi|horror\ni3,Heat,crime\n")
    args = ["--db", db, "import", "--interactions", str(f), "--items", str(items)]
    args += ["--item-map", "ext_id=sku,title=name", "--json", "-q"]
    counts = []
    for _ in range(2):
        capsys.readouterr()
        assert main(args) == 0
        counts.append(json.loads(capsys.readouterr().out))
    assert counts[0]["store"] == counts[1]["store"] == {"users": 2, "items": 3, "interactions": 3}
    assert [f["added"] for f in counts[1]["files"]] == [0, 0]
    assert Store(db).get("item", "i1")["title"] == "Alien"


def test_skip_bad_rows_with_report_and_map(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "v.csv"
    f.write_text("visitor,thing,stars\na,x,1\nb,y,?\nc,z,3\n")
    report = tmp_path / "skipped.csv"
    args = ["--db", db, "import", "--interactions", str(f), "--map", "user=visitor,item=thing"]
    rc = main([*args, "--map", "value=stars", "--skip-bad-rows", "--report", str(report)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "1 bad rows skipped" in out and str(report) in out
    assert [(r["line"], r["column"]) for r in csv.DictReader(report.open())] == [("3", "stars")]
    assert Store(db).counts()["interactions"] == 2


def test_usage_errors(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db, "import"]) == 1
    assert "nothing to import" in capsys.readouterr().err
    assert main(["--db", db, "import", "--interactions", str(tmp_path / "no.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
    f = tmp_path / "a.csv"
    f.write_text(GOOD)
    assert main(["--db", db, "import", "--interactions", str(f), "--map", "user"]) == 1
    assert "--map expects FIELD=COLUMN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sample", "ml-100k"),
        ("import", "--skip-bad-rows"),
        ("stats", "--json"),
    ],
)
def test_help(command: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: lmrec {command}" in out and expected in out


def test_db_after_the_subcommand(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert main(["import", "--db", db, "--interactions", str(good), "-q"]) == 0
    assert Store(db).counts()["interactions"] == 3
    capsys.readouterr()
    assert main(["stats", "--json", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 3


def test_db_given_twice_the_later_one_wins(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["--db", other, "import", "--db", db, "--interactions", str(good), "-q"]) == 0
    assert Store(db).counts()["interactions"] == 3
    assert Store(other).counts()["interactions"] == 0
    # Before the subcommand only: that one.
    assert main(["--db", other, "import", "--interactions", str(good), "-q"]) == 0
    assert Store(other).counts()["interactions"] == 3
    capsys.readouterr()
    assert main(["--db", db, "stats", "--db", other, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 3
    # Each subcommand's help names the option.
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "--db DB" in capsys.readouterr().out
