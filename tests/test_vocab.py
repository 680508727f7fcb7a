"""`Vocabulary`: external ids <-> contiguous indices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmrec.data import Vocabulary


def test_lookups_both_ways() -> None:
    v = Vocabulary(["u7", "u3", 42])
    assert len(v) == 3 and list(v) == ["u7", "u3", "42"]
    assert v.index("u3") == 1 and v.index(42) == 2 and v.id(0) == "u7"
    assert v.get("nobody") == -1 and v.get("nobody", 9) == 9
    assert v.indices(["u3", "nobody", "42"]).tolist() == [1, -1, 2]
    assert v.indices(np.array(["u7"])).dtype == np.int64
    assert v.ids_of([2, 0]) == ["42", "u7"] and v.ids_of(np.array([1])) == ["u3"]
    assert "u7" in v and "u8" not in v
    with pytest.raises(KeyError, match="unknown id 'u8'"):
        v.index("u8")


def test_immutable_equal_and_hashable() -> None:
    a, b = Vocabulary(["x", "y"]), Vocabulary(np.array(["x", "y"]))
    assert a == b and hash(a) == hash(b) and a != Vocabulary(["y", "x"])
    assert a != ["x", "y"]
    with pytest.raises(ValueError):
        a.ids[0] = "z"


def test_rejects_duplicates_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"unique; 1 repeated, e\.g\. 'x'"):
        Vocabulary(["x", "y", "x"])
    with pytest.raises(ValueError, match="one-dimensional"):
        Vocabulary(np.array([["a", "b"]]))
    assert len(Vocabulary([])) == 0


@given(
    st.lists(
        st.text(st.characters(blacklist_characters="\x00"), max_size=8), unique=True, max_size=30
    )
)
def test_round_trip(ids: list[str]) -> None:
    v = Vocabulary(ids)
    assert v.ids_of(v.indices(ids)) == ids
    assert [v.index(x) for x in ids] == list(range(len(ids)))
