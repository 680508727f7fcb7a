"""Store benchmarks: import speed (CSV -> store, end to end through `import_files`) and
snapshot time (`Dataset.from_store`) on ML-100K, on SQLite and, when installed, PostgreSQL
and MariaDB (throwaway local servers, started as `tests/conftest.py` does).

    .venv/bin/python benchmarks/bench_store.py [--rows 1000000] [--repeat 3] [--no-postgres]
        [--no-mysql]

Prints one line per measurement (median of --repeat runs, each into a fresh store).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmrec.data import Dataset
from lmrec.io import ImportOptions, import_files
from lmrec.io.sample import fetch_ml100k
from lmrec.store import Store

AIM_RATE = 200_000  # interactions per second into SQLite
AIM_SNAPSHOT = 1.0  # seconds for ML-100K


def make_csv(path: Path, n: int, seed: int = 0) -> None:
    """n interactions of 60,000 users and 30,000 items, with rating and Unix time."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "user_id": rng.integers(0, 60_000, n),
            "item_id": rng.integers(0, 30_000, n),
            "rating": rng.integers(1, 6, n),
            "timestamp": 1_500_000_000 + rng.integers(0, 100_000_000, n),
        }
    )
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))


def median_time(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_import(new_url: Callable[[], str], csv_path: Path, repeat: int) -> tuple[float, int]:
    """Median seconds to import csv_path into a fresh store, and the interactions added."""
    added = []

    def once() -> None:
        with Store(new_url()) as s:
            rep = import_files(s, interactions=csv_path)
            added.append(rep.files[0].added)

    return median_time(once, repeat), added[-1]


def bench_ml100k(new_url: Callable[[], str], repeat: int) -> tuple[float, float, int]:
    """Median import seconds of the three ML-100K files, median snapshot seconds, rows."""
    d = fetch_ml100k()
    urls: list[str] = []

    def once() -> None:
        urls.append(new_url())
        with Store(urls[-1]) as s:
            import_files(
                s,
                interactions=d / "ml-100k.inter",
                items=d / "ml-100k.item",
                users=d / "ml-100k.user",
                options=ImportOptions(default_event="rating"),
            )

    t_import = median_time(once, repeat)
    with Store(urls[-1]) as s:
        Dataset.from_store(s)  # warm the file cache and the imports
        ds: list[Dataset] = []
        t_snap = median_time(lambda: ds.append(Dataset.from_store(s)), max(repeat, 5))
    return t_import, t_snap, ds[-1].n_interactions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-mysql", action="store_true")
    args = ap.parse_args()

    print(f"python {platform.python_version()}, {platform.machine()}, {platform.platform()}")
    tmp = Path(tempfile.mkdtemp(prefix="lmrec-bench-"))
    big = tmp / "interactions.csv"
    make_csv(big, args.rows)
    print(f"generated {args.rows} interactions: {big} ({big.stat().st_size / 1e6:.1f} MB)")

    backends: list[tuple[str, Callable[[], str]]] = []
    counter = iter(range(10**9))
    backends.append(("sqlite", lambda: f"sqlite:///{tmp / f's{next(counter)}.db'}"))
    servers = []
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    for name, skip in (("postgresql", args.no_postgres), ("mysql", args.no_mysql)):
        if skip:
            continue
        try:
            import conftest

            server = (conftest.PostgresServer if name == "postgresql" else conftest.MariaDBServer)()
            servers.append(server)
            backends.append((name, server.new_database))
        except Exception as exc:  # no binaries, or the server would not start
            print(f"{name}: skipped ({exc})")

    results: dict[str, dict[str, float]] = {}
    try:
        for name, new_url in backends:
            t, added = bench_import(new_url, big, args.repeat)
            rate = added / t
            t_ml, t_snap, n_ml = bench_ml100k(new_url, args.repeat)
            results[name] = {"rate": rate, "ml_rate": n_ml / t_ml, "snap": t_snap}
            print(f"{name:10s} import {added} interactions from CSV: {t:.2f} s = {rate:,.0f}/s")
            print(
                f"{name:10s} import ML-100K (3 atomic files, {n_ml} interactions): "
                f"{t_ml:.2f} s = {n_ml / t_ml:,.0f}/s"
            )
            print(f"{name:10s} snapshot ML-100K (Dataset.from_store): {t_snap:.3f} s")
    finally:
        for server in servers:
            server.stop()
    for name in ("postgresql", "mysql"):
        if name in results:
            sq, other = results["sqlite"], results[name]
            print(
                f"ratio sqlite/{name}: import {sq['rate'] / other['rate']:.2f}x, "
                f"snapshot {other['snap'] / sq['snap']:.2f}x faster on sqlite"
            )
    sq = results["sqlite"]
    ok = sq["rate"] >= AIM_RATE and sq["snap"] < AIM_SNAPSHOT
    print(
        f"aims: import >= {AIM_RATE:,}/s into sqlite: {sq['rate']:,.0f}/s; "
        f"snapshot < {AIM_SNAPSHOT} s: {sq['snap']:.3f} s -> {'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
