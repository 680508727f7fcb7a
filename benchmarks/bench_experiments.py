"""Experiments under load: 10,000 exposures and their feedback from 20 concurrent clients,
none lost, and the p99 of recommendation answers with an experiment running beside the p99
without one, in one run.

Imports ML-100K into a fresh SQLite store, trains EASE on all of it and saves it twice (`ease`
and `ease-b`: the arms compute the same, so a difference in latency is the experiment's own
cost: routing, tagging, the exposure log), starts `lmrec serve` in a subprocess and drives it
with `--clients` keep-alive connections (the raw asyncio client of bench_service.py). Each
answer is followed, for half of them, by a click on one of the shown items (POST /feedback).

Blocks of `--block` requests (each from its own users) rotate: without an experiment, with an
A/A one (both arms `ease`: the experiment's own cost) and with an A/B one (A=ease,
B=ease-b: also two model calls per batch instead of one), a new 50/50 experiment per block,
stopped at the block's end, so that the load of the shared machine falls on all alike.
Afterwards: the store must hold one exposure per tagged answer, every acknowledged feedback
event, and each experiment's report must attribute every click sent during its block.

    .venv/bin/python benchmarks/bench_experiments.py --exposures 10000 --clients 20 --block 2500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_service import _Conn, free_port, pct


async def block(base: str, users: list[str], clients: int, seed: int) -> dict:
    """`len(users)` recommendation requests from `clients` connections; half the answers get a
    click on one shown item. Returns latencies, tagged answers and acknowledged clicks."""
    host, port = base.removeprefix("http://").split(":")
    lat = np.zeros(len(users))
    tagged: dict[str, int] = {}
    clicks: dict[str, int] = {}
    acked = 0
    errors: list = []
    nxt = 0
    rng = np.random.default_rng(seed)
    coins = rng.random(len(users)) < 0.5
    picks = rng.integers(0, 10, len(users))

    async def worker() -> None:
        nonlocal nxt, acked
        conn = _Conn(host, int(port))
        try:
            while nxt < len(users):
                i = nxt
                nxt += 1
                t0 = time.perf_counter()
                status, body = await conn.request("GET", f"/users/{users[i]}/recommendations?n=10")
                lat[i] = time.perf_counter() - t0
                if status != 200:
                    errors.append((status, body[:200]))
                    continue
                ans = json.loads(body)
                exp = (ans.get("experiment") or {}).get("name", "-")
                tagged[exp] = tagged.get(exp, 0) + 1
                if coins[i] and ans["items"]:
                    item = ans["items"][int(picks[i]) % len(ans["items"])]["item"]
                    ev = json.dumps({"user": users[i], "item": item, "event": "click"}).encode()
                    status, body = await conn.request("POST", "/feedback", ev)
                    if status != 200:
                        errors.append((status, body[:200]))
                        continue
                    acked += 1
                    clicks[exp] = clicks.get(exp, 0) + 1
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return {
        "lat": lat,
        "wall": time.perf_counter() - t0,
        "tagged": tagged,
        "clicks": clicks,
        "acked": acked,
    }


#: Arm B's version in each experiment phase: "aa" the same version as arm A (the experiment's
#: own cost: routing, tagging, the exposure log), "ab" a second copy of it (also the cost of
#: answering a batch with two model calls instead of one).
MODEL_B = {"aa": "ease", "ab": "ease-b"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--exposures", type=int, default=10_000, help="requests with an experiment")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--block", type=int, default=2500, help="requests per block")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--json", help="write the results here")
    p.add_argument(
        "--group-threads", type=int, default=1, help="the server's --group-threads (1: serial)"
    )
    args = p.parse_args()

    import httpx

    from lmrec.data import Dataset
    from lmrec.io.sample import import_sample
    from lmrec.models import create_model
    from lmrec.store import Store

    try:
        import uvloop

        arun = uvloop.run
    except ImportError:  # pragma: no cover
        arun = asyncio.run
    tmp = Path(tempfile.mkdtemp(prefix="lmrec-bench-exp-"))
    url = f"sqlite:///{tmp / 'ml.db'}"
    with Store(url) as store:
        import_sample(store)
        ds = Dataset.from_store(store)
        before = store.counts()["interactions"]
    ease = create_model("ease").fit(ds)
    ease.save(tmp / "ease")
    ease.save(tmp / "ease-b")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lmrec.cli", "--db", url, "serve", "--no-auth"]
    cmd += ["--port", str(port), "--threads", "1", "--group-threads", str(args.group_threads)]
    cmd += ["--model", f"ease={tmp / 'ease'}", "--model", f"ease-b={tmp / 'ease-b'}"]
    server = subprocess.Popen(cmd, env=env)
    try:
        for _ in range(6000):
            try:
                h = httpx.get(f"{base}/health").json()
                if len(h["loaded"]) == 2 and h["search_index"] == "ready":
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        rng = np.random.default_rng(0)
        ids = [str(u) for u in ds.users.ids]
        warm = arun(block(base, list(rng.choice(ids, args.warmup)), args.clients, 0))
        n_blocks = max(1, args.exposures // args.block)
        # Each block draws from its own users, so that no click of one block can be
        # attributed to another block's experiment (attribution goes by user and item).
        phases = ("off", "aa", "ab")
        groups = np.array_split(rng.permutation(ids), len(phases) * n_blocks)
        lat: dict[str, list] = {ph: [] for ph in phases}
        sent, acked, experiments = {}, warm["acked"], []
        for b in range(n_blocks):
            for k, phase in enumerate(phases):
                name = None
                if phase != "off":
                    name = f"{phase}-{b}"
                    body = {
                        "name": name,
                        "arms": [
                            {"name": "A", "model": "ease", "share": 0.5},
                            {"name": "B", "model": MODEL_B[phase], "share": 0.5},
                        ],
                    }
                    r = httpx.post(f"{base}/experiments", json=body, timeout=60)
                    assert r.status_code == 201, r.text
                    experiments.append(name)
                g = len(phases) * b + k
                users = list(rng.choice(groups[g], args.block))
                res = arun(block(base, users, args.clients, 1 + g))
                if name is not None:
                    httpx.post(f"{base}/experiments/{name}/stop", timeout=60)
                    assert res["tagged"] == {name: args.block}, res["tagged"]
                else:
                    assert set(res["tagged"]) == {"-"}, res["tagged"]
                lat[phase].append(res["lat"])
                acked += res["acked"]
                if name is not None:
                    sent[name] = res["clicks"].get(name, 0)
                print(f"block {b} {phase}: {pct(res['lat'])}, {res['wall']:.1f} s", flush=True)
        reports = {n: httpx.get(f"{base}/experiments/{n}", timeout=120).json() for n in experiments}
    finally:
        server.terminate()
        server.wait(timeout=60)
    # After a clean stop the exposure log has written everything it was given.
    with Store(url) as store:
        stored = store.count_exposures()
        after = store.counts()["interactions"]
    out = {
        "clients": args.clients,
        "group_threads": args.group_threads,
        "block": args.block,
        "without_experiment": pct(np.concatenate(lat["off"])),
        "with_experiment_same_version": pct(np.concatenate(lat["aa"])),
        "with_experiment_two_versions": pct(np.concatenate(lat["ab"])),
        "requests_per_phase": int(sum(len(x) for x in lat["off"])),
        "exposures_tagged": args.block * len(experiments),
        "exposures_stored": int(sum(stored.values())),
        "feedback_acknowledged": acked,
        "feedback_stored": after - before,
        "clicks_sent_in_experiments": int(sum(sent.values())),
        "clicks_attributed": int(
            sum(a["attributed_events"] for r in reports.values() for a in r["arms"])
        ),
        "srm_p_values": {n: r["srm"]["p_value"] for n, r in reports.items()},
    }
    for ph in ("aa", "ab"):
        key = "with_experiment_same_version" if ph == "aa" else "with_experiment_two_versions"
        out[f"p99_ratio_{ph}"] = round(out[key]["p99_ms"] / out["without_experiment"]["p99_ms"], 3)
        out[f"p99_ratio_{ph}_per_block"] = [
            round(float(np.percentile(on, 99) / np.percentile(off, 99)), 3)
            for off, on in zip(lat["off"], lat[ph], strict=True)
        ]
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    assert out["exposures_stored"] == out["exposures_tagged"], "exposures lost"
    assert out["feedback_stored"] == out["feedback_acknowledged"], "feedback lost"
    assert out["clicks_attributed"] == out["clicks_sent_in_experiments"], "clicks not attributed"


if __name__ == "__main__":
    main()
