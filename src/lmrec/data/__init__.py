"""In-memory, immutable snapshots of the store that models train on, and their splitters."""

from lmrec.data.dataset import Dataset, snapshot
from lmrec.data.split import (
    SPLITTERS,
    Split,
    cold_start_items,
    cold_start_users,
    kfold,
    leave_one_out,
    random_split,
    temporal_split,
)
from lmrec.data.vocab import Vocabulary

__all__ = [
    "SPLITTERS",
    "Dataset",
    "Split",
    "Vocabulary",
    "cold_start_items",
    "cold_start_users",
    "kfold",
    "leave_one_out",
    "random_split",
    "snapshot",
    "temporal_split",
]
