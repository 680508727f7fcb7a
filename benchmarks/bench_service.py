"""Load benchmark of the REST service on loopback: recommendation latency and feedback intake.

Imports ML-100K into a fresh SQLite store, trains the given models on all of it, starts
`lmrec serve` in a subprocess and drives it from `--clients` concurrent keep-alive
connections. The load generator (`--client`) is either a raw asyncio HTTP/1.1 client on uvloop
(default: ~0.1 ms of client CPU per request against ~7 ms for httpx; the client shares
the server's two cores) or `httpx.AsyncClient` (the earlier figures):

1. user recommendations (n=10, random ML-100K users) from `--clients` closed-loop clients, a
   bounded number of requests per model after a warm-up; p50/p90/p99 latency and throughput;
   then, with the raw client, an open loop at fixed rates (`--rates`, `--open-seconds` each)
   for the first model: request i is due at i/rate and its latency counts from then;
2. feedback: single-event POST /feedback from the same number of clients, then POST
   /feedback/batch (`--batch` events each); events/s; then the store's interaction count is
   compared with what was acknowledged: every event must be there exactly once.

    .venv/bin/python benchmarks/bench_service.py --models ease,itemknn --requests 3000 \
        --warmup 300 --feedback 3000 --batches 300 [--client httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drive(url: str, paths: list[str], clients: int, method: str = "GET", bodies=None):
    """Send the requests from `clients` concurrent workers; returns (latencies s, wall s)."""
    import httpx

    lat = np.zeros(len(paths))
    nxt = 0
    errors = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:

        async def worker() -> None:
            nonlocal nxt
            while nxt < len(paths):
                i = nxt
                nxt += 1
                t0 = time.perf_counter()
                if method == "GET":
                    r = await c.get(paths[i])
                else:
                    r = await c.post(paths[i], json=bodies[i])
                lat[i] = time.perf_counter() - t0
                if r.status_code != 200:
                    errors.append((r.status_code, r.text[:200]))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return lat, wall


class _Conn:
    """One keep-alive HTTP/1.1 connection over asyncio streams (a light load generator: far
    less client CPU per request than httpx, which shares the server's two cores here)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for line in raw.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.lower() == b"content-length":
                length = int(v)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _split(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


async def drive_raw(url: str, paths: list[str], clients: int, method: str = "GET", bodies=None):
    """`drive` with the raw keep-alive client: closed loop, `clients` connections."""
    host, port = _split(url)
    lat = np.zeros(len(paths))
    data = [json.dumps(b).encode() for b in bodies] if bodies is not None else None
    nxt = 0
    errors = []

    async def worker() -> None:
        nonlocal nxt
        conn = _Conn(host, port)
        try:
            while nxt < len(paths):
                i = nxt
                nxt += 1
                t0 = time.perf_counter()
                status, text = await conn.request(method, paths[i], data[i] if data else None)
                lat[i] = time.perf_counter() - t0
                if status != 200:
                    errors.append((status, text[:200]))
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return lat, wall


def drive_wrk(url: str, paths: list[str], clients: int, seconds: float) -> dict[str, float]:
    """Closed loop from `clients` keep-alive connections of `wrk` (Debian's `wrk` package: a C
    load generator on one thread, about a tenth of the raw client's CPU per request, so that
    more of the shared cores is left to the server). Cycles through `paths` for `seconds`;
    returns requests_per_s, p50/p90/p99_ms and the request count. Any non-2xx answer fails."""
    import re

    if shutil.which("wrk") is None:
        raise SystemExit("--client wrk needs the wrk load generator: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("local paths = {" + ",".join(json.dumps(q) for q in paths) + "}\n")
        f.write("local i = 0\nrequest = function()\n  i = i % #paths + 1\n"
                "  return wrk.format(\"GET\", paths[i])\nend\n")  # fmt: skip
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s", f.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failed requests:\n{out}")

    def ms(tag: str) -> float:
        v, unit = re.search(rf"^\s*{tag}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return round(float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit], 2)

    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": ms("50"), "p90_ms": ms("90"), "p99_ms": ms("99"),
        "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),
    }  # fmt: skip


async def drive_open(url: str, paths: list[str], rate: float, max_conns: int = 200):
    """Open loop: request i is due at start + i/rate whatever the earlier answers; its latency
    runs from when it was due (so time spent waiting for a free connection counts, no
    coordinated omission). Returns (latencies s, wall s, achieved rate)."""
    host, port = _split(url)
    lat = np.zeros(len(paths))
    idle: list[_Conn] = []
    errors = []
    n_conns = 0
    free = asyncio.Semaphore(max_conns)

    async def one(i: int, due: float) -> None:
        nonlocal n_conns
        async with free:
            if idle:
                conn = idle.pop()
            else:
                conn = _Conn(host, port)
                n_conns += 1
            status, text = await conn.request("GET", paths[i])
            lat[i] = time.perf_counter() - due
            idle.append(conn)
            if status != 200:
                errors.append((status, text[:200]))

    start = time.perf_counter()
    tasks = []
    for i in range(len(paths)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    for c in idle:
        c.close()
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return lat, wall, n_conns


_BARE_BODY = json.dumps(
    {
        "user": "1",
        "model": "bare",
        "items": [{"item": str(100 + i), "score": 0.5 - i / 100} for i in range(10)],
        "fallback": None,
    }
).encode()


async def bare_app(scope, receive, send) -> None:
    """The HTTP stack alone: the same uvicorn (uvloop, httptools) answering every request with
    a fixed body the size of a 10-item recommendation; the ceiling of this machine."""
    if scope["type"] != "http":
        return
    head = [
        (b"content-length", str(len(_BARE_BODY)).encode()),
        (b"content-type", b"application/json"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": _BARE_BODY})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str) -> None:
    import httpx

    for _ in range(600):
        try:
            httpx.get(url)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def pct(lat: np.ndarray) -> dict[str, float]:
    return {f"p{q}_ms": round(float(np.percentile(lat, q)) * 1000, 2) for q in (50, 90, 99)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="ease,itemknn")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--feedback", type=int, default=5000, help="single-event requests")
    p.add_argument("--batches", type=int, default=500, help="batch requests")
    p.add_argument("--batch", type=int, default=100, help="events per batch request")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of the server")
    p.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator: raw asyncio HTTP/1.1 keep-alive (on uvloop) or httpx.AsyncClient",
    )
    p.add_argument(
        "--rates", default="100,300", help="open-loop request rates (req/s) of the first model"
    )
    p.add_argument("--open-seconds", type=float, default=10, help="length of each open-loop run")
    p.add_argument(
        "--saved",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve this saved model as NAME instead of fitting it (fitted on ML-100K)",
    )
    p.add_argument(
        "--serve-args", default="", help="more `lmrec serve` options, e.g. '--batch-threads 1'"
    )
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first measure the bare HTTP stack (uvicorn answering a fixed body) the same way",
    )
    args = p.parse_args()

    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.models import create_model
    from lmrec.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="lmrec-bench-service-"))
    url = f"sqlite:///{tmp / 'ml.db'}"
    with Store(url) as store:
        import_sample(store)
        ds = Dataset.from_store(store)
    names = args.models.split(",")
    saved = dict(x.split("=", 1) for x in args.saved)
    for name in names:
        if name not in saved:
            create_model(name).fit(ds).save(tmp / name)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "lmrec.cli",
        "--db",
        url,
        "serve",
        "--no-auth",
        "--port",
        str(port),
        "--threads",
        str(args.threads),
    ]
    for name in names:
        cmd += ["--model", f"{name}={saved.get(name, tmp / name)}"]
    cmd += args.serve_args.split()
    server = subprocess.Popen(cmd, env=env)
    try:
        import httpx

        for _ in range(6000):
            try:
                h = httpx.get(f"{base}/health").json()
                # Measure once loading is over (the search index encodes every item's text).
                if len(h["loaded"]) == len(names) and h["search_index"] == "ready":
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        drv = drive_raw if args.client == "raw" else drive
        arun = asyncio.run
        if args.client == "raw":
            try:
                import uvloop

                arun = uvloop.run
            except ImportError:  # pragma: no cover
                pass
        rng = np.random.default_rng(0)
        users = ds.users.ids
        out: dict = {"clients": args.clients, "models": {}}
        if args.baseline:
            # The ceiling: the same client and the same HTTP server without lmrec behind it.
            bport = free_port()
            bare = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(Path(__file__).parent),
                    "bench_service:bare_app",
                    "--port",
                    str(bport),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--timeout-keep-alive",
                    "75",
                ],
                env=env,
            )
            try:
                burl = f"http://127.0.0.1:{bport}"
                wait_ready(burl)
                paths = [
                    f"/users/{u}/recommendations?n=10" for u in rng.choice(users, args.requests)
                ]
                arun(drv(burl, paths[: args.warmup], args.clients))
                c0 = cpu_seconds(bare.pid)
                lat, wall = arun(drv(burl, paths, args.clients))
                out["bare_http"] = {
                    "requests": len(paths),
                    **pct(lat),
                    "requests_per_s": round(len(paths) / wall, 1),
                    "server_cpu_ms_per_request": round(
                        (cpu_seconds(bare.pid) - c0) / len(paths) * 1000, 3
                    ),
                }
                print("bare http", json.dumps(out["bare_http"]), flush=True)
            finally:
                bare.terminate()
                bare.wait(timeout=30)
        for name in names:
            warm = [
                f"/users/{u}/recommendations?model={name}" for u in rng.choice(users, args.warmup)
            ]
            arun(drv(base, warm, args.clients))
            paths = [
                f"/users/{u}/recommendations?n=10&model={name}"
                for u in rng.choice(users, args.requests)
            ]
            cpu, c0 = time.process_time(), cpu_seconds(server.pid)
            lat, wall = arun(drv(base, paths, args.clients))
            cpu = time.process_time() - cpu
            out["models"][name] = {
                "requests": len(paths),
                **pct(lat),
                "requests_per_s": round(len(paths) / wall, 1),
                "client_cpu_ms_per_request": round(cpu / len(paths) * 1000, 3),
                "server_cpu_ms_per_request": round(
                    (cpu_seconds(server.pid) - c0) / len(paths) * 1000, 3
                ),
            }
            print(name, json.dumps(out["models"][name]), flush=True)

        if args.rates and args.client == "raw":
            name = names[0]
            out["open_loop"] = {}
            for rate in [float(r) for r in args.rates.split(",")]:
                count = int(rate * args.open_seconds)
                paths = [
                    f"/users/{u}/recommendations?n=10&model={name}"
                    for u in rng.choice(users, count)
                ]
                lat, wall, conns = arun(drive_open(base, paths, rate))
                res = {
                    "model": name,
                    "target_per_s": rate,
                    "requests": count,
                    **pct(lat),
                    "achieved_per_s": round(count / wall, 1),
                    "connections": conns,
                }
                out["open_loop"][str(rate)] = res
                print("open loop", json.dumps(res), flush=True)

        with Store(url) as store:
            before = store.counts()["interactions"]
        items = ds.items.ids
        t0 = 1.9e9
        singles = [
            {
                "user": f"bench-{k % 1000}",
                "item": str(items[k % len(items)]),
                "event": "click",
                "ts": t0 + k * 1e-3,
            }
            for k in range(args.feedback)
        ]
        c0 = cpu_seconds(server.pid)
        lat, wall = arun(drv(base, ["/feedback"] * len(singles), args.clients, "POST", singles))
        out["feedback_single"] = {
            "events": len(singles),
            **pct(lat),
            "events_per_s": round(len(singles) / wall, 1),
            "server_cpu_ms_per_event": round(
                (cpu_seconds(server.pid) - c0) / len(singles) * 1e3, 3
            ),
        }
        print("feedback single", json.dumps(out["feedback_single"]), flush=True)
        off = args.feedback
        batches = [
            {
                "events": [
                    {
                        "user": f"bench-{(off + b * args.batch + j) % 1000}",
                        "item": str(items[(b * 7 + j) % len(items)]),
                        "event": "view",
                        "ts": t0 + (off + b * args.batch + j) * 1e-3,
                    }
                    for j in range(args.batch)
                ]
            }
            for b in range(args.batches)
        ]
        lat, wall = arun(
            drv(base, ["/feedback/batch"] * len(batches), args.clients, "POST", batches)
        )
        n_batch = args.batches * args.batch
        out["feedback_batch"] = {
            "events": n_batch,
            "events_per_request": args.batch,
            **pct(lat),
            "events_per_s": round(n_batch / wall, 1),
        }
        print("feedback batch", json.dumps(out["feedback_batch"]), flush=True)
        with Store(url) as store:
            after = store.counts()["interactions"]
        sent = len(singles) + n_batch
        out["count_check"] = {
            "sent": sent,
            "stored": after - before,
            "lost": sent - (after - before),
        }
        print("count check", json.dumps(out["count_check"]), flush=True)
        print(json.dumps(out, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
