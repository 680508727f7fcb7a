"""Property tests that pin fast paths to their reference implementations (Hypothesis, small
sizes): the FAISS index against exact ranking, the importer's hand-written splitter against
the `csv` module. (The service's fast path against FastAPI is in `test_service.py`.)"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.errors import DataError
from lmrec.io.importers import _split_csv, _split_unquoted
from lmrec.service.index import VectorIndex

# -- FAISS index vs exact ranking ----------------------------------------------------------------


@st.composite
def _index_cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 6))
    b = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    # Small integer coordinates: exact float32 inner products, and many ties.
    vectors = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    queries = rng.integers(-3, 4, size=(b, d)).astype(np.float32)
    positions = st.lists(st.integers(0, n - 1), max_size=n, unique=True)
    return {
        "vectors": vectors,
        "queries": queries,
        "k": draw(st.integers(0, n + 3)),
        "exclude": [draw(positions) for _ in range(b)],
        "hidden": draw(positions),
        "kind": draw(st.sampled_from(["flat", "ivf"])),
        "nlist": draw(st.integers(1, min(4, n))),
    }


@settings(max_examples=60, deadline=None)
@given(_index_cases())
def test_index_search_is_the_exact_top_k(case: dict) -> None:
    """Exact kinds (flat, and ivf probing every cell) return a true top-k of the inner
    product among the allowed items: not excluded, not hidden, scores exact, best first."""
    x, q, k = case["vectors"], case["queries"], case["k"]
    kw = {"nlist": case["nlist"], "nprobe": case["nlist"]} if case["kind"] == "ivf" else {}
    index = VectorIndex(x, kind=case["kind"], threads=1, **kw)
    if case["hidden"]:
        index.hide(case["hidden"])
    idx, val = index.search(q, k, exclude=case["exclude"])
    exact = q.astype(np.float64) @ x.T.astype(np.float64)
    assert idx.shape == val.shape == (len(q), k)
    for r in range(len(q)):
        allowed = np.ones(len(x), bool)
        allowed[case["exclude"][r]] = False
        allowed[case["hidden"]] = False
        want = np.sort(exact[r][allowed])[::-1][:k]
        got = idx[r][idx[r] >= 0]
        assert len(got) == len(want) and len(set(got.tolist())) == len(got)
        assert allowed[got].all()
        np.testing.assert_allclose(exact[r][got], want)  # same scores: a true top-k
        np.testing.assert_allclose(val[r][: len(got)], want, rtol=1e-6)
        assert (idx[r][len(got) :] == -1).all() and np.isneginf(val[r][len(got) :]).all()


# -- the importer's splitter vs the csv module ---------------------------------------------------

# Characters of unquoted fields: letters, digits, spaces and other whitespace, non-ASCII text and
# the other candidate separators (no quote, no carriage return, no newline).
_FIELD = st.text(alphabet=list("ab1 \t\x0b\x0c\x1c\x85\xa0\u2028éü€;,|:-_."), max_size=4)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[str, str]:
    sep = draw(st.sampled_from([",", "\t", ";", "|"]))
    width = draw(st.integers(1, 4))
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["row", "row", "row", "blank", "ragged"]))
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "  \t", "\x0c", "\x1c", "\u2028 "])))
            continue
        w = width if kind == "row" else draw(st.integers(1, width + 2))
        lines.append(sep.join(draw(_FIELD) for _ in range(w)))
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n"]))
    return sep, text


def _table(t) -> tuple:
    rows = [[str(v) for v in row] for row in t.frame.itertuples(index=False)]
    return t.header, t.header_line, rows, [int(x) for x in t.lines], t.problems


@settings(max_examples=300, deadline=None)
@given(_tables())
def test_unquoted_splitter_matches_the_csv_module(table: tuple[str, str]) -> None:
    """On text without quotes the numpy/Arrow splitter gives what the `csv`-module splitter
    gives: the header, its line, every row's fields and line, and the same problems."""
    sep, text = table
    try:
        want = _table(_split_csv("t.csv", text, sep))
    except DataError as exc:
        with pytest.raises(DataError) as got:
            _split_unquoted("t.csv", text, sep)
        assert str(got.value) == str(exc)
        return
    assert _table(_split_unquoted("t.csv", text, sep)) == want
