"""In-memory, immutable snapshots of the store that models train on."""

from lmrec.data.dataset import Dataset
from lmrec.data.vocab import Vocabulary

__all__ = ["Dataset", "Vocabulary"]
