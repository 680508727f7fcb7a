"""Text that language models read: items (title, description, categories, attributes), users
(attributes, interest tags) and behaviour (a bounded sentence built from the recent history).

Example: `behaviour_text(["A", "B", "C", "D"], ["view", "view", "view", "rating"],
[nan, nan, nan, 5], order="time")` -> "watched A, B and C; rated D 5 of 5".
"""

from __future__ import annotations

__all__ = [
    "EVENT_VERBS",
    "behaviour_text",
    "behaviour_texts",
    "item_text",
    "item_texts",
    "user_text",
    "user_texts",
]

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lmrec.errors import LmrecError

if TYPE_CHECKING:
    from lmrec.data import Dataset

#: How event types read in behaviour text; unknown events read as their own name.
EVENT_VERBS: dict[str, str] = {
    "rating": "rated",
    "view": "watched",
    "watch": "watched",
    "click": "clicked",
    "purchase": "bought",
    "buy": "bought",
    "cart": "added to cart",
    "add_to_cart": "added to cart",
    "addtocart": "added to cart",
    "like": "liked",
    "favorite": "liked",
    "transaction": "bought",
    "interaction": "watched",
}

Order = Literal["newest_first", "time"]


def _label(key: str) -> str:
    return key.replace("_", " ").strip().capitalize()


def _clip(text: str, max_chars: int | None) -> str:
    text = " ".join(text.split())
    if max_chars is not None and len(text) > max_chars:
        cut = text[:max_chars].rsplit(" ", 1)[0]
        return cut or text[:max_chars]
    return text


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _format(template: str, fields: Mapping[str, Any], where: str) -> str:
    try:
        return template.format_map(_Fields(fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise LmrecError(
            f"{where}: bad template {template!r} ({exc}); fields are {', '.join(fields)}"
        ) from None


def item_text(
    title: str = "",
    description: str = "",
    categories: Sequence[str] = (),
    attributes: Mapping[str, Any] | None = None,
    *,
    template: str | None = None,
    max_chars: int | None = 1000,
    fallback: str = "",
) -> str:
    """One item as text: "Title (attribute values). Category, category. Description."

    E.g. "Toy Story (1995). Animation, Children's, Comedy."

    The short fields come first and the description last, so that `max_chars` (and the
    encoder's own token limit: 256 word pieces for MiniLM) cuts a long description, never
    the categories behind it.

    `template` (str.format with title, description, categories, attributes and each attribute
    by name; unknown names are empty) replaces the default layout; `fallback` (e.g. the item id) is used when everything is empty.
    """
    attributes = attributes or {}
    cats = ", ".join(str(c) for c in categories if str(c).strip())
    attrs = ". ".join(
        f"{_label(str(k))}: {v}" for k, v in attributes.items() if v not in (None, "", [])
    )
    if template is not None:
        fields = {
            **{str(k): v for k, v in attributes.items()},
            "title": title,
            "description": description,
            "categories": cats,
            "attributes": attrs,
        }
        text = _format(template, fields, "item text")
    else:
        values = ", ".join(str(v) for v in attributes.values() if v not in (None, "", []))
        head = title.strip().rstrip(".")
        if values:
            head = f"{head} ({values})" if head else values
        parts = [p.strip().rstrip(".") for p in (head, cats, description) if p and p.strip()]
        text = ". ".join(parts) + ("." if parts else "")
    text = _clip(text, max_chars)
    return text or fallback


def item_texts(
    dataset: Dataset, *, template: str | None = None, max_chars: int | None = 1000
) -> list[str]:
    """`item_text` of every item of the dataset, in vocabulary order (the id when empty)."""
    f = dataset.item_features
    ids = dataset.items.ids.tolist()
    return [
        item_text(
            f.title[i],
            f.description[i],
            f.categories[i],
            f.attributes[i],
            template=template,
            max_chars=max_chars,
            fallback=f"Item {ids[i]}",
        )
        for i in range(dataset.n_items)
    ]


def user_text(
    attributes: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    text: str | None = None,
    *,
    fields: Sequence[str] | None = None,
    template: str | None = None,
    max_chars: int | None = 1000,
) -> str:
    """A user as text: "Age: 24. Gender: M. Occupation: technician. Interests: jazz, hiking."

    `fields` limits (and orders) the attributes used; free `text` is appended. Empty when the
    user has no attributes, tags or text.
    """
    attributes = attributes or {}
    keys = list(fields) if fields is not None else list(attributes)
    attrs = ". ".join(
        f"{_label(str(k))}: {attributes[k]}"
        for k in keys
        if k in attributes and attributes[k] not in (None, "", [])
    )
    tag_text = ", ".join(str(t) for t in tags if str(t).strip())
    if template is not None:
        fields_ = {"attributes": attrs, "tags": tag_text, "text": text or ""}
        out = _format(template, fields_, "user text")
    else:
        parts = [attrs] if attrs else []
        if tag_text:
            parts.append(f"Interests: {tag_text}")
        if text and text.strip():
            parts.append(text.strip().rstrip("."))
        out = ". ".join(parts) + ("." if parts else "")
    return _clip(out, max_chars)


def user_texts(
    dataset: Dataset,
    *,
    fields: Sequence[str] | None = None,
    template: str | None = None,
    max_chars: int | None = 1000,
) -> list[str]:
    """`user_text` of every user of the dataset, in vocabulary order ("" when nothing known)."""
    f = dataset.user_features
    return [
        user_text(f.attributes[u], f.tags[u], fields=fields, template=template, max_chars=max_chars)
        for u in range(dataset.n_users)
    ]


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _num(v: float) -> str:
    return f"{v:g}"


def _value(v: Any) -> float | None:
    """A rating as a float, or None when missing (None or NaN of any float type)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def behaviour_text(
    titles: Sequence[str],
    events: Sequence[str] | None = None,
    values: Sequence[float] | None = None,
    *,
    max_items: int = 20,
    order: Order = "newest_first",
    max_value: float | None = 5.0,
    max_chars: int | None = 1000,
    verbs: Mapping[str, str] | None = None,
) -> str:
    """A sentence of what the user did, from a time-ordered history (oldest first).

    Keeps the newest `max_items`, lists them newest first or in time order, and groups runs of
    the same event (and rating): "watched A, B and C; rated D 5 of 5".
    """
    if order not in ("newest_first", "time"):
        raise LmrecError(f"behaviour text: order must be 'newest_first' or 'time', not {order!r}")
    if max_items < 1:
        raise LmrecError(f"behaviour text: max_items must be at least 1, got {max_items}")
    n = len(titles)
    if (events is not None and len(events) != n) or (values is not None and len(values) != n):
        raise LmrecError("behaviour text: titles, events and values must have the same length")
    verbs = {**EVENT_VERBS, **(verbs or {})}
    parts: list[tuple[str, str, str]] = []  # (verb, rating suffix, title), oldest first
    for i in range(max(0, n - max_items), n):
        ev = events[i] if events is not None else "interaction"
        verb = verbs.get(str(ev), str(ev).replace("_", " "))
        v = _value(values[i]) if values is not None else None
        if v is not None:
            if verb == "watched":
                verb = "rated"
            suffix = f" {_num(v)} of {_num(max_value)}" if max_value else f" {_num(v)}"
        else:
            suffix = ""
        parts.append((verb, suffix, " ".join(str(titles[i]).split()) or "an item"))

    def render(kept: list[tuple[str, str, str]]) -> str:
        seq = kept[::-1] if order == "newest_first" else kept
        groups: list[tuple[str, str, list[str]]] = []
        for verb, suffix, title in seq:
            if groups and groups[-1][0] == verb and groups[-1][1] == suffix:
                groups[-1][2].append(title)
            else:
                groups.append((verb, suffix, [title]))
        return "; ".join(f"{verb} {_join(ts)}{suffix}" for verb, suffix, ts in groups)

    # Too long for max_chars: drop the oldest items first (in either order), so the newest
    # always survive; only a single item that is still too long is cut.
    text = render(parts)
    while max_chars is not None and len(text) > max_chars and len(parts) > 1:
        parts = parts[1:]
        text = render(parts)
    return text[:max_chars] if max_chars is not None else text


def behaviour_texts(
    dataset: Dataset,
    users: Sequence[int] | np.ndarray | None = None,
    *,
    titles: Sequence[str] | None = None,
    max_items: int = 20,
    order: Order = "newest_first",
    max_chars: int | None = 1000,
) -> list[str]:
    """`behaviour_text` of these users (default: all) from their dataset history; `titles`
    (default: the item titles, else ids) names the items."""
    if titles is None:
        f = dataset.item_features
        ids = dataset.items.ids.tolist()
        titles = [t or ids[i] for i, t in enumerate(f.title)]
    users = range(dataset.n_users) if users is None else users
    vals = dataset.value[~np.isnan(dataset.value)]
    max_value = float(vals.max()) if len(vals) else None
    out = []
    for u in users:
        lo, hi = int(dataset.user_ptr[u]), int(dataset.user_ptr[u + 1])
        lo = max(lo, hi - max_items)
        out.append(
            behaviour_text(
                [titles[i] for i in dataset.item[lo:hi]],
                [dataset.event_names[e] for e in dataset.event[lo:hi]],
                dataset.value[lo:hi].tolist(),
                max_items=max_items,
                order=order,
                max_value=max_value,
                max_chars=max_chars,
            )
        )
    return out
