"""Transformer sequence recommenders: SASRec, BERT4Rec and an XLNet-style model.

All three read each user's time-ordered item sequence (`Dataset.sequences()`) and, at answer
time, the request's own sequence (`History.sequences`: a known user's stored history followed
by the query's recent items, or an anonymous session alone), so the newest events change the
answer at once, without retraining.

- `sasrec`: causal self-attention, next-item prediction at every position, full-softmax
  cross-entropy (Kang & McAuley, ICDM 2018; Klenitskiy & Vasilev, RecSys 2023), or a sampled
  softmax over `negatives` uniform items for large catalogues (`loss="sampled"`).
- `bert4rec`: bidirectional self-attention, masked item prediction (Sun et al., CIKM 2019).
- `xlnet`: permutation language modelling with two-stream attention (Yang et al., NeurIPS
  2019), as in Transformers4Rec (Moreira et al., RecSys 2021).

Text-aware items (`text="fuse"`): an item's vector is a learned projection of its language-model
text vector (`lmrec.text`, the bundled MiniLM by default) plus a free id offset; items without
training data get their vector from text alone, so they can appear in histories and be
recommended (item cold start). `text="init"` only initialises the id vectors from text.

Training (`lmrec.nn.trainer.Trainer`) stops early on the validation NDCG@10 (full ranking, the
history excluded): the validation set is `fit(dataset, valid=...)` when given (e.g. the
`valid` part of a leave-one-out split), else the last item of each training sequence, held
out from training. Networks and the loop live in `lmrec.nn`; weights are saved as npz arrays.
"""

from __future__ import annotations

__all__ = [
    "BERT4Rec",
    "BERT4RecConfig",
    "DualSASRec",
    "DualSASRecConfig",
    "SASRec",
    "SASRecConfig",
    "SequentialConfig",
    "XLNet",
    "XLNetConfig",
]

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from lmrec.data import Dataset
from lmrec.errors import LmrecError
from lmrec.models.base import History, ModelConfig, Recommender

#: Score of items without any training data when the model has no text to place them.
UNTRAINED_SCORE = -1e4


class SequentialConfig(ModelConfig):
    """Hyperparameters shared by the Transformer sequence models (device, num_threads,
    progress and checkpoint_dir are runtime settings: not saved with the model)."""

    embedding_size: int = Field(64, ge=8)
    """Width C of item vectors and of the Transformer."""
    layers: int = Field(2, ge=1)
    """Transformer blocks."""
    heads: int = Field(2, ge=1)
    """Attention heads (must divide embedding_size)."""
    ffn_mult: int = Field(4, ge=1)
    """Inner width of the feed-forward network, in multiples of embedding_size."""
    init_std: float | None = Field(None, gt=0)
    """Standard deviation of the initial item id vectors (None: 1 / sqrt(embedding_size)).
    Xavier-normal initialisation, as RecTools' SASRec uses, is about sqrt(2 / n_items)."""
    dropout: float | None = Field(None, ge=0, lt=1)
    """Dropout on embeddings, attention weights and residual branches. None: scaled to the
    data by `auto_dropout` (0.5 for short sparse histories such as Amazon's, 0.2 for long
    dense ones such as MovieLens')."""
    item_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the item vectors themselves in training, where the sequence reads them and
    where the softmax scores them (RecTools' item network drops its id embeddings so)."""
    block: Literal["pre_ln", "sasrec"] = "pre_ln"
    """Transformer block layout: pre_ln (x + Attn(LN(x)), x + FFN(LN(x)); Xiong et al., ICML
    2020) or sasrec (the SASRec authors' block, as RecTools keeps it: the residual stream
    normalised in every block, keys and values from the un-normalised input, ReLU).
    `lmrec.nn.layers.SASRecBlock`."""
    max_len: int = Field(50, ge=2)
    """Most recent items of a sequence that the model reads."""
    batch_size: int = Field(64, ge=1)
    """Sequences per gradient step (split over processes under torchrun)."""
    epochs: int = Field(200, ge=1)
    """Most passes over the sequences; early stopping usually ends training sooner."""
    patience: int | Literal["auto"] | None = "auto"
    """Stop after this many epochs without a better validation NDCG@10 (None: train all
    `epochs` on every item, with no validation; "auto": scaled to the data by
    `auto_patience`, long for short sparse histories whose validation curves plateau for
    tens of epochs before rising again)."""
    train_windows: Literal["last", "all"] = "all"
    """Train on each sequence's last `max_len` items only, or on all of it, cut from the end
    into consecutive windows of `max_len` items."""
    learning_rate: float = Field(3e-3, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay of the weight matrices."""
    valid_users: int = Field(10_000, ge=1)
    """Validate on at most this many users (a seeded sample), to bound the cost per epoch."""
    text: Literal["none", "init", "fuse"] = "none"
    """Item text: none; init (id vectors start from the text vectors' principal components);
    fuse (item vector = projection of the text vector + id offset; new items from text)."""
    id_dropout: float = Field(0.1, ge=0, lt=1)
    """With text='fuse': chance that an item's id offset is dropped in a training step, so the
    text projection alone learns to place items (DropoutNet, NeurIPS 2017)."""
    encoder: str = "minilm"
    """Text encoder spec (see `lmrec.text.load_encoder`): 'minilm', 'tfidf[:DIM]', 'st:PATH'."""
    item_template: str | None = None
    """str.format template of item text (title, description, categories, attributes)."""
    seed: int = 0
    """Seed of initialisation, batch order and masking."""
    device: str = Field("auto", exclude=True)
    """'auto' (CUDA when available, with mixed precision), 'cpu', 'cuda' or 'cuda:N'."""
    num_threads: int | None = Field(None, ge=1, exclude=True)
    """CPU threads of torch while training (None: torch's default)."""
    progress: bool = Field(True, exclude=True)
    """Report each epoch on stderr while training (a progress bar on a terminal, else a line
    per epoch: loss, validation NDCG@10, best so far, elapsed and estimated time left)."""
    checkpoint_dir: str | None = Field(None, exclude=True)
    """Write the best network (constructor arguments + weights) here during training."""
    epsilon: float | None = Field(None, gt=0)
    """Differential privacy by DP-SGD (`lmrec.privacy.DPSGD`; None: none): the network is
    (epsilon, delta)-DP for adding or removing one user. Each step draws each user with
    chance batch_size / n_users (Poisson sampling), clips each user's gradient (all of their
    windows) to `max_grad_norm` and adds Gaussian noise whose multiplier the RDP accountant
    sets for `epochs` epochs. Early stopping reads validation data, which the guarantee does
    not cover unless it is public: set patience=None for a guarantee over everything."""
    delta: float = Field(1e-5, gt=0, lt=1)
    """The delta of (epsilon, delta)-DP (must be below 1 / the number of users)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """With epsilon: the L2 bound of one user's gradient in a step."""

    @model_validator(mode="after")
    def _patience_positive(self) -> Self:
        if isinstance(self.patience, int) and self.patience < 1:
            raise ValueError(f"patience must be at least 1, 'auto' or None, got {self.patience}")
        return self

    @model_validator(mode="after")
    def _heads_divide(self) -> Self:
        if self.heads is not None and self.embedding_size % self.heads:
            raise ValueError(
                f"heads ({self.heads}) must divide embedding_size ({self.embedding_size})"
            )
        return self


#: Above this many items, SASRec's loss="auto" trains with the sampled softmax.
FULL_SOFTMAX_ITEMS = 20_000


class SASRecConfig(SequentialConfig):
    """SASRec's hyperparameters. Its network shape, regularisation and optimiser step
    (`layers`, `heads`, `ffn_mult`, `block`, `item_dropout`, `dropout`, `learning_rate`,
    `batch_size`) are None by default: scaled to the data by `auto_shape` (one narrow block
    of the SASRec authors' layout with item-vector dropout at lr 1e-3 for short sparse
    histories, two pre-LN blocks at 3e-3 for long dense ones); a value given is used as it
    is."""

    dropout: float | None = Field(None, ge=0, lt=1)
    """Dropout on embeddings, attention weights and residual branches. None: the sparse
    shape's 0.3 (`auto_shape`), else scaled to the data by `auto_dropout`."""
    item_dropout: float | None = Field(None, ge=0, lt=1)
    """Dropout on the item vectors themselves in training, where the sequence reads them and
    where the softmax scores them (RecTools' item network drops its id embeddings so).
    None: `auto_shape` (0.2 for short sparse histories, 0 for long dense ones)."""
    block: Literal["pre_ln", "sasrec"] | None = None
    """Transformer block layout (see `SequentialConfig.block`; None: `auto_shape`, the
    SASRec authors' block for short sparse histories, pre_ln for long dense ones)."""

    layers: int | None = Field(None, ge=1)
    """Transformer blocks (None: `auto_shape`)."""
    heads: int | None = Field(None, ge=1)
    """Attention heads, must divide embedding_size (None: `auto_shape`)."""
    ffn_mult: int | None = Field(None, ge=1)
    """Feed-forward inner width in multiples of embedding_size (None: `auto_shape`)."""
    learning_rate: float | None = Field(None, gt=0)
    """AdamW learning rate (None: `auto_shape`)."""
    batch_size: int | None = Field(None, ge=1)
    """Sequences per gradient step (None: `auto_shape`)."""
    loss: Literal["auto", "ce", "sampled"] = "auto"
    """ce: softmax over the whole catalogue; sampled: over the target and `negatives` items
    shared by the batch, logQ-corrected (for catalogues too large for a full softmax); auto:
    ce up to `full_softmax_items` items, sampled above (the output layer's cost per token
    grows with the catalogue)."""
    full_softmax_items: int = Field(FULL_SOFTMAX_ITEMS, ge=0)
    """loss="auto" trains with the full softmax up to this many items. On Amazon Beauty
    (12,101 items), under `auto_shape`'s sparse shape, the full softmax reached validation
    NDCG@10 0.0530 against 0.0496 for 1,024 shared negatives (seed 0; test 0.0475 vs 0.0429)
    at 3-4x the time per epoch on 2 CPU cores (`benchmarks/text_aware.md`, 2026-12-07); the
    cost per step grows with the catalogue, so larger ones get the sampled softmax."""
    negatives: int = Field(1024, ge=1)
    """Negatives per batch (negatives_per="batch") or per target ("token") with the sampled
    softmax."""
    negatives_per: Literal["batch", "token"] = "batch"
    """With the sampled softmax: one set of `negatives` shared by every target of a batch
    (one (targets x negatives) product), or a fresh set for every target, as RecTools and the
    published SASRec-SS setting draw them. On Beauty's validation part, under `auto_shape`'s
    sparse shape, 1,024 shared popularity-drawn negatives tie 256 fresh uniform ones per target
    (valid NDCG@10 0.0495 vs 0.0496 over 3 seeds) and train 5-7x faster with 40% less memory
    (`benchmarks/text_aware.md`, 2026-12-07)."""
    sampler: Literal["uniform", "popularity"] = "popularity"
    """How the sampled softmax draws its negatives: in proportion to training popularity
    (the items a full softmax pushes down hardest) or uniformly; either way the logits are
    logQ-corrected (Yi et al., RecSys 2019)."""


class BERT4RecConfig(SequentialConfig):
    mask_prob: float = Field(0.4, gt=0, lt=1)
    """Chance that an item of a training sequence is masked and predicted (0.4 and patience 15
    chosen on ML-100K validation: NDCG@10 0.113 vs 0.098 with 0.2 and patience 10)."""
    patience: int | None = Field(15, ge=1)
    """Stop after this many epochs without a better validation NDCG@10 (None: train all
    `epochs`, with no validation). Masked training needs longer than SASRec."""
    last_target_prob: float = Field(0.1, ge=0, le=1)
    """Chance that a training sequence has only its last item masked (the answering case)."""


class XLNetConfig(SequentialConfig):
    target_fraction: float = Field(0.5, gt=0, le=1)
    """Fraction of a sequence, at the end of the random factorisation order, that is
    predicted (XLNet's partial prediction; 0.5 chosen on ML-100K validation: NDCG@10 0.106
    vs 0.102 with 0.25)."""
    last_target_prob: float = Field(0.1, ge=0, le=1)
    """Chance that a training sequence is read left to right and only its last item predicted
    (the answering case)."""


def auto_dropout(seqs: Sequence[np.ndarray]) -> float:
    """Dropout for training sequences of this length: 0.5 when the mean training sequence
    has at most 20 items, 0.2 from 50 items on, linear in between. Short histories over a
    large catalogue give each item vector few updates and overfit fast (SASRec's own setting
    for Amazon Beauty and Games was 0.5, for MovieLens-1M 0.2); chosen on the validation
    parts of Amazon Beauty and ML-100K (`benchmarks/text_aware.md`)."""
    lengths = [len(s) for s in seqs]
    mean = float(np.mean(lengths)) if lengths else 0.0
    return float(np.clip(0.5 - 0.3 * (mean - 20.0) / 30.0, 0.2, 0.5))


def auto_patience(seqs: Sequence[np.ndarray]) -> int:
    """Early-stopping patience for training sequences of this length: PATIENCE_SPARSE epochs
    when the mean training sequence has at most 20 items, 10 from 50 items on, linear in
    between. On Amazon Beauty (mean 7 items) the validation NDCG@10 of the sequence models
    plateaus for 10-30 epochs and then rises again (dualsasrec: best 0.0445 at epoch 29 with
    patience 10, 0.0562 at epoch 132 with patience 20; the published SASRec-SS setting
    trains 200 epochs with patience 50); on MovieLens (mean 104) patience 10 loses nothing
    (`benchmarks/text_aware.md`). Under 1,000 training sequences it is 10: an epoch is a
    few dozen steps there, and the long plateaus were seen on tens of thousands of users."""
    lengths = [len(s) for s in seqs]
    if len(lengths) < 1000:
        return 10
    mean = float(np.mean(lengths))
    frac = float(np.clip((mean - 20.0) / 30.0, 0.0, 1.0))
    return round(PATIENCE_SPARSE - (PATIENCE_SPARSE - 10) * frac)


#: `auto_patience` of short sparse histories.
PATIENCE_SPARSE = 50

#: The settings `auto_shape` resolves, and their values for each kind of data. The sparse
#: shape also sets the dropout (the dense one leaves it to `auto_dropout`).
SHAPE_FIELDS = ("layers", "heads", "ffn_mult", "learning_rate", "batch_size", "block",
                "item_dropout")  # fmt: skip
SHAPE_DENSE = {"layers": 2, "heads": 2, "ffn_mult": 4, "learning_rate": 3e-3, "batch_size": 64,
               "block": "pre_ln", "item_dropout": 0.0}  # fmt: skip
SHAPE_SPARSE = {"layers": 1, "heads": 1, "ffn_mult": 1, "learning_rate": 1e-3, "batch_size": 128,
                "block": "sasrec", "item_dropout": 0.2, "dropout": 0.3}  # fmt: skip


def auto_shape(seqs: Sequence[np.ndarray]) -> dict[str, Any]:
    """SASRec's network shape, regularisation and optimiser step for training sequences of
    this length: SHAPE_SPARSE (one block of the SASRec authors' layout, one head, a 1x
    feed-forward, dropout 0.3 and item-vector dropout 0.2, lr 1e-3, 128 sequences a step)
    when the mean training sequence has fewer than 35 items (the middle of `auto_dropout`'s
    ramp) over at least 1,000 sequences, else SHAPE_DENSE (two pre-LN blocks, two heads, 4x,
    no item-vector dropout, lr 3e-3, 64 a step, dropout by `auto_dropout`). On Amazon Beauty
    (mean 7 items) the sparse shape, the eSASRec paper's setting for Beauty, Sports and Toys,
    reached validation NDCG@10 0.0492 against 0.0393 for the dense one (test 0.0435 vs
    0.0332, both with 256 uniform negatives per target); with the full softmax, the SASRec
    authors' block with RecTools' dropout (0.2, and 0.2 on the item vectors) reached
    0.0552 +- 0.0002 against 0.0529 +- 0.0005 for pre-LN blocks with dropout 0.5 (3 seeds),
    and dropout 0.3 in place of 0.2 0.0569 against 0.0550 (seed 0; item dropout 0.3: 0.0550;
    two blocks: lower; `benchmarks/text_aware.md`, 2026-12-07/08). The dense shape was
    chosen on MovieLens' validation parts (mean 104 items, `benchmarks/sequential.md`).
    Under 1,000 sequences it is the dense shape: an epoch is a few steps there, too few for
    lr 1e-3 over large batches."""
    lengths = [len(s) for s in seqs]
    if len(lengths) < 1000 or float(np.mean(lengths)) >= 35.0:
        return dict(SHAPE_DENSE)
    return dict(SHAPE_SPARSE)


def _chunks(seqs: Sequence[np.ndarray], width: int, overlap: int) -> list[np.ndarray]:
    """Each sequence cut from its end into windows of at most `width` items, consecutive
    windows sharing `overlap` items; windows shorter than 2 items are left out."""
    out = []
    step = width - overlap
    for s in seqs:
        end = len(s)
        while end >= 2:
            out.append(s[max(0, end - width) : end])
            if end - width <= 0:
                break
            end -= step
    return out


def _windows(seqs: Sequence[np.ndarray], width: int) -> np.ndarray:
    """(U, width) int64 tokens: each sequence's last `width` items + 1, left-padded with 0."""
    out = np.zeros((len(seqs), width), np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s[-width:], np.int64)
        if len(s):
            out[r, width - len(s) :] = s + 1
    return out


def _trim(*arrays: np.ndarray) -> list[np.ndarray]:
    """Drop the leading columns that are padding in every row of the first array."""
    used = np.flatnonzero(arrays[0].any(axis=0))
    start = int(used[0]) if len(used) else arrays[0].shape[1] - 1
    return [a[:, start:] for a in arrays]


class _Task:
    """Batches and validation for the trainer (see `lmrec.nn.trainer.TrainTask`)."""

    def __init__(
        self,
        model: _SequenceModel,
        rows: np.ndarray,
        valid_hist: list[np.ndarray],
        valid_target: np.ndarray,
        device: Any,
    ):
        self.model = model
        self.rows = rows
        self.lengths = (rows > 0).sum(axis=1)
        self.valid_hist = valid_hist
        self.valid_target = valid_target
        self.device = device
        #: DP-SGD: the row indices of each user (the unit of privacy); set by the model.
        self.unit_rows: list[np.ndarray] = []

    def unit_batches(self, units: np.ndarray, epoch: int) -> Iterator[dict[str, Any]]:
        """One batch per drawn user: all of that user's training rows."""
        import torch

        rng = np.random.default_rng([self.model.config.seed, epoch, 104729])
        for u in units.tolist():
            batch = self.model._train_batch(self.rows[self.unit_rows[u]], rng)
            yield {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[dict[str, Any]]:
        """Shuffled batches of similar-length rows (less padding): the rows are shuffled, cut
        into pools of 32 batches, sorted by length inside a pool, and the batches shuffled."""
        import torch

        c = self.model.config
        size = self.model.shape_["batch_size"]
        rng = np.random.default_rng([c.seed, epoch])
        order = rng.permutation(len(self.rows))
        pool = 32 * size
        batches = []
        for p in range(0, len(order), pool):
            chunk = order[p : p + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[s : s + size] for s in range(0, len(chunk), size))
        mask_rng = np.random.default_rng([c.seed, epoch, rank])
        for b in rng.permutation(len(batches)):
            glob = batches[b]
            if len(glob) < world:
                continue
            batch = self.model._train_batch(self.rows[glob[rank::world]], mask_rng)
            yield {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}

    def validate(self, module: Any, rank: int, world: int) -> tuple[float, float]:
        users = np.arange(len(self.valid_target))[rank::world]
        total = 0.0
        for s in range(0, len(users), 512):
            u = users[s : s + 512]
            hist = [self.valid_hist[i] for i in u]
            scores = self.model._scores(module, hist, self.device)  # (b, n)
            target = self.valid_target[u]
            t_score = scores[np.arange(len(u)), target]
            rank_ = (scores > t_score[:, None]).sum(axis=1)
            hit = (rank_ < 10) & np.isfinite(t_score)
            total += float(np.where(hit, 1.0 / np.log2(rank_ + 2.0), 0.0).sum())
        return total, float(len(users))


class _SequenceModel(Recommender):
    """Shared fit / score / persistence of the Transformer sequence recommenders."""

    config: SequentialConfig
    network: ClassVar[str]
    trains_in_processes = True
    #: Items that consecutive training windows share (SASRec: 1, so every next-item pair of a
    #: long sequence is trained once).
    window_overlap: ClassVar[int] = 0

    def __init__(self, config: Any = None, **params: Any):
        super().__init__(config, **params)
        self.net: Any = None
        self.trained_items: np.ndarray | None = None
        self.train_result: Any = None
        self._valid: Dataset | None = None
        #: The budget a DP-trained model spent (`lmrec.privacy.Privacy.as_dict`), else None.
        self.privacy_: dict[str, Any] | None = None
        #: The dropout trained with (the config's, or `auto_dropout` of the training data).
        self.dropout_: float = self.config.dropout if self.config.dropout is not None else 0.2
        #: The early-stopping patience trained with (the config's, or `auto_patience`).
        self.patience_: int | None = None
        #: The network shape and optimiser step trained with (SHAPE_FIELDS: the config's, or
        #: `auto_shape` of the training data where the config leaves them None).
        self.shape_: dict[str, Any] = self._shape(SHAPE_DENSE)

    def fit(self, dataset: Dataset, valid: Dataset | None = None) -> Self:
        """Learn from `dataset`; stop early on NDCG@10 of `valid` (each user's first item
        there, after their `dataset` sequence) when given, else on each training sequence's
        held-out last item."""
        if valid is not None and (valid.items != dataset.items or valid.users != dataset.users):
            raise LmrecError(f"{self.name}: valid must share the training set's vocabularies")
        self._valid = valid
        try:
            return super().fit(dataset)
        finally:
            self._valid = None

    # -- batches -------------------------------------------------------------------------------

    def _train_window(self) -> int:
        """Width of the stored training rows."""
        return self.config.max_len

    def _train_batch(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _inference_tokens(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    # -- networks --------------------------------------------------------------------------------

    def _net_args(self, text_dim: int) -> dict[str, Any]:
        c = self.config
        return {
            "width": c.embedding_size,
            "layers": self.shape_["layers"],
            "heads": self.shape_["heads"],
            "ffn_mult": self.shape_["ffn_mult"],
            "dropout": self.dropout_,
            "max_len": c.max_len,
            "text_mode": c.text,
            "id_dropout": c.id_dropout,
            "text_dim": text_dim,
            "init_std": c.init_std,
            "item_dropout": self.shape_["item_dropout"],
            "block": self.shape_["block"],
            **self._extra_net_args(),
        }

    def _extra_net_args(self) -> dict[str, Any]:
        return {}

    def _build_net(self, n_items: int, text: np.ndarray | None, text_dim: int = 0) -> Any:
        """The network and its constructor arguments; without `text`, a text-mode network
        gets zero placeholders of width `text_dim` (filled by loading saved weights)."""
        import torch

        from lmrec.nn.sequence import NETWORKS

        args = self._net_args(text_dim if text is None else text.shape[1])
        t = None if text is None else torch.from_numpy(np.asarray(text, np.float32))
        return NETWORKS[self.network](n_items, text=t, **args), args

    def chosen(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.config.dropout is None:
            out["dropout"] = self.dropout_
        if self.config.patience == "auto" and self.patience_ is not None:
            out["patience"] = self.patience_
        if self.train_result is not None:
            out.update({k: v for k, v in self.shape_.items() if getattr(self.config, k) is None})
        tr = self.train_result
        if tr is not None:
            out["best_epoch"], out["epochs_run"] = tr.best_epoch, tr.epochs_run
        return out

    def _text_vectors(self, dataset: Dataset) -> np.ndarray:
        from lmrec.text.cache import item_vectors

        return item_vectors(dataset, self.config.encoder, self.config.item_template)

    @property
    def accepts_new_items(self) -> bool:  # type: ignore[override]
        """Items the model was not trained on are placed by their text (text="fuse", or
        `dualsasrec` with a text view) when the encoder is a fixed one (not TF-IDF, which is
        fitted per catalogue)."""
        return self._places_new_items() and not self.config.encoder.lower().startswith("tfidf")

    def _places_new_items(self) -> bool:
        return self.config.text == "fuse"

    def with_items(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        categories: Sequence[Sequence[Any]] | None = None,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Self:
        """A copy whose catalogue also holds these new items, placed by the encoder's vector
        of their text (text="fuse": the text projection alone; `dualsasrec`: the vectors of their
        text neighbours among trained items), with popularity 0 for the fallbacks; the
        original is left as it was."""
        import copy

        import torch

        from lmrec.data import Vocabulary
        from lmrec.text.encoders import load_encoder

        if not ids:
            return self
        if not self.accepts_new_items:
            return super().with_items(ids, texts, categories, attributes)  # type: ignore[return-value]
        self.check_fitted()
        assert self.items is not None and self.popularity is not None
        assert self.trained_items is not None
        self.check_new_items(ids, texts)
        vecs = load_encoder(self.config.encoder).encode([str(t) for t in texts])
        new = copy.copy(self)
        new.items = Vocabulary([*self.items.ids.tolist(), *ids])
        new.popularity = np.concatenate([self.popularity, np.zeros(len(ids), np.float32)])
        new.trained_items = np.concatenate([self.trained_items, np.zeros(len(ids), bool)])
        with torch.no_grad():
            new.net = self.net.with_new_items(torch.from_numpy(np.asarray(vecs, np.float32)))
        new.net.eval()
        return new

    def _uses_text(self) -> bool:
        """Whether the network reads the items' text vectors."""
        return self.config.text != "none"

    def _shape(self, auto: Mapping[str, Any]) -> dict[str, Any]:
        """SHAPE_FIELDS: the config's values, `auto`'s where the config leaves them None."""
        c = self.config
        return {k: auto[k] if getattr(c, k) is None else getattr(c, k) for k in SHAPE_FIELDS}

    def _auto_shape(self, train_seqs: Sequence[np.ndarray]) -> dict[str, Any]:
        """The shape that fills the config's None SHAPE_FIELDS (and, where it has one, the
        dropout) for these training sequences: SHAPE_DENSE here (the models whose configs
        set every shape field), `auto_shape` for SASRec."""
        return dict(SHAPE_DENSE)

    def _text_places_items(self) -> bool:
        """Whether items without training data get their vector from text (else they are
        scored `UNTRAINED_SCORE`)."""
        return self.config.text != "none"

    # -- training ------------------------------------------------------------------------------

    def _fit(self, dataset: Dataset) -> None:
        import torch

        from lmrec.nn.trainer import TrainConfig, Trainer, resolve_device

        c = self.config
        device = resolve_device(c.device)
        seqs = dataset.sequences()
        rng = np.random.default_rng(c.seed)
        if self._valid is not None:
            vseq = self._valid.sequences()
            users = np.flatnonzero(
                [len(v) > 0 and len(s) > 0 for s, v in zip(seqs, vseq, strict=True)]
            )
            valid_hist = [seqs[u] for u in users]
            valid_target = np.array([vseq[u][0] for u in users], np.int64)
            train_seqs = list(seqs)
        elif c.patience is not None:  # "auto" or a number
            users = np.flatnonzero([len(s) >= 2 for s in seqs])
            valid_hist = [seqs[u][:-1] for u in users]
            valid_target = np.array([seqs[u][-1] for u in users], np.int64)
            train_seqs = [s[:-1] if len(s) >= 2 else s for s in seqs]
        else:
            users, valid_hist, valid_target = np.zeros(0, np.int64), [], np.zeros(0, np.int64)
            train_seqs = list(seqs)
        if len(users) > c.valid_users:
            keep = np.sort(rng.choice(len(users), c.valid_users, replace=False))
            valid_hist = [valid_hist[i] for i in keep]
            valid_target = valid_target[keep]
        train_seqs = [s for s in train_seqs if len(s) >= 2]
        dp = c.epsilon is not None
        if not train_seqs:
            raise LmrecError(
                f"{self.name}: no training sequence has two or more items "
                f"({dataset.n_interactions} interactions over {dataset.n_users} users)"
            )
        shape = dict(SHAPE_DENSE) if dp else self._auto_shape(train_seqs)
        # DP: nothing read from the data
        auto = 0.2 if dp else shape.get("dropout", auto_dropout(train_seqs))
        self.dropout_ = c.dropout if c.dropout is not None else auto
        auto_p = 10 if dp else auto_patience(train_seqs)
        self.patience_ = auto_p if c.patience == "auto" else c.patience
        self.shape_ = self._shape(shape)
        if c.embedding_size % self.shape_["heads"]:
            raise LmrecError(
                f"{self.name}: embedding_size {c.embedding_size} is not divisible by the "
                f"{self.shape_['heads']} attention heads chosen for this data; set heads"
            )
        counts = np.bincount(np.concatenate(train_seqs), minlength=dataset.n_items)
        if dp:  # which items have data (and how much) is not released: all items are trained
            counts = np.ones(dataset.n_items, np.int64)
        self.trained_items = counts > 0
        text = self._text_vectors(dataset) if self._uses_text() else None
        torch.manual_seed(c.seed)
        net, args = self._build_net(dataset.n_items, text)
        net.set_item_counts(torch.from_numpy(counts))
        width = self._train_window()
        owner = np.arange(len(train_seqs))
        if c.train_windows == "all":
            pieces = [_chunks([s], width, overlap=self.window_overlap) for s in train_seqs]
            owner = np.repeat(owner, [len(p) for p in pieces])
            train_seqs = [w for p in pieces for w in p]
        rows = _windows(train_seqs, width)
        task = _Task(self, rows, valid_hist, valid_target, device)
        private = self._private_training(task, owner)
        trainer = Trainer(
            TrainConfig(
                epochs=c.epochs,
                patience=self.patience_ if len(valid_target) else None,
                learning_rate=self.shape_["learning_rate"],
                weight_decay=c.weight_decay,
                seed=c.seed,
                device=c.device,
                num_threads=c.num_threads,
                progress=c.progress,
                checkpoint_dir=c.checkpoint_dir,
            )
        )
        self.train_result = trainer.fit(
            net,
            task,
            init_args={"n_items": dataset.n_items, **args},
            label=self.name,
            dp=private,
        )
        if private is not None:
            self.privacy_ = private.privacy(self._privacy_note(len(valid_target) > 0)).as_dict()
        self.net = net
        self.net.eval()

    def _private_training(self, task: _Task, owner: np.ndarray) -> Any:
        """With `epsilon`: the DP-SGD run (users = the owners of the training rows)."""
        from lmrec.privacy import DPSGD

        c = self.config
        if c.epsilon is None:
            return None
        n_units = int(owner.max()) + 1
        order = np.argsort(owner, kind="stable")
        task.unit_rows = np.split(order, np.cumsum(np.bincount(owner, minlength=n_units))[:-1])
        return DPSGD(
            c.epsilon,
            c.delta,
            c.max_grad_norm,
            n_units,
            self.shape_["batch_size"],
            c.epochs,
            c.seed,
            f"{self.name} (epsilon)",
        )

    def _privacy_note(self, validated: bool) -> str:
        parts = ["the popularity fallback and the saved training history are not private"]
        if validated:
            src = "the validation part" if self._valid is not None else "held-out last items"
            parts.insert(0, f"early stopping read {src} (not covered unless public)")
        return "; ".join(parts)

    # -- answering -----------------------------------------------------------------------------

    def _raw_scores(
        self, net: Any, seqs: Sequence[np.ndarray], device: Any, items: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, n_items) float32 scores of the item after each sequence (or of the columns
        `items` only: (B, len(items)))."""
        import torch

        tokens = torch.from_numpy(self._inference_tokens(seqs)).to(device)
        with torch.no_grad():
            hidden = net.last_hidden(tokens)
            if items is None:
                s = net.scores(hidden).float().cpu().numpy()
            else:
                table = net.item_emb.items(None)[torch.from_numpy(items).to(device)]
                s = (hidden @ table.T).float().cpu().numpy()
        if not self._text_places_items() and self.trained_items is not None:
            trained = self.trained_items if items is None else self.trained_items[items]
            s[:, ~trained] = UNTRAINED_SCORE
        return s

    def _scores(self, net: Any, seqs: Sequence[np.ndarray], device: Any) -> np.ndarray:
        """`_raw_scores` with the sequences' own items set to -inf."""
        s = self._raw_scores(net, seqs, device)
        lens = np.fromiter((len(x) for x in seqs), np.int64, len(seqs))
        if lens.sum():
            s[np.repeat(np.arange(len(seqs)), lens), np.concatenate(seqs)] = -np.inf
        return s

    def score(self, history: History) -> np.ndarray:
        """Scores of the item after each row's sequence (its own items are scored too; the
        ranking excludes them when asked)."""
        self._check_fitted()
        device = next(self.net.parameters()).device
        out = np.empty((len(history), len(self.items)), np.float32)
        for s in range(0, len(history), 512):
            seqs = history.sequences[s : s + 512]
            out[s : s + len(seqs)] = self._raw_scores(self.net, seqs, device)
        return out

    def score_columns(self, history: History, items: np.ndarray) -> np.ndarray:
        """The scores of the columns `items` only: hidden states times those items' vectors."""
        self._check_fitted()
        device = next(self.net.parameters()).device
        out = np.empty((len(history), len(items)), np.float32)
        for s in range(0, len(history), 512):
            seqs = history.sequences[s : s + 512]
            out[s : s + len(seqs)] = self._raw_scores(self.net, seqs, device, items)
        return out

    # -- persistence ---------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        from lmrec.nn.trainer import state_arrays

        assert self.trained_items is not None
        extra = {}
        if getattr(self, "privacy_", None):
            extra["privacy"] = np.asarray(json.dumps(self.privacy_))
        return {
            **extra,
            "trained_items": self.trained_items,
            "dropout": np.float64(self.dropout_),
            "shape": np.asarray(json.dumps(self.shape_)),
            **{f"net.{k}": v for k, v in state_arrays(self.net).items()},
        }

    def _set_state(self, state: Mapping[str, np.ndarray]) -> None:
        from lmrec.nn.trainer import load_state_arrays, resolve_device

        assert self.items is not None
        self.trained_items = state["trained_items"].astype(bool)
        if "privacy" in state:
            self.privacy_ = json.loads(str(state["privacy"]))
        if "dropout" in state:
            self.dropout_ = float(state["dropout"])
        # Models saved before `auto_shape` were trained with the dense shape.
        saved = json.loads(str(state["shape"])) if "shape" in state else {}
        self.shape_ = self._shape({**SHAPE_DENSE, **saved})
        weights = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
        if "item_emb.text_map" in weights:  # dual view: the text buffer is already mapped
            dim = weights["item_emb.text_map"].shape[0]
            self.net, _ = self._build_net(len(self.items), None, text_dim=dim)
        else:
            self.net, _ = self._build_net(len(self.items), weights.get("item_emb.text"))
        load_state_arrays(self.net, weights, f"saved {self.name} model")
        self.net.to(resolve_device(self.config.device))
        self.net.eval()


class SASRec(_SequenceModel):
    """SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the sequence, trained
    to predict the next item at every position with a full-softmax cross-entropy
    (Klenitskiy & Vasilev, RecSys 2023) or a sampled softmax."""

    name = "sasrec"
    config_class = SASRecConfig
    config: SASRecConfig
    network = "SASRecNet"
    window_overlap = 1

    def _auto_shape(self, train_seqs: Sequence[np.ndarray]) -> dict[str, Any]:
        return auto_shape(train_seqs)

    def _extra_net_args(self) -> dict[str, Any]:
        c = self.config
        return {
            "loss": self.loss_,
            "negatives": c.negatives,
            "sampler": c.sampler,
            "negatives_per": c.negatives_per,
        }

    def chosen(self) -> dict[str, Any]:
        out = super().chosen()
        if self.config.loss == "auto":
            out["loss"] = self.loss_
        return out

    @property
    def loss_(self) -> str:
        """The loss trained with: the config's, or for "auto" the one for the catalogue."""
        if self.config.loss != "auto":
            return self.config.loss
        n = 0 if self.items is None else len(self.items)
        return "ce" if n <= self.config.full_softmax_items else "sampled"

    def _train_window(self) -> int:
        return self.config.max_len + 1

    def _train_batch(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        tokens, targets = rows[:, :-1], rows[:, 1:].copy()
        targets[tokens == 0] = 0
        tokens, targets = _trim(tokens, targets)
        return {"tokens": np.ascontiguousarray(tokens), "targets": np.ascontiguousarray(targets)}

    def _inference_tokens(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        width = max(1, min(self.config.max_len, max((len(s) for s in seqs), default=1)))
        return _windows(seqs, width)


class BERT4Rec(_SequenceModel):
    """BERT4Rec (Sun et al., CIKM 2019): bidirectional self-attention trained by masked item
    prediction (cloze); the next item is predicted at a mask token appended to the history."""

    name = "bert4rec"
    config_class = BERT4RecConfig
    config: BERT4RecConfig
    network = "BERT4RecNet"

    def _train_batch(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        (rows,) = _trim(rows)
        c = self.config
        valid = rows > 0
        b, t = rows.shape
        masked = (rng.random((b, t)) < c.mask_prob) & valid
        last = rng.random(b) < c.last_target_prob
        none = ~masked.any(axis=1)
        masked[last | none] = False
        masked[last | none, -1] = True  # the newest item (rows are left-padded)
        tokens = np.where(masked, len(self.items) + 1, rows)
        targets = np.where(masked, rows, 0)
        return {"tokens": tokens, "targets": targets}

    def _inference_tokens(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        width = max(1, min(self.config.max_len - 1, max((len(s) for s in seqs), default=1)))
        tokens = _windows(seqs, width)
        return np.concatenate([tokens, np.full((len(seqs), 1), len(self.items) + 1)], axis=1)


class XLNet(_SequenceModel):
    """XLNet-style recommender (Yang et al., NeurIPS 2019; Transformers4Rec, RecSys 2021):
    permutation language modelling with two-stream attention; the next item is predicted by a
    query slot after the history, read left to right."""

    name = "xlnet"
    config_class = XLNetConfig
    config: XLNetConfig
    network = "XLNetNet"

    def _train_batch(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        (rows,) = _trim(rows)
        c = self.config
        valid = rows > 0
        b, t = rows.shape
        keys = np.where(valid, rng.random((b, t)), np.inf)
        last = rng.random(b) < c.last_target_prob
        keys[last] = np.where(valid[last], np.arange(t, dtype=np.float64)[None, :], np.inf)
        order = np.argsort(np.argsort(keys, axis=1), axis=1)  # 0.. in factorisation order
        n = valid.sum(axis=1)
        k = np.maximum(1, np.rint(c.target_fraction * n)).astype(np.int64)
        k[last] = 1
        target = valid & (order >= (n - k)[:, None])
        return {
            "tokens": rows,
            "ranks": np.where(valid, order, np.inf).astype(np.float32),
            "targets": np.where(target, rows, 0),
        }

    def _inference_tokens(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        width = max(1, min(self.config.max_len - 1, max((len(s) for s in seqs), default=1)))
        tokens = _windows(seqs, width)
        return np.concatenate([tokens, np.zeros((len(seqs), 1), np.int64)], axis=1)


class DualSASRecConfig(SASRecConfig):
    """SASRec over dual-view items (see `DualSASRec`)."""

    # dualsasrec keeps the shape it was measured with on Beauty and ML-100K
    # (`benchmarks/text_aware.md`): SHAPE_DENSE, whatever the data.
    layers: int | None = Field(SHAPE_DENSE["layers"], ge=1)
    """Transformer blocks (None: `auto_shape`)."""
    heads: int | None = Field(SHAPE_DENSE["heads"], ge=1)
    """Attention heads, must divide embedding_size (None: `auto_shape`)."""
    ffn_mult: int | None = Field(SHAPE_DENSE["ffn_mult"], ge=1)
    """Feed-forward inner width in multiples of embedding_size (None: `auto_shape`)."""
    learning_rate: float | None = Field(SHAPE_DENSE["learning_rate"], gt=0)
    """AdamW learning rate (None: `auto_shape`)."""
    batch_size: int | None = Field(SHAPE_DENSE["batch_size"], ge=1)
    """Sequences per gradient step (None: `auto_shape`)."""
    block: Literal["pre_ln", "sasrec"] | None = SHAPE_DENSE["block"]
    """Transformer block layout (see `SequentialConfig.block`)."""
    item_dropout: float | None = Field(SHAPE_DENSE["item_dropout"], ge=0, lt=1)
    """Dropout on the item vectors in training (see `SequentialConfig.item_dropout`)."""
    full_softmax_items: int = Field(10_000, ge=0)
    """loss="auto" trains with the full softmax up to this many items (dualsasrec keeps the
    10,000 it was measured with: Beauty's 12,101 items get the sampled softmax)."""
    text: Literal["none", "init", "fuse"] = "none"
    """SASRec's text modes do not apply: `dualsasrec`'s items are set by `views`."""
    views: Literal["both", "text", "id"] = "both"
    """Item views: both (gated text + id), text only (any item with text can be ranked), or
    id only (the same network without text: the ablation)."""
    id_dropout: float = Field(0.1, ge=0, lt=1)
    """Chance that an item's id view is dropped in a training step (DropoutNet)."""
    adapter_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout inside the text adapter."""

    @model_validator(mode="after")
    def _no_text_mode(self) -> Self:
        if self.text != "none":
            raise ValueError(
                f"text={self.text!r} is SASRec's option; dualsasrec's items are set by views "
                "(both, text or id)"
            )
        return self


class DualSASRec(SASRec):
    """Text-aware SASRec whose items have two views (`lmrec.nn.layers.DualViewEmbedding`):
    the frozen language-model text vector through a trained adapter, plus a learned id vector
    weighted by a gate computed from the item's popularity. The text view is never washed out
    by training (it is recomputed from the frozen vectors at every step), items without
    training data are placed by their text alone, and the gate lets head items lean on their
    ids and tail items on text (LLM-ESR, NeurIPS 2024; LLMEmb, AAAI 2025). New items borrow the
    vectors of their text neighbours (`DualViewEmbedding.borrow_ids`)."""

    name = "dualsasrec"
    config_class = DualSASRecConfig
    config: DualSASRecConfig

    def _auto_shape(self, train_seqs: Sequence[np.ndarray]) -> dict[str, Any]:
        # The shape (and `auto_dropout`'s dropout) dualsasrec was measured with, whatever
        # the data (`benchmarks/text_aware.md`).
        return dict(SHAPE_DENSE)

    def _net_args(self, text_dim: int) -> dict[str, Any]:
        c = self.config
        return {
            **super()._net_args(text_dim),
            "text_mode": "dual",
            "views": c.views,
            "adapter_dropout": c.adapter_dropout,
        }

    def _uses_text(self) -> bool:
        return True

    def _text_places_items(self) -> bool:
        return self.config.views != "id"

    def _places_new_items(self) -> bool:
        return self.config.views != "id"
