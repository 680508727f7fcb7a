"""Two-stage ranking: several retrievers propose candidates, a learned ranker orders them.

Stage one merges the top `candidates` items of each retriever (any registered models, fitted
on the same data), rank by rank and de-duplicated, into one candidate list of at most
`candidates` items per user. Stage two scores each (user, candidate, context) with a ranker
h(u, v, c) (`lmrec.models.rankers`, config `ranker`: LightGBM LambdaRank, or DCN-v2 in
PyTorch that also reads the item's and the user's text vectors) over a feature table built
without leakage:

- retrievers: each retriever's standardised and raw score and its rank (`candidates` if it
  did not propose the item);
- recent: each personalised retriever's standardised score of the item given only the
  user's `recent` most recent items, and how often the item follows those items within 3
  steps in the training sequences (the sequential signal of what they just did);
- item: log popularity, the popularity trend (share of the item's interactions in the last
  tenth of the data's time span), age and recency (days from the item's first and last
  interaction to the request time);
- user: history length;
- text: cosine of the item's text vector (MiniLM by default) and the mean vector of the
  user's `text_history` most recent items;
- category: cosine of the item's categories and the user's category profile;
- context: hour and weekday of the request time, days since the user's last event, the
  requested event type, and the item's share of interactions within 3 hours of the request's
  hour of day and on its weekday (what is taken when);
- attributes: the items' and users' own attributes, chosen from the data
  (`lmrec.models.twostage_attributes`): numeric ones as they are (price, sales rank, age),
  categorical ones as the share of the user's history with the candidate's value (brand) and
  the share of the candidate's interactions by users with the user's value (occupation).

Training (`fit`): each user's last `targets` items (at most half of the user's history) are
held out of the data; the retrievers fit on the rest and propose candidates for every user,
the held-out items are the relevant ones (the other candidates the negatives), and the request
time of a user's group is the time of its first held-out item. The ranker early-stops on
NDCG@10 of a seeded `ranker_valid` share of the users. The retrievers
are then refitted on all the data to serve (`refit`).

At answer time the request time is the query's `time` (and its `context["event"]` the
requested event type); without one, the time of the history's last event. Items outside
the candidate list score below every candidate (ordered by the first retriever), so a full
ranking still lists the whole catalogue. The artifact keeps each retriever under
`components/<name>`; the LightGBM ranker as LightGBM's text model format (`ranker.txt`), the
DCN ranker as its state dict (arrays `ranker.*` in state.npz).
"""

from __future__ import annotations

__all__ = ["FEATURE_GROUPS", "TwoStage", "TwoStageConfig"]

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.models.base import (
    Contributions,
    History,
    ModelConfig,
    Recommender,
    sparse_from_state,
    sparse_state,
    top_k,
)
from lmrec.models.blend import standardise
from lmrec.models.rankers import RANKERS, CandidateRanker, DCNConfig, RankRows
from lmrec.models.twostage_attributes import AttributeTable

FeatureGroup = Literal[
    "retrievers", "recent", "item", "user", "text", "category", "context", "attributes"
]
FEATURE_GROUPS: tuple[str, ...] = (
    "retrievers",
    "recent",
    "item",
    "user",
    "text",
    "category",
    "context",
    "attributes",
)
_DAY = 86400.0
#: The "item" group's columns (popularity, trend, age, recency): the explanations' "popular".
_ITEM_FEATURES = ("item.log_pop", "item.trend", "item.age_days", "item.recency_days")


class TwoStageConfig(ModelConfig):
    retrievers: list[str] = Field(
        default_factory=lambda: ["ease", "itemknn", "sasrec", "popularity"], min_length=1
    )
    """Registered model names that propose candidates, each used once. The sequence model
    (sasrec) is among the defaults because validation chose it on ML-100K (valid NDCG@10
    0.1287 against 0.1275 without it, `benchmarks/twostage.md`); it is also most of the fit
    time (630 s against 13 s there): leave it out for a fast pipeline."""
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Parameters of each retriever, by its name (e.g. {"ease": {"reg": 300}})."""
    candidates: int = Field(200, ge=1)
    """Size of the merged candidate list per user (and of each retriever's top list)."""
    features: list[FeatureGroup] = Field(default_factory=lambda: list(FEATURE_GROUPS))
    """Feature groups the ranker sees (ablations leave some out)."""
    targets: int = Field(5, ge=1)
    """Held-out most recent items per user that the ranker learns to put first (5: chosen
    among 1, 5, 10, 15 by valid NDCG@10 on ML-100K, `benchmarks/twostage.md`)."""
    train_users: int = Field(50_000, ge=1)
    """Train the ranker on at most this many users (a seeded sample)."""
    ranker_valid: float = Field(0.2, ge=0, lt=1)
    """Share of the training users the ranker early-stops on (0: no early stopping)."""
    ranker_refit: bool = False
    """After early stopping, train the ranker again on all the users for the best number of
    rounds."""
    epochs: int = Field(300, ge=1)
    """Boosting rounds at most (early stopping on NDCG@10 picks fewer)."""
    learning_rate: float = Field(0.05, gt=0)
    """LightGBM learning rate."""
    num_leaves: int = Field(31, ge=2)
    """LightGBM leaves per tree."""
    min_data_in_leaf: int = Field(20, ge=1)
    """LightGBM minimum rows per leaf."""
    ranker: str = "lightgbm"
    """The second stage: a name in `lmrec.models.rankers.RANKERS` ("lightgbm": LambdaRank
    with the fields above; "dcn": DCN-v2 in PyTorch with the `dcn` fields)."""
    lightgbm: dict[str, Any] = Field(default_factory=dict)
    """Further LightGBM parameters (e.g. {"feature_fraction": 0.8}); once called `ranker`."""
    dcn: DCNConfig = Field(default_factory=DCNConfig)
    """Hyperparameters of the DCN-v2 ranker."""
    encoder: str = "minilm"
    """Text encoder spec (see `lmrec.text.load_encoder`) of the text features."""
    template: str | None = None
    """Item text template (None: the default one)."""
    recent: int = Field(3, ge=1)
    """History items the "recent" features score from."""
    text_history: int = Field(20, ge=1)
    """The user's text vector is the mean of this many most recent history items."""
    refit: bool = True
    """Refit the retrievers on all the data after training the ranker (to serve)."""
    seed: int = 0
    """Seed of the user samples, LightGBM and each retriever (unless its params set one)."""
    threads: int = Field(2, ge=1, exclude=True)
    """LightGBM threads."""
    compile_trees: bool = Field(True, exclude=True)
    """Score with the LightGBM ranker's trees compiled to machine code (lleaves, on LLVM): the
    same scores (to 1e-15), about 8x faster than LightGBM's predict on 10,000 rows; False:
    LightGBM's own predict."""

    @model_validator(mode="before")
    @classmethod
    def _old_ranker_parameters(cls, data: Any) -> Any:
        """Artifacts and `--param`s of before the DCN ranker: `ranker` held LightGBM's further
        parameters (a dict)."""
        if isinstance(data, Mapping) and isinstance(data.get("ranker"), Mapping):
            data = dict(data)
            if "lightgbm" in data:
                raise ValueError(
                    "LightGBM parameters given twice: as 'lightgbm' and as a dict 'ranker' "
                    "(their old name); give them once, as 'lightgbm'"
                )
            data["lightgbm"] = data.pop("ranker")
            data["ranker"] = "lightgbm"
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TwoStageConfig:
        from lmrec.models import REGISTRY

        if self.ranker not in RANKERS:
            raise ValueError(
                f"unknown ranker {self.ranker!r}; available: {', '.join(sorted(RANKERS))}"
            )

        if len(set(self.retrievers)) != len(self.retrievers):
            raise ValueError(f"retrievers must differ, got {self.retrievers}")
        if "twostage" in self.retrievers:
            raise ValueError("a two-stage model cannot retrieve with a two-stage model")
        unknown = [r for r in self.retrievers if r not in REGISTRY]
        if unknown:
            raise ValueError(
                f"unknown model(s) {unknown}; available: {', '.join(sorted(REGISTRY))}"
            )
        extra = sorted(set(self.params) - set(self.retrievers))
        if extra:
            raise ValueError(f"params given for models that are not retrievers: {extra}")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features repeat a group: {self.features}")
        return self


@dataclass
class ItemTable:
    """Per-item features of one fitting set: log popularity, trend, first / last interaction
    time, L2-normalised text vectors (n, d) or None, L2-normalised category rows (n, c), and
    the share of each item's interactions by hour of day (n, 24) and by weekday (n, 7)."""

    log_pop: np.ndarray
    trend: np.ndarray
    first_ts: np.ndarray
    last_ts: np.ndarray
    text: np.ndarray | None
    cats: sp.csr_matrix
    hours: np.ndarray
    weekdays: np.ndarray
    follows: sp.csr_matrix

    @classmethod
    def of(cls, ds: Dataset, text: np.ndarray | None) -> ItemTable:
        n = ds.n_items
        counts = np.bincount(ds.item, minlength=n).astype(np.float64)
        first = np.full(n, np.nan)
        last = np.full(n, np.nan)
        if ds.n_interactions:
            first = np.full(n, np.inf)
            np.minimum.at(first, ds.item, ds.ts)
            last = np.full(n, -np.inf)
            np.maximum.at(last, ds.item, ds.ts)
            first[~np.isfinite(first)] = np.nan
            last[~np.isfinite(last)] = np.nan
        lo, hi = (ds.ts.min(), ds.ts.max()) if ds.n_interactions else (0.0, 0.0)
        recent = np.bincount(ds.item[ds.ts >= hi - 0.1 * (hi - lo)], minlength=n)
        trend = np.where(counts > 0, recent / np.maximum(counts, 1), np.nan)
        hours = np.zeros((n, 24), np.float32)
        np.add.at(hours, (ds.item, _hour(ds.ts).astype(np.int64)), 1.0)
        weekdays = np.zeros((n, 7), np.float32)
        np.add.at(weekdays, (ds.item, _weekday(ds.ts).astype(np.int64)), 1.0)
        per = np.maximum(counts, 1)[:, None].astype(np.float32)
        return cls(
            np.log1p(ds.item_counts()).astype(np.float32),
            trend.astype(np.float32),
            first,
            last,
            text,
            _category_rows(ds),
            hours / per,
            weekdays / per,
            _follows(ds),
        )

    def state(self) -> dict[str, np.ndarray]:
        out = {
            "item.log_pop": self.log_pop,
            "item.trend": self.trend,
            "item.first_ts": self.first_ts,
            "item.last_ts": self.last_ts,
            **sparse_state("item.cats", self.cats),
            "item.hours": self.hours,
            "item.weekdays": self.weekdays,
            **sparse_state("item.follows", self.follows),
        }
        if self.text is not None:
            out["item.text"] = self.text
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> ItemTable:
        text = state.get("item.text")
        return cls(
            np.asarray(state["item.log_pop"]),
            np.asarray(state["item.trend"]),
            np.asarray(state["item.first_ts"]),
            np.asarray(state["item.last_ts"]),
            None if text is None else np.asarray(text, np.float32),
            sparse_from_state(state, "item.cats"),
            np.asarray(state["item.hours"]),
            np.asarray(state["item.weekdays"]),
            sparse_from_state(state, "item.follows"),
        )


def _follows(ds: Dataset, window: int = 3) -> sp.csr_matrix:
    """(n_items, n_items) how often item b follows item a within `window` steps of one
    user's sequence (weight 1 / steps), divided by a's count: P(b soon after a)."""
    n = ds.n_items
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = ds.user[:-d] == ds.user[d:]
        rows.append(ds.item[:-d][same])
        cols.append(ds.item[d:][same])
        vals.append(np.full(int(same.sum()), 1.0 / d, np.float32))
    m = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    m.sum_duplicates()
    counts = np.maximum(np.bincount(ds.item, minlength=n), 1).astype(np.float32)
    return sp.csr_matrix(sp.diags(1.0 / counts) @ m, dtype=np.float32)


def _category_rows(ds: Dataset) -> sp.csr_matrix:
    """(n_items, n_categories) L2-normalised 0/1 rows of each item's categories."""
    names: dict[Any, int] = {}
    rows, cols = [], []
    for i, cats in enumerate(ds.item_features.categories):
        for c in cats or ():
            rows.append(i)
            cols.append(names.setdefault(c, len(names)))
    m = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(ds.n_items, max(len(names), 1))
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norm, 1e-12)) @ m, dtype=np.float32)


@dataclass
class Context:
    """Per history row: request time, time of the last history event (NaN: unknown) and the
    requested event code (-1: none)."""

    time: np.ndarray
    last: np.ndarray
    event: np.ndarray


def feature_names(config: TwoStageConfig) -> list[str]:
    """The ranker's feature columns, in order."""
    names: list[str] = []
    groups = set(config.features)
    if "retrievers" in groups:
        for r in config.retrievers:
            names += [f"{r}.score", f"{r}.raw", f"{r}.rank"]
    if "recent" in groups:
        names += [f"{r}.recent" for r in config.retrievers if _personalized(r)]
        names += ["recent.follows"]
    if "item" in groups:
        names += list(_ITEM_FEATURES)
    if "user" in groups:
        names += ["user.history_len"]
    if "text" in groups:
        names += ["text.cosine"]
    if "category" in groups:
        names += ["category.cosine"]
    if "context" in groups:
        names += ["context.hour", "context.weekday", "context.days_since_last", "context.event"]
        names += ["context.item_hour_share", "context.item_weekday_share"]
    return names


class TwoStage(Recommender):
    """Candidates from several retrievers, ordered by a learned ranker (LightGBM or DCN-v2)."""

    name = "twostage"
    config_class = TwoStageConfig
    config: TwoStageConfig

    def __init__(self, config: Any = None, **params: Any):
        super().__init__(config, **params)
        self.models: list[Recommender] = []
        self.table: ItemTable | None = None
        #: The "attributes" group's keys and tables (None without the group).
        self.attrs: AttributeTable | None = None
        #: The second stage (`lmrec.models.rankers`), made when fitted or loaded.
        self.ranker: CandidateRanker | None = None
        #: Early-stopping record: best iteration and its validation NDCG@10.
        self.best_iteration_: int = 0
        self.valid_ndcg_: float = float("nan")
        #: Share of training groups whose held-out item was among the candidates.
        self.train_recall_: float = float("nan")

    @property
    def feature_names(self) -> list[str]:
        """The ranker's feature columns: the configured groups', then the attribute columns
        chosen from the data."""
        extra = self.attrs.names if self.attrs is not None else []
        return feature_names(self.config) + extra

    def _retriever(self, name: str) -> Recommender:
        from lmrec.models import create_model, get_model_class

        params = dict(self.config.params.get(name, {}))
        if "seed" in get_model_class(name).config_class.model_fields and "seed" not in params:
            params["seed"] = self.config.seed
        return create_model(name, **params)

    def _text_vectors(self, ds: Dataset) -> np.ndarray | None:
        if "text" not in self.config.features:
            return None
        from lmrec.text.cache import item_vectors

        v = item_vectors(ds, self.config.encoder, self.config.template)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    # -- training ----------------------------------------------------------------------------

    def fit(self, dataset: Dataset, valid: Dataset | None = None) -> TwoStage:
        """Train the ranker on each user's last `targets` items (held out of `dataset`, the
        retrievers fitted on the rest), then refit the retrievers on all of `dataset`.
        `valid` reaches the retrievers that stop early on it."""
        super().fit(dataset, valid)
        text = self._text_vectors(dataset)
        rest, held = _hold_out_last(dataset, self.config.targets)
        if held.n_interactions == 0:
            raise LmrecError(
                f"model {self.name!r}: no user has two interactions to train the ranker on"
            )
        self.models = [self._retriever(n).fit(rest, valid=valid) for n in self.config.retrievers]
        self.table = ItemTable.of(rest, text)
        self.attrs = AttributeTable.of(rest) if "attributes" in self.config.features else None
        self.ranker = self._new_ranker()
        rows, y, groups = self._training_rows(rest, held)
        fitted = self.ranker.fit(rows, y, groups, self._valid_groups(len(groups)))
        self.best_iteration_, self.valid_ndcg_ = fitted.best_iteration, fitted.valid_ndcg
        if self.config.refit:
            self.models = [
                self._retriever(n).fit(dataset, valid=valid) for n in self.config.retrievers
            ]
        else:
            for m in self.models:
                m.history = dataset
        self.table = ItemTable.of(dataset, text)
        if self.attrs is not None:  # the same keys (the same item and user features)
            self.attrs = AttributeTable.of(dataset)
        return self

    def _fit(self, dataset: Dataset) -> None:
        pass  # everything happens in `fit`, which also sees the validation part

    def _training_rows(
        self, rest: Dataset, held: Dataset
    ) -> tuple[RankRows, np.ndarray, list[np.ndarray]]:
        """Rows (the candidates of each training user, their features and, for rankers that
        read text, the text vectors), labels (N,) and the row indices of each user group (group
        g is query g), for the users with a held-out item among their candidates."""
        assert self.table is not None and self.ranker is not None
        users = np.unique(held.user).astype(np.int64)
        if len(users) > self.config.train_users:
            rng = np.random.default_rng(self.config.seed)
            users = np.sort(rng.choice(users, self.config.train_users, replace=False))
        hptr = held.user_ptr
        xs, ys, items, texts, groups, n_rows = [], [], [], [], [], 0
        for s in range(0, len(users), 512):
            batch = users[s : s + 512]
            hist = History.from_dataset(rest, batch)
            first = hptr[batch]
            ctx = Context(
                held.ts[first], _last_times(rest, batch), held.event[first].astype(np.float32)
            )
            scores, tops, cands = self._stage_one(hist)
            x = self._features(hist, scores, tops, cands, ctx)
            user_text = self._user_text(hist) if self.ranker.uses_text else None
            for r, u in enumerate(batch):
                ok = cands[r] >= 0
                rel = np.isin(cands[r][ok], held.item[hptr[u] : hptr[u + 1]])
                if not rel.any():
                    continue
                xs.append(x[r][ok])
                ys.append(rel.astype(np.float32))
                items.append(cands[r][ok])
                if user_text is not None:
                    texts.append(user_text[r])
                groups.append(np.arange(n_rows, n_rows + int(ok.sum())))
                n_rows += int(ok.sum())
        self.train_recall_ = len(groups) / max(len(users), 1)
        if not groups:
            raise LmrecError(
                f"model {self.name!r}: no held-out item is among the retrievers' "
                f"{self.config.candidates} candidates; nothing to train the ranker on"
            )
        query = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
        rows = RankRows(
            np.concatenate(xs),
            np.concatenate(items),
            query,
            self.table.text if texts else None,
            np.stack(texts) if texts else None,
        )
        return rows, np.concatenate(ys), groups

    def _valid_groups(self, n: int) -> np.ndarray:
        """Which of n training groups the ranker early-stops on (a seeded `ranker_valid`
        share; at least one and not all, where there are two groups)."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        is_valid = rng.random(n) < c.ranker_valid
        if c.ranker_valid > 0 and (is_valid.all() or not is_valid.any()):
            is_valid[:] = False
            is_valid[: max(1, n // 5)] = n > 1
        return is_valid

    def _new_ranker(self) -> CandidateRanker:
        """The configured second stage, for this model's feature table."""
        text = self.table.text if self.table is not None else None
        dim = 0 if text is None else int(text.shape[1])
        return RANKERS[self.config.ranker](self.config, self.feature_names, dim)

    def _rows(self, history: History, x: np.ndarray, cands: np.ndarray) -> RankRows:
        """RankRows of the valid (non-pad) candidates of each history row."""
        ok = cands >= 0
        r_idx = np.nonzero(ok)[0]
        uses_text = self.ranker is not None and self.ranker.uses_text
        return RankRows(
            x[ok],
            cands[ok],
            r_idx,
            self.table.text if uses_text and self.table is not None else None,
            self._user_text(history) if uses_text else None,
        )

    # -- stage one ---------------------------------------------------------------------------

    def _retriever_scores(self, history: History) -> list[np.ndarray]:
        return [np.asarray(m.score(history), np.float32) for m in self.models]

    def candidates_of(self, history: History, scores: list[np.ndarray] | None = None) -> np.ndarray:
        """(B, C) merged candidates of each row (item indices, -1 pads): every retriever's
        top C items outside the history, taken rank by rank, the first C distinct ones."""
        return self._stage_one(history, scores)[2]

    def _stage_one(
        self, history: History, scores: list[np.ndarray] | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """(each retriever's scores (B, n), its top lists (B, C), the merged candidates)."""
        scores = self._retriever_scores(history) if scores is None else scores
        tops = [self._tops(history, s) for s in scores]
        return scores, tops, _merge(tops, self._size())

    def _size(self) -> int:
        assert self.items is not None
        return min(self.config.candidates, len(self.items))

    def _tops(self, history: History, s: np.ndarray) -> np.ndarray:
        return top_k(s, self._size(), history.matrix)[0]

    # -- stage two ---------------------------------------------------------------------------

    def _context(self, history: History) -> Context:
        """Request time, last-event time and requested event of each row (from the queries;
        without a time, the history's last event)."""
        assert self.history is not None
        b = len(history)
        last = np.full(b, np.nan)
        known = np.flatnonzero(history.users >= 0)
        if len(known):
            last[known] = _last_times(self.history, history.users[known])
        time = last.copy()
        event = np.full(b, -1.0, np.float32)
        names = {e: i for i, e in enumerate(self.history.event_names)}
        for r, q in enumerate(history.queries or ()):
            if q is None:
                continue
            if q.timestamps:
                last[r] = np.nanmax([last[r], max(q.timestamps)])
                time[r] = last[r]
            if q.time is not None:
                time[r] = float(q.time)
            if q.context and q.context.get("event") in names:
                event[r] = names[q.context["event"]]
        return Context(time, last, event)

    def _features(
        self,
        history: History,
        scores: list[np.ndarray],
        tops: list[np.ndarray],
        cands: np.ndarray,
        ctx: Context,
    ) -> np.ndarray:
        """(B, C, F) float32 features of each row's candidates (-1 pads get any values)."""
        assert self.table is not None
        groups, t = set(self.config.features), self.table
        b, c = cands.shape
        item = np.maximum(cands, 0)
        rows = np.arange(b)[:, None]
        cols: list[np.ndarray] = []
        if "retrievers" in groups:
            for s, top in zip(scores, tops, strict=True):
                z = standardise(s)
                pos = np.full(s.shape, c, np.float32)
                r_idx, k_idx = np.nonzero(top >= 0)
                pos[r_idx, top[r_idx, k_idx]] = k_idx
                cols += [z[rows, item], s[rows, item], pos[rows, item]]
        if "recent" in groups:
            recent = _recent(history, self.config.recent)
            for m in self.models:
                if m.personalized:
                    cols.append(standardise(m.score(recent))[rows, item])
            follows = (recent.matrix @ t.follows).tocsr()
            cols.append(np.asarray(follows[np.repeat(np.arange(b), c), item.ravel()]).ravel())
        if "item" in groups:
            now = ctx.time[:, None]
            cols += [
                np.broadcast_to(t.log_pop[item], (b, c)),
                np.broadcast_to(t.trend[item], (b, c)),
                (now - t.first_ts[item]) / _DAY,
                (now - t.last_ts[item]) / _DAY,
            ]
        if "user" in groups:
            cols.append(np.repeat(np.diff(history.matrix.indptr)[:, None], c, axis=1))
        if "text" in groups:
            cols.append(self._text_cosine(history, item))
        if "category" in groups:
            prof = history.matrix.astype(bool).astype(np.float32) @ t.cats
            prof = np.asarray(prof.todense())
            prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-12)
            cats = t.cats[item.ravel()]
            cols.append(np.asarray(cats.multiply(np.repeat(prof, c, axis=0)).sum(axis=1)))
        if "context" in groups:
            hour, day = _hour(ctx.time), _weekday(ctx.time)
            cols += [_repeat(hour, c), _repeat(day, c)]
            cols += [_repeat((ctx.time - ctx.last) / _DAY, c), _repeat(ctx.event, c)]
            cols += [self._hour_share(item, hour), self._weekday_share(item, day)]
        if self.attrs is not None:
            assert self.history is not None
            cols += self.attrs.columns(history, item, self.history.user_features.attributes)
        return np.stack([np.asarray(x, np.float32).reshape(b, c) for x in cols], axis=-1)

    def _hour_share(self, item: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """(B, C) share of each candidate's interactions within 3 hours of the row's hour."""
        assert self.table is not None
        ok = np.isfinite(hour)
        h = np.where(ok, hour, 0).astype(np.int64)
        out = np.zeros(item.shape, np.float32)
        for d in range(-3, 4):
            out += self.table.hours[item, ((h + d) % 24)[:, None]]
        return np.where(ok[:, None], out, np.nan)

    def _weekday_share(self, item: np.ndarray, day: np.ndarray) -> np.ndarray:
        assert self.table is not None
        ok = np.isfinite(day)
        d = np.where(ok, day, 0).astype(np.int64)
        return np.where(ok[:, None], self.table.weekdays[item, d[:, None]], np.nan)

    def _user_text(self, history: History) -> np.ndarray:
        """(B, D) unit mean text vector of each row's `text_history` most recent items (zero
        without history)."""
        assert self.table is not None and self.table.text is not None
        v = self.table.text
        user = np.zeros((len(history), v.shape[1]), np.float32)
        for r, seq in enumerate(history.sequences):
            recent = seq[-self.config.text_history :]
            if len(recent):
                user[r] = v[recent].mean(axis=0)
        user /= np.maximum(np.linalg.norm(user, axis=1, keepdims=True), 1e-12)
        return user

    def _text_cosine(self, history: History, item: np.ndarray) -> np.ndarray:
        assert self.table is not None and self.table.text is not None
        return np.einsum("bcd,bd->bc", self.table.text[item], self._user_text(history))

    def score(self, history: History) -> np.ndarray:
        """Ranker scores of each row's candidates; every other item scores below them, in the
        order of the first retriever's scores."""
        self.check_fitted()
        assert self.items is not None
        scores, tops, cands = self._stage_one(history)
        x = self._features(history, scores, tops, cands, self._context(history))
        assert self.ranker is not None
        ok = cands >= 0
        pred = np.zeros(cands.shape, np.float64)
        if ok.any():
            pred[ok] = self.ranker.predict(self._rows(history, x, cands))
        base = standardise(scores[0]).astype(np.float64)
        span = base.max(axis=1, keepdims=True) - base.min(axis=1, keepdims=True)
        low = np.where(ok, pred, np.inf).min(axis=1, keepdims=True)
        low = np.where(np.isfinite(low), low, 0.0)
        out = low - 1.0 + (base - base.max(axis=1, keepdims=True)) / np.maximum(span, 1e-9)
        r_idx, k_idx = np.nonzero(ok)
        out[r_idx, cands[r_idx, k_idx]] = pred[r_idx, k_idx]
        return out.astype(np.float32)

    def feature_contributions(self, history: History, items: np.ndarray) -> dict[str, np.ndarray]:
        """For a one-row history, each ranker input's contribution to the ranker score of
        `items` (indices; items outside the candidates are left out), plus "bias"; they add up
        to the score. Keys: "item", then the ranker's `input_names` (`feature_names`, and for
        the DCN ranker with text "text.item_vector" and "text.user_vector"), then "bias".
        LightGBM: its `pred_contrib` (TreeSHAP); DCN: integrated gradients x input."""
        self.check_fitted()
        assert self.ranker is not None
        scores, tops, cands = self._stage_one(history)
        items = np.asarray(items, np.int64)
        items = items[np.isin(items, cands[0])]
        x = self._features(history, scores, tops, items[None, :], self._context(history))
        rows = self._rows(history, x, items[None, :])
        contrib = self.ranker.contributions(rows) if len(items) else np.zeros((0, 1))
        names = [*self.ranker.input_names, "bias"]
        return {"item": items, **{n: contrib[:, j] for j, n in enumerate(names) if len(items)}}

    def contributions(self, history: History, items: np.ndarray) -> Contributions | None:
        """The popularity features' part of the ranker score (the rest is the ranker's:
        `feature_contributions` has every feature)."""
        fc = self.feature_contributions(history, items)
        if len(fc["item"]) != len(items) or not len(items):
            return None
        pop = sum((fc[n] for n in _ITEM_FEATURES if n in fc), np.zeros(len(items)))
        total = sum((fc[n] for n in fc if n != "item"), np.zeros(len(items)))
        return Contributions(
            np.zeros(0, np.int64),
            np.zeros((len(items), 0)),
            total - pop,
            True,
            type(self.ranker).method,
            {"popular": pop} if "item" in self.config.features else {},
        )

    def make_contiguous(self) -> None:
        """Ready to serve: the retrievers' arrays in C order and the ranker prepared (the
        LightGBM ranker's trees compiled), so that the first request does not wait."""
        super().make_contiguous()
        for m in self.models:
            m.make_contiguous()
        if self.ranker is not None:
            self.ranker.prepare()

    # -- persistence -------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        assert self.table is not None
        assert self.ranker is not None
        return {
            **self.table.state(),
            **(self.attrs.state() if self.attrs is not None else {}),
            **{f"ranker.{k}": v for k, v in self.ranker.state().items()},
            "best_iteration": np.asarray(self.best_iteration_),
            "valid_ndcg": np.asarray(self.valid_ndcg_),
            "train_recall": np.asarray(self.train_recall_),
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.table = ItemTable.from_state(state)
        self.attrs = AttributeTable.from_state(state)
        self.best_iteration_ = int(state["best_iteration"])
        self.valid_ndcg_ = float(state["valid_ndcg"])
        self.train_recall_ = float(state["train_recall"])
        self.ranker = self._new_ranker()
        self.ranker.set_state({k[7:]: v for k, v in state.items() if k.startswith("ranker.")})

    def _write(self, path: Path) -> None:
        assert self.ranker is not None
        super()._write(path)
        self.ranker.write(path)
        self._write_components(path, self.config.retrievers, self.models)

    def _read(self, path: Path) -> None:
        assert self.ranker is not None
        self.ranker.read(path)
        self.models = self._read_components(path, self.config.retrievers, "retriever")


def _personalized(name: str) -> bool:
    from lmrec.models import get_model_class

    return get_model_class(name).personalized


def _recent(history: History, k: int) -> History:
    """The rows' last k history items only (weight 1, anonymous users)."""
    seqs = [s[-k:] for s in history.sequences]
    rows = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    cols = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=history.matrix.shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return History(np.full(len(seqs), -1, np.int64), m, seqs, [None] * len(seqs))


def _hour(t: np.ndarray) -> np.ndarray:
    """Hour of day (UTC) of Unix times."""
    return (np.asarray(t, np.float64) // 3600) % 24


def _weekday(t: np.ndarray) -> np.ndarray:
    """Weekday (UTC, Monday 0) of Unix times (1970-01-01 was a Thursday)."""
    return (np.asarray(t, np.float64) // _DAY + 3) % 7


def _repeat(v: np.ndarray, c: int) -> np.ndarray:
    return np.repeat(np.asarray(v, np.float64)[:, None], c, axis=1)


def _merge(tops: list[np.ndarray], size: int) -> np.ndarray:
    """Rank-by-rank union of several (B, C) top lists: the first `size` distinct items."""
    inter = np.stack(tops, axis=2).reshape(len(tops[0]), -1)  # rank 0 of each, rank 1, ...
    out = np.full((len(inter), size), -1, np.int64)
    for r, row in enumerate(inter):
        row = row[row >= 0]
        _, first = np.unique(row, return_index=True)
        merged = row[np.sort(first)][:size]
        out[r, : len(merged)] = merged
    return out


def _last_times(ds: Dataset, users: np.ndarray) -> np.ndarray:
    """Time of each user's last interaction in `ds` (NaN: none)."""
    ptr = ds.user_ptr
    users = np.asarray(users, np.int64)
    has = ptr[users + 1] > ptr[users]
    out = np.full(len(users), np.nan)
    out[has] = ds.ts[ptr[users[has] + 1] - 1]
    return out


def _hold_out_last(ds: Dataset, k: int) -> tuple[Dataset, Dataset]:
    """(`ds` without each user's last min(k, n_u // 2) interactions, those interactions):
    at least half of each history stays to retrieve from."""
    ptr = ds.user_ptr
    u = ds.user.astype(np.int64)
    from_end = ptr[u + 1] - 1 - np.arange(ds.n_interactions)
    held = from_end < np.minimum(k, np.diff(ptr)[u] // 2)
    return ds.subset(~held), ds.subset(held)
