"""Multi-process training: SASRec under `torchrun` with 2 CPU processes (gloo backend),
in real subprocesses, against the same training in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import pandas as pd
    import torch
    from lmrec.data import Dataset
    from lmrec.models import create_model
    from lmrec.nn import is_main_process

    out = sys.argv[1]
    rng = np.random.default_rng(0)
    rows = []
    for u in range(160):  # users walk a cycle of 30 items from random starts
        start = int(rng.integers(30))
        rows += [(f"u{u}", f"i{(start + t) % 30}", float(t)) for t in range(10)]
    ds = Dataset.from_frame(pd.DataFrame(rows, columns=["user", "item", "ts"]))
    model = create_model(
        "sasrec", embedding_size=32, layers=1, heads=2, max_len=12, batch_size=32,
        epochs=25, patience=5, seed=3,
    ).fit(ds)
    r = model.train_result
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    w = model.net.item_emb.table.weight.detach().numpy()
    np.save(os.path.join(out, f"weights{rank}.npy"), w)
    with open(os.path.join(out, f"main{rank}.json"), "w") as f:
        json.dump(is_main_process(), f)  # after fit: the trainer has left its process group
    if is_main_process():
        model.save(os.path.join(out, "model"))
        info = {"world": world, "best": r.best_score, "best_epoch": r.best_epoch,
                "epochs": r.epochs_run, "dist_after": torch.distributed.is_initialized()}
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(info, f)
    """
)


def _why(res: subprocess.CompletedProcess) -> str:
    """The end of the output and every line that names an error (under torchrun a child's
    traceback comes long before the launcher's summary)."""
    keys = ("Error", "error:", "Exception", "terminate called", "what()")
    errors = [ln for ln in res.stderr.splitlines() if any(k in ln for k in keys)]
    return "\n".join([res.stdout[-2000:], *errors[-30:], res.stderr[-2000:]])


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run `cmd` to success; on failure, show every error line of torchrun's children."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{_why(res)}"
    return res


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _run([sys.executable, str(script), str(one)], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(two),
        ],
        tmp_path,
    )
    r1 = json.loads((one / "result.json").read_text())
    r2 = json.loads((two / "result.json").read_text())
    assert r1["world"] == 1 and r2["world"] == 2
    assert not r2["dist_after"]  # the trainer left the process group it joined
    # ... and still only the first process calls itself the main one (the one that saves).
    assert [json.loads((two / f"main{r}.json").read_text()) for r in (0, 1)] == [True, False]
    # Both processes ended with the same weights (gradients were averaged across them) ...
    np.testing.assert_array_equal(np.load(two / "weights0.npy"), np.load(two / "weights1.npy"))
    # ... and the model is as good as the one trained in a single process.
    assert r1["best"] > 0.8 and abs(r1["best"] - r2["best"]) < 0.1, (r1, r2)
    from lmrec.models.base import Query, Recommender

    model = Recommender.load(two / "model")
    assert model.recommend(Query(items=["i3", "i4", "i5"]), n=1).items == ["i6"]


@pytest.mark.slow
def test_lmrec_train_procs_runs_under_torchrun(tmp_path: Path) -> None:
    """`lmrec train --procs 2` relaunches itself under torchrun: two processes train, the
    first saves one model and prints one report; a model that does not train with torch is
    refused with a message."""
    rng = np.random.default_rng(1)
    lines = ["user,item,ts"]
    for u in range(120):
        start = int(rng.integers(20))
        lines += [f"u{u},i{(start + t) % 20},{t}" for t in range(8)]
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n")
    db = f"sqlite:///{tmp_path / 'store.db'}"
    lmrec = [sys.executable, "-m", "lmrec.cli", "--db", db]
    _run([*lmrec, "import", "--interactions", str(tmp_path / "events.csv"), "-q"], tmp_path)
    out = tmp_path / "model"
    res = _run(
        [
            *lmrec,
            "train",
            "--model",
            "sasrec",
            "--param",
            "epochs=3",
            "--param",
            "max_len=10",
            "--procs",
            "2",
            "--out",
            str(out),
            "--json",
        ],
        tmp_path,
    )
    report = json.loads(res.stdout)  # one report: the second process printed nothing
    assert report["model"] == "sasrec" and report["interactions"] == 960
    from lmrec.models.base import Query, Recommender

    model = Recommender.load(out)
    assert len(model.recommend(Query(items=["i3", "i4"]), n=3).items) == 3
    res = subprocess.run(
        [*lmrec, "train", "--model", "ease", "--procs", "2", "--out", str(tmp_path / "e")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert "--procs 2: only the sequence models" in res.stderr
    assert not (tmp_path / "e").exists()


def test_is_main_process_follows_torchrun_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a process group the rank torchrun gave (RANK) decides; no RANK: main."""
    from lmrec.nn import is_main_process

    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
