"""Neural building blocks (torch): Transformer layers, sequence networks and the trainer.

Importing `lmrec.nn` loads torch; the model registry imports it only when a neural model is
used.
"""

from lmrec.nn.layers import (
    FeedForward,
    ItemEmbedding,
    MultiHeadAttention,
    TransformerBlock,
    TransformerEncoder,
    causal_mask,
)
from lmrec.nn.sequence import NETWORKS, BERT4RecNet, SASRecNet, SequenceNet, XLNetNet
from lmrec.nn.trainer import (
    TrainConfig,
    Trainer,
    TrainResult,
    is_main_process,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "NETWORKS",
    "BERT4RecNet",
    "FeedForward",
    "ItemEmbedding",
    "MultiHeadAttention",
    "SASRecNet",
    "SequenceNet",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TransformerBlock",
    "TransformerEncoder",
    "XLNetNet",
    "causal_mask",
    "is_main_process",
    "load_checkpoint",
    "save_checkpoint",
]
