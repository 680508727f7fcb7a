"""Encode texts once: vectors are kept by (encoder name, sha256 of the text) in the store's text
vector cache and in a bounded in-process memo, so a second run encodes only new or changed texts.
"""

from __future__ import annotations

__all__ = ["clear_memo", "encode_cached", "item_vectors", "text_hash"]

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lmrec.text.encoders import ProjectedEncoder, TextEncoder

if TYPE_CHECKING:
    from lmrec.store import Store

#: At most this many vectors stay in the in-process memo (the oldest go first).
MEMO_LIMIT = 200_000

_MEMO: dict[tuple[str, str], np.ndarray] = {}


def text_hash(text: str) -> str:
    """The cache key of a text: sha256 of its UTF-8 bytes, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clear_memo() -> None:
    """Forget the vectors kept in this process (the store cache is untouched)."""
    _MEMO.clear()


def _remember(name: str, vectors: dict[str, np.ndarray]) -> None:
    for h, v in vectors.items():
        _MEMO[(name, h)] = v
    excess = len(_MEMO) - MEMO_LIMIT
    if excess > 0:
        for key in list(_MEMO)[:excess]:
            del _MEMO[key]


def encode_cached(
    encoder: TextEncoder,
    texts: Sequence[str],
    store: Store | None = None,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    memo: bool = True,
    stats: dict[str, Any] | None = None,
) -> np.ndarray:
    """Vectors (N, dim) float32 of `texts`, encoding only texts missing from the caches.

    Looks in the in-process memo (if `memo`), then in `store`; new vectors go to both. A
    projection-head encoder caches its base encoder's vectors and projects them. If given,
    `stats` receives texts, unique, memo, store, encoded and seconds.
    """
    t0 = time.perf_counter()
    texts = [str(t) for t in texts]
    if isinstance(encoder, ProjectedEncoder):
        base = encode_cached(
            encoder.base,
            texts,
            store,
            batch_size=batch_size,
            progress=progress,
            memo=memo,
            stats=stats,
        )
        out = encoder.project(base)
        if stats is not None:
            stats["seconds"] = time.perf_counter() - t0
        return out
    name = encoder.name
    hashes = [text_hash(t) for t in texts]
    unique = dict(zip(hashes, texts, strict=True))
    found: dict[str, np.ndarray] = {}
    n_memo = n_store = 0
    if memo:
        for h in unique:
            v = _MEMO.get((name, h))
            if v is not None:
                found[h] = v
        n_memo = len(found)
    missing = [h for h in unique if h not in found]
    if store is not None and missing:
        dim = encoder.dim
        got = {h: v for h, v in store.get_vectors(name, missing).items() if v.shape == (dim,)}
        n_store = len(got)
        found.update(got)
        if memo:
            _remember(name, got)
        missing = [h for h in missing if h not in got]
    if missing:
        vecs = encoder.encode(
            [unique[h] for h in missing], batch_size=batch_size, progress=progress
        )
        new = {h: np.asarray(vecs[i], np.float32) for i, h in enumerate(missing)}
        found.update(new)
        if memo:
            _remember(name, new)
        if store is not None:
            store.put_vectors(name, new)
    if texts:
        out = np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)
    else:
        out = np.zeros((0, encoder.dim), np.float32)
    if stats is not None:
        stats.update(
            texts=len(texts),
            unique=len(unique),
            memo=n_memo,
            store=n_store,
            encoded=len(missing),
            seconds=time.perf_counter() - t0,
        )
    return out


def item_vectors(dataset: Any, encoder: str, template: str | None = None) -> np.ndarray:
    """(n_items, dim) float32 text vectors of a Dataset's items, in vocabulary order, from
    the encoder spec (see `load_encoder`; a TF-IDF encoder is fitted on these texts) and the
    item template, through the caches."""
    from lmrec.text.encoders import TfidfEncoder, load_encoder
    from lmrec.text.templates import item_texts

    texts = item_texts(dataset, template=template)
    enc = load_encoder(encoder)
    if isinstance(enc, TfidfEncoder):
        enc.fit(texts)
    return np.asarray(encode_cached(enc, texts), np.float32)
