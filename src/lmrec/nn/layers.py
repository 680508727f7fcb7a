"""Transformer building blocks shared by the sequence recommenders (`lmrec.models.sequential`).

Pre-layer-norm blocks (Xiong et al., "On Layer Normalization in the Transformer Architecture",
ICML 2020) of multi-head self-attention (Vaswani et al., "Attention Is All You Need",
NeurIPS 2017) and a position-wise feed-forward network, learned absolute positions, and an item
embedding that can be fused with language-model text vectors through a learned projection.

Shapes in comments: B batch, T sequence length, S key length, C model width, H heads.
Attention masks are boolean, True where a query may attend to a key.
"""

from __future__ import annotations

__all__ = [
    "FeedForward",
    "ItemEmbedding",
    "MultiHeadAttention",
    "TransformerBlock",
    "TransformerEncoder",
    "causal_mask",
]

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Token layout of every sequence model: 0 is padding, items are 1..n_items, then the mask token.
PAD = 0


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) mask: query t sees keys s <= t that are not padding, and always itself
    (so that padded rows stay finite). valid: (B, T) bool, False at padding."""
    t = valid.shape[1]
    tri = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(t, dtype=torch.bool, device=valid.device)
    return ((tri[None] & valid[:, None, :]) | eye[None])[:, None]


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(C/H) + mask) V over H heads, queries from `x`, keys and values from
    `kv` (default `x`), through `torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, kv: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        src = x if kv is None else kv  # (B, S, C)
        s = src.shape[1]
        h = self.heads
        q = self.q(x).view(b, t, h, c // h).transpose(1, 2)  # (B, H, T, C/H)
        k, v = self.kv(src).view(b, s, 2, h, c // h).permute(2, 0, 3, 1, 4)  # (B, H, S, C/H)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, C/H)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    """Position-wise W2 dropout(GELU(W1 x + b1)) + b2 with inner width `mult` * C."""

    def __init__(self, width: int, mult: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, mult * width)
        self.fc2 = nn.Linear(mult * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class TransformerBlock(nn.Module):
    """x + Attn(LN(x)); then x + FFN(LN(x)), with dropout on both residual branches."""

    def __init__(self, width: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.ffn = FeedForward(width, ffn_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))  # (B, T, C)
        return x + self.drop(self.ffn(self.ln2(x)))

    def two_stream(
        self, h: torch.Tensor, g: torch.Tensor, mask_h: torch.Tensor, mask_g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """XLNet's two-stream attention (Yang et al., NeurIPS 2019) with shared weights: the
        content stream h attends to h under mask_h; the query stream g attends to h under
        mask_g (which hides each position's own content)."""
        hn = self.ln1(h)
        h2 = h + self.drop(self.attn(hn, mask_h))  # (B, S, C)
        g2 = g + self.drop(self.attn(self.ln1(g), mask_g, kv=hn))  # (B, T, C)
        h2 = h2 + self.drop(self.ffn(self.ln2(h2)))
        g2 = g2 + self.drop(self.ffn(self.ln2(g2)))
        return h2, g2


class TransformerEncoder(nn.Module):
    """A stack of `TransformerBlock`s and a final layer norm."""

    def __init__(self, width: int, layers: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, ffn_mult, dropout) for _ in range(layers)
        )
        self.ln = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def two_stream(
        self, h: torch.Tensor, g: torch.Tensor, mask_h: torch.Tensor, mask_g: torch.Tensor
    ) -> torch.Tensor:
        """The final query stream (B, T, C) of `TransformerBlock.two_stream` layers."""
        for block in self.blocks:
            h, g = block.two_stream(h, g, mask_h, mask_g)
        return self.ln(g)


class ItemEmbedding(nn.Module):
    """Vectors of the tokens PAD (0), items 1..n_items and `n_special` tokens after them.

    Without text, a token's vector is its row of a learned table. With text vectors t_i
    (n_items, D) and mode "fuse", item i's vector is e_i = m_i * id_i + W t_i + b: a learned
    projection of its text plus a free id offset, where m_i is 0 for items that had no
    training data (their vector comes from text alone) and, during training, 0 with
    probability `id_dropout` (DropoutNet, Volkovs et al., NeurIPS 2017), so that the text
    projection alone learns to place items. Mode "init" initialises the id table from the
    text vectors' principal directions instead (scaled to the table's init scale).
    """

    def __init__(
        self,
        n_items: int,
        width: int,
        *,
        n_special: int = 1,
        text: torch.Tensor | None = None,
        mode: str = "none",
        id_dropout: float = 0.0,
    ):
        super().__init__()
        if mode not in ("none", "init", "fuse"):
            raise ValueError(f"mode must be none, init or fuse, not {mode!r}")
        if mode != "none" and text is None:
            raise ValueError(f"mode {mode!r} needs text vectors")
        self.n_items = n_items
        self.mode = mode
        self.id_dropout = id_dropout
        self.table = nn.Embedding(1 + n_items + n_special, width, padding_idx=PAD)
        nn.init.normal_(self.table.weight, std=1.0 / math.sqrt(width))
        with torch.no_grad():
            self.table.weight[PAD].zero_()
        # Items with training data keep their id vector; others (set by the model) do not.
        self.register_buffer("id_mask", torch.ones(n_items))
        if mode == "fuse":
            assert text is not None
            self.register_buffer("text", text.float())
            self.proj = nn.Linear(text.shape[1], width)
            with torch.no_grad():
                self.table.weight[1 : 1 + n_items].mul_(0.1)
        elif mode == "init":
            assert text is not None
            with torch.no_grad():
                t = text.float() - text.float().mean(0)
                k = min(width, *t.shape)
                _, _, v = torch.linalg.svd(t, full_matrices=False)
                init = t @ v[:k].T  # (n, k) principal components
                init = init / init.std().clamp(min=1e-8) / math.sqrt(width)
                self.table.weight[1 : 1 + n_items, :k] = init
                self.table.weight[1 : 1 + n_items, k:] = 0

    def weight(self) -> torch.Tensor:
        """(1 + n_items + n_special, C) vectors of every token."""
        w = self.table.weight
        if self.mode != "fuse":
            return w
        m = self.id_mask
        if self.training and self.id_dropout > 0:
            m = m * (torch.rand_like(m) >= self.id_dropout).to(m.dtype)
        items = w[1 : 1 + self.n_items] * m[:, None] + self.proj(self.text)  # (n, C)
        return torch.cat([w[:1], items, w[1 + self.n_items :]], dim=0)

    def items(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(n_items, C) output vectors of the items (from `weight()` when given)."""
        w = self.weight() if weight is None else weight
        return w[1 : 1 + self.n_items]
