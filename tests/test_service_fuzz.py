"""Fuzzing the running service from its own OpenAPI spec (schemathesis): for valid and for
malformed requests alike, no operation may answer with a 5xx."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from lmrec.service import Settings
from test_service import ADMIN, Server, fill_store, train


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'store.db'}"
    fill_store(url, n_users=12, n_items=28)
    models = tmp / "models"
    models.mkdir()
    train(url, "itemknn", models / "knn")
    train(url, "lmcontent", models / "lmc", encoder="tfidf:16")
    srv = Server(
        Settings(
            db=url,
            # The text model answers by default, so /search uses its (TF-IDF) encoder: fast.
            models=[f"lmc={models / 'lmc'}", f"knn={models / 'knn'}"],
            models_dir=str(models),
            api_keys={ADMIN: "admin"},
            # Bodies the schema allows (1000 ids of 255 characters...) fit.
            max_body_bytes=1 << 20,
        )
    )
    yield srv
    srv.stop()


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 15, [o.label for o in ops]
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(fuzz_server: Server, mode: GenerationMode) -> None:
    """Every operation, with bodies, paths and queries generated from the spec (positive: valid
    by the schema; negative: violating it). schemathesis' pytest plugin is not used (it does not
    run under pytest 9), its strategies are, through Hypothesis."""
    calls: list[int] = []
    unsatisfiable = []
    for op in _operations(fuzz_server.url):
        t0 = time.perf_counter()

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case) -> None:
            response = case.call(base_url=fuzz_server.url, headers={"X-API-Key": ADMIN}, timeout=30)
            calls.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:  # nothing in this operation can be made invalid (e.g. /health)
            assert mode == GenerationMode.NEGATIVE
            unsatisfiable.append(op.label)
        print(f"{op.label}: {time.perf_counter() - t0:.2f} s")
    # The operations without parameters, which nothing can make invalid.
    no_params = {"GET /health", "GET /metrics", "GET /models", "GET /auth/scope", "GET /stats"}
    no_params.add("GET /experiments")
    assert set(unsatisfiable) <= no_params, unsatisfiable
    assert len(calls) >= 50 and all(c < 500 for c in calls)
    if mode == GenerationMode.NEGATIVE:
        assert sum(400 <= c < 500 for c in calls) >= len(calls) // 2


def test_schemathesis_every_check(fuzz_server: Server) -> None:
    """`schemathesis run` (the CLI, every check: status codes, content types, response schemas,
    negative and positive data, methods, Allow headers, auth) against the real server finds
    nothing, in a bounded number of cases (benchmarks/service_fuzz.md: the longer run).
    schemathesis.toml lists the two cross-field rules JSON Schema cannot state."""
    root = Path(__file__).resolve().parents[1]
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(root / "schemathesis.toml"),
        "run",
        f"{fuzz_server.url}/openapi.json",
        "-H",
        f"X-API-Key: {ADMIN}",
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        "4",
        "--seed",
        "18",
        "--request-timeout",
        "60",
        "--exclude-path",
        "/models/train",  # each case would start a training job; tested by the benchmark run
        "--no-color",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    tail = run.stdout[-3000:]
    assert run.returncode == 0, tail
    assert " passed" in tail and "failures" not in tail.split("Test cases:")[-1], tail
