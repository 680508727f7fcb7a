"""Synthetic catalogues of any size: power-law item popularity, sessions, item text.

`synthetic_files` writes the three files that `lmrec import` reads (interactions, items, users)
for a made-up shop, in numpy passes over whole arrays, so that a million items and ten
million interactions are written in about a minute. The data has the structure real
catalogues have and that the models can learn:

- items fall into `categories` (sizes power-law); inside a category the items' popularity
  follows Zipf's law with exponent `alpha`, and categories are popular in proportion to size;
- each user has one or two favourite categories and a number of interactions drawn from a
  log-normal (mean `interactions / users`, at least `min_per_user`), cut into sessions;
- inside a session the next item is, with probability `p_next`, the successor of the last
  one in its category's order (so order matters: sequence models can learn it), else a fresh
  draw (a favourite category with probability `p_favourite`, else any category);
- an item's title is its category's words and generic words from a fixed vocabulary (so text
  carries the category: text models and cold start can learn it), with a price attribute.

The same arguments and seed always give the same files.
"""

from __future__ import annotations

__all__ = ["SyntheticFiles", "synthetic_files"]

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lmrec.errors import LmrecError

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ne",
    "to",
    "su",
    "vi",
    "pa",
    "de",
    "fo",
    "gu",
    "ri",
    "ba",
    "ze",
    "mo",
    "li",
    "na",
    "ke",
    "ro",
    "sa",
    "ti",
    "vu",
    "pe",
    "da",
    "fi",
    "go",
    "ru",
    "be",
    "zo",
]
_NOUNS = [
    "lamp",
    "mug",
    "shirt",
    "cable",
    "lotion",
    "novel",
    "headset",
    "kettle",
    "scarf",
    "charger",
    "cream",
    "album",
    "jacket",
    "speaker",
    "notebook",
    "serum",
    "blender",
    "sneaker",
    "pillow",
    "wallet",
]


@dataclass(frozen=True)
class SyntheticFiles:
    """The files written, and what they hold."""

    interactions: Path
    items: Path
    users: Path
    n_users: int
    n_items: int
    n_interactions: int

    def import_args(self) -> list[str]:
        """The `lmrec import` arguments that read these files."""
        return [
            "--interactions", str(self.interactions),
            "--items", str(self.items),
            "--users", str(self.users),
        ]  # fmt: skip


def _words(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct made-up words of three syllables."""
    s = np.array(_SYLLABLES)
    k = len(s)
    if n > k**3:
        raise LmrecError(f"synthetic text: at most {k**3} words, asked for {n}")
    codes = rng.choice(k**3, size=n, replace=False)
    return np.char.add(np.char.add(s[codes // k**2], s[(codes // k) % k]), s[codes % k])


def synthetic_files(
    out: str | Path,
    *,
    users: int = 10_000,
    items: int = 5_000,
    interactions: int = 100_000,
    categories: int | None = None,
    alpha: float = 1.0,
    session_mean: float = 5.0,
    p_next: float = 0.5,
    p_favourite: float = 0.8,
    min_per_user: int = 2,
    words_per_category: int = 8,
    fmt: Literal["csv", "parquet"] = "csv",
    seed: int = 0,
) -> SyntheticFiles:
    """Write interactions / items / users files of a synthetic shop into the folder `out`
    (see the module docstring) and return their paths. `categories` defaults to about
    sqrt(items) / 2. fmt: "csv" or "parquet" (needs pyarrow)."""
    import pandas as pd

    if users < 1 or items < 2 or interactions < users * min_per_user:
        raise LmrecError(
            f"synthetic data: need users >= 1, items >= 2 and interactions >= users x "
            f"min_per_user ({users} x {min_per_user}); got users={users}, items={items}, "
            f"interactions={interactions}"
        )
    if not 0 <= p_next <= 1 or not 0 <= p_favourite <= 1 or alpha <= 0 or session_mean < 1:
        raise LmrecError(
            "synthetic data: p_next and p_favourite lie in [0, 1], alpha > 0, session_mean >= 1"
        )
    if fmt not in ("csv", "parquet"):
        raise LmrecError(f"synthetic data: fmt is 'csv' or 'parquet', got {fmt!r}")
    rng = np.random.default_rng(seed)
    n_cat = int(categories or max(2, round(np.sqrt(items) / 2)))
    n_cat = min(n_cat, items)

    # Categories: power-law sizes summing to `items`, each with at least one item; items of a
    # category are contiguous ids, most popular first.
    w = 1.0 / np.arange(1, n_cat + 1) ** 0.8
    size = np.maximum(1, np.floor(w / w.sum() * (items - n_cat)).astype(np.int64) + 1)
    size[0] += items - size.sum()
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    cat_of = np.repeat(np.arange(n_cat), size)
    local = np.arange(items) - start[cat_of]
    pop = 1.0 / (local + 1.0) ** alpha  # Zipf inside each category
    cat_mass = np.bincount(cat_of, weights=pop, minlength=n_cat)
    p_cat = size / size.sum()

    # Users: log-normal activity, at least min_per_user, summing to `interactions`.
    extra = rng.lognormal(0.0, 1.0, users)
    extra = extra / extra.sum() * (interactions - users * min_per_user)
    length = min_per_user + np.floor(extra).astype(np.int64)
    short = interactions - length.sum()
    if short > 0:
        length[rng.choice(users, int(short), replace=False)] += 1
    fav = rng.choice(n_cat, size=(users, 2), p=p_cat)
    one_fav = rng.random(users) < 0.5
    fav[one_fav, 1] = fav[one_fav, 0]
    user_of = np.repeat(np.arange(users), length)
    n = len(user_of)

    # Fresh draws: a category (favourite or any), then an item by popularity inside it.
    pick = np.where(rng.random(n) < 0.5, fav[user_of, 0], fav[user_of, 1])
    cat = np.where(rng.random(n) < p_favourite, pick, rng.choice(n_cat, size=n, p=p_cat))
    # inverse-CDF sampling of local ranks per category in one pass
    cdf = np.cumsum(pop)
    base = np.concatenate([[0.0], cdf])[start]
    u = base[cat] + rng.random(n) * cat_mass[cat]
    item = np.searchsorted(cdf, u, side="right")
    item = np.clip(item, start[cat], start[cat] + size[cat] - 1)

    # Sessions and successors: a position continues its session's chain with p_next.
    first = np.ones(n, bool)
    first[1:] = user_of[1:] != user_of[:-1]
    new_session = first | (rng.random(n) < 1.0 / session_mean)
    chain = ~new_session & (rng.random(n) < p_next)
    # position of the last fresh draw before each chained position, and the distance to it
    fresh_pos = np.where(~chain, np.arange(n), 0)
    fresh_pos = np.maximum.accumulate(fresh_pos)
    d = np.arange(n) - fresh_pos
    head = item[fresh_pos]
    c = cat_of[head]
    item = np.where(chain, start[c] + (head - start[c] + d) % size[c], item)

    # Time: sessions days apart, events a minute apart inside a session.
    t0 = 1_600_000_000
    gap = np.where(new_session, rng.exponential(3 * 86_400, n), rng.exponential(60, n))
    gap[first] = rng.uniform(0, 365 * 86_400, first.sum())
    ts = t0 + np.floor(_segment_cumsum(gap, first)).astype(np.int64)
    event = np.where(rng.random(n) < 0.1, "purchase", "view")

    # Text: each category owns a few words; titles mix them with generic words and a noun.
    vocab = _words(rng, n_cat * words_per_category + 200)
    own = vocab[: n_cat * words_per_category].reshape(n_cat, words_per_category)
    generic = vocab[n_cat * words_per_category :]
    nouns = np.array(_NOUNS)
    cat_noun = nouns[rng.integers(len(nouns), size=n_cat)]
    w1 = own[cat_of, rng.integers(words_per_category, size=items)]
    w2 = own[cat_of, rng.integers(words_per_category, size=items)]
    g = generic[rng.integers(len(generic), size=items)]
    title = [f"{a} {b} {x} {y}" for a, b, x, y in zip(g, w1, w2, cat_noun[cat_of], strict=True)]
    cat_name = np.char.add("cat", np.arange(n_cat).astype(str))
    price = np.round(rng.lognormal(3.0, 0.8, items), 2)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids_u = np.char.add("u", np.arange(users).astype(str))
    ids_i = np.char.add("i", np.arange(items).astype(str))
    frames = {
        "interactions": pd.DataFrame(
            {"user": ids_u[user_of], "item": ids_i[item], "event": event, "time": ts}
        ),
        "items": pd.DataFrame(
            {"item_id": ids_i, "title": title, "categories": cat_name[cat_of], "price": price}
        ),
        "users": pd.DataFrame(
            {
                "user_id": ids_u,
                "tags": np.where(
                    fav[:, 0] == fav[:, 1],
                    cat_name[fav[:, 0]],
                    np.char.add(np.char.add(cat_name[fav[:, 0]], "|"), cat_name[fav[:, 1]]),
                ),
            }
        ),
    }
    paths = {}
    for key, frame in frames.items():
        path = out / f"{key}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(path)  # never a half-written file under the final name
        paths[key] = path
    return SyntheticFiles(
        paths["interactions"], paths["items"], paths["users"], users, items, int(n)
    )


def _segment_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sums of x restarting at every True of `starts` (starts[0] must be True)."""
    c = np.cumsum(x)
    seg = np.cumsum(starts) - 1
    offset = (c - x)[starts]
    return c - offset[seg]
