"""Recommenders built on a pretrained text encoder (default: the bundled all-MiniLM-L6-v2).

- `lmcontent`: content-based; the user's interest vector is the recency-, rating- and
  event-weighted mean of the history items' text vectors and/or the user-text vector.
- `lmmf`: LM-enhanced factorisation; item factors are a learned projection of the text
  vectors plus a regularised free offset (FISM-style user tower: the mean of the history's
  input factors), so a new item gets factors from its text alone (Kabbur et al., KDD 2013;
  text-tied factors as in CTR, Wang & Blei, KDD 2011).
- `coldstart_user`: users known by attributes and interest tags only (or a few chosen items):
  a ridge map from the user-text vector to the items (starting from popularity), plus the
  votes of attribute-similar users, score(u, i) = sum_v sim(u, v) r(v, i), plus content.

With `side_features` = w > 0, items also carry an idf-weighted exact-match vector of their
category and attribute tokens (e.g. the release year, which a sentence encoder blurs):
`lmmf` feeds [text, w * side] to its text -> factor projection, `lmcontent` compares the unit
concatenation. On ML-100K item cold start, lmmf with w = 1 (chosen on an inner split) lifted
lmmf on three test splits and beat TF-IDF content on one of them (benchmarks/lm.md).

Text vectors come from `lmrec.text.encode_cached`, in-process at fit time (or from a store's
vector cache, `cache_db`). Artifacts hold the vectors and record the encoder version
(`encoder_version`); loading checks that the encoder is still there and unchanged.
"""

from __future__ import annotations

__all__ = [
    "LMMF",
    "ColdStartUser",
    "ColdStartUserConfig",
    "LMContent",
    "LMContentConfig",
    "LMMFConfig",
]

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset, Vocabulary
from lmrec.errors import LmrecError
from lmrec.models.base import (
    Contributions,
    History,
    ModelConfig,
    Recommender,
    recency_weighted,
    sparse_from_state,
    sparse_state,
)
from lmrec.text.encoders import TextEncoder, TfidfEncoder, load_encoder, normalize
from lmrec.text.templates import item_texts, user_text, user_texts


class _TextConfig(ModelConfig):
    encoder: str = "minilm"
    """Text encoder spec: 'minilm', 'tfidf[:DIM]', 'st:PATH' or a fine-tuned encoder directory."""
    item_template: str | None = None
    """str.format template of item text (title, description, categories, attributes)."""
    user_fields: list[str] | None = None
    """User attributes that make up the user text, in order (None: all of them)."""
    cache_db: str | None = None
    """Store URL whose text-vector cache is read and filled at fit time (None: in-process)."""
    encoder_version: str | None = None
    """Set by `fit`: the versioned name (with content fingerprint) of the encoder the vectors
    came from. Loading a saved model refuses an `encoder` that is missing or now differs."""


class _SideConfig(_TextConfig):
    side_features: float = Field(0.0, ge=0)
    """Weight of exact-match structured features beside the text vector (0: text only). Each
    item gets a sparse vector over tokens of its categories (cat_x) and attribute values
    (attr_key_value, e.g. the release year), TF-IDF weighted (idf = ln((1 + n) / (1 + df)) + 1,
    over the dataset's items) and L2-normalised; it is concatenated to the unit text vector
    times this weight. A sentence encoder blurs near values ("(1995)" vs "(1997)"); these
    tokens match them exactly. Tokens unseen at fit time are ignored."""


def _side_tokens(categories: Sequence[Any], attributes: Mapping[str, Any] | None) -> list[str]:
    """Exact-match tokens of an item's categories and attribute values."""
    from lmrec.models.content import _token

    toks = [_token("cat_", c) for c in categories if str(c).strip()]
    for k, v in sorted((attributes or {}).items()):
        if v is not None and str(v).strip():
            toks.append(_token(f"attr_{_token('', k)}_", v))
    return toks


def _side_matrix(
    tokens: Sequence[Sequence[str]], vocab: Mapping[str, int], idf: np.ndarray
) -> np.ndarray:
    """(N, V) L2-normalised idf-weighted one-hot rows (zero rows for items without tokens)."""
    out = np.zeros((len(tokens), len(vocab)), np.float32)
    for r, toks in enumerate(tokens):
        for t in set(toks):
            j = vocab.get(t)
            if j is not None:
                out[r, j] = idf[j]
    return normalize(out) if out.size else out


def _widen(m: sp.spmatrix, n: int) -> sp.csr_matrix:
    """The sparse matrix with n columns (new columns empty)."""
    m = sp.csr_matrix(m)
    return sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n))


def _resolve_spec(spec: str) -> str:
    """An encoder spec with a directory made absolute, so a saved model finds it from any cwd."""
    low = spec.strip().lower()
    if low in ("minilm", "default", "all-minilm-l6-v2") or low.split(":")[0] == "tfidf":
        return spec
    prefix = "st:" if low.startswith("st:") else ""
    path = Path(spec.strip()[len(prefix) :]).expanduser()
    return prefix + str(path.resolve()) if path.is_dir() else spec


class _TextModel(Recommender):
    """Shared text side: the encoder, item vectors and user-text vectors."""

    config: Any

    def __init__(self, config: Any = None, **params: Any):
        super().__init__(config, **params)
        self._encoder: TextEncoder | None = None
        self._tfidf_state: dict[str, np.ndarray] | None = None

    #: New items are represented by the encoder's vector of their text (`with_items`).
    accepts_new_items = True

    # -- encoding ------------------------------------------------------------------------------

    def encoder(self) -> TextEncoder:
        """The text encoder (loaded on first use; a TF-IDF encoder from the fitted state)."""
        if self._encoder is None:
            enc = load_encoder(self.config.encoder)
            if isinstance(enc, TfidfEncoder):
                if self._tfidf_state is None:
                    raise LmrecError(f"model {self.name!r}: the TF-IDF encoder is not fitted")
                enc.set_state(self._tfidf_state)
            self._encoder = enc
        return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of texts through the encoder and the text-vector caches."""
        from lmrec.text.cache import encode_cached

        enc = self.encoder()
        if self.config.cache_db:
            from lmrec.store import Store

            with Store(self.config.cache_db) as store:
                return encode_cached(enc, texts, store)
        return encode_cached(enc, texts)

    def text_encoder(self) -> tuple[Callable[[list[str]], np.ndarray], str]:
        """`encode` and the encoder spec the item vectors came from."""
        return self.encode, str(self.config.encoder)

    def text_similarity(self, texts: Sequence[str], items: np.ndarray) -> np.ndarray:
        """(T, M) cosine of the texts' vectors with the items' text vectors."""
        return self.encode(list(texts)) @ self.item_vectors[np.asarray(items, np.int64)].T

    # -- new items -----------------------------------------------------------------------------

    def with_items(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None = None,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Recommender:
        """A copy whose catalogue also holds these new items, represented by the encoder's
        vector of their text (and, with `side_features`, their categories and attributes),
        popularity 0; each model widens its own per-item state (`_add_items`). The original
        model is left as it was."""
        self.check_fitted()
        assert self.items is not None and self.popularity is not None
        if not ids:
            return self
        if len(texts) != len(ids):
            raise LmrecError(f"model {self.name!r}: {len(ids)} new item ids but {len(texts)} texts")
        known = [i for i in ids if i in self.items]
        if known or len(set(ids)) != len(ids):
            raise LmrecError(f"model {self.name!r}: items already in the catalogue: {known or ids}")
        vecs = self.encode(list(texts))
        side = self.side_vectors_of(categories, attributes, len(ids))
        new = copy.copy(self)
        new.items = Vocabulary([*self.items.ids.tolist(), *ids])
        new.popularity = np.concatenate([self.popularity, np.zeros(len(ids), np.float32)])
        new.item_vectors = np.vstack([self.item_vectors, vecs]).astype(np.float32)
        new.side_vectors = np.vstack([self.side_vectors, side]).astype(np.float32)
        new._joint = None  # the joint [text, side] vectors are rebuilt on first use
        new._add_items(vecs, side, texts, categories, attributes)
        return new

    def _add_items(
        self,
        vecs: np.ndarray,
        side: np.ndarray,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        """Widen the model's own per-item state for the new items (called on the copy, whose
        items, popularity and vectors already hold them); replace arrays, never mutate."""

    def _fit_text(self, dataset: Dataset, *, users: bool) -> None:
        texts = item_texts(dataset, template=self.config.item_template)
        self._encoder = None
        self._tfidf_state = None
        enc = load_encoder(self.config.encoder)
        if isinstance(enc, TfidfEncoder):
            enc.fit(texts)
            self._tfidf_state = enc.state()
        self._encoder = enc
        # Record which encoder version made the vectors (path + fingerprint), for `load`.
        self.config = self.config.model_copy(
            update={"encoder": _resolve_spec(self.config.encoder), "encoder_version": enc.name}
        )
        self.item_vectors = self.encode(texts)
        self._fit_side(dataset)
        if users:
            self.user_texts = user_texts(dataset, fields=self.config.user_fields)
            has = np.array([bool(t) for t in self.user_texts])
            self.user_vectors = np.zeros((dataset.n_users, self.item_vectors.shape[1]), np.float32)
            if has.any():
                self.user_vectors[has] = self.encode([t for t in self.user_texts if t])
            self.has_user_text = has

    def _fit_side(self, dataset: Dataset) -> None:
        """The structured-feature vocabulary, idf and item vectors (`side_features` > 0)."""
        f = dataset.item_features
        if getattr(self.config, "side_features", 0.0) <= 0:
            self.side_vocab = np.array([], dtype=str)
            self.side_idf = np.zeros(0, np.float32)
            self.side_vectors = np.zeros((dataset.n_items, 0), np.float32)
            return
        toks = [_side_tokens(f.categories[i], f.attributes[i]) for i in range(dataset.n_items)]
        df: dict[str, int] = {}
        for ts in toks:
            for t in set(ts):
                df[t] = df.get(t, 0) + 1
        vocab = sorted(df)
        n = dataset.n_items
        self.side_vocab = np.array(vocab, dtype=str)
        self.side_idf = np.array([np.log((1 + n) / (1 + df[t])) + 1 for t in vocab], np.float32)
        self.side_vectors = _side_matrix(toks, self._side_index(), self.side_idf)

    def _side_index(self) -> dict[str, int]:
        return {str(t): j for j, t in enumerate(self.side_vocab)}

    def side_vectors_of(
        self,
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
        n: int,
    ) -> np.ndarray:
        """(n, V) structured-feature vectors of new items (zeros where nothing is given)."""
        cats = list(categories) if categories is not None else [()] * n
        attrs = list(attributes) if attributes is not None else [None] * n
        if len(cats) != n or len(attrs) != n:
            raise LmrecError(
                f"model {self.name!r}: {n} texts but {len(cats)} category lists and "
                f"{len(attrs)} attribute mappings; give one of each per text"
            )
        toks = [_side_tokens(c, a) for c, a in zip(cats, attrs, strict=True)]
        return _side_matrix(toks, self._side_index(), self.side_idf)

    def joint_vectors(self) -> np.ndarray:
        """Item vectors the models compare: [text, w * side] / sqrt(1 + w^2 |side|^2), unit
        rows, so cos = (cos_text + w^2 cos_side) / (1 + w^2) between items with features."""
        w = getattr(self.config, "side_features", 0.0)
        if w <= 0 or self.side_vectors.shape[1] == 0:
            return self.item_vectors
        cached = getattr(self, "_joint", None)
        if cached is None or cached.shape[0] != self.item_vectors.shape[0]:
            cached = normalize(np.hstack([self.item_vectors, w * self.side_vectors]))
            self._joint = cached
        return cached

    def _pad(self, vecs: np.ndarray) -> np.ndarray:
        """Text-space vectors (users) padded with zeros to the joint item space."""
        extra = self.joint_vectors().shape[1] - vecs.shape[1]
        return np.hstack([vecs, np.zeros((len(vecs), extra), vecs.dtype)]) if extra else vecs

    def _row_user_vectors(self, history: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the user-text vector (query attributes/tags/text first, else the stored
        user's), whether there is one, and whether it came from tags or free text."""
        b, d = len(history), self.item_vectors.shape[1]
        out = np.zeros((b, d), np.float32)
        has = np.zeros(b, bool)
        told = np.zeros(b, bool)
        texts: dict[int, str] = {}
        for r in range(b):
            q = history.queries[r] if history.queries else None
            if q is not None and (q.attributes or q.tags or q.text):
                t = user_text(q.attributes, q.tags, q.text, fields=self.config.user_fields)
                if t:
                    texts[r] = t
                    told[r] = bool(q.tags or q.text)
                    continue
            u = int(history.users[r])
            if u >= 0 and u < len(self.has_user_text) and self.has_user_text[u]:
                out[r] = self.user_vectors[u]
                has[r] = True
        if texts:
            rows = list(texts)
            out[rows] = self.encode([texts[r] for r in rows])
            has[rows] = True
        return out, has, told

    def _check_encoder(self) -> None:
        """Refuse a loaded model whose encoder is missing or is no longer the version that
        made its vectors (new texts would land in another vector space)."""
        c = self.config
        trained = f"encoder {c.encoder!r}" + (
            f" (version {c.encoder_version})" if c.encoder_version else ""
        )
        try:
            enc = self.encoder()
        except LmrecError as exc:
            raise LmrecError(
                f"model {self.name!r} was trained with {trained}, which cannot be loaded: {exc}"
            ) from None
        if c.encoder_version is not None and enc.name != c.encoder_version:
            raise LmrecError(
                f"model {self.name!r} was trained with {trained}, but {c.encoder!r} is now "
                f"version {enc.name}; refit the model or restore that encoder"
            )
        if enc.dim != self.item_vectors.shape[1]:
            raise LmrecError(
                f"model {self.name!r}: encoder {enc.name} gives {enc.dim}-dimensional vectors, "
                f"the saved item vectors have {self.item_vectors.shape[1]}"
            )

    def _text_state(self) -> dict[str, np.ndarray]:
        state = {
            "item_vectors": self.item_vectors,
            "side_vocab": self.side_vocab,
            "side_idf": self.side_idf,
            "side_vectors": self.side_vectors,
        }
        if self._tfidf_state is not None:
            state.update({f"tfidf.{k}": v for k, v in self._tfidf_state.items()})
        if hasattr(self, "user_vectors"):
            state["user_vectors"] = self.user_vectors
            state["has_user_text"] = self.has_user_text
        return state

    def _set_text_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.item_vectors = state["item_vectors"]
        self._joint = None
        n = len(self.item_vectors)
        self.side_vocab = np.asarray(state.get("side_vocab", np.array([], dtype=str))).astype(str)
        self.side_idf = state.get("side_idf", np.zeros(0, np.float32))
        self.side_vectors = state.get("side_vectors", np.zeros((n, 0), np.float32))
        tf = {k[6:]: v for k, v in state.items() if k.startswith("tfidf.")}
        self._tfidf_state = tf or None
        self._encoder = None
        self._check_encoder()
        if "user_vectors" in state:
            self.user_vectors = state["user_vectors"]
            self.has_user_text = state["has_user_text"].astype(bool)


def _value_matrix(dataset: Dataset) -> sp.csr_matrix:
    """(n_users, n_items) CSR of the last rating per pair; explicit zeros where no value."""
    ok = ~np.isnan(dataset.value)
    m = sp.csr_matrix(
        (dataset.value[ok], (dataset.user[ok], dataset.item[ok])),
        shape=(dataset.n_users, dataset.n_items),
        dtype=np.float32,
    )
    if m.nnz:  # repeated ratings of a pair: keep the last one
        from lmrec.data.dataset import csr_dedup

        m = csr_dedup(dataset.user[ok], dataset.item[ok], dataset.value[ok], m.shape, keep="last")
    m.sort_indices()
    return m


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to max 1 (rows whose max is <= 0 unchanged)."""
    top = x.max(axis=1, keepdims=True)
    return np.divide(x, top, out=x.copy(), where=top > 0)


# -- LM content --------------------------------------------------------------------------------


class LMContentConfig(_SideConfig):
    half_life: float | None = Field(1.0, gt=0)
    """Weigh history items by 0.5 ** (steps back from the newest / half_life); None: equal."""
    rating_weight: Literal["none", "linear", "centered"] = "none"
    """How ratings weigh history items: none, r / max, or (r - mid) / (max - mid) (dislikes < 0)."""
    user_text_weight: float = Field(0.0, ge=0)
    """Weight of the user-text vector beside the history (alone it is used for empty histories)."""
    scoring: Literal["kernel", "cosine", "dot"] = "kernel"
    """kernel: sum over history items of weight * exp((cos - 1) / temperature); cosine: with the
    unit interest vector (mean of the history's vectors); dot: with the raw weighted sum."""
    temperature: float = Field(0.03, gt=0)
    """Sharpness of the kernel (small: the closest history item decides)."""
    threshold: float | None = None
    """Items whose cosine similarity to the interest vector is below this are never recommended."""


class LMContent(_TextModel):
    """Content recommender over language-model text vectors of items and users."""

    name = "lmcontent"
    config_class = LMContentConfig
    config: LMContentConfig
    uses_side_information = True

    def _fit(self, dataset: Dataset) -> None:
        self._fit_text(dataset, users=True)
        self.values = _value_matrix(dataset)
        vals = dataset.value[~np.isnan(dataset.value)]
        self.max_value = float(vals.max()) if len(vals) else 1.0
        self.min_value = float(vals.min()) if len(vals) else 0.0

    def _weights(self, history: History) -> sp.csr_matrix:
        """History weights (event weights x rating factor x recency)."""
        m = sp.csr_matrix(history.matrix, dtype=np.float32, copy=True)
        m.sort_indices()
        if self.config.rating_weight != "none" and m.nnz:
            factor = np.ones(m.nnz, np.float32)
            rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
            vals = np.full(m.nnz, np.nan, np.float32)
            known = history.users >= 0
            if known.any() and self.values.nnz:
                stored = self.values[np.maximum(history.users, 0)]
                stored = stored.multiply(known[:, None].astype(np.float32)).tocsr()
                stored.sort_indices()
                lin_s = np.repeat(np.arange(stored.shape[0]), np.diff(stored.indptr))
                lin_s = lin_s * m.shape[1] + stored.indices
                lin_m = rows * m.shape[1] + m.indices
                pos = np.searchsorted(lin_s, lin_m)
                ok = pos < len(lin_s)
                ok[ok] = lin_s[pos[ok]] == lin_m[ok]
                vals[ok] = stored.data[pos[ok]]
            for r, q in enumerate(history.queries or []):
                if q is None or q.values is None or not q.items:
                    continue
                idx = self.items.indices(list(q.items)) if self.items is not None else []
                lo, hi = m.indptr[r], m.indptr[r + 1]
                cols = m.indices[lo:hi]
                for i, v in zip(idx, q.values, strict=False):
                    if i >= 0 and v is not None and not np.isnan(v):
                        vals[lo + np.searchsorted(cols, i)] = v
            has = ~np.isnan(vals)
            top, low = self.max_value, self.min_value
            if self.config.rating_weight == "linear":
                factor[has] = vals[has] / top if top > 0 else 1.0
            else:
                mid = (top + low) / 2
                factor[has] = (vals[has] - mid) / (top - mid) if top > mid else 1.0
            m.data *= factor
        return recency_weighted(history, self.config.half_life, m)

    def interest_vectors(self, history: History) -> tuple[np.ndarray, np.ndarray]:
        """(B, dim) interest vectors and whether each row has one."""
        w = self._weights(history)
        items = self.joint_vectors()
        p = np.asarray(w @ items, np.float32)
        total = np.asarray(np.abs(w).sum(axis=1)).ravel()
        p = p / np.where(total > 0, total, 1.0)[:, None]
        has_hist = np.diff(w.indptr) > 0
        uvec, has_text, _ = self._row_user_vectors(history)
        uvec = self._pad(uvec)
        alone = has_text & ~has_hist
        both = has_text & has_hist
        p[alone] = uvec[alone]
        if self.config.user_text_weight > 0:
            p[both] = p[both] + self.config.user_text_weight * uvec[both]
        return p, has_hist | has_text

    def score(self, history: History) -> np.ndarray:
        c = self.config
        p, has = self.interest_vectors(history)
        p_unit = normalize(p)
        items = self.joint_vectors()
        s = np.asarray((p_unit if c.scoring != "dot" else p) @ items.T, np.float32)
        if c.scoring == "kernel":
            s = self._kernel_scores(history, s)
        if self.config.threshold is not None:
            cos = s if self.config.scoring == "cosine" else p_unit @ items.T
            s[(cos < self.config.threshold) & has[:, None]] = -np.inf
        # Ties (e.g. rows without any signal) are broken by popularity.
        assert self.popularity is not None
        pop = self.popularity / max(float(self.popularity.max()), 1.0)
        return s + np.float32(1e-6) * pop[None, :]

    def _add_items(
        self,
        vecs: np.ndarray,
        side: np.ndarray,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        assert self.items is not None
        self.values = _widen(self.values, len(self.items))

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """kernel: w_j exp((cos(j, i) - 1) / T) / sum |w|; cosine and dot: the history item's
        share of the interest vector's product with the item. Parts: the user text
        ("interest") and the popularity tie-break ("popular")."""
        c = self.config
        w = sp.csr_matrix(self._weights(history))
        w.eliminate_zeros()
        hist = w.indices.astype(np.int64)
        wv = w.data.astype(np.float64)
        total = float(np.abs(wv).sum()) or 1.0
        v = self.joint_vectors().astype(np.float64)
        score = self.score(history)[0, items].astype(np.float64)
        assert self.popularity is not None
        pop = self.popularity / max(float(self.popularity.max()), 1.0)
        tie = np.float32(1e-6) * pop[items].astype(np.float64)
        if len(hist) == 0:
            contrib = np.zeros((len(items), 0))
        elif c.scoring == "kernel":
            kern = np.exp((v[hist] @ v[items].T - 1.0) / c.temperature)  # (H, M)
            contrib = (wv[:, None] * kern / total).T
        else:
            p, _ = self.interest_vectors(history)
            norm = float(np.linalg.norm(p[0]))
            scale = 1.0 if c.scoring == "dot" or norm == 0 else 1.0 / norm  # cosine: p / |p|
            contrib = ((wv / total)[:, None] * (v[hist] @ v[items].T) * scale).T
        rest = score - contrib.sum(axis=1)  # user text and the popularity tie-break
        parts = {"popular": tie}
        if self._row_user_vectors(history)[1][0]:
            parts["interest"] = rest - tie
        return Contributions(hist, contrib, rest, True, f"lmcontent {c.scoring}", parts)

    def _kernel_scores(self, history: History, cosine: np.ndarray) -> np.ndarray:
        """Rows with a history: sum_j w_j exp((cos(j, i) - 1) / T); others keep `cosine` (the
        user-text match, plus user_text_weight times it beside a history)."""
        w = sp.csr_matrix(self._weights(history))
        w.eliminate_zeros()
        has_hist = np.diff(w.indptr) > 0
        if not has_hist.any():
            return cosine
        used = np.unique(w.indices)
        items = self.joint_vectors()
        sims = items[used] @ items.T  # (U, n)
        kern = np.exp((sims - 1.0) / self.config.temperature)
        total = np.asarray(np.abs(w).sum(axis=1)).ravel()
        s = np.asarray(w[:, used] @ kern, np.float32) / np.where(total > 0, total, 1.0)[:, None]
        out = cosine.copy()
        out[has_hist] = s[has_hist]
        if self.config.user_text_weight > 0:
            uvec, has_text, _ = self._row_user_vectors(history)
            both = has_hist & has_text
            out[both] += self.config.user_text_weight * (self._pad(uvec[both]) @ items.T)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._text_state(),
            **sparse_state("values", self.values),
            "value_range": np.array([self.min_value, self.max_value], np.float32),
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_text_state(state)
        self.values = sparse_from_state(state, "values")
        self.min_value, self.max_value = (float(x) for x in state["value_range"])


# -- LM-enhanced matrix factorisation ------------------------------------------------------------


class LMMFConfig(_SideConfig):
    embedding_size: int = Field(64, ge=1)
    """Dimension of the collaborative factors."""
    epochs: int = Field(20, ge=1)
    """Passes over the training interactions."""
    batch_size: int = Field(1024, ge=1)
    """Interactions per gradient step."""
    learning_rate: float = Field(3e-3, gt=0)
    """Adam learning rate."""
    reg: float = Field(1e-4, ge=0)
    """Weight decay of the text projections."""
    offset_reg: float = Field(1e-2, ge=0)
    """Weight decay of the free per-item offsets (pulls factors towards the text projection)."""
    use_offset: bool = True
    """Learn a free offset per item besides the text projection (False: text alone)."""
    loss: Literal["softmax", "bpr"] = "softmax"
    """softmax over all trained items, or BPR with one uniform negative per positive."""
    half_life: float | None = Field(None, gt=0)
    """At answer time, weigh history items by recency (None: equal)."""
    user_text: bool = False
    """Add a learned projection of the user-text vector to the user factor."""
    seed: int = 0
    """Seed of initialisation and shuffling."""


class LMMF(_TextModel):
    """Factorisation with item factors = text x W + offset; users = mean of history factors."""

    name = "lmmf"
    config_class = LMMFConfig
    config: LMMFConfig

    @property
    def uses_side_information(self) -> bool:  # type: ignore[override]
        return self.config.user_text

    def _fit(self, dataset: Dataset) -> None:
        import torch

        c = self.config
        self._fit_text(dataset, users=c.user_text)
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        m = dataset.matrix().tocsr()
        m.data = np.abs(m.data)
        inputs = self._mf_inputs(self.item_vectors, self.side_vectors)
        n, d = m.shape[1], inputs.shape[1]
        k = c.embedding_size
        text = torch.from_numpy(inputs)  # (n, d): text vector [+ weighted side features]
        active = np.diff(m.tocsc().indptr) > 0
        self.active = active
        params: dict[str, torch.Tensor] = {
            "wq": torch.nn.init.xavier_uniform_(torch.empty(d, k)),
            "we": torch.nn.init.xavier_uniform_(torch.empty(d, k)),
            "wb": torch.zeros(d),
            "oq": torch.zeros(n, k),
            "oe": torch.zeros(n, k),
            "ob": torch.zeros(n),
        }
        if c.user_text:
            params["wu"] = torch.zeros(self.item_vectors.shape[1], k)
        for p in params.values():
            p.requires_grad_(True)
        proj = [params[x] for x in ("wq", "we", "wb", "wu") if x in params]
        groups: list[dict[str, Any]] = [{"params": proj, "weight_decay": c.reg}]
        if c.use_offset:
            groups.append(
                {"params": [params["oq"], params["oe"], params["ob"]], "weight_decay": c.offset_reg}
            )
        opt = torch.optim.AdamW(groups, lr=c.learning_rate)
        coo = m.tocoo()
        pu, pi, pw = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
        user_vecs = torch.from_numpy(self.user_vectors) if c.user_text else None
        mask = torch.from_numpy(~active)
        act_idx = np.flatnonzero(active)
        self.losses: list[float] = []
        from lmrec.nn.trainer import heap_allocations

        t0 = time.perf_counter()
        with heap_allocations():  # no fresh mmap'd pages for the (B, n) logits of each step
            for _ in range(c.epochs):
                order = rng.permutation(len(pu))
                total = 0.0
                for s in range(0, len(order), c.batch_size):
                    sel = order[s : s + c.batch_size]
                    u, i, w = pu[sel], pi[sel], pw[sel]
                    rows = m[u].tocoo()
                    x = torch.sparse_coo_tensor(
                        np.vstack([rows.row, rows.col]),
                        rows.data,
                        (len(sel), n),
                        dtype=torch.float32,
                        check_invariants=False,
                    )
                    q = text @ params["wq"] + params["oq"]  # (n, k)
                    e = text @ params["we"] + params["oe"]  # (n, k)
                    b = text @ params["wb"] + params["ob"]  # (n,)
                    ti = torch.from_numpy(i)
                    tw = torch.from_numpy(w.astype(np.float32))
                    # The user's history without the target item (FISM: no self-prediction).
                    hsum = torch.sparse.mm(x, e) - tw[:, None] * e[ti]  # (B, k)
                    cnt = torch.from_numpy(np.asarray(m[u].sum(axis=1)).ravel() - w).float()
                    uvec = hsum / cnt.clamp(min=1.0)[:, None]
                    if user_vecs is not None:
                        uvec = uvec + user_vecs[torch.from_numpy(u)] @ params["wu"]
                    if c.loss == "softmax":
                        logits = uvec @ q.T + b  # (B, n)
                        logits = logits.masked_fill(mask, float("-inf"))
                        loss = torch.nn.functional.cross_entropy(logits, ti)
                    else:
                        neg = torch.from_numpy(rng.choice(act_idx, len(sel)))
                        sp_ = (uvec * q[ti]).sum(1) + b[ti]
                        sn = (uvec * q[neg]).sum(1) + b[neg]
                        loss = -torch.nn.functional.logsigmoid(sp_ - sn).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(sel)
                self.losses.append(total / max(len(pu), 1))
        self.train_seconds = time.perf_counter() - t0
        with torch.no_grad():
            w = {x: p.detach().numpy().astype(np.float32) for x, p in params.items()}
        if not c.use_offset:
            for x in ("oq", "oe", "ob"):
                w[x][:] = 0
        w["oq"][~active] = 0  # items without training data: factors from text alone
        w["oe"][~active] = 0
        w["ob"][~active] = 0
        self.proj = {x: w[x] for x in ("wq", "we", "wb", "wu") if x in w}
        self.item_factors = inputs @ w["wq"] + w["oq"]
        self.history_factors = inputs @ w["we"] + w["oe"]
        self.item_bias = inputs @ w["wb"] + w["ob"]

    def _mf_inputs(self, text: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Projection inputs: the text vectors, with side_features * the structured-feature
        vectors appended when `side_features` > 0."""
        if self.config.side_features <= 0 or side.shape[1] == 0:
            return text.astype(np.float32)
        return np.hstack([text, self.config.side_features * side]).astype(np.float32)

    def factors_from_text(
        self,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None = None,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Factors (N, k) and biases (N,) of new items from their text alone (plus their
        categories and attributes when the model uses `side_features`)."""
        self._check_fitted()
        v = self._mf_inputs(
            self.encode(texts), self.side_vectors_of(categories, attributes, len(texts))
        )
        return v @ self.proj["wq"], v @ self.proj["wb"]

    def user_vectors_of(self, history: History) -> np.ndarray:
        """(B, k) user factors: the weighted mean of the history's input factors."""
        h = recency_weighted(history, self.config.half_life)
        h = sp.csr_matrix(h, dtype=np.float32)
        h.data = np.abs(h.data)
        total = np.asarray(h.sum(axis=1)).ravel()
        u = np.asarray(h @ self.history_factors) / np.where(total > 0, total, 1.0)[:, None]
        if "wu" in self.proj:
            uvec, has, _ = self._row_user_vectors(history)
            u = u + (uvec * has[:, None]) @ self.proj["wu"]
        return u.astype(np.float32)

    def score(self, history: History) -> np.ndarray:
        u = self.user_vectors_of(history)
        return (u @ self.item_factors.T + self.item_bias[None, :]).astype(np.float32)

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """h_j (e_j . q_i) / sum |h|; the rest is the item bias and the user-text part."""
        h = sp.csr_matrix(recency_weighted(history, self.config.half_life), dtype=np.float64)
        h.data = np.abs(h.data)
        hist = h.indices.astype(np.int64)
        total = float(h.data.sum()) or 1.0
        e = self.history_factors.astype(np.float64)
        q = self.item_factors.astype(np.float64)
        contrib = ((h.data / total)[:, None] * (e[hist] @ q[items].T)).T
        score = self.score(history)[0, items].astype(np.float64)
        return Contributions(hist, contrib, score - contrib.sum(axis=1), True, "lmmf factors")

    def item_embeddings(self) -> np.ndarray:
        """[q_i, b_i]: score = <[p_u, 1], [q_i, b_i]>."""
        return np.hstack([self.item_factors, self.item_bias[:, None]]).astype(np.float32)

    def query_embeddings(self, history: History) -> np.ndarray:
        """[p_u, 1] per history row, matching `item_embeddings`."""
        u = self.user_vectors_of(history)
        return np.hstack([u, np.ones((len(u), 1), np.float32)])

    def _add_items(
        self,
        vecs: np.ndarray,
        side: np.ndarray,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        """Factors from the text projection alone (no collaborative offset)."""
        p, x = self.proj, self._mf_inputs(vecs, side)
        self.item_factors = np.vstack([self.item_factors, x @ p["wq"]]).astype(np.float32)
        self.history_factors = np.vstack([self.history_factors, x @ p["we"]]).astype(np.float32)
        self.item_bias = np.concatenate([self.item_bias, x @ p["wb"]]).astype(np.float32)
        self.active = np.concatenate([self.active, np.zeros(len(vecs), bool)])

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._text_state(),
            **{f"proj.{x}": v for x, v in self.proj.items()},
            "item_factors": self.item_factors,
            "history_factors": self.history_factors,
            "item_bias": self.item_bias,
            "active": self.active,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_text_state(state)
        self.proj = {k[5:]: v for k, v in state.items() if k.startswith("proj.")}
        self.item_factors = state["item_factors"]
        self.history_factors = state["history_factors"]
        self.item_bias = state["item_bias"]
        self.active = state["active"].astype(bool)


# -- cold-start users --------------------------------------------------------------------------


class ColdStartUserConfig(_TextConfig):
    reg: float = Field(3.0, gt=0)
    """Ridge penalty of the text-to-items map, relative to the mean eigenvalue of the centred
    Gram matrix of the users' text vectors (so it does not depend on the number of users)."""
    neighbor_weight: float = Field(0.5, ge=0)
    """Weight of the similar users' votes beside the text-to-items map."""
    n_neighbors: int = Field(200, ge=1)
    """How many similar users vote."""
    neighbor_power: float = Field(1.0, gt=0)
    """Similarities are raised to this power (higher: the closest users count more)."""
    history_weight: float = Field(1.0, ge=0)
    """Weight of history overlap beside user-text similarity when finding similar users."""
    content_weight: float = Field(0.5, ge=0)
    """Weight of the text match of the chosen items, tags or free text with item text."""
    popularity_weight: float = Field(0.0, ge=0)
    """Extra weight of popularity (max-normalised); the map already starts from it."""


class ColdStartUser(_TextModel):
    """Users known by attributes, interest tags or a handful of chosen items (onboarding).

    score(u, .) = norm(p + (x_u - x_mean) W) + neighbor_weight * norm(sum_v s(u, v)^a r_v)
                  + content_weight * norm(cos(q_u, item texts)) + popularity_weight * norm(p)
    where x_u is the user-text vector (attributes, tags, free text), p the training
    interaction rate of each item (popularity), W the ridge map from centred user-text vectors
    to centred interaction rows, W = (Xc^T Xc + reg * tr(Xc^T Xc) / d * I)^-1 Xc^T (R - p)
    (attribute-to-feature mapping for cold start, Gantner et al., ICDM 2010), s(u, v) the
    text cosine plus history_weight times the history overlap (cosine of binary rows) over the
    n_neighbors most similar training users v, q_u the chosen items' and the tags' or free
    text's vectors, and norm scales a row to maximum 1 (negative parts clipped).
    """

    name = "coldstart_user"
    config_class = ColdStartUserConfig
    config: ColdStartUserConfig
    uses_side_information = True

    def _fit(self, dataset: Dataset) -> None:
        self._fit_text(dataset, users=True)
        m = dataset.matrix().tocsr().astype(np.float32)
        m.data = np.abs(m.data)
        self.neighbors = np.flatnonzero(np.diff(m.indptr) > 0)  # users with training data
        self.votes = m[self.neighbors]
        binary = self.votes.copy()
        binary.data[:] = 1.0
        norms = np.sqrt(np.asarray(binary.sum(axis=1)).ravel())
        self.vote_norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        n, d = dataset.n_items, self.item_vectors.shape[1]
        # Interaction rate of each item among users with training data (the popularity prior).
        self.rate = np.zeros(n, np.float32)
        if binary.shape[0]:
            self.rate = np.asarray(binary.mean(axis=0), np.float32).ravel()
        self.text_mean = np.zeros(d, np.float32)
        self.text_map = np.zeros((d, n), np.float32)
        with_text = self.has_user_text[self.neighbors]
        if with_text.any():
            x = self.user_vectors[self.neighbors[with_text]].astype(np.float64)
            self.text_mean = x.mean(axis=0).astype(np.float32)
            xc = x - x.mean(axis=0)
            gram = xc.T @ xc  # (d, d)
            lam = self.config.reg * max(float(np.trace(gram)) / d, 1e-12)
            # Xc^T (R - 1 p^T) = Xc^T R, since the columns of Xc sum to zero.
            rhs = np.asarray((binary[with_text].T @ xc).T, np.float64)  # (d, n)
            self.text_map = np.linalg.solve(gram + lam * np.eye(d), rhs).astype(np.float32)

    def _similarities(self, history: History, uvec: np.ndarray, has_text: np.ndarray) -> np.ndarray:
        """(B, n_neighbors_total) similarity of each row to each user with training data."""
        nb_text = self.user_vectors[self.neighbors]
        sim = np.zeros((len(history), len(self.neighbors)), np.float32)
        if has_text.any():
            sim[has_text] = uvec[has_text] @ nb_text.T
        hw = self.config.history_weight
        if hw > 0 and history.matrix.nnz:
            h = sp.csr_matrix(history.matrix, dtype=np.float32, copy=True)
            h.data[:] = 1.0
            hn = np.sqrt(np.asarray(h.sum(axis=1)).ravel())
            b = self.votes.copy()
            b.data[:] = 1.0
            overlap = np.asarray((h @ b.T).todense(), np.float32)
            overlap /= np.where(hn > 0, hn, 1.0)[:, None] * self.vote_norms[None, :]
            sim += hw * overlap
        # A known user never votes for themselves.
        pos = np.searchsorted(self.neighbors, history.users)
        self_rows = np.flatnonzero((history.users >= 0) & (pos < len(self.neighbors)))
        self_rows = self_rows[self.neighbors[pos[self_rows]] == history.users[self_rows]]
        sim[self_rows, pos[self_rows]] = -np.inf
        return sim

    def score(self, history: History) -> np.ndarray:
        c = self.config
        b = len(history)
        n = len(self.item_vectors)
        uvec, has_text, told = self._row_user_vectors(history)
        # The text-to-items map (popularity where there is no user text).
        mapped = np.tile(self.rate, (b, 1))
        if has_text.any():
            mapped[has_text] += (uvec[has_text] - self.text_mean) @ self.text_map
        out = _normalize_rows(np.clip(mapped, 0, None))
        if len(self.neighbors) and c.neighbor_weight > 0:
            sim = self._similarities(history, uvec, has_text)
            k = min(c.n_neighbors, sim.shape[1])
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            w = np.clip(np.take_along_axis(sim, top, axis=1), 0, None) ** c.neighbor_power
            weights = sp.csr_matrix(
                (w.ravel(), (np.repeat(np.arange(b), k), top.ravel())),
                shape=(b, len(self.neighbors)),
            )
            votes = np.asarray((weights @ self.votes).todense(), np.float32)
            out += c.neighbor_weight * _normalize_rows(votes)
        if c.popularity_weight > 0:
            assert self.popularity is not None
            out += c.popularity_weight * (self.popularity / max(float(self.popularity.max()), 1.0))
        if c.content_weight > 0:
            h = sp.csr_matrix(history.matrix, dtype=np.float32)
            h.data = np.abs(h.data)
            p = np.asarray(h @ self.item_vectors, np.float32)
            p[told] += uvec[told]
            has = (np.diff(h.indptr) > 0) | told
            if has.any():
                cos = normalize(p[has]) @ self.item_vectors.T
                out[has] += c.content_weight * _normalize_rows(np.clip(cos, 0, None))
        assert out.shape == (b, n)
        return out

    def similar_users(self, history: History) -> tuple[np.ndarray, np.ndarray, Any]:
        """The `n_neighbors` most similar training users of a one-row history (text and
        history overlap), their weights sim^neighbor_power and their vote rows."""
        cfg = self.config
        uvec, has_text, _ = self._row_user_vectors(history)
        sim = self._similarities(history, uvec, has_text)[0]
        k = min(cfg.n_neighbors, len(sim))
        top = np.argpartition(-sim, k - 1)[:k]
        w = np.clip(sim[top], 0, None) ** cfg.neighbor_power
        keep = w > 0
        return self.neighbors[top[keep]], w[keep].astype(np.float64), self.votes[top[keep]]

    def contributions(self, history: History, items: np.ndarray) -> Contributions:
        """Each part's exact share of the score, measured by scoring again without it:
        similar users, content ("interest" when it came from tags or free text), popularity,
        and the rest, the map from the user's attributes and text ("profile")."""
        c = self.config
        full = self.score(history)[0, items].astype(np.float64)
        parts: dict[str, np.ndarray] = {}
        for part, key in (
            ("similar_users", "neighbor_weight"),
            ("content", "content_weight"),
            ("popular", "popularity_weight"),
        ):
            if getattr(c, key) > 0:
                m = copy.copy(self)
                m.config = c.model_copy(update={key: 0.0})
                parts[part] = full - m.score(history)[0, items].astype(np.float64)
        parts["profile"] = full - sum(parts.values())
        if "content" in parts and self._row_user_vectors(history)[2][0]:
            parts["interest"] = parts.pop("content")
        return Contributions.of_parts(full, "coldstart_user neighbours", **parts)

    def _add_items(
        self,
        vecs: np.ndarray,
        side: np.ndarray,
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None,
        attributes: Sequence[Mapping[str, Any] | None] | None,
    ) -> None:
        """New items: no votes, interaction rate 0, nothing from the text-to-items map."""
        k = len(vecs)
        self.votes = _widen(self.votes, self.votes.shape[1] + k)
        self.rate = np.concatenate([self.rate, np.zeros(k, np.float32)])
        self.text_map = np.hstack(
            [self.text_map, np.zeros((self.text_map.shape[0], k), np.float32)]
        )

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **self._text_state(),
            "neighbors": self.neighbors,
            **sparse_state("votes", self.votes),
            "vote_norms": self.vote_norms,
            "rate": self.rate,
            "text_mean": self.text_mean,
            "text_map": self.text_map,
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._set_text_state(state)
        self.neighbors = state["neighbors"]
        self.votes = sparse_from_state(state, "votes")
        self.vote_norms = state["vote_norms"]
        self.rate = state["rate"]
        self.text_mean = state["text_mean"]
        self.text_map = state["text_map"]
