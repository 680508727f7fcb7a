"""`Vocabulary`: external ids (strings) <-> contiguous integer indices 0..n-1."""

from __future__ import annotations

__all__ = ["Vocabulary"]

from collections.abc import Iterable, Sequence

import numpy as np


class Vocabulary:
    """An ordered, immutable set of external ids; index i names `ids[i]`.

    Ids are kept as a numpy str array, so trailing NUL characters of an id are not kept.

    >>> v = Vocabulary(["u7", "u3"])
    >>> v.index("u3"), v.id(0), v.indices(["u3", "nobody"]).tolist()
    (1, 'u7', [1, -1])
    """

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[str]):
        if isinstance(ids, np.ndarray) and ids.ndim != 1:
            raise ValueError("Vocabulary ids must be one-dimensional")
        arr = np.asarray([str(x) for x in ids], dtype=str)
        if arr.ndim != 1:
            raise ValueError("Vocabulary ids must be one-dimensional")
        self._ids = arr
        self._ids.setflags(write=False)
        self._index: dict[str, int] | None = None
        if len(set(arr.tolist())) != len(arr):
            uniq, counts = np.unique(arr, return_counts=True)
            dup = uniq[counts > 1]
            raise ValueError(
                f"Vocabulary ids must be unique; {len(dup)} repeated, e.g. {str(dup[0])!r}"
            )

    @property
    def ids(self) -> np.ndarray:
        """The external ids in index order (read-only array of str)."""
        return self._ids

    def _map(self) -> dict[str, int]:
        if self._index is None:
            self._index = {x: i for i, x in enumerate(self._ids.tolist())}
        return self._index

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, ext_id: object) -> bool:
        return str(ext_id) in self._map()

    def __iter__(self):
        return iter(self._ids.tolist())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self._ids, other._ids)

    def __hash__(self) -> int:
        return hash(tuple(self._ids.tolist()))

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} ids)"

    def index(self, ext_id: str) -> int:
        """Index of an external id; KeyError naming the id if it is unknown."""
        try:
            return self._map()[str(ext_id)]
        except KeyError:
            raise KeyError(f"unknown id {ext_id!r}") from None

    def get(self, ext_id: str, default: int = -1) -> int:
        """Index of an external id, or `default` if it is unknown."""
        return self._map().get(str(ext_id), default)

    def indices(self, ext_ids: Sequence[str]) -> np.ndarray:
        """Indices of many external ids (int64), -1 where unknown."""
        m = self._map()
        return np.fromiter((m.get(str(x), -1) for x in ext_ids), dtype=np.int64, count=len(ext_ids))

    def id(self, index: int) -> str:
        """The external id at an index."""
        return str(self._ids[index])

    def ids_of(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """The external ids at many indices."""
        return self._ids[np.asarray(indices, dtype=np.int64)].tolist()
