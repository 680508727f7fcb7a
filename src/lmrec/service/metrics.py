"""Prometheus metrics in the text exposition format (no client library needed)."""

from __future__ import annotations

__all__ = ["Metrics"]

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

#: Upper bounds (seconds) of the request latency histogram.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counts and latency histograms per route, plus gauges read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.hist: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            key = (method, route)
            h = self.hist.get(key)
            if h is None:
                h = self.hist[key] = [0] * (len(BUCKETS) + 1)
            h[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.sums[key] += seconds

    def gauge(self, name: str, help_: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help_, read)

    def render(self) -> str:
        out = [
            "# HELP lmrec_requests_total HTTP requests by method, route and status.",
            "# TYPE lmrec_requests_total counter",
        ]
        with self._lock:
            reqs = dict(self.requests)
            hist = {k: list(v) for k, v in self.hist.items()}
            sums = dict(self.sums)
        for (m, r, s), n in sorted(reqs.items()):
            out.append(f'lmrec_requests_total{{method="{m}",route="{_esc(r)}",status="{s}"}} {n}')
        out += [
            "# HELP lmrec_request_seconds Request latency by method and route.",
            "# TYPE lmrec_request_seconds histogram",
        ]
        for (m, r), counts in sorted(hist.items()):
            lab = f'method="{m}",route="{_esc(r)}"'
            total = 0
            for le, c in zip((*BUCKETS, float("inf")), counts, strict=True):
                total += c
                bound = "+Inf" if le == float("inf") else repr(le)
                out.append(f'lmrec_request_seconds_bucket{{{lab},le="{bound}"}} {total}')
            out.append(f"lmrec_request_seconds_sum{{{lab}}} {sums[(m, r)]:.6f}")
            out.append(f"lmrec_request_seconds_count{{{lab}}} {total}")
        for name, (help_, read) in sorted(self.gauges.items()):
            out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {float(read())}"]
        return "\n".join(out) + "\n"
