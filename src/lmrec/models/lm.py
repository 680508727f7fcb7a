"""Recommenders built on a pretrained text encoder (default: the bundled all-MiniLM-L6-v2),
re-exported from their modules (`lmcontent`, `lmmf`, `coldstart_user`; the shared text side
in `lm_base`) so that `lmrec.models.lm` keeps working.

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

from lmrec.models.coldstart_user import ColdStartUser, ColdStartUserConfig
from lmrec.models.lmcontent import LMContent, LMContentConfig
from lmrec.models.lmmf import LMMF, LMMFConfig
