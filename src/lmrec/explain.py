"""Explanations of recommendations: structured reasons and a sentence, only true ones.

Each recommended item gets reasons of these kinds:

- "history": "because you watched X": the history items that contributed most to the item's
  score. The contribution of history item j to the score of item i comes from the model itself:
  - itemknn: h_j S[j, i] (h = the recency-weighted history row the model scores with);
  - ease: h_j B[j, i];
  - als / bpr (fold-in least squares): c_j y_i' A^-1 y_j with A = Y'Y + reg I +
    sum_j (c_j - 1) y_j y_j' and c_j the confidence of j (Hu, Koren & Volinsky, ICDM 2008,
    section 5; `implicit`'s `explain`);
  - lmcontent: w_j exp((cos(j, i) - 1) / T) / sum |w| (kernel), or the history item's share of
    the interest vector's cosine; lmmf: h_j (e_j . q_i) / sum |h|;
  - any other model (the sequential ones included): leave-one-out, the drop of the item's score
    when j is removed from the history (true by construction), over at most `loo_limit` of the
    newest distinct history items.
  For the decompositions, the contributions plus the part that no history item explains (biases,
  user text, tie-breaks) add up to the score exactly; a named item is in the history and has a
  positive contribution of at least `min_ratio` times the largest one.
- "similar_users": "popular with users like you": userknn and coldstart_user score through the
  users most similar to this one; the reason counts those neighbours who chose the item and names
  the user's attribute values that most of them share (and that are more common among them than
  among all users).
- "interest": "matches your interest in sci-fi": the user text (interest tags, attributes, free
  text) contributed to the score (lmcontent with user text, coldstart_user's content part); the
  tags named are those whose text vectors are closest to the item's.
- "popular": the popularity model, or the popularity fallback of a user without history.
- coldstart_user scores with several parts (similar users, content, popularity, a map from
  the user's attributes and text to items: "profile"); each part's weight is its exact share,
  measured by scoring again without it.
"""

from __future__ import annotations

__all__ = ["Explanation", "Reason", "contributions", "explain", "explain_history"]

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError
from lmrec.models.base import History, Query, Recommender

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


@dataclass
class Decomposition:
    """Contributions of a row's history items to candidate items' scores.

    hist: (H,) history item indices; contrib: (M, H) contribution of each history item to each
    candidate; rest: (M,) the part of the score no history item explains (NaN if unknown);
    exact: contrib.sum(1) + rest equals the model's score; method: how it was computed.
    """

    hist: np.ndarray
    contrib: np.ndarray
    rest: np.ndarray
    exact: bool
    method: str


# -- contributions per model family ------------------------------------------------------------


def _row(history: History, r: int = 0) -> History:
    q = history.queries[r] if history.queries else None
    return History(
        users=history.users[r : r + 1],
        matrix=history.matrix[r : r + 1],
        sequences=[history.sequences[r]],
        queries=[q],
    )


def _linear(h: sp.csr_matrix, weights_rows: Any, items: np.ndarray, method: str) -> Decomposition:
    """Score = sum_j h_j W[j, i]: contributions h_j W[j, i]."""
    h = sp.csr_matrix(h)
    hist = h.indices.astype(np.int64)
    hv = h.data.astype(np.float64)
    w = weights_rows[hist]
    w = w[:, items].toarray() if sp.issparse(w) else np.asarray(w)[:, items]
    contrib = (hv[:, None] * w).T
    return Decomposition(hist, contrib, np.zeros(len(items)), True, method)


def _itemknn(model: Any, history: History, items: np.ndarray) -> Decomposition:
    return _linear(model._history_matrix(history), model.sim.tocsr(), items, "itemknn similarity")


def _ease(model: Any, history: History, items: np.ndarray) -> Decomposition:
    from lmrec.models.base import recency_weighted

    h = history.matrix.astype(np.float32, copy=True)
    if model.config.binary:
        h.data[:] = 1.0
    h = recency_weighted(history, model.config.half_life, h)
    return _linear(h, model.weights, items, "ease weights")


def _least_squares(
    y: np.ndarray, hist: np.ndarray, conf: np.ndarray, reg: float, items: np.ndarray
) -> np.ndarray:
    """(M, H) c_j y_i' A^-1 y_j for x = A^-1 sum_j c_j y_j, A = Y'Y + reg I + sum (c_j-1) y_j y_j'."""
    yh = y[hist]
    a = y.T @ y + reg * np.eye(y.shape[1]) + (yh.T * (conf - 1.0)) @ yh
    wi = np.linalg.solve(a, y[items].T)  # (f, M) = A^-1 y_i
    return (wi.T @ yh.T) * conf[None, :]


def _als(model: Any, history: History, items: np.ndarray) -> Decomposition:
    from lmrec.models.base import recency_weighted
    from lmrec.models.mf import _weights

    h = recency_weighted(
        history, model.config.half_life, _weights(history.matrix, model.config.binary)
    )
    hist = h.indices.astype(np.int64)
    conf = model.config.alpha * h.data.astype(np.float64)
    y = model.item_factors.astype(np.float64)
    contrib = _least_squares(y, hist, conf, model.config.reg, items)
    return Decomposition(hist, contrib, np.zeros(len(items)), True, "als least squares")


def _bpr(model: Any, history: History, items: np.ndarray) -> Decomposition | None:
    from lmrec.models.base import recency_weighted
    from lmrec.models.mf import _weights

    h0 = _weights(history.matrix, model.config.binary)
    if model.config.fold_in == "new":
        u = int(history.users[0])
        if 0 <= u < len(model.user_factors):
            same = abs(h0 - model._train_matrix()[u]).sum() == 0
            if same:
                return None  # trained factors: no decomposition over history items
    h = recency_weighted(history, model.config.half_life, h0)
    hist = h.indices.astype(np.int64)
    conf = model.config.fold_in_alpha * h.data.astype(np.float64)
    y = model.item_factors.astype(np.float64)
    # BPR's fold-in: A = gram + sum (c_j - 1) v_j v_j' + lam I with gram = V'V.
    contrib = _least_squares(y, hist, conf, model._lam, items)
    return Decomposition(hist, contrib, np.zeros(len(items)), True, "bpr fold-in least squares")


def _lmcontent(model: Any, history: History, items: np.ndarray) -> Decomposition:
    c = model.config
    w = sp.csr_matrix(model._weights(history))
    w.eliminate_zeros()
    hist = w.indices.astype(np.int64)
    wv = w.data.astype(np.float64)
    total = float(np.abs(wv).sum()) or 1.0
    v = model.item_vectors.astype(np.float64)
    score = model.score(history)[0, items].astype(np.float64)
    if len(hist) == 0:
        return Decomposition(hist, np.zeros((len(items), 0)), score, True, "lmcontent")
    if c.scoring == "kernel":
        kern = np.exp((v[hist] @ v[items].T - 1.0) / c.temperature)  # (H, M)
        contrib = (wv[:, None] * kern / total).T
    else:
        p, _ = model.interest_vectors(history)
        norm = float(np.linalg.norm(p[0]))
        scale = 1.0 if c.scoring == "dot" or norm == 0 else 1.0 / norm  # cosine: p / |p|
        contrib = ((wv / total)[:, None] * (v[hist] @ v[items].T) * scale).T
    rest = score - contrib.sum(axis=1)  # user text and the popularity tie-break
    return Decomposition(hist, contrib, rest, True, f"lmcontent {c.scoring}")


def _lmmf(model: Any, history: History, items: np.ndarray) -> Decomposition:
    from lmrec.models.base import recency_weighted

    h = sp.csr_matrix(recency_weighted(history, model.config.half_life), dtype=np.float64)
    h.data = np.abs(h.data)
    hist = h.indices.astype(np.int64)
    total = float(h.data.sum()) or 1.0
    e = model.history_factors.astype(np.float64)
    q = model.item_factors.astype(np.float64)
    contrib = ((h.data / total)[:, None] * (e[hist] @ q[items].T)).T
    score = model.score(history)[0, items].astype(np.float64)
    return Decomposition(hist, contrib, score - contrib.sum(axis=1), True, "lmmf factors")


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
    h = len(hist)
    if h == 0:
        score = model.score(history)[0, items].astype(np.float64)
        return Decomposition(hist, np.zeros((len(items), 0)), score, True, "leave-one-out")
    rows = sp.vstack([m] * (h + 1)).tolil()
    seqs = [seq]
    for r, j in enumerate(hist, 1):
        rows[r, int(j)] = 0
        seqs.append(seq[seq != j])
    mat = sp.csr_matrix(rows)
    mat.eliminate_zeros()
    q = history.queries[0] if history.queries else None
    batch = History(
        users=np.repeat(history.users[:1], h + 1), matrix=mat, sequences=seqs, queries=[q] * (h + 1)
    )
    s = np.asarray(model.score(batch), np.float64)[:, items]  # (H + 1, M)
    contrib = (s[0][None, :] - s[1:]).T
    return Decomposition(hist, contrib, np.full(len(items), np.nan), False, "leave-one-out")


def contributions(
    model: Recommender, history: History, items: Sequence[int] | np.ndarray, loo_limit: int = 50
) -> Decomposition:
    """How much each history item of a one-row `history` contributed to each of `items`'
    scores (item indices): the model's own decomposition where it has one, else leave-one-out."""
    if len(history) != 1:
        raise LmrecError(f"contributions explain one history row at a time, got {len(history)}")
    items = np.asarray(items, np.int64)
    name = getattr(model, "name", "")
    if name == "itemknn":
        return _itemknn(model, history, items)
    if name == "ease":
        return _ease(model, history, items)
    if name == "als":
        return _als(model, history, items)
    if name == "bpr":
        d = _bpr(model, history, items)
        if d is not None:
            return d
    if name == "lmcontent":
        return _lmcontent(model, history, items)
    if name == "lmmf":
        return _lmmf(model, history, items)
    return _leave_one_out(model, history, items, loo_limit)


# -- similar users -----------------------------------------------------------------------------


def _user_neighbours(model: Any, history: History) -> tuple[np.ndarray, np.ndarray, Any]:
    """(neighbour user indices (K,), their weights (K,), their vote matrix rows (K, n_items))."""
    if model.name == "userknn":
        from lmrec.models.base import recency_weighted
        from lmrec.models.knn import _prepare, _stats, similarity

        cfg = model.config
        h = recency_weighted(history, cfg.half_life, _prepare(history.matrix, model._binary()))
        co = (h @ model._train_t).toarray()
        sim = similarity(
            co,
            _stats(h, axis=1),
            model._train_stats,
            h.shape[1],
            cfg.similarity,
            cfg.shrink,
            cfg.alpha,
        )[0]
        u = int(history.users[0])
        if 0 <= u < len(sim):
            sim[u] = 0.0
        k = min(cfg.n_neighbors, len(sim))
        top = np.argpartition(-sim, k - 1)[:k]
        top = top[sim[top] > 0]
        return top, sim[top].astype(np.float64), model.train[top]
    # coldstart_user
    cfg = model.config
    uvec, has_text, _ = model._row_user_vectors(history)
    sim = model._similarities(history, uvec, has_text)[0]
    k = min(cfg.n_neighbors, len(sim))
    top = np.argpartition(-sim, k - 1)[:k]
    w = np.clip(sim[top], 0, None) ** cfg.neighbor_power
    keep = w > 0
    return model.neighbors[top[keep]], w[keep].astype(np.float64), model.votes[top[keep]]


def _user_attributes(model: Any, history: History) -> dict[str, Any]:
    q = history.queries[0] if history.queries else None
    if q is not None and q.attributes:
        return dict(q.attributes)
    u = int(history.users[0])
    if u >= 0 and model.history is not None and u < model.history.n_users:
        return dict(model.history.user_features.attributes[u])
    return {}


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
    ds = model.history
    ids = model.items.ids_of(np.asarray(idx, np.int64)) if len(idx) else []
    if ds is None:
        return [str(i) for i in ids]
    return [ds.item_features.title[int(i)] or str(x) for i, x in zip(idx, ids, strict=True)]


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
    model: Any, history: History, dec: Decomposition, m: int, max_items: int, min_ratio: float
) -> Reason | None:
    c = dec.contrib[m] if dec.contrib.size else np.zeros(0)
    pos = c > 0
    if not pos.any():
        return None
    order = np.argsort(-c, kind="stable")
    top = float(c[order[0]])
    chosen = [j for j in order[:max_items] if c[j] > 0 and c[j] >= min_ratio * top]
    named = dec.hist[chosen]
    positive = float(c[pos].sum())
    extra = float(dec.rest[m]) if np.isfinite(dec.rest[m]) and dec.rest[m] > 0 else 0.0
    titles = _titles(model, named)
    verbs = {_verb(model, history, int(j)) for j in named}
    verb = verbs.pop() if len(verbs) == 1 else "chose"
    return Reason(
        kind="history",
        weight=float(c[chosen].sum()) / (positive + extra),
        items=model.items.ids_of(named),
        titles=titles,
        contributions=[float(x) for x in c[chosen]],
        text=f"because you {verb} " + _join(['"' + t + '"' for t in titles]),
    )


def _interest_reason(model: Any, history: History, item: int, weight: float) -> Reason:
    q = history.queries[0] if history.queries else None
    tags = list(q.tags) if q is not None and q.tags else []
    u = int(history.users[0])
    if not tags and model.history is not None and 0 <= u < model.history.n_users:
        tags = list(model.history.user_features.tags[u])
    if tags and hasattr(model, "encode"):
        tv = model.encode(tags)
        cos = tv @ model.item_vectors[item]
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
    nb, w, votes = _user_neighbours(model, history)
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


def _sentence(reasons: list[Reason]) -> str:
    if not reasons:
        return ""
    s = "; ".join(r.text for r in reasons)
    return s[0].upper() + s[1:] + "."


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
    base._check_fitted()
    items = np.asarray(items, np.int64)
    if len(items) == 0:
        return []
    history = _row(history)
    scores = np.asarray(base.score(history), np.float64)[0]
    titles = _titles(base, items)
    ids = base.items.ids_of(items)
    out: list[Explanation] = []
    name = getattr(base, "name", "")
    empty = history.matrix.nnz == 0
    dec = None
    if name not in ("popularity", "random", "userknn", "coldstart_user") and not empty:
        dec = contributions(base, history, items, loo_limit)
    for m, i in enumerate(items.tolist()):
        reasons: list[Reason] = []
        method = dec.method if dec is not None else name
        if fallback == "popularity" or name == "popularity":
            reasons.append(_popular_reason(base, i))
            method = "popularity"
        elif name == "random":
            reasons.append(Reason("random", 1.0, text="picked at random"))
        elif name in ("userknn", "coldstart_user"):
            reasons.extend(_user_reasons(base, history, i))
            method = f"{name} neighbours"
        elif dec is not None:
            r = _history_reason(base, history, dec, m, max_items, min_ratio)
            if r is not None:
                reasons.append(r)
            if name == "lmcontent" and np.isfinite(dec.rest[m]):
                text_part = float(dec.rest[m]) - 1e-6  # beyond the popularity tie-break
                if text_part > 1e-6 and _has_user_text(base, history):
                    pos = float(np.clip(dec.contrib[m], 0, None).sum()) + text_part
                    reasons.append(_interest_reason(base, history, i, text_part / pos))
        elif name == "lmcontent" and _has_user_text(base, history):
            reasons.append(_interest_reason(base, history, i, 1.0))
        reasons.sort(key=lambda r: -r.weight)
        out.append(
            Explanation(
                item=ids[m],
                title=titles[m],
                score=float(scores[i]),
                reasons=reasons,
                sentence=_sentence(reasons),
                method=method,
            )
        )
    return out


def _has_user_text(model: Any, history: History) -> bool:
    _, has, _ = model._row_user_vectors(history)
    return bool(has[0])


def _user_reasons(model: Any, history: History, item: int) -> list[Reason]:
    """userknn: neighbours only; coldstart_user: neighbours, content and popularity parts,
    weighed by their exact shares of the score (the model scored with one part at a time)."""
    if model.name == "userknn":
        r = _similar_users_reason(model, history, item, 1.0)
        return [r] if r is not None else []
    c = model.config
    full = float(model.score(history)[0, item])
    parts: dict[str, float] = {}
    for part, key in (
        ("similar_users", "neighbor_weight"),
        ("content", "content_weight"),
        ("popular", "popularity_weight"),
    ):
        if getattr(c, key, 0) > 0:
            m = copy.copy(model)
            m.config = c.model_copy(update={key: 0.0})
            parts[part] = full - float(m.score(history)[0, item])  # what this part added
    parts["profile"] = full - sum(parts.values())  # the rest: the attribute-to-item map
    total = sum(max(v, 0.0) for v in parts.values()) or 1.0
    out: list[Reason] = []
    if parts.get("similar_users", 0) > 0:
        r = _similar_users_reason(model, history, item, parts["similar_users"] / total)
        if r is not None:
            out.append(r)
    if parts.get("content", 0) > 0:
        q = history.queries[0] if history.queries else None
        w = parts["content"] / total
        if q is not None and bool(q.tags or q.text):
            out.append(_interest_reason(model, history, item, w))
        else:
            out.append(Reason("content", w, text="close in content to what you chose"))
    if parts.get("popular", 0) > 0:
        out.append(_popular_reason(model, item, parts["popular"] / total))
    if parts["profile"] > 0:
        out.append(
            Reason(
                "profile",
                parts["profile"] / total,
                text="often chosen by users with a profile like yours",
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
    base._check_fitted()
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
        used = base._fallback_scores(history, np.zeros((1, len(base.items)), np.float32))
        fallback = used[0]
    return explain_history(
        base,
        history,
        idx,
        fallback=fallback,
        max_items=max_items,
        min_ratio=min_ratio,
        loo_limit=loo_limit,
    )
