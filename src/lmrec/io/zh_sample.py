"""A small Chinese shop, written by the project: 48 products with Chinese titles and
descriptions in 8 categories (`examples/zh_products.csv`), and synthetic interactions.

Each synthetic user likes one category: they interact with `seen` of its 6 products and with
one product of another category (noise). The texts hold no spaces between Chinese words, so
TF-IDF on whitespace-separated tokens sees one token per phrase; that is what the sample is
for: checking encoders and tokenisers on Chinese text (search, cold start).
"""

from __future__ import annotations

__all__ = ["ZH_PRODUCTS", "read_zh_products", "zh_sample"]

import csv
from pathlib import Path

import numpy as np

from lmrec.data import Dataset
from lmrec.data.dataset import ItemFeatures
from lmrec.errors import DataError, Problem

#: The product list, in the repository's examples/ folder.
ZH_PRODUCTS = Path(__file__).resolve().parents[3] / "examples" / "zh_products.csv"


def read_zh_products(path: str | Path = ZH_PRODUCTS) -> list[dict[str, str]]:
    """The rows of the product CSV (item_id, category, title, description)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(
            Problem(str(path), None, None, None, f"cannot read the Chinese sample products: {exc}")
        ) from None
    need = {"item_id", "category", "title", "description"}
    if not rows or not need <= set(rows[0]):
        raise DataError(
            Problem(str(path), 1, None, None, f"needs the columns {', '.join(sorted(need))}")
        )
    return rows


def zh_sample(
    path: str | Path = ZH_PRODUCTS,
    *,
    users_per_category: int = 10,
    seen: int = 4,
    categories: bool = True,
    seed: int = 0,
) -> Dataset:
    """The Chinese products with synthetic users (see the module docstring). `categories=False`
    leaves the items' category field empty, so that only the title and description tell what
    an item is."""
    import pandas as pd

    rows = read_zh_products(path)
    by_cat: dict[str, list[str]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r["item_id"])
    names = sorted(by_cat)
    rng = np.random.default_rng(seed)
    events, t = [], 0
    for ci, cat in enumerate(names):
        own = by_cat[cat]
        others = [i for c in names if c != cat for i in by_cat[c]]
        for u in range(users_per_category):
            picks = [own[j] for j in rng.permutation(len(own))[:seen]]
            picks.insert(int(rng.integers(len(picks) + 1)), others[rng.integers(len(others))])
            for item in picks:
                events.append((f"zu{ci}_{u}", item, "purchase", 1.0, t))
                t += 1
    frame = pd.DataFrame(events, columns=["user", "item", "event", "value", "ts"])
    ds = Dataset.from_frame(frame, name="zh-shop")
    info = {r["item_id"]: r for r in rows}
    ids = ds.items.ids.tolist()
    features = ItemFeatures(
        title=[info[i]["title"] for i in ids],
        description=[info[i]["description"] for i in ids],
        categories=[[info[i]["category"]] if categories else [] for i in ids],
        attributes=[{} for _ in ids],
        created_at=np.zeros(len(ids)),
    )
    return Dataset(
        ds.users, ds.items, ds.user, ds.item, event=ds.event, value=ds.value, ts=ds.ts,
        event_names=ds.event_names, item_features=features, name="zh-shop", _sorted=True,
    )  # fmt: skip
