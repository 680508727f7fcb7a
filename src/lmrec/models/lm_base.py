"""The shared text side of the language-model recommenders (`lmcontent`, `lmmf`,
`coldstart_user`, `coldstart_item`): the encoder, item and user-text vectors, exact-match side
features, new items from their text, and the encoder-version check on load.

Text vectors come from `lmrec.text.encode_cached`, in-process at fit time (or from a store's
vector cache, `cache_db`). Artifacts hold the vectors and record the encoder version
(`encoder_version`); loading checks that the encoder is still there and unchanged.
"""

from __future__ import annotations

__all__ = ["SideConfig", "TextConfig", "TextModel"]

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data import Dataset, Vocabulary
from lmrec.errors import LmrecError
from lmrec.models.base import History, ModelConfig, Recommender
from lmrec.text.encoders import TextEncoder, TfidfEncoder, load_encoder, normalize
from lmrec.text.templates import item_texts, user_text, user_texts


class TextConfig(ModelConfig):
    encoder: str = "minilm"
    """Text encoder spec: 'minilm', 'minilm-int8', 'minilm-onnx-int8', 'use-m3', 'tfidf[:DIM]',
    'st:PATH', 'onnx-int8:PATH' or a fine-tuned or distilled encoder directory (see
    `lmrec.text.encoders`)."""
    item_template: str | None = None
    """str.format template of item text (title, description, categories, attributes)."""
    user_fields: list[str] | None = None
    """User attributes that make up the user text, in order (None: all of them)."""
    cache_db: str | None = None
    """Store URL whose text-vector cache is read and filled at fit time (None: in-process)."""
    encoder_version: str | None = None
    """Set by `fit`: the versioned name (with content fingerprint) of the encoder the vectors
    came from. Loading a saved model refuses an `encoder` that is missing or now differs."""


class SideConfig(TextConfig):
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
    prefix = next((p for p in ("st:", "onnx-int8:", "onnx:") if low.startswith(p)), "")
    path = Path(spec.strip()[len(prefix) :]).expanduser()
    return prefix + str(path.resolve()) if path.is_dir() else spec


class TextModel(Recommender):
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
        self.check_new_items(ids, texts)
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
