"""Explanations of recommendations: structured reasons and a sentence, only true ones.

Each recommended item gets reasons of these kinds:

- "history": "because you watched X": history items that contributed to the item's score. The
  contributions come from the model's own `contributions` hook where it has an exact
  decomposition (`Recommender.contributions`):
  - itemknn: h_j S[j, i] (h = the recency-weighted history row the model scores with);
  - ease: h_j B[j, i];
  - als / bpr (fold-in least squares): c_j y_i' A^-1 y_j with A = Y'Y + reg I +
    sum_j (c_j - 1) y_j y_j' and c_j the confidence of j (Hu, Koren & Volinsky, ICDM 2008,
    section 5; `implicit`'s `explain`);
  - lmcontent: w_j exp((cos(j, i) - 1) / T) / sum |w| (kernel), or the history item's share of
    the interest vector's cosine; lmmf: h_j (e_j . q_i) / sum |h|;
  - any other model (the sequential ones included): leave-one-out, the drop of the item's score
    when j is removed from the history, over at most `loo_limit` of the newest distinct items.
  A contribution is not yet a reason: the history items are removed (from the matrix and the
  sequence) and the history re-scored in one batch, and an item is named only if its removal
  lowers the recommended item's score by more than the margin
  `max(1e-6, 1e-3 * spread)`, spread = max - min of the row's `max(10, n)` best finite scores
  outside the history (`score_margin`). Candidates are the positive contributions of at least
  `min_ratio` times the largest, strongest first; at most `max_items` are named.
- "similar_users": "popular with users like you": models that score through similar users
  (`Recommender.similar_users`: userknn, coldstart_user); the reason counts those neighbours who
  chose the item and names the user's attribute values that most of them share (and that are
  more common among them than among all users).
- "interest": "matches your interest in sci-fi": the user text (interest tags, attributes, free
  text) contributed to the score (lmcontent with user text, coldstart_user's content part); the
  tags named are those whose text vectors are closest to the item's (`text_similarity`).
- "popular": the popularity model, the popularity fallback of a user without history, or a
  popularity part of the score (lmcontent's tie-break, coldstart_user's popularity weight).
- "content", "profile": coldstart_user's parts (content of the chosen items; the map from the
  user's attributes and text to items), each part's weight its exact share of the score,
  measured by the model scoring again without it.

Parts beside the history (`Contributions.parts`) are named when they exceed the same margin.
When nothing passes, the largest positive part is named (it is what decided between near-equal
scores, e.g. lmcontent's popularity tie-break); failing that, a personalised answer says it came
from the history as a whole ("overall") when removing the whole history lowers the score by the
margin, else that it only fills the list ("filler", weight 0); never a history item that did
not move the score.
"""

from __future__ import annotations

__all__ = [
    "Decomposition",
    "Explanation",
    "Reason",
    "contributions",
    "explain",
    "explain_history",
    "score_margin",
]

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError
from lmrec.models.base import Contributions, History, Query, Recommender

#: How a model's scores decompose (`lmrec.models.base.Contributions`).
Decomposition = Contributions

#: Verbs for the sentence, by event type of the history item.
VERBS = {
    "view": "viewed",
    "watch": "watched",
    "rating": "rated",
    "rate": "rated",
    "purchase": "bought",
    "buy": "bought",
    "cart": "put in your cart",
    "click": "clicked",
    "like": "liked",
    "play": "played",
    "listen": "listened to",
    "read": "read",
}

#: The margin a named reason must exceed: max(ABS_MARGIN, REL_MARGIN * score spread).
ABS_MARGIN, REL_MARGIN = 1e-6, 1e-3


@dataclass(frozen=True)
class Reason:
    """One reason: its kind, what it names, and its weight (the share of the item's positive
    evidence that it accounts for, in [0, 1])."""

    kind: str
    weight: float
    items: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    contributions: list[float] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    count: int | None = None
    text: str = ""


@dataclass(frozen=True)
class Explanation:
    """Why `item` was recommended: reasons (strongest first) and a sentence."""

    item: str
    title: str
    score: float
    reasons: list[Reason]
    sentence: str
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- contributions -----------------------------------------------------------------------------


def _row(history: History, r: int = 0) -> History:
    q = history.queries[r] if history.queries else None
    return History(
        users=history.users[r : r + 1],
        matrix=history.matrix[r : r + 1],
        sequences=[history.sequences[r]],
        queries=[q],
    )


def _without(history: History, drop: np.ndarray) -> History:
    """One row per item of `drop`: the one-row history without that item (all occurrences,
    in the matrix and in the sequence)."""
    m = sp.csr_matrix(history.matrix)
    seq = history.sequences[0] if history.sequences else np.zeros(0, np.int64)
    h = len(drop)
    lo, hi = m.indptr[0], m.indptr[1]
    cols, vals = m.indices[lo:hi], m.data[lo:hi]
    rows, cs, vs, seqs = [], [], [], []
    for r, j in enumerate(np.asarray(drop, np.int64).tolist()):
        keep = cols != j
        rows.append(np.full(int(keep.sum()), r))
        cs.append(cols[keep])
        vs.append(vals[keep])
        seqs.append(seq[seq != j])
    mat = sp.csr_matrix(
        (np.concatenate(vs) if vs else np.zeros(0, m.dtype),
         (np.concatenate(rows) if rows else np.zeros(0, np.int64),
          np.concatenate(cs) if cs else np.zeros(0, np.int64))),
        shape=(h, m.shape[1]),
        dtype=m.dtype,
    )  # fmt: skip
    mat.sort_indices()
    q = history.queries[0] if history.queries else None
    return History(
        users=np.repeat(history.users[:1], h), matrix=mat, sequences=seqs, queries=[q] * h
    )


def _leave_one_out(model: Any, history: History, items: np.ndarray, limit: int) -> Decomposition:
    """Score drop of each candidate when one history item (all its occurrences) is removed."""
    m = sp.csr_matrix(history.matrix)
    seq = history.sequences[0] if history.sequences else np.zeros(0, np.int64)
    present = set(m.indices.tolist())
    # The newest distinct items first (by last position in the sequence), then the rest.
    order: list[int] = []
    for i in seq[::-1].tolist():
        if i in present and i not in order:
            order.append(i)
    order += [i for i in m.indices.tolist() if i not in order]
    hist = np.array(order[:limit], np.int64)
    score = np.asarray(model.score(history), np.float64)[0, items]
    if len(hist) == 0:
        return Decomposition(hist, np.zeros((len(items), 0)), score, True, "leave-one-out")
    s = np.asarray(model.score(_without(history, hist)), np.float64)[:, items]  # (H, M)
    contrib = (score[None, :] - s).T
    return Decomposition(hist, contrib, np.full(len(items), np.nan), False, "leave-one-out")


def contributions(
    model: Recommender, history: History, items: Sequence[int] | np.ndarray, loo_limit: int = 50
) -> Decomposition:
    """How much each history item of a one-row `history` contributed to each of `items'`
    scores (item indices): the model's own decomposition (`Recommender.contributions`) where
    it has one, else leave-one-out."""
    if len(history) != 1:
        raise LmrecError(f"contributions explain one history row at a time, got {len(history)}")
    items = np.asarray(items, np.int64)
    dec = model.contributions(history, items)
    if dec is not None:
        return dec
    return _leave_one_out(model, history, items, loo_limit)


def score_margin(
    scores: np.ndarray, exclude: Sequence[int] | np.ndarray = (), n: int = 10
) -> float:
    """The least score change a named reason must make: max(1e-6, 1e-3 * spread), spread the
    range of the `max(10, n)` best finite scores of the row outside `exclude` (the history)."""
    s = np.array(scores, np.float64, copy=True)
    if len(exclude):
        s[np.asarray(exclude, np.int64)] = np.nan
    s = s[np.isfinite(s)]
    if len(s) < 2:
        return ABS_MARGIN
    k = min(max(10, n), len(s))
    top = np.partition(s, len(s) - k)[len(s) - k :]
    return max(ABS_MARGIN, REL_MARGIN * float(top.max() - top.min()))


# -- similar users -----------------------------------------------------------------------------


def _user_attributes(model: Any, history: History) -> dict[str, Any]:
    stored = model.history.user_features.attributes if model.history is not None else []
    return dict(history.user_attributes(0, stored))


def _shared_attributes(
    model: Any, mine: dict[str, Any], neighbours: np.ndarray, weights: np.ndarray
) -> dict[str, Any]:
    """The user's attribute values held by most (weighted) of these neighbours and more common
    among them than among all users."""
    if not mine or model.history is None or len(neighbours) == 0:
        return {}
    attrs = model.history.user_features.attributes
    out: dict[str, Any] = {}
    total = float(weights.sum()) or 1.0
    for key, val in mine.items():
        if val is None or val == "":
            continue
        share = (
            sum(
                w for v, w in zip(neighbours, weights, strict=True) if attrs[int(v)].get(key) == val
            )
            / total
        )
        base = sum(1 for a in attrs if a.get(key) == val) / max(len(attrs), 1)
        if share >= 0.5 and share > base:
            out[key] = val
    return out


# -- building explanations ---------------------------------------------------------------------


def _titles(model: Any, idx: Sequence[int]) -> list[str]:
    """Titles of items (their id where the snapshot has none, e.g. items added since)."""
    ds = model.history
    ids = model.items.ids_of(np.asarray(idx, np.int64)) if len(idx) else []
    if ds is None:
        return [str(i) for i in ids]
    titles = ds.item_features.title
    return [
        (titles[int(i)] if int(i) < len(titles) else "") or str(x)
        for i, x in zip(idx, ids, strict=True)
    ]


def _verb(model: Any, history: History, item: int) -> str:
    """The verb of the user's last event on `item` ("rated", "viewed", ...)."""
    q = history.queries[0] if history.queries else None
    ev: str | None = None
    if q is not None and q.items and q.events is not None and model.items is not None:
        idx = model.items.indices(list(q.items))
        for i, e in zip(idx[::-1], list(q.events)[::-1], strict=False):
            if i == item:
                ev = e
                break
    u = int(history.users[0])
    ds = model.history
    if ev is None and ds is not None and 0 <= u < ds.n_users:
        lo, hi = ds.user_ptr[u], ds.user_ptr[u + 1]
        hit = np.flatnonzero(ds.item[lo:hi] == item)
        if len(hit):
            ev = ds.event_names[int(ds.event[lo + hit[-1]])]
    return VERBS.get((ev or "").lower(), "chose")


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _history_reason(
    model: Any, history: History, dec: Decomposition, m: int, named: list[int], total: float
) -> Reason:
    """The reason naming history items (positions `named` in dec.hist)."""
    c = dec.contrib[m]
    idx = dec.hist[named]
    titles = _titles(model, idx)
    verbs = {_verb(model, history, int(j)) for j in idx}
    verb = verbs.pop() if len(verbs) == 1 else "chose"
    return Reason(
        kind="history",
        weight=float(c[named].sum()) / total,
        items=model.items.ids_of(idx),
        titles=titles,
        contributions=[float(x) for x in c[named]],
        text=f"because you {verb} " + _join(['"' + t + '"' for t in titles]),
    )


def _interest_reason(model: Any, history: History, item: int, weight: float) -> Reason:
    q = history.queries[0] if history.queries else None
    tags = list(q.tags) if q is not None and q.tags else []
    u = int(history.users[0])
    if not tags and model.history is not None and 0 <= u < model.history.n_users:
        tags = list(model.history.user_features.tags[u])
    cos = model.text_similarity(tags, np.array([item])) if tags else None
    if cos is not None:
        cos = np.asarray(cos).ravel()
        ranked = [tags[i] for i in np.argsort(-cos) if cos[i] > 0][:2]
        if ranked:
            return Reason(
                "interest", weight, tags=ranked, text=f"matches your interest in {_join(ranked)}"
            )
    return Reason("interest", weight, text="matches what your profile says about you")


def _popular_reason(model: Any, item: int, weight: float = 1.0) -> Reason:
    n = int(model.popularity[item]) if model.popularity is not None else 0
    return Reason("popular", weight, count=n, text=f"popular: {n} users chose it")


def _similar_users_reason(model: Any, history: History, item: int, weight: float) -> Reason | None:
    found = model.similar_users(history)
    if found is None:
        return None
    nb, w, votes = found
    col = np.asarray(votes[:, item].toarray()).ravel() if len(nb) else np.zeros(0)
    chose = col > 0
    if not chose.any():
        return None
    shared = _shared_attributes(
        model, _user_attributes(model, history), nb[chose], w[chose] * col[chose]
    )
    n_ch, n_nb = int(chose.sum()), len(nb)
    like = ", ".join(f"{k} {v}" for k, v in shared.items())
    text = "popular with users like you" + (f" ({like})" if like else "")
    text += f": {n_ch} of your {n_nb} most similar users chose it"
    return Reason("similar_users", weight, attributes=shared, count=n_ch, text=text)


def _part_reason(
    model: Any, history: History, kind: str, item: int, weight: float
) -> Reason | None:
    """The reason for a named part of the score (`Contributions.parts`)."""
    if kind == "popular":
        return _popular_reason(model, item, weight)
    if kind == "interest":
        return _interest_reason(model, history, item, weight)
    if kind == "similar_users":
        return _similar_users_reason(model, history, item, weight)
    texts = {
        "content": "close in content to what you chose",
        "profile": "often chosen by users with a profile like yours",
        "random": "picked at random",
    }
    return Reason(kind, weight, text=texts[kind]) if kind in texts else None


def _sentence(reasons: list[Reason]) -> str:
    if not reasons:
        return ""
    s = "; ".join(r.text for r in reasons)
    return s[0].upper() + s[1:] + "."


def _candidates(c: np.ndarray, max_items: int, min_ratio: float) -> list[int]:
    """Positions of the positive contributions of at least min_ratio times the largest,
    strongest first (twice max_items of them: spares for those the re-scoring refutes)."""
    if c.size == 0 or not (c > 0).any():
        return []
    order = np.argsort(-c, kind="stable")
    top = float(c[order[0]])
    return [int(j) for j in order if c[j] > 0 and c[j] >= min_ratio * top][: 2 * max_items]


def _drops(
    model: Any,
    history: History,
    dec: Decomposition,
    items: np.ndarray,
    full: np.ndarray,
    cands: list[list[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """(M, H) score drop of each candidate item when history item dec.hist[j] is removed
    (measured by re-scoring, in one batch, where some item names it; NaN elsewhere), and (M,)
    the drop when the whole history is removed (the query's other signals stay)."""
    drops = np.full(dec.contrib.shape, np.nan)
    loo = dec.method == "leave-one-out"  # the contributions are these drops
    used = [] if loo else sorted({j for cs in cands for j in cs})
    batch = _without(history, dec.hist[used])
    q = history.queries[0] if history.queries else None
    n = history.matrix.shape[1]
    empty = History(
        history.users[:1], sp.csr_matrix((1, n), dtype=np.float32), [np.zeros(0, np.int64)], [q]
    )
    both = History(
        np.concatenate([batch.users, empty.users]),
        sp.vstack([batch.matrix, empty.matrix]).tocsr(),
        [*batch.sequences, *empty.sequences],
        [*batch.queries, *empty.queries],
    )
    s = np.asarray(model.score(both), np.float64)[:, items]
    if loo:
        drops = np.asarray(dec.contrib, np.float64)
    elif used:
        drops[:, used] = (full[items][None, :] - s[:-1]).T
    return drops, full[items] - s[-1]


def explain_history(
    model: Recommender | Any,
    history: History,
    items: Sequence[int] | np.ndarray,
    *,
    fallback: str | None = None,
    max_items: int = 3,
    min_ratio: float = 0.25,
    loo_limit: int = 50,
) -> list[Explanation]:
    """Explanations of `items` (indices) for a one-row `history` (see the module docstring).

    fallback: what answered the row ("popularity" when the model fell back to it).
    """
    base = getattr(model, "model", model)  # a Reranked model explains with its base model
    base.check_fitted()
    items = np.asarray(items, np.int64)
    if len(items) == 0:
        return []
    history = _row(history)
    scores = np.asarray(base.score(history), np.float64)[0]
    titles = _titles(base, items)
    ids = base.items.ids_of(items)
    if fallback == "popularity":
        pop = [[_popular_reason(base, i)] for i in items.tolist()]
        return [
            Explanation(
                ids[m], titles[m], float(scores[i]), pop[m], _sentence(pop[m]), "popularity"
            )
            for m, i in enumerate(items.tolist())
        ]
    tol = score_margin(scores, history.matrix.indices, len(items))
    dec = contributions(base, history, items, loo_limit)
    cands = [_candidates(dec.contrib[m], max_items, min_ratio) for m in range(len(items))]
    drops, whole = _drops(base, history, dec, items, scores, cands)
    personal = getattr(base, "personalized", True) and history.matrix.nnz > 0
    out: list[Explanation] = []
    for m, i in enumerate(items.tolist()):
        c = dec.contrib[m] if dec.contrib.size else np.zeros(0)
        named = [j for j in cands[m] if drops[m, j] > tol][:max_items]
        parts = {k: float(v[m]) for k, v in dec.parts.items() if np.isfinite(v[m])}
        if dec.parts:
            extra = sum(max(v, 0.0) for v in parts.values())
        else:
            extra = float(dec.rest[m]) if np.isfinite(dec.rest[m]) and dec.rest[m] > 0 else 0.0
        total = float(c[c > 0].sum()) + extra or 1.0
        reasons: list[Reason] = []
        if named:
            reasons.append(_history_reason(base, history, dec, m, named, total))
        for kind, v in parts.items():
            if v > tol:
                r = _part_reason(base, history, kind, i, v / total)
                if r is not None:
                    reasons.append(r)
        if not reasons:  # what decided between near-equal scores
            pos = {k: v for k, v in parts.items() if v > 0}
            if pos:
                kind = max(pos, key=lambda k: pos[k])
                r = _part_reason(base, history, kind, i, pos[kind] / total)
                reasons += [r] if r is not None else []
            if not reasons and personal and whole[m] > tol:
                text = "suggested by your history as a whole (no single item of it decides)"
                reasons.append(Reason("overall", 1.0, text=text))
            elif not reasons and personal:
                text = "fills the list: nothing in your history raises its score"
                reasons.append(Reason("filler", 0.0, text=text))
        reasons.sort(key=lambda r: -r.weight)
        out.append(
            Explanation(
                item=ids[m],
                title=titles[m],
                score=float(scores[i]),
                reasons=reasons,
                sentence=_sentence(reasons),
                method=dec.method,
            )
        )
    return out


def explain(
    model: Recommender | Any,
    query: Query | str,
    items: Sequence[str] | None = None,
    n: int = 10,
    *,
    max_items: int = 3,
    min_ratio: float = 0.25,
    loo_limit: int = 50,
) -> list[Explanation]:
    """Explain the model's top-n recommendations for `query` (or the given item ids).

    `model` may be a `Reranked` model: it recommends, its base model explains the scores.
    """
    base = getattr(model, "model", model)
    base.check_fitted()
    q = Query(user=query) if isinstance(query, str) else query
    fallback = None
    if items is None:
        recs = model.recommend(q, n)
        items = recs.items
        fallback = recs.fallback
    idx = base.items.indices(list(items))
    unknown = [i for i, x in zip(items, idx, strict=True) if x < 0]
    if unknown:
        raise LmrecError(f"cannot explain unknown items: {', '.join(map(str, unknown))}")
    history = base.history_of([q])
    if fallback is None:
        fallback = base.fallbacks(history)[0]
    return explain_history(
        base,
        history,
        idx,
        fallback=fallback,
        max_items=max_items,
        min_ratio=min_ratio,
        loo_limit=loo_limit,
    )
