"""Training and evaluation on Ray (`lmrec.cluster`): a local Ray cluster of a head and one
worker node, started as two processes (`ray start --block`) in a temporary directory, runs
`lmrec train --ray` and `lmrec evaluate --ray`; the results are compared with `--procs 2`
(torchrun) and with the single-process runner. Without Ray these tests are skipped, unless
`LMREC_REQUIRE_RAY=1` (CI) turns the skip into a failure."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HAVE_RAY = importlib.util.find_spec("ray") is not None
SRC = str(Path(__file__).resolve().parents[1] / "src")
#: The token of the test cluster (Ray's token authentication), given to its nodes and drivers
#: through the environment, so that a token in ~/.ray of another Ray user does not interfere.
TOKEN = secrets.token_hex(32)


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("WORLD_SIZE", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    return env


def _run(cmd: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=400, check=False
    )
    if ok:
        assert res.returncode == 0, (
            f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
        )
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """A head node and a worker node with one CPU each, as two `ray start --block` processes
    (each in its own process group, stopped by its id at the end)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lmrec-ray-"))
        import ray.util

        port = _free_port()
        # The address drivers on this host reach (a driver checks that it is its own node's).
        self.address = f"{ray.util.get_node_ip_address()}:{port}"
        ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block"]
        common = ["--num-cpus=1", "--disable-usage-stats"]
        self.procs: list[subprocess.Popen] = []
        self._start(
            [
                *ray,
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--temp-dir={self.dir / 'ray'}",
                *common,
            ],
            "head",
        )
        self._wait(1)
        self._start([*ray, f"--address={self.address}", *common], "worker")
        self._wait(2)

    def _start(self, cmd: list[str], name: str) -> None:
        log = open(self.dir / f"{name}.log", "w")  # noqa: SIM115 - kept open for the process
        self.procs.append(
            subprocess.Popen(
                cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def _wait(self, nodes: int, timeout: float = 120) -> None:
        """Until the cluster has `nodes` live nodes (asked through a fresh driver)."""
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(p.poll() is not None for p in self.procs):
                break
            res = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if res.returncode == 0 and int(res.stdout.split()[-1]) >= nodes:
                return
            time.sleep(1)
        logs = "\n".join(p.read_text()[-2000:] for p in self.dir.glob("*.log"))
        self.stop()
        raise RuntimeError(f"the Ray cluster did not reach {nodes} nodes:\n{logs}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):  # what is left of its group
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    if not HAVE_RAY:
        if os.environ.get("LMREC_REQUIRE_RAY"):
            pytest.fail(
                "Ray is required (LMREC_REQUIRE_RAY) but not installed: pip install '.[ray]'"
            )
        pytest.skip("ray not installed (pip install 'lmrec[ray]')")
    cluster = RayCluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A store of 120 users walking a cycle of 20 items (8 steps each) with categories."""
    d = tmp_path_factory.mktemp("ray-store")
    rng = np.random.default_rng(1)
    lines = ["user,item,ts"]
    for u in range(120):
        start = int(rng.integers(20))
        lines += [f"u{u},i{(start + t) % 20},{t}" for t in range(8)]
    (d / "events.csv").write_text("\n".join(lines) + "\n")
    items = ["item_id,title,genres", *(f"i{i},Item {i},G{i % 4}|H{i % 3}" for i in range(20))]
    (d / "items.csv").write_text("\n".join(items) + "\n")  # categories for the re-ranking
    db = f"sqlite:///{d / 'store.db'}"
    _run([*_lmrec(db), "import", "--interactions", str(d / "events.csv"), "-q"], d)
    _run([*_lmrec(db), "import", "--items", str(d / "items.csv"), "-q"], d)
    return db, d


def _lmrec(db: str) -> list[str]:
    return [sys.executable, "-m", "lmrec.cli", "--db", db]


TRAIN = ["train", "--model", "sasrec", "--protocol", "loo", "--json"]
TRAIN += ["--param", "epochs=4", "--param", "max_len=10", "--param", "progress=false"]


def _no_timings(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _no_timings(v) for k, v in x.items() if "seconds" not in k}
    return [_no_timings(v) for v in x] if isinstance(x, list) else x


@pytest.mark.slow
@pytest.mark.ray
def test_ray_training_matches_torchrun(ray_cluster: RayCluster, store: tuple[str, Path]) -> None:
    """SASRec trained by two Ray Train workers (one on each node) gives the model that
    `--procs 2` gives: the same DDP code, the same weights, the same validation NDCG@10."""
    db, d = store
    two = json.loads(_run([*_lmrec(db), *TRAIN, "--procs", "2", "--out", str(d / "p2")], d).stdout)
    res = _run([*_lmrec(db), *TRAIN, "--ray", ray_cluster.address, "--out", str(d / "ray")], d)
    on_ray = json.loads(res.stdout)
    assert on_ray["trained_in"] == f"Ray {ray_cluster.address}, 2 workers"
    assert abs(on_ray["valid"]["ndcg@10"] - two["valid"]["ndcg@10"]) <= 0.005, (on_ray, two)
    assert on_ray["valid"]["ndcg@10"] > 0.5  # it learned the cycle
    assert on_ray["chosen"] == two["chosen"]  # best epoch, epochs run, dropout, loss
    # Saved as `lmrec train` saves: the same files, and here the same arrays bit for bit.
    names = sorted(str(p.relative_to(d / "p2")) for p in (d / "p2").rglob("*") if p.is_file())
    assert names == sorted(
        str(p.relative_to(d / "ray")) for p in (d / "ray").rglob("*") if p.is_file()
    )
    with np.load(d / "p2" / "state.npz") as a, np.load(d / "ray" / "state.npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Both workers joined the one process group: one ran on each node.
    assert "world_size=2" in res.stderr


@pytest.mark.slow
@pytest.mark.ray
def test_ray_evaluation_matches_one_process(
    ray_cluster: RayCluster, store: tuple[str, Path]
) -> None:
    """`lmrec evaluate --ray` (a fitted EASE, its diversity re-ranked variant and a saved
    SASRec, users in chunks of 32 over two actors) reports the metrics and per-user values of
    the single-process runner."""
    db, d = store
    if not (d / "p2").exists():
        _run([*_lmrec(db), *TRAIN, "--procs", "2", "--out", str(d / "p2")], d)
    ev = ["evaluate", "--models", "ease", "--diversity", "0.5", "--model-dir", str(d / "p2")]
    ev += ["--k", "5,10", "--batch-size", "32", "--json", "-", "--per-user", "-q"]
    one = json.loads(_run([*_lmrec(db), *ev], d).stdout)
    on_ray = json.loads(_run([*_lmrec(db), *ev, "--ray", ray_cluster.address], d).stdout)
    assert _no_timings(on_ray) == _no_timings(one)
    labels = set(one["models"])  # the three runs were all measured
    assert len(labels) == 3 and {"ease", "p2"} < labels, labels
    assert all("ndcg@10" in one["models"][lab]["test"] for lab in labels)


def test_ray_errors_name_the_problem(tmp_path: Path) -> None:
    """Without Ray, --ray says how to install it; --ray with --sampled and a model that does
    not train with torch are refused before anything starts."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    (tmp_path / "e.csv").write_text(
        "user,item,ts\n" + "".join(f"u{i},i{i % 3},{i}\n" for i in range(9))
    )
    _run([*_lmrec(db), "import", "--interactions", str(tmp_path / "e.csv"), "-q"], tmp_path)
    no_ray = (
        "import sys; sys.modules['ray'] = None; from lmrec.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    res = _run(
        [sys.executable, "-c", no_ray, "--db", db, *TRAIN, "--ray", "local", "--out", "m"],
        tmp_path,
        ok=False,
    )
    assert res.returncode == 1 and "pip install 'lmrec[ray]'" in res.stderr, res.stderr
    res = _run(
        [*_lmrec(db), "train", "--model", "ease", "--ray", "local", "--out", "e"],
        tmp_path,
        ok=False,
    )
    assert res.returncode == 1 and "--ray: only the sequence models" in res.stderr
    res = _run(
        [*_lmrec(db), "evaluate", "--models", "popularity", "--sampled", "5", "--ray", "local"],
        tmp_path,
        ok=False,
    )
    assert res.returncode == 1 and "--sampled" in res.stderr and "--ray" in res.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "e").exists()
