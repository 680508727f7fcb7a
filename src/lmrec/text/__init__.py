"""Text for language models: encoders, templates, the vector cache and fine-tuning.

Importing this package is cheap; torch and sentence-transformers load on first encoding.
"""

from lmrec.text.cache import encode_cached, text_hash
from lmrec.text.encoders import (
    DEFAULT_ENCODER,
    ProjectedEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    TfidfEncoder,
    bundled_model_path,
    load_encoder,
    normalize,
)
from lmrec.text.templates import (
    behaviour_text,
    behaviour_texts,
    item_text,
    item_texts,
    user_text,
    user_texts,
)

__all__ = [
    "DEFAULT_ENCODER",
    "ProjectedEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "TfidfEncoder",
    "behaviour_text",
    "behaviour_texts",
    "bundled_model_path",
    "encode_cached",
    "item_text",
    "item_texts",
    "load_encoder",
    "normalize",
    "text_hash",
    "user_text",
    "user_texts",
]
