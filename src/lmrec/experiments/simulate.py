"""A replay simulator: held-out interactions of a split played against a running service.

`write_store` puts a dataset (a split's train part) into a store for the service to serve;
`held_out` gives each user's test items; `replay` asks the service for each user's
recommendations over real HTTP, as a front end would, and sends a click for every shown item
that the user really interacted with in the test part. So an arm that ranks the user's future
items higher gets the higher click-through rate, and the whole loop (assignment, exposure log,
feedback, attribution, report) runs through the real service.
"""

from __future__ import annotations

__all__ = ["ReplayResult", "held_out", "replay", "write_store"]

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.store import Store


def write_store(store: Store, ds: Dataset) -> None:
    """Write the users, items (title, description, categories, attributes) and interactions of
    `ds` into `store`, in one transaction."""
    f = ds.item_features
    uf = ds.user_features
    users = [str(u) for u in ds.users.ids]
    items = [str(i) for i in ds.items.ids]
    with store.begin() as conn:
        store.upsert(
            conn,
            "item",
            [
                {
                    "ext_id": i,
                    "title": f.title[k],
                    "description": f.description[k],
                    "categories": list(f.categories[k]),
                    "attributes": dict(f.attributes[k]),
                }
                for k, i in enumerate(items)
            ],
        )
        store.upsert(
            conn,
            "user",
            [
                {"ext_id": u, "attributes": dict(uf.attributes[k]), "tags": list(uf.tags[k])}
                for k, u in enumerate(users)
            ],
        )
        umap = store.id_map(conn, "user", users)
        imap = store.id_map(conn, "item", items)
        uid = np.array([umap[u] for u in users], dtype=np.int64)[ds.user]
        iid = np.array([imap[i] for i in items], dtype=np.int64)[ds.item]
        names = np.array(ds.event_names, dtype=object)[ds.event].astype(str)
        store.insert_interactions(conn, uid, iid, names, ds.value.astype(np.float64), ds.ts)


def held_out(test: Dataset) -> dict[str, set[str]]:
    """Each user's items in `test` (external ids)."""
    users, items = test.users.ids, test.items.ids
    out: dict[str, set[str]] = {}
    for u, i in zip(test.user.tolist(), test.item.tolist(), strict=True):
        out.setdefault(str(users[u]), set()).add(str(items[i]))
    return out


@dataclass
class ReplayResult:
    """What a replay did: requests, answers per arm, clicks sent, answer latencies."""

    requests: int = 0
    clicks: int = 0
    by_arm: dict[str, int] = field(default_factory=dict)
    clicks_by_arm: dict[str, int] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def replay(
    url: str,
    held: Mapping[str, set[str]],
    *,
    read_key: str | None,
    write_key: str | None,
    users: Sequence[str] | None = None,
    n: int = 10,
    event: str = "click",
    clients: int = 1,
    seed: int = 0,
) -> ReplayResult:
    """Replay `users` (default: every user of `held`, shuffled by `seed`) against the service
    at `url`: one recommendation request each, then one feedback batch with an `event` for
    each shown item in the user's held-out items. `clients` threads run it concurrently."""
    import time

    import httpx

    if users is None:
        order = sorted(held)
        np.random.default_rng(seed).shuffle(order)
        users = order
    result = ReplayResult()
    lock = threading.Lock()
    local = threading.local()
    opened: list[httpx.Client] = []

    def client(key: str | None) -> httpx.Client:
        name = f"c{key}"
        c = getattr(local, name, None)
        if c is None:
            c = httpx.Client(base_url=url, headers={"X-API-Key": key} if key else {}, timeout=60)
            setattr(local, name, c)
            with lock:
                opened.append(c)
        return c

    def one(user: str) -> None:
        t0 = time.perf_counter()
        r = client(read_key).get(f"/users/{user}/recommendations", params={"n": n})
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            with lock:
                result.errors.append(f"{user}: {r.status_code} {r.text[:200]}")
            return
        body = r.json()
        arm = (body.get("experiment") or {}).get("arm", "-")
        hits = [x["item"] for x in body["items"] if x["item"] in held.get(user, ())]
        if hits:
            events = [{"user": user, "item": i, "event": event} for i in hits]
            w = client(write_key).post("/feedback/batch", json={"events": events})
            if w.status_code != 200:
                with lock:
                    result.errors.append(f"{user}: feedback {w.status_code} {w.text[:200]}")
                return
        with lock:
            result.requests += 1
            result.seconds.append(dt)
            result.by_arm[arm] = result.by_arm.get(arm, 0) + 1
            result.clicks += len(hits)
            result.clicks_by_arm[arm] = result.clicks_by_arm.get(arm, 0) + len(hits)

    try:
        if clients <= 1:
            for u in users:
                one(u)
        else:
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(one, users))
    finally:
        for c in opened:
            c.close()
    if result.errors:
        raise LmrecError(f"replay: {len(result.errors)} requests failed, e.g. {result.errors[0]}")
    return result
