"""Maximum-inner-product retrieval of items through FAISS (exact, HNSW or IVF).

Embedding models score an item by a dot product, s(u, i) = <p_u, q_i> (+ b_i): ALS/BPR
(p_u from fold-in, q_i item factors), LM-enhanced MF (a bias folds in as one more
dimension: <[p_u, 1], [q_i, b_i]>) and text vectors (cosine of unit vectors). `VectorIndex`
returns the top-k items of such a score without scoring the whole catalogue:

- `flat` (IndexFlatIP): exact; used up to `exact_limit` items (the default for small catalogues).
- `ivf` (IndexIVFFlat, Jégou et al., TPAMI 2011): k-means cells, `nprobe` cells searched; the
  default above `exact_limit` (on 1M synthetic MF-like items: recall@100 0.997 against exact
  search at the default nprobe, benchmarks/index.md).
- `hnsw` (IndexHNSWFlat, Malkov & Yashunin, TPAMI 2020): a navigable small-world graph,
  searched with the inner product itself (on clustered MF-like vectors this reached a higher
  recall at equal efSearch than the L2 reduction of Bachrach et al., RecSys 2014); on 1M
  unnormalised vectors its recall stayed far below IVF's, so it is opt-in.

Items can be added (new items) and hidden (deleted items) without a rebuild. Recall against
exact search is measured in `benchmarks/bench_index.py` (benchmarks/index.md).
"""

from __future__ import annotations

__all__ = ["VectorIndex", "model_index"]

import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from lmrec.errors import LmrecError

if TYPE_CHECKING:
    from lmrec.models.base import Recommender

Kind = Literal["auto", "flat", "hnsw", "ivf"]


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise LmrecError("the FAISS index needs faiss-cpu (pip install faiss-cpu)") from exc
    return faiss


class VectorIndex:
    """Top-k inner-product search over item vectors (float32, one row per item).

    kind: "auto" picks `flat` up to `exact_limit` items, else `ivf`. `hnsw_m` and
    `ef_search` (HNSW), `nlist` and `nprobe` (IVF; defaults 4 sqrt(n) cells and 1/8 of
    them) trade speed for recall. Thread-safe: searches and additions may run concurrently.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        ids: Sequence[str] | None = None,
        *,
        kind: Kind = "auto",
        exact_limit: int = 50_000,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 512,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
        threads: int | None = None,
    ):
        faiss = _faiss()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] == 0:
            raise LmrecError(f"index vectors must be a 2-d array (n, dim), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise LmrecError("index vectors must be finite (found NaN or inf)")
        n, d = x.shape
        if ids is not None and len(ids) != n:
            raise LmrecError(f"index: {len(ids)} ids for {n} vectors")
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        self.dim = d
        self.kind: str = ("flat" if n <= exact_limit else "ivf") if kind == "auto" else kind
        if self.kind not in ("flat", "hnsw", "ivf"):
            raise LmrecError(f"unknown index kind {kind!r}: use auto, flat, hnsw or ivf")
        self.ids: list[str] = (
            [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        )
        self.hidden = np.zeros(n, bool)
        self._lock = threading.RLock()
        self.ef_search = ef_search
        if self.kind == "flat":
            self.index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
            self.index.hnsw.efSearch = ef_search
        else:
            cells = nlist or max(1, min(int(4 * math.sqrt(max(n, 1))), max(n // 39, 1)))
            quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
            self._quantizer = quantizer
            rng = np.random.default_rng(seed)
            # 64 training points per cell are plenty for k-means (FAISS asks for 39 at least).
            sample = x if n <= 64 * cells else x[rng.choice(n, 64 * cells, replace=False)]
            if len(sample) < cells:
                raise LmrecError(f"ivf index: {n} vectors cannot train {cells} cells")
            self.index.cp.seed = seed
            self.index.train(sample)
            self.index.nprobe = nprobe or max(1, cells // 8)
        if n:
            self.index.add(x)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Append items (e.g. new items encoded from their text)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(x):
            raise LmrecError(f"index.add: {len(ids)} ids for {len(x)} vectors")
        with self._lock:
            self.index.add(x)
            self.ids.extend(str(i) for i in ids)
            self.hidden = np.concatenate([self.hidden, np.zeros(len(x), bool)])

    def hide(self, positions: Sequence[int] | np.ndarray) -> None:
        """Never return these rows again (deleted items)."""
        with self._lock:
            hidden = self.hidden.copy()
            hidden[np.asarray(positions, np.int64)] = True
            self.hidden = hidden

    def search(
        self, queries: np.ndarray, k: int, *, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows (B, k) of the best positions (-1 pads) and their inner products, best first.

        `exclude[b]` lists positions that row b must not return (e.g. the user's history);
        hidden rows are never returned. The index searches k plus what may be filtered out.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        b = len(q)
        out_i = np.full((b, k), -1, np.int64)
        out_s = np.full((b, k), -np.inf, np.float32)
        if k <= 0 or len(self) == 0:
            return out_i[:, :0], out_s[:, :0]
        hidden = self.hidden
        n_ex = max((len(e) for e in exclude), default=0) if exclude else 0
        want = min(len(self), k + n_ex + int(hidden.sum()))
        with self._lock:
            if self.kind == "hnsw":
                self.index.hnsw.efSearch = max(self.ef_search, want)
            dist, idx = self.index.search(q, want)
        scores = dist.astype(np.float32)
        for r in range(b):
            row, sc = idx[r], scores[r]
            ok = row >= 0
            ok[ok] &= ~hidden[row[ok]]
            if exclude is not None and len(exclude[r]):
                ok &= ~np.isin(row, np.asarray(exclude[r], np.int64))
            row, sc = row[ok][:k], sc[ok][:k]
            out_i[r, : len(row)] = row
            out_s[r, : len(row)] = sc
        return out_i, out_s

    @staticmethod
    def exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
        """Exact top-k positions by brute force (the reference for recall measurements)."""
        flat = VectorIndex(vectors, kind="flat")
        return flat.search(queries, k)[0]


def model_index(
    model: Recommender, kind: Kind | Literal["off"], exact_limit: int
) -> VectorIndex | None:
    """A retrieval index over an embedding model's items (`Recommender.item_embeddings`), or
    None: index off, a model without item vectors, or (auto) a catalogue small enough that the
    model scores every item exactly anyway."""
    if kind == "off":
        return None
    items = model.item_embeddings()
    if items is None:
        return None
    if kind == "auto" and len(items) <= exact_limit:
        return None
    assert model.items is not None
    return VectorIndex(items, model.items.ids.tolist(), kind=kind, exact_limit=exact_limit)
