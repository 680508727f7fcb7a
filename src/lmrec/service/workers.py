"""`lmrec serve --workers N`: N server processes, each accepting on its own listening socket.

uvicorn's own multi-process mode hands every worker one shared listening socket. An asyncio
server accepts every connection waiting on its socket each time it wakes, so a burst of new
keep-alive connections (a load balancer's pool, 50 clients connecting at once) can land on a
single worker and stay there: measured on 2 cores with 50 `wrk` connections, one round of two
workers served 3,660 requests/s (the same as one worker, 3,720) and the next 8,713
(benchmarks/service.md). Here every worker binds its own socket to the same address with
`SO_REUSEPORT`, and the kernel spreads new connections over the workers by a hash of the
client's address and port. The parent holds no listening socket (a connection hashed to it
would never be answered); it starts the workers, restarts one that dies after it started, and
stops them all on SIGINT or SIGTERM.
"""

from __future__ import annotations

__all__ = ["reuse_port_socket", "serve_workers"]

import multiprocessing as mp
import os
import signal
import socket
import time
from typing import Any

from lmrec.errors import LmrecError

#: A worker that exits within this many seconds of its start failed to start (a bad setting,
#: an unreadable model): the parent stops instead of restarting it forever.
STARTUP_S = 60.0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reuse_port_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on (host, port) in the address's SO_REUSEPORT group."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def _check_free(host: str, port: int) -> None:
    """Fail at once, with the address, when something listens there already: a plain bind
    conflicts with any listener, including another SO_REUSEPORT group that these workers
    would otherwise join (and split its traffic)."""
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise LmrecError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        probe.close()


def _worker(app: str, run: dict[str, Any]) -> None:  # pragma: no cover - runs in a child
    import uvicorn

    sock = reuse_port_socket(run["host"], run["port"])
    config = uvicorn.Config(app, factory=True, **run)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(app: str, workers: int, run: dict[str, Any], startup_s: float = STARTUP_S) -> int:
    """Run `workers` processes of the app factory `app` ("module:function") with uvicorn's
    settings `run` (host, port, ...) until SIGINT or SIGTERM; returns the exit status (1 when
    a worker exited within `startup_s` of its start)."""
    if workers < 1:
        raise LmrecError(f"--workers must be at least 1, got {workers}")
    _check_free(run["host"], run["port"])
    ctx = mp.get_context("spawn")
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[mp.process.BaseProcess, float]:
        p = ctx.Process(target=_worker, args=(app, run), daemon=False)
        p.start()
        return p, time.monotonic()

    procs = [start() for _ in range(workers)]
    status = 0
    try:
        while not stop:
            time.sleep(0.2)
            for k, (p, t0) in enumerate(procs):
                if p.is_alive() or stop:
                    continue
                if time.monotonic() - t0 < startup_s:
                    print(f"lmrec serve: worker {p.pid} exited with {p.exitcode} while "
                          "starting; stopping", flush=True)  # fmt: skip
                    stop, status = True, 1
                    break
                print(f"lmrec serve: worker {p.pid} exited with {p.exitcode}; restarting",
                      flush=True)  # fmt: skip
                procs[k] = start()
    finally:
        for p, _ in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)  # uvicorn finishes the answers in flight
        deadline = time.monotonic() + 30
        for p, _ in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for s, h in old.items():
            signal.signal(s, h)
    return status
