"""Self-attention networks over item sequences: SASRec, BERT4Rec and an XLNet-style network.

Each module's `forward(batch)` returns the training loss (so that `lmrec.nn.trainer.Trainer`
and DistributedDataParallel drive it), and `last_hidden(tokens)` gives the (B, C) vector that
predicts the item after each sequence; scores are its dot products with the item vectors
(the input embedding, tied, as in all three papers).

Token layout: 0 padding, 1..n_items the items (item index + 1), n_items + 1 the mask token.
Sequences are left-padded, and positions count from the end of a `max_len` window, so the
newest item always has the same position whatever the batch width.

- SASRec: W.-C. Kang and J. McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018;
  trained with full-softmax cross-entropy at every position as in A. Klenitskiy and
  A. Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?",
  RecSys 2023, or with a sampled softmax over many uniform negatives for large catalogues.
- BERT4Rec: F. Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
  Representations from Transformer", CIKM 2019 (masked item prediction, full softmax).
- XLNet-style: Z. Yang et al., "XLNet: Generalized Autoregressive Pretraining for Language
  Understanding", NeurIPS 2019 (permutation language modelling with two-stream attention),
  as used for sessions in G. de Souza Pereira Moreira et al., "Transformers4Rec", RecSys 2021;
  learned absolute positions here instead of relative ones.
"""

from __future__ import annotations

__all__ = ["NETWORKS", "BERT4RecNet", "SASRecNet", "SequenceNet", "XLNetNet"]

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmrec.nn.layers import (
    PAD,
    Dropout,
    DualViewEmbedding,
    ItemEmbedding,
    TransformerEncoder,
    causal_mask,
)


class SequenceNet(nn.Module):
    """Shared parts: item embedding (optionally text-fused), learned positions, encoder."""

    def __init__(
        self,
        n_items: int,
        *,
        width: int = 64,
        layers: int = 2,
        heads: int = 2,
        ffn_mult: int = 4,
        dropout: float = 0.2,
        max_len: int = 200,
        text_mode: str = "none",
        id_dropout: float = 0.0,
        text: torch.Tensor | None = None,
        text_dim: int = 0,
        loss: str = "ce",
        negatives: int = 256,
        sampler: str = "uniform",
        negatives_per: str = "batch",
        views: str = "both",
        adapter_dropout: float = 0.0,
        text_width: int = 128,
        init_std: float | None = None,
        item_dropout: float = 0.0,
        block: str = "pre_ln",
    ):
        super().__init__()
        # Constructor arguments besides the item count and text, for `with_new_items`.
        self.hparams = {
            "width": width,
            "layers": layers,
            "heads": heads,
            "ffn_mult": ffn_mult,
            "dropout": dropout,
            "max_len": max_len,
            "text_mode": text_mode,
            "id_dropout": id_dropout,
            "text_dim": text_dim,
            "loss": loss,
            "negatives": negatives,
            "sampler": sampler,
            "negatives_per": negatives_per,
            "views": views,
            "adapter_dropout": adapter_dropout,
            "text_width": text_width,
            "init_std": init_std,
            "item_dropout": item_dropout,
            "block": block,
        }
        if text is None and text_mode != "none":
            text = torch.zeros(n_items, text_dim)  # filled by load_state_dict
        if sampler not in ("uniform", "popularity"):
            raise ValueError(f"sampler must be uniform or popularity, not {sampler!r}")
        if negatives_per not in ("batch", "token"):
            raise ValueError(f"negatives_per must be batch or token, not {negatives_per!r}")
        self.n_items = n_items
        self.max_len = max_len
        self.mask_token = n_items + 1
        self.loss_kind = loss
        self.negatives = negatives
        self.sampler = sampler
        self.negatives_per = negatives_per
        self.item_emb: ItemEmbedding | DualViewEmbedding
        if text_mode == "dual":
            assert text is not None
            self.item_emb = DualViewEmbedding(
                n_items,
                width,
                text,
                views=views,
                id_dropout=id_dropout,
                adapter_dropout=adapter_dropout,
                text_dim=text_width,
            )
        else:
            self.item_emb = ItemEmbedding(
                n_items,
                width,
                n_special=1,
                text=text,
                mode=text_mode,
                id_dropout=id_dropout,
                init_std=init_std,
            )
        self.pos = nn.Parameter(torch.randn(max_len, width) / width**0.5)
        self.drop = Dropout(dropout)
        self.item_drop = Dropout(item_dropout)
        self.encoder = TransformerEncoder(width, layers, heads, ffn_mult, dropout, block)
        # Items allowed in the training softmax (those with training data) and the log of
        # each item's chance to be drawn as a sampled negative; set by `set_item_counts`.
        self.register_buffer("trainable", torch.ones(n_items, dtype=torch.bool))
        self.register_buffer("log_q", torch.full((n_items,), -math.log(n_items)), persistent=False)

    def set_item_counts(self, counts: torch.Tensor) -> None:
        """Tell the network each item's training interaction count (n_items,): items without
        any are left out of the training softmax and have no id vector; the popularity
        sampler draws negatives in proportion to the count."""
        trained = counts > 0
        self.trainable.copy_(trained)
        if isinstance(self.item_emb, DualViewEmbedding):
            self.item_emb.set_popularity(counts)
        else:
            self.item_emb.id_mask.copy_(trained.float())
        q = counts.double().clamp(min=0) if self.sampler == "popularity" else trained.double()
        q = q / q.sum().clamp(min=1)
        self.log_q.copy_(torch.log(q.clamp(min=1e-30)).float())

    def embed(self, tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(B, T, C) token vectors plus the positions of the window's last T slots."""
        t = tokens.shape[1]
        return self.drop(weight[tokens] + self.pos[self.max_len - t :])

    def item_weight(self) -> torch.Tensor:
        return self.item_emb.weight()

    def with_new_items(self, vectors: torch.Tensor) -> SequenceNet:
        """A copy of the network with len(vectors) more items after the current ones, placed
        by their text vectors (vectors: (k, D) from the encoder the network was built with):
        no id vector, no training data, out of the training softmax. Needs a text mode that
        places items by text (fuse, or dual with a text view)."""
        n, k = self.n_items, len(vectors)
        hparams = dict(self.hparams)
        if isinstance(self.item_emb, DualViewEmbedding):  # the width the map was fitted to
            hparams["text_width"] = self.item_emb.text.shape[1]
        net = type(self)(n + k, **hparams)
        old = self.state_dict()
        new_text = self.item_emb.text_rows(vectors.float())
        state = {}
        for key, want in net.state_dict().items():
            have = old[key]
            if have.shape == want.shape:
                state[key] = have
            elif key == "item_emb.table.weight":  # PAD, items, then the special tokens
                state[key] = torch.cat([have[: 1 + n], want[1 + n : 1 + n + k], have[1 + n :]])
                state[key][1 + n : 1 + n + k] = 0
            elif key == "item_emb.text":
                state[key] = torch.cat([have, new_text])
            else:  # per-item buffers: trainable, id_mask, popularity: "no training data"
                state[key] = torch.cat([have, torch.zeros_like(want[n:])])
        net.load_state_dict(state)
        if isinstance(net.item_emb, DualViewEmbedding):
            net.item_emb.borrow_ids(n)
        net.log_q.copy_(torch.cat([self.log_q, torch.full((k,), -math.inf)]))
        return net.to(self.log_q.device)

    def step_weight(self, *tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(token vectors, sampled negatives) for one training step. With loss='sampled' the
        negatives are drawn here and only the rows of the given token tensors, the
        negatives, padding and the mask token are computed (the rest of the table is left
        zero, unread): a text-derived item vector costs an adapter pass, and a step needs a
        few thousand of them, not the catalogue."""
        if self.loss_kind != "sampled" or self.negatives_per == "token":  # token: drawn later
            return self.item_drop(self.item_weight()), None
        neg = torch.multinomial(self.log_q.exp(), self.negatives, replacement=True)  # (K,)
        special = torch.tensor([PAD, self.mask_token], device=neg.device)
        ids = torch.cat([t.reshape(-1) for t in tokens] + [neg + 1, special])
        return self.item_drop(self.item_emb.weight(torch.unique(ids))), neg

    def scores(self, hidden: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_items) dot products of hidden (B, C) with every item vector."""
        return hidden @ self.item_emb.items(weight).T

    def prediction_loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor,
        neg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of the target items (N,) given hidden (N, C): over all trainable
        items ('ce'), or over the target and `negatives` trainable items ('sampled'; sampled
        softmax, Jean et al., ACL 2015), shared by the batch or drawn afresh for every target
        (`negatives_per`), uniformly or by popularity, with every logit corrected by the log
        of its chance to be drawn (logQ correction, Yi et al., RecSys 2019), so the sampled
        loss estimates the full softmax's. `weight` and `neg` come from `step_weight`."""
        items = self.item_emb.items(weight)  # (n, C)
        if self.loss_kind == "sampled":
            if self.negatives_per == "token":  # (N, K): fresh negatives for every target
                n, k = len(targets), self.negatives
                neg = torch.multinomial(self.log_q.exp(), n * k, replacement=True).view(n, k)
                neg_logit = torch.bmm(items[neg], hidden.unsqueeze(-1)).squeeze(-1)
                neg_logit, same = neg_logit - self.log_q[neg], neg == targets[:, None]
            else:  # (K,) shared by the batch
                assert neg is not None, "sampled loss: take weight and negatives from step_weight"
                neg_logit = hidden @ items[neg].T - self.log_q[neg][None, :]  # (N, K)
                same = neg[None, :] == targets[:, None]
            pos_logit = (hidden * items[targets]).sum(-1, keepdim=True)  # (N, 1)
            pos_logit = pos_logit - self.log_q[targets][:, None]
            neg_logit = neg_logit.masked_fill(same, float("-inf"))
            logits = torch.cat([pos_logit, neg_logit], dim=1).float()
            return F.cross_entropy(logits, torch.zeros_like(targets))
        if bool(self.trainable.all()):
            logits = hidden @ items.T  # (N, n)
        else:  # -inf for items without training data, added inside the matrix product
            bias = torch.zeros(self.n_items, dtype=hidden.dtype, device=hidden.device)
            bias = bias.masked_fill(~self.trainable, float("-inf"))
            logits = torch.addmm(bias, hidden, items.T)  # (N, n)
        return F.cross_entropy(logits.float(), targets)

    def last_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SASRecNet(SequenceNet):
    """Causal self-attention; the output at position t predicts item t + 1."""

    def encode(self, tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens, weight)  # (B, T, C)
        return self.encoder(x, causal_mask(tokens != PAD))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """batch: tokens (B, T) inputs, targets (B, T) the next item's token (0: none)."""
        w, neg = self.step_weight(batch["tokens"], batch["targets"])
        h = self.encode(batch["tokens"], w)  # (B, T, C)
        sel = batch["targets"] > 0
        return self.prediction_loss(h[sel], batch["targets"][sel] - 1, w, neg)

    def last_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) histories, newest last."""
        x = self.embed(tokens, self.item_weight())
        return self.encoder.last(x, causal_mask(tokens != PAD))


class BERT4RecNet(SequenceNet):
    """Bidirectional self-attention; masked items are predicted from both sides."""

    @staticmethod
    def _mask(tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, T): every position sees every item, and itself."""
        eye = torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)
        return ((tokens != PAD)[:, None, :] | eye[None])[:, None]

    def encode(self, tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(tokens, weight), self._mask(tokens))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """batch: tokens (B, T) with some items replaced by the mask token, targets (B, T)
        the masked items' tokens (0 elsewhere)."""
        w, neg = self.step_weight(batch["tokens"], batch["targets"])
        h = self.encode(batch["tokens"], w)
        sel = batch["targets"] > 0
        return self.prediction_loss(h[sel], batch["targets"][sel] - 1, w, neg)

    def last_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) histories whose last slot holds the mask token."""
        return self.encoder.last(self.embed(tokens, self.item_weight()), self._mask(tokens))


class XLNetNet(SequenceNet):
    """Permutation language modelling with two-stream attention.

    For a factorisation order z (ranks r over the positions), the content stream at position
    t sees the items at positions s with r_s <= r_t; the query stream, which starts from the
    mask token's vector plus t's position and never sees item t itself, sees r_s < r_t and
    predicts item t. A learned start vector, visible to every position, gives the first
    position of the order something to attend to. At inference the history is read left to
    right and a query slot after it predicts the next item.
    """

    def __init__(self, n_items: int, **kw: Any):
        super().__init__(n_items, **kw)
        width = self.pos.shape[1]
        self.start = nn.Parameter(torch.randn(1, 1, width) / width**0.5)

    def query_stream(
        self, tokens: torch.Tensor, ranks: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, C) query-stream outputs. tokens (B, T) items (PAD at padding and at query
        slots that hold no item); ranks (B, T) float, position in the factorisation order."""
        b, t = tokens.shape
        valid = tokens != PAD
        h = torch.cat([self.start.expand(b, 1, -1), self.embed(tokens, weight)], dim=1)
        g = self.drop((weight[self.mask_token] + self.pos[self.max_len - t :]).expand(b, t, -1))
        r_key = torch.cat([torch.full_like(ranks[:, :1], float("-inf")), ranks], dim=1)
        k_ok = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)  # (B, 1 + T)
        eye = torch.eye(t + 1, dtype=torch.bool, device=tokens.device)
        # (B, 1 + T, 1 + T): content sees what comes no later in the order (and itself).
        mask_h = ((r_key[:, None, :] <= r_key[:, :, None]) & k_ok[:, None, :]) | eye[None]
        # (B, T, 1 + T): queries see what comes strictly earlier, and the start vector.
        mask_g = (r_key[:, None, :] < ranks[:, :, None]) & k_ok[:, None, :]
        mask_g[:, :, 0] = True  # the start vector is always visible
        return self.encoder.two_stream(h, g, mask_h[:, None], mask_g[:, None])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """batch: tokens (B, T), ranks (B, T) a permutation of each row's items, targets
        (B, T) the tokens to predict (the last part of the order; 0 elsewhere)."""
        w, neg = self.step_weight(batch["tokens"], batch["targets"])
        g = self.query_stream(batch["tokens"], batch["ranks"], w)
        sel = batch["targets"] > 0
        return self.prediction_loss(g[sel], batch["targets"][sel] - 1, w, neg)

    def last_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) histories with an empty (PAD) query slot last."""
        t = tokens.shape[1]
        ranks = torch.arange(t, dtype=torch.float32, device=tokens.device).expand_as(tokens)
        ranks = ranks.clone()
        ranks[:, -1] = float("inf")
        return self.query_stream(tokens, ranks, self.item_weight())[:, -1]


#: Module classes by name, for checkpoints (no guessing classes from strings).
NETWORKS: dict[str, type[SequenceNet]] = {
    "SASRecNet": SASRecNet,
    "BERT4RecNet": BERT4RecNet,
    "XLNetNet": XLNetNet,
}
