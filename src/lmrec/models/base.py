"""The recommender contract that every lmrec model follows.

A model is configured by a validated `ModelConfig` (pydantic, unknown fields refused), learns
from a `Dataset` in `fit`, and answers a `Query` (a known user and/or recent items, attributes,
tags, free text) in `recommend`. Internally every model implements one method, `score`, over a
batch of `History` rows; ranking, exclusion of seen items, candidate restriction, fallbacks and
persistence live here, once. Artifacts are a JSON config plus `.npz` arrays: never pickle.
"""

from __future__ import annotations

__all__ = [
    "Contributions",
    "History",
    "ModelConfig",
    "Query",
    "Ranker",
    "Recommendations",
    "Recommender",
    "linear_contributions",
    "recency_weighted",
    "sparse_from_state",
    "sparse_state",
    "top_k",
]

import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp
from pydantic import AliasChoices, BaseModel, ConfigDict, ValidationError

from lmrec.data import Dataset, Vocabulary
from lmrec.data.dataset import csr_dedup
from lmrec.errors import LmrecError
from lmrec.files import staged_dir

ARTIFACT_FORMAT = "lmrec.model"
ARTIFACT_VERSION = 1

#: Score cells (users x items) one dense ranking batch may hold: 64 MiB of float32. Batches
#: of users shrink with the catalogue (16 users at 1M items), so a batch stays in memory
#: bandwidth's reach instead of allocating B x n_items arrays of gigabytes.
RANK_CELLS = 1 << 24


def rows_per_batch(n_items: int, batch_size: int) -> int:
    """Users per dense ranking batch: `batch_size`, fewer when B x n_items > RANK_CELLS."""
    return max(1, min(batch_size, RANK_CELLS // max(1, n_items)))


class ModelConfig(BaseModel):
    """Base of every model's hyperparameters: typed, validated, unknown names refused.

    Models share one vocabulary of names (LensKit's): `embedding_size`, `epochs`,
    `learning_rate`, `reg`, `n_neighbors`, `seed`. A field renamed to it keeps its old name
    as an alias (`validation_alias=AliasChoices(new, old)`), so that saved artifacts and old
    `--param` spellings still load. Fields about where and how to run rather than what the
    model is (device, threads, progress, checkpoints) are declared `Field(exclude=True)`:
    validated like the others, left out of saved artifacts, defaulted at load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @classmethod
    def aliases(cls) -> dict[str, str]:
        """Old parameter name -> its current name, for fields that were renamed."""
        out = {}
        for name, f in cls.model_fields.items():
            if isinstance(f.validation_alias, AliasChoices):
                for choice in f.validation_alias.choices:
                    if isinstance(choice, str) and choice != name:
                        out[choice] = name
        return out

    @classmethod
    def runtime_fields(cls) -> frozenset[str]:
        """Names of the fields about running, not the model: never saved with it."""
        return frozenset(n for n, f in cls.model_fields.items() if f.exclude)

    @classmethod
    def canonical(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """`params` with old names replaced by the current ones; giving both is an error."""
        aliases = cls.aliases()
        out: dict[str, Any] = {}
        for key, value in params.items():
            name = aliases.get(key, key)
            if name in out:
                raise LmrecError(
                    f"parameter {name!r} given twice (as {name!r} and its old name {key!r} or "
                    "the other way round); give it once"
                )
            out[name] = value
        return out

    def saved(self) -> dict[str, Any]:
        """The JSON-ready fields that a saved model keeps (runtime fields left out)."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Query:
    """What a model answers: a user id, and/or what they just did, and/or who they are.

    `items` is the recent history, oldest first; `events`, `timestamps` and `values` (ratings)
    run parallel to it when given. A query with a known `user` adds its stored history.
    `time` is the request time (Unix seconds) and `context` any further fields of the request
    (e.g. {"event": "purchase", "device": "mobile"}), for models that read context
    (`twostage`); the others ignore both.
    """

    user: str | None = None
    items: Sequence[str] = ()
    events: Sequence[str] | None = None
    timestamps: Sequence[float] | None = None
    values: Sequence[float] | None = None
    attributes: Mapping[str, Any] | None = None
    tags: Sequence[str] = ()
    text: str | None = None
    time: float | None = None
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Recommendations:
    """Ranked item ids with scores; `fallback` names what answered when the model could not."""

    items: list[str]
    scores: list[float]
    fallback: str | None = None

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class History:
    """A batch of B users as models see them.

    users: (B,) user indices in the model's vocabulary, -1 for unknown or anonymous users.
    matrix: (B, n_items) CSR of the interaction weights of each row's history.
    sequences: B arrays of item indices in time order (for sequence models).
    queries: the queries behind the rows when they came from `recommend` (attributes, text).
    """

    users: np.ndarray
    matrix: sp.csr_matrix
    sequences: list[np.ndarray]
    queries: list[Query | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.users)

    def user_attributes(self, r: int, stored: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        """Row r's user attributes: its query's, when it brings any, else the `stored` ones
        (by user index) of a known user, else none."""
        q = self.queries[r] if self.queries else None
        if q is not None and q.attributes:
            return q.attributes
        u = int(self.users[r])
        return stored[u] if 0 <= u < len(stored) else {}

    @classmethod
    def from_dataset(cls, dataset: Dataset, users: np.ndarray | Sequence[int]) -> History:
        """The histories of these users (indices into dataset.users) as stored in `dataset`."""
        users = np.asarray(users, dtype=np.int64)
        return cls(
            users=users,
            matrix=dataset.matrix()[users],
            sequences=[dataset.sequence(int(u)) for u in users],
            queries=[None] * len(users),
        )


@dataclass
class Contributions:
    """How a model's score of M candidate items for one history row decomposes.

    hist: (H,) history item indices; contrib: (M, H) contribution of each history item to each
    candidate; rest: (M,) the part no history item explains (NaN if unknown); exact: whether
    contrib.sum(1) + rest equals the model's score; method: how it was computed; parts: named
    pieces of the score beside the history items, kind -> (M,) values (kinds: "popular",
    "interest", "similar_users", "content", "profile", "random"), which `lmrec.explain`
    turns into reasons.
    """

    hist: np.ndarray
    contrib: np.ndarray
    rest: np.ndarray
    exact: bool
    method: str
    parts: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of_parts(cls, scores: np.ndarray, method: str, **parts: np.ndarray) -> Contributions:
        """A decomposition without history items: the scores (M,) made of named parts."""
        scores = np.asarray(scores, np.float64)
        return cls(np.zeros(0, np.int64), np.zeros((len(scores), 0)), scores, True, method, parts)


def linear_contributions(
    h: sp.spmatrix, weights: Any, items: np.ndarray, method: str
) -> Contributions:
    """For a score sum_j h_j W[j, i] of a one-row history h: contributions h_j W[j, i]."""
    h = sp.csr_matrix(h)
    hist = h.indices.astype(np.int64)
    hv = h.data.astype(np.float64)
    w = weights[hist]
    w = w[:, items].toarray() if sp.issparse(w) else np.asarray(w)[:, items]
    contrib = (hv[:, None] * w).T
    return Contributions(hist, contrib, np.zeros(len(items)), True, method)


def top_k(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row, best first, after setting `exclude`d cells to -inf.

    scores: (B, n_items); exclude: (B, n_items) sparse, nonzero = not recommendable.
    Returns (indices (B, k'), scores (B, k')) with k' = min(k, n_items); cells that are -inf
    (excluded) come back as index -1.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        ex = exclude.tocsr()
        rows = np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))
        scores[rows, ex.indices] = -np.inf
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0), np.float32)
    part, part_scores = _select(scores, k)
    # argpartition keeps an arbitrary subset of the items tied at the k-th score; rows with
    # such a tie take the lowest item indices among the tied, so that the top k does not
    # depend on k (the top 10 is the head of the top 50).
    kth = part_scores.min(axis=1)
    tied = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k)
    if len(tied):
        sub, t = scores[tied], kth[tied, None]
        above = sub > t
        eq = sub == t
        room = k - above.sum(axis=1, keepdims=True)
        keep = above | (eq & (np.cumsum(eq, axis=1) <= room))
        part[tied] = np.nonzero(keep)[1].reshape(len(tied), k)
        part_scores[tied] = np.take_along_axis(sub, part[tied], axis=1)
    # Best first; equal scores by item index, so results are deterministic. For many cells
    # by index, then a stable sort by score (two argsorts of 50 x 200: 0.3 ms, one lexsort
    # 0.5 ms); for a few, the lexsort (fewer calls).
    if part.size >= 2048:
        by_index = np.argsort(part, axis=1)
        part = np.take_along_axis(part, by_index, axis=1)
        part_scores = np.take_along_axis(part_scores, by_index, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
    else:
        order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    val = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isneginf(val), -1, idx)
    return idx.astype(np.int64), val


#: `_select` uses torch's top-k from this many score cells on (below, its per-call cost is
#: more than argpartition's; 50 x 1,682 cells, k = 200: 0.09 ms against 0.77 ms).
TORCH_TOPK_CELLS = 8192


def _select(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Some k columns of each row holding its k largest values (any of those tied with the
    k-th), and their values: torch's top-k (unsorted) where torch is loaded already (it is
    not imported for this), the array has `TORCH_TOPK_CELLS` cells or more and no NaN; else
    numpy's argpartition. `top_k` settles the ties either way."""
    torch = sys.modules.get("torch")
    if torch is not None and scores.size >= TORCH_TOPK_CELLS and not np.isnan(scores).any():
        val, idx = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False)
        return idx.numpy(), val.numpy()
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return part, np.take_along_axis(scores, part, axis=1)


def recency_weighted(
    history: History, half_life: float | None, matrix: sp.csr_matrix | None = None
) -> sp.csr_matrix:
    """`matrix` (default history.matrix) with each item's weight times
    0.5 ** (steps from the end / half_life).

    Steps count back from the newest item of the row's sequence (the newest is 0; a repeated
    item counts at its last position); items missing from the sequence keep their weight.
    """
    m = (history.matrix if matrix is None else matrix).tocsr()
    if half_life is None or m.nnz == 0:
        return m
    lens = np.fromiter((len(s) for s in history.sequences), np.int64, len(history.sequences))
    if lens.sum() == 0:
        return m
    rows = np.repeat(np.arange(len(lens)), lens)
    cols = np.concatenate(history.sequences).astype(np.int64)
    ends = np.cumsum(lens)
    steps = np.repeat(ends, lens) - 1 - np.arange(lens.sum())
    decay = np.power(0.5, steps / half_life)
    # Per (row, item) the largest decay (its last position), as sorted linear keys; then each
    # stored cell looks its key up. No intermediate sparse matrix: this runs on every request.
    lin = rows * m.shape[1] + cols
    order = np.lexsort((decay, lin))
    lin_s = lin[order]
    last = np.ones(len(lin_s), dtype=bool)
    last[:-1] = lin_s[1:] != lin_s[:-1]
    keys, factor = lin_s[last], decay[order][last]
    m_rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    lin_m = m_rows * m.shape[1] + m.indices
    pos = np.minimum(np.searchsorted(keys, lin_m), len(keys) - 1)
    found = keys[pos] == lin_m
    data = m.data.astype(np.float32 if m.dtype == np.float32 else np.float64, copy=True)
    data[found] *= factor[pos[found]].astype(data.dtype)
    out = sp.csr_matrix((data, m.indices.copy(), m.indptr.copy()), shape=m.shape)
    if m.has_sorted_indices:
        out.has_sorted_indices = True
    else:
        out.sort_indices()
    return out


def sparse_state(name: str, m: sp.spmatrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays `name.data`, `name.indices`, `name.indptr`, `name.shape`."""
    m = sp.csr_matrix(m)
    return {
        f"{name}.data": m.data,
        f"{name}.indices": m.indices,
        f"{name}.indptr": m.indptr,
        f"{name}.shape": np.asarray(m.shape, np.int64),
    }


def sparse_from_state(state: Mapping[str, np.ndarray], name: str) -> sp.csr_matrix:
    """The CSR matrix that `sparse_state(name, m)` stored."""
    shape = tuple(int(x) for x in state[f"{name}.shape"])
    return sp.csr_matrix(
        (state[f"{name}.data"], state[f"{name}.indices"], state[f"{name}.indptr"]), shape=shape
    )


@runtime_checkable
class Ranker(Protocol):
    """Anything that ranks items for queries and History batches: a fitted `Recommender`, or
    one wrapped in filters and re-ranking (`lmrec.rerank.Reranked`). The evaluation runner,
    the re-rank wrappers and the service need only these members."""

    @property
    def name(self) -> str: ...

    @property
    def items(self) -> Vocabulary | None: ...

    @property
    def users(self) -> Vocabulary | None: ...

    @property
    def history(self) -> Dataset | None: ...

    @property
    def popularity(self) -> np.ndarray | None: ...

    @property
    def uses_side_information(self) -> bool: ...

    def check_fitted(self) -> None:
        """Raise `LmrecError` unless fitted (or loaded)."""
        ...

    def history_of(self, queries: Sequence[Query]) -> History:
        """The History batch of queries (stored history of known users + the query items)."""
        ...

    def rank(
        self,
        history: History,
        k: int,
        *,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Top-k (indices (B, k), scores (B, k), fallback per row); index -1 pads."""
        ...

    def recommend_many(
        self,
        queries: Sequence[Query | str],
        n: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
        batch_size: int = 512,
    ) -> list[Recommendations]:
        """Top-n items for each query."""
        ...

    def recommend(
        self,
        query: Query | str,
        n: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
    ) -> Recommendations:
        """The top-n items for one query."""
        ...


class Recommender(ABC):
    """Base class: subclasses set `name` and `config_class` and implement `_fit` and `score`.

    Learned state is plain arrays, returned by `_state()` and restored by `_set_state()`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig | Mapping[str, Any] | None = None, **params: Any):
        if not isinstance(config, ModelConfig) or params:
            klass = type(config) if isinstance(config, ModelConfig) else self.config_class
            given = dict(config) if isinstance(config, ModelConfig) else dict(config or {})
            values = {**klass.canonical(given), **klass.canonical(params)}
            try:
                config = klass(**values)
            except ValidationError as exc:
                why = "; ".join(
                    f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                    for e in exc.errors()
                )
                raise LmrecError(f"invalid parameters for model {self.name!r}: {why}") from None
        self.config = config
        self.users: Vocabulary | None = None
        self.items: Vocabulary | None = None
        self.event_weights: dict[str, float] | None = None
        self.popularity: np.ndarray | None = None
        self.history: Dataset | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- training ----------------------------------------------------------------------------

    def fit(self, dataset: Dataset, valid: Dataset | None = None) -> Self:
        """Learn from the dataset; its interactions also serve as users' stored histories.

        `valid` (over the same vocabularies, e.g. the valid part of a split) is for models
        that stop early on it (the sequence models override `fit`); the others ignore it.
        """
        if dataset.n_items == 0:
            raise LmrecError("cannot fit a model on a dataset without items")
        if valid is not None and (valid.items != dataset.items or valid.users != dataset.users):
            raise LmrecError(
                f"model {self.name!r}: valid must share the training set's user and item "
                "vocabularies (pass two parts of one split)"
            )
        self.users, self.items = dataset.users, dataset.items
        self.event_weights = dataset.event_weights
        self.popularity = dataset.item_counts().astype(np.float32)
        self.history = dataset
        self._fit(dataset)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset) -> None: ...

    @abstractmethod
    def score(self, history: History) -> np.ndarray:
        """Scores (B, n_items) float32 for each history row; higher is better."""

    @property
    def is_fitted(self) -> bool:
        return self.items is not None

    def check_fitted(self) -> None:
        """Raise `LmrecError` unless the model is fitted (or loaded)."""
        if not self.is_fitted:
            raise LmrecError(f"model {self.name!r} is not fitted: call fit(dataset) or load()")

    def _check_fitted(self) -> None:
        self.check_fitted()

    # -- answering ---------------------------------------------------------------------------

    def history_of(self, queries: Sequence[Query]) -> History:
        """Build the History batch of queries: the stored history of a known user followed by
        the query's own items (unknown item ids are ignored)."""
        self.check_fitted()
        assert self.items is not None and self.users is not None
        n = len(self.items)
        rows, cols, vals, seqs = [], [], [], []  # the queries' own items
        users = np.full(len(queries), -1, np.int64)
        weights = self.event_weights
        stored = self.history.matrix() if self.history is not None else None
        for r, q in enumerate(queries):
            seq: list[np.ndarray] = []
            if q.user is not None:
                u = self.users.get(q.user)
                users[r] = u
                if u >= 0 and self.history is not None:
                    seq.append(self.history.sequence(u))
            if q.items:
                idx = self.items.indices(list(q.items))
                ok = idx >= 0
                w = np.ones(len(idx), np.float32)
                if weights and q.events is not None:
                    w = np.array([weights.get(e, 0.0) for e in q.events], np.float32)
                ok &= w != 0
                rows.extend([r] * int(ok.sum()))
                cols.extend(idx[ok].tolist())
                vals.extend(w[ok].tolist())
                seq.append(idx[ok])
            seqs.append(np.concatenate(seq).astype(np.int64) if seq else np.zeros(0, np.int64))
        # The stored rows of known users, gathered in one go (they are unique and sorted).
        known = np.flatnonzero(users >= 0) if stored is not None else np.zeros(0, np.int64)
        if len(known):
            assert stored is not None
            lo, hi = stored.indptr[users[known]], stored.indptr[users[known] + 1]
            lens = (hi - lo).astype(np.int64)
            at = np.repeat(lo - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
            at += np.arange(int(lens.sum()))
            s_rows, s_cols, s_vals = np.repeat(known, lens), stored.indices[at], stored.data[at]
        else:
            s_rows = s_cols = np.zeros(0, np.int64)
            s_vals = np.zeros(0, np.float32)
        if rows:
            m = csr_dedup(
                np.concatenate([s_rows, rows]),
                np.concatenate([s_cols, cols]),
                np.concatenate([s_vals, np.asarray(vals, np.float32)]),
                (len(queries), n),
            )
        else:
            indptr = np.zeros(len(queries) + 1, np.int64)
            np.cumsum(np.bincount(s_rows, minlength=len(queries)), out=indptr[1:])
            m = sp.csr_matrix(
                (np.asarray(s_vals, np.float32), np.asarray(s_cols), indptr),
                shape=(len(queries), n),
                dtype=np.float32,
            )
            m.has_sorted_indices = True
        return History(users=users, matrix=m, sequences=seqs, queries=list(queries))

    def fallbacks(self, history: History) -> list[str | None]:
        """Per row, the fallback that answers it ("popularity") or None (the model does)."""
        assert self.items is not None
        return self._fallback_scores(history, np.zeros((len(history), len(self.items)), np.float32))

    def _fallback_scores(self, history: History, scores: np.ndarray) -> list[str | None]:
        """Rows with neither a known user nor any history get popularity scores."""
        return self._fallback_columns(history, scores, None)

    def _fallback_columns(
        self, history: History, scores: np.ndarray, items: np.ndarray | None
    ) -> list[str | None]:
        """`_fallback_scores` for scores of the item columns `items` only (None: all)."""
        assert self.popularity is not None
        used: list[str | None] = [None] * len(history)
        empty = (history.users < 0) & (np.diff(history.matrix.indptr) == 0)
        for r in np.flatnonzero(empty):
            q = history.queries[r] if history.queries else None
            if q is not None and (q.attributes or q.tags or q.text) and self.uses_side_information:
                continue
            scores[r] = self.popularity if items is None else self.popularity[items]
            used[r] = "popularity"
        return used

    #: Models that read attributes, tags or text of a query set this, so that such queries are
    #: not sent to the popularity fallback.
    uses_side_information: ClassVar[bool] = False

    #: False for models whose answer does not depend on the history (popularity, random).
    personalized: ClassVar[bool] = True

    def recommend(
        self,
        query: Query | str,
        n: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
    ) -> Recommendations:
        """The top-n items for one query (a user id string is a query for that user)."""
        return self.recommend_many([query], n, exclude_seen=exclude_seen, candidates=candidates)[0]

    def recommend_many(
        self,
        queries: Sequence[Query | str],
        n: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
        batch_size: int = 512,
    ) -> list[Recommendations]:
        """Top-n items for each query; the same answers as calling `recommend` one by one."""
        self.check_fitted()
        assert self.items is not None
        qs = [Query(user=q) if isinstance(q, str) else q for q in queries]
        cand_mask = None
        if candidates is not None:
            cidx = self.items.indices(list(candidates))
            cand_mask = np.zeros(len(self.items), bool)
            cand_mask[cidx[cidx >= 0]] = True
        out: list[Recommendations] = []
        batch_size = rows_per_batch(len(self.items), batch_size)
        for start in range(0, len(qs), batch_size):
            hist = self.history_of(qs[start : start + batch_size])
            idx, val, used = self.rank(hist, n, exclude_seen=exclude_seen, candidates=cand_mask)
            for r in range(len(hist)):
                keep = idx[r] >= 0
                out.append(
                    Recommendations(
                        self.items.ids_of(idx[r][keep]),
                        val[r][keep].astype(float).tolist(),
                        used[r],
                    )
                )
        return out

    def rank(
        self,
        history: History,
        k: int,
        *,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Top-k item indices and scores for a History batch: score, fall back, mask, rank.

        `candidates` is a boolean mask over items (only those may be recommended). Returns
        (indices (B, k), scores (B, k), fallback used per row); index -1 pads short rows.
        The single place where ranking happens: `recommend` and the evaluation both use it.
        """
        scores = np.array(self.score(history), dtype=np.float32)
        used = self._fallback_scores(history, scores)
        if candidates is not None:
            scores[:, ~candidates] = -np.inf
        idx, val = top_k(scores, k, history.matrix if exclude_seen else None)
        return idx, val, used

    def score_columns(self, history: History, items: np.ndarray) -> np.ndarray:
        """Scores (B, len(items)) of the item columns `items` (sorted, distinct indices): the
        columns of `score`. Models whose scores come from item rows or vectors override it
        with a path whose cost grows with len(items), not with the catalogue."""
        return np.asarray(self.score(history), np.float32)[:, items]

    def rank_among(
        self, history: History, items: np.ndarray, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Rank each row's own candidates: `items` (B, C) item indices (-1 pads), best first,
        with their scores (-1 / -inf where excluded: pads, seen items when `exclude_seen`).
        The order is that of `rank` over the whole catalogue restricted to the candidates
        (ties by item index), from `score_columns` of the candidates only: sampled
        evaluation on catalogues too large to score whole."""
        items = np.asarray(items, np.int64)
        cols = np.unique(items[items >= 0])
        s = np.array(self.score_columns(history, cols), dtype=np.float32)
        used = self._fallback_columns(history, s, cols)
        pos = np.searchsorted(cols, np.maximum(items, 0))
        val = np.take_along_axis(s, np.minimum(pos, max(len(cols) - 1, 0)), axis=1)
        val = np.where(items >= 0, val, -np.inf).astype(np.float32)
        if exclude_seen and history.matrix.nnz:
            rows = np.repeat(np.arange(len(items)), items.shape[1])
            seen = np.asarray(history.matrix[rows, np.maximum(items, 0).ravel()]).reshape(
                items.shape
            )
            val[(seen != 0) & (items >= 0)] = -np.inf
        order = np.lexsort((items, -val), axis=1)
        idx = np.take_along_axis(items, order, axis=1)
        val = np.take_along_axis(val, order, axis=1)
        idx[~np.isfinite(val)] = -1
        return idx, val, used

    def _similar_by_vectors(self, item: str, vectors: np.ndarray, n: int) -> Recommendations:
        """Items whose rows of `vectors` (n_items, d) have the highest cosine with `item`'s
        (ties by index; the item itself left out): `similar_items` of factor models."""
        self.check_fitted()
        assert self.items is not None
        i = self.items.get(item)
        if i < 0:
            raise LmrecError(f"unknown item {item!r}")
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        sims = (vectors @ vectors[i]) / (norms * norms[i])
        sims[i] = -np.inf
        order = np.lexsort((np.arange(len(sims)), -sims))[:n]
        order = order[np.isfinite(sims[order])]
        return Recommendations(self.items.ids_of(order), sims[order].astype(float).tolist())

    def similar_items(self, item: str, n: int = 10) -> Recommendations:
        """Items most like `item`: by default, those a one-item history scores highest."""
        self.check_fitted()
        assert self.items is not None
        if item not in self.items:
            raise LmrecError(f"unknown item {item!r}")
        return self.recommend(Query(items=[item]), n, exclude_seen=True)

    # -- optional capabilities (hooks with safe defaults) ------------------------------------

    def chosen(self) -> dict[str, Any]:
        """Settings the model resolved or chose itself while fitting (from the data or on
        validation) where its config left them open, e.g. EASE's text weight or a blend's
        weights; `lmrec train` prints them. Empty by default."""
        return {}

    def contributions(self, history: History, items: np.ndarray) -> Contributions | None:
        """The exact decomposition of a one-row history's scores of `items` (indices) into
        contributions of its history items and named parts, or None (the default) when the
        model has none: `lmrec.explain` then measures the score drop of leaving each history
        item out."""
        return None

    def similar_users(self, history: History) -> tuple[np.ndarray, np.ndarray, Any] | None:
        """For models that score through similar users: (their indices in `users` (K,), their
        weights (K,), their rows of item votes (K, n_items), sparse); None by default."""
        return None

    def text_similarity(self, texts: Sequence[str], items: np.ndarray) -> np.ndarray | None:
        """(T, M) similarity of free texts (e.g. interest tags) to `items`, for text models;
        None by default."""
        return None

    def text_encoder(self) -> tuple[Callable[[list[str]], np.ndarray], str] | None:
        """(encode, name) of the model's item-text encoder, for services that search item
        text in the model's own vector space; None by default."""
        return None

    #: Whether the model predicts explicit ratings (`predict_ratings`; `lmrec.models.rating`).
    predicts_ratings: ClassVar[bool] = False

    def predict_ratings(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings (n,) of (user index, item index) pairs over the model's
        vocabularies (user -1: unknown), clipped to the learned rating scale. Models that only
        rank (the default) refuse."""
        raise LmrecError(
            f"model {self.name!r} ranks items but does not predict ratings; use a rating model "
            "(baseline, knnbaseline, biasedmf, svdpp, lmrating)"
        )

    def rate(self, user: str | None, items: Sequence[str]) -> list[float | None]:
        """Predicted ratings of `items` (ids) for `user` (an id, or None / unknown: a user
        without ratings); None for an item not in the catalogue."""
        self.check_fitted()
        assert self.items is not None and self.users is not None
        idx = self.items.indices(list(items))
        ok = idx >= 0
        u = self.users.get(user) if user is not None else -1
        pred = self.predict_ratings(np.full(int(ok.sum()), u, np.int64), idx[ok])
        out: list[float | None] = [None] * len(idx)
        for pos, v in zip(np.flatnonzero(ok), pred, strict=True):
            out[int(pos)] = float(v)
        return out

    #: Whether `with_items` can add items the model was not trained on (from their text).
    accepts_new_items: ClassVar[bool] = False

    #: Whether `fit` can train in several processes under torchrun (`lmrec train --procs N`).
    trains_in_processes: ClassVar[bool] = False

    def with_items(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None = None,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Recommender:
        """A copy of the model whose catalogue also holds these new items (from their text,
        categories and attributes), the original left as it was. Models that cannot score
        items they were not trained on (the default) refuse; they learn them by retraining."""
        if not ids:
            return self
        raise LmrecError(
            f"model {self.name!r} cannot score items it was not trained on; retrain it to "
            "include them"
        )

    def check_new_items(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Refuse new items that `with_items` cannot take: ids and texts of different
        lengths, ids repeated, or ids already in the catalogue."""
        assert self.items is not None
        if len(texts) != len(ids):
            raise LmrecError(f"model {self.name!r}: {len(ids)} new item ids but {len(texts)} texts")
        known = [i for i in ids if i in self.items]
        if known or len(set(ids)) != len(ids):
            raise LmrecError(f"model {self.name!r}: items already in the catalogue: {known or ids}")

    def item_embeddings(self) -> np.ndarray | None:
        """(n_items, d) item vectors q_i with score = <p_u, q_i> for the `query_embeddings`
        p_u (for a retrieval index); None (the default) when the score is not such a dot
        product."""
        return None

    def query_embeddings(self, history: History) -> np.ndarray | None:
        """(B, d) query vectors p_u matching `item_embeddings`, or None."""
        return None

    def make_contiguous(self) -> None:
        """Store the model's 2-d arrays in C order: sparse @ dense copies a Fortran-ordered
        dense operand on every call (EASE's 1682 x 1682 weights: ~40 ms per request on
        ML-100K). Services call it once after loading."""
        for name, value in list(vars(self).items()):
            if isinstance(value, np.ndarray) and value.ndim == 2 and not value.flags.c_contiguous:
                setattr(self, name, np.ascontiguousarray(value))

    # -- erasure ------------------------------------------------------------------------------

    def forget_users(self, ids: Iterable[str]) -> int:
        """Erase users from this fitted model: their ids become tombstones (they are answered
        as unknown users), their stored history, attributes and tags go, and user-indexed
        learned state is cleared (`_forget_user_rows`). Item-side parameters learned from their
        events stay (no retraining here). Returns how many of `ids` the model knew."""
        self.check_fitted()
        assert self.users is not None
        idx = [self.users.get(u) for u in ids]
        idx = [k for k in idx if k >= 0]
        if not idx:
            return 0
        from lmrec.data.dataset import erased_id

        names = self.users.ids.tolist()
        for k in idx:
            names[k] = erased_id(k)
        self.users = Vocabulary(names)
        if self.history is not None:
            self.history = self.history.forget_users(idx)
        self._forget_user_rows(np.asarray(idx, np.int64))
        return len(idx)

    def _forget_user_rows(self, idx: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Clear the learned state of these user indices (user factors, stored rows)."""

    # -- persistence -------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (besides vocabularies and popularity)."""
        return {}

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        """Restore what `_state` returned."""

    def save(self, path: str | Path) -> Path:
        """Write config.json + state.npz (+ the training history, for fold-in of known users)."""
        self.check_fitted()
        assert self.items is not None and self.users is not None and self.popularity is not None
        with staged_dir(path, "config.json") as tmp:
            self._write(tmp)
        return Path(path)

    def _write(self, path: Path) -> None:
        assert self.items is not None and self.users is not None and self.popularity is not None
        meta = {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "model": self.name,
            "config": self.config.saved(),
        }
        state = {f"state__{k}": v for k, v in self._state().items()}
        np.savez(
            path / "state.npz",
            user_ids=self.users.ids,
            item_ids=self.items.ids,
            popularity=self.popularity,
            **state,
        )
        if self.history is not None:
            self.history.save(path / "history")
        (path / "config.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load any saved model (the class is chosen by the registry from config.json)."""
        from lmrec.models import get_model_class

        path = Path(path)
        try:
            meta = json.loads((path / "config.json").read_text())
        except FileNotFoundError:
            raise LmrecError(f"{path} is not a saved lmrec model (no config.json)") from None
        if meta.get("format") != ARTIFACT_FORMAT or meta.get("version", 0) > ARTIFACT_VERSION:
            raise LmrecError(f"{path}/config.json: not a model artifact this lmrec can read")
        klass = get_model_class(meta["model"])
        if cls is not Recommender and not issubclass(klass, cls):
            raise LmrecError(f"{path} holds a {meta['model']!r} model, not {cls.name!r}")
        runtime = klass.config_class.runtime_fields()
        model = klass({k: v for k, v in meta["config"].items() if k not in runtime})
        with np.load(path / "state.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        model.users = Vocabulary(arrays["user_ids"])
        model.items = Vocabulary(arrays["item_ids"])
        model.popularity = arrays["popularity"]
        if (path / "history").exists():
            model.history = Dataset.load(path / "history")
            model.event_weights = model.history.event_weights
        model._set_state(
            {k[len("state__") :]: v for k, v in arrays.items() if k.startswith("state__")}
        )
        model._read(path)
        return model

    def _read(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Restore what an overridden `_write` saved beside config.json and state.npz."""

    # -- models made of registered models (blend, ratingblend, twostage) ---------------------

    def _write_components(
        self, path: Path, names: Sequence[str], models: Sequence[Recommender]
    ) -> None:
        """Save each component model under `path/components/<name>`, without its own copy
        of the history (this model's history serves them all)."""
        for name, m in zip(names, models, strict=True):
            kept, m.history = m.history, None
            try:
                m.save(path / "components" / name)
            finally:
                m.history = kept

    def _read_components(
        self, path: Path, names: Sequence[str], what: str = "component"
    ) -> list[Recommender]:
        """The component models `_write_components` saved, answering from this history."""
        out = []
        for name in names:
            d = path / "components" / name
            if not (d / "config.json").exists():
                raise LmrecError(f"{path}: a {self.name} artifact without its {what} {name!r}")
            m = Recommender.load(d)
            m.history = self.history
            if self.history is not None:
                m.event_weights = self.history.event_weights
            out.append(m)
        return out
