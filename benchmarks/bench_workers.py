"""`lmrec serve --workers N` side by side in one run: recommendation throughput and latency
at 50 concurrent clients for each N, and feedback with nothing lost.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_workers.py --workers 1,2 --rounds 5 \
        --model ease --client wrk --seconds 10 --json benchmarks/workers.json

Imports ML-100K into a fresh SQLite store and trains the model once. Then, for each round and
each N (interleaved, so that every N sees the same machine), starts `lmrec serve --workers N`
on a free loopback port, waits until every worker answers, warms up, and drives `--requests`
GET /users/{id}/recommendations?n=10 from `--clients` keep-alive connections with the raw
asyncio client of bench_service.py (about 0.1 ms of client CPU per request: the client
shares the machine's cores with the server), or for `--seconds` with `wrk` (`--client wrk`,
Debian's `wrk` package: about a fifth of that CPU, so it measures the server, not the
client). Then `--feedback` single-event POST /feedback from the same clients; every
acknowledged event must be in the store exactly once. With N > 1 the workers follow the store for each other's feedback (as `serve --workers` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_service import drive_raw, drive_wrk, free_port, pct


def _run(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def _wait(base: str, workers: int, timeout: float = 300) -> None:
    """Until `workers` distinct worker processes have answered /health."""
    import httpx

    seen: set[int] = set()
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            h = httpx.get(f"{base}/health", timeout=5).json()
            if h.get("loaded"):
                seen.add(int(h.get("pid", 0)))
                if len(seen) >= workers or "pid" not in h:
                    return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"server with {workers} workers did not come up in {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="ease")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--feedback", type=int, default=2000)
    ap.add_argument(
        "--client",
        choices=["raw", "wrk"],
        default="raw",
        help="load generator of the recommendation requests (wrk: C, less CPU)",
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="length of a wrk run")
    ap.add_argument("--saved", metavar="PATH", help="serve this saved model (fitted on ML-100K)")
    ap.add_argument("--serve-args", default="", help="more `lmrec serve` options")
    ap.add_argument("--json")
    args = ap.parse_args()

    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.models import create_model
    from lmrec.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="lmrec-bench-workers-"))
    url = f"sqlite:///{tmp / 'ml.db'}"
    with Store(url) as store:
        import_sample(store)
        ds = Dataset.from_store(store)
    model_path = Path(args.saved) if args.saved else tmp / args.model
    if not args.saved:
        create_model(args.model).fit(ds).save(model_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    rng = np.random.default_rng(0)
    users, items = ds.users.ids, ds.items.ids
    rows = []
    sent = 0
    for rnd in range(args.rounds):
        for n in [int(w) for w in args.workers.split(",")]:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "lmrec.cli", "--db", url, "serve", "--no-auth",
                   "--port", str(port), "--threads", "1", "--index", "off",
                   "--workers", str(n), "--model", f"{args.model}={model_path}",
                   *args.serve_args.split()]  # fmt: skip
            server = subprocess.Popen(cmd, env=env)
            try:
                _wait(base, n)
                path = "/users/{}/recommendations?n=10"
                warm = [path.format(u) for u in rng.choice(users, args.warmup)]
                _run(drive_raw(base, warm, args.clients))
                paths = [path.format(u) for u in rng.choice(users, args.requests)]
                if args.client == "wrk":
                    row = {"round": rnd, "workers": n,
                           **drive_wrk(base, paths, args.clients, args.seconds)}  # fmt: skip
                else:
                    lat, wall = _run(drive_raw(base, paths, args.clients))
                    row = {"round": rnd, "workers": n, "requests": len(paths), **pct(lat),
                           "requests_per_s": round(len(paths) / wall, 1)}  # fmt: skip
                row["load"] = round(os.getloadavg()[0], 1)
                with Store(url) as store:
                    before = store.counts()["interactions"]
                events = [
                    {
                        "user": f"w{n}-r{rnd}-{k % 500}",
                        "item": str(items[k % len(items)]),
                        "event": "click",
                        "ts": 1.9e9 + sent + k * 1e-3,
                    }
                    for k in range(args.feedback)
                ]
                sent += args.feedback
                _flat, fwall = _run(
                    drive_raw(base, ["/feedback"] * len(events), args.clients, "POST", events)
                )
                time.sleep(1.0)
                with Store(url) as store:
                    stored = store.counts()["interactions"] - before
                row["feedback"] = {"sent": len(events), "stored": stored,
                                   "events_per_s": round(len(events) / fwall, 1)}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
            finally:
                server.terminate()
                server.wait(timeout=60)
    by = {}
    for r in rows:
        by.setdefault(r["round"], {})[r["workers"]] = r["requests_per_s"]
    ratios = [v[max(v)] / v[min(v)] for v in by.values() if len(v) > 1]
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores",
        "model": args.model, "clients": args.clients, "client": args.client, "rows": rows,
        "throughput_ratio_per_round": [round(x, 2) for x in ratios],
    }  # fmt: skip
    print("throughput ratio (most / fewest workers) per round:", res["throughput_ratio_per_round"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
