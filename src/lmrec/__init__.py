"""lmrec: recommendations from collaborative filtering, Transformer sequence models and
pretrained language models, behind one contract, over a SQL store.

Importing `lmrec` is cheap: heavy parts (torch, sentence-transformers) load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Dataset", "Store", "Vocabulary", "__version__"]


def __getattr__(name: str):  # lazy imports keep `import lmrec` light
    if name in ("Dataset", "Vocabulary"):
        from lmrec import data

        return getattr(data, name)
    if name == "Store":
        from lmrec.store import Store

        return Store
    raise AttributeError(f"module 'lmrec' has no attribute {name!r}")
