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
    "Dropout",
    "DualViewEmbedding",
    "FeedForward",
    "ItemEmbedding",
    "MultiHeadAttention",
    "SASRecBlock",
    "TransformerBlock",
    "TransformerEncoder",
    "causal_mask",
    "text_reduction",
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


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al., JMLR 2014) whose keep-masks are cut from a pool of
    random bits drawn once per `POOL_REFRESH` calls, at a random offset each call.

    Same expectation and the same chance per element as `nn.Dropout`; drawing fresh random
    numbers for every element costs 12-16 ns each on CPU (torch 2.13: 16 ms for a 256 x 50 x
    64 batch, more than the matrix products of a SASRec step), a slice of the pool 3 ms.
    Consecutive masks are shifted windows of one pool, so two calls rarely share a mask
    alignment; the pool is redrawn every `POOL_REFRESH` calls. Seeded through torch's RNG.
    """

    POOL_SIZE = 1 << 24
    POOL_REFRESH = 256

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), not {p}")
        self.p = p
        self._pool: torch.Tensor | None = None
        self._calls = 0

    def _mask(self, like: torch.Tensor) -> torch.Tensor:
        n = like.numel()
        pool = self._pool
        if (
            pool is None
            or pool.device != like.device
            or pool.numel() < 2 * n
            or self._calls % self.POOL_REFRESH == 0
        ):
            size = max(self.POOL_SIZE, 4 * n)
            pool = torch.rand(size, device=like.device) >= self.p
            self._pool = pool
        self._calls += 1
        start = int(torch.randint(0, pool.numel() - n + 1, (1,)))
        return pool[start : start + n].view(like.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self._mask(x).to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
    """Position-wise W2 dropout(act(W1 x + b1)) + b2 with inner width `mult` * C; act is GELU,
    or ReLU (`relu=True`, SASRec's own)."""

    def __init__(self, width: int, mult: int, dropout: float, relu: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(width, mult * width)
        self.fc2 = nn.Linear(mult * width, width)
        self.drop = Dropout(dropout)
        self.act = F.relu if relu else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """x + Attn(LN(x)); then x + FFN(LN(x)), with dropout on both residual branches."""

    def __init__(self, width: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.ffn = FeedForward(width, ffn_mult, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))  # (B, T, C)
        return x + self.drop(self.ffn(self.ln2(x)))

    def last(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`forward(x, mask)[:, -1:]` (B, 1, C), computed for the last position only: its
        query against every key, and the feed-forward of that one position."""
        xn = self.ln1(x)
        y = x[:, -1:] + self.drop(self.attn(xn[:, -1:], mask[:, :, -1:], kv=xn))
        return y + self.drop(self.ffn(self.ln2(y)))

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


class SASRecBlock(nn.Module):
    """The block of SASRec's authors (Kang and McAuley, ICDM 2018; as RecTools' SASRec keeps
    it): q = LN(x); y = q + Attn(q, keys and values from x); f = LN(y); f + dropout(FFN(f)),
    ReLU inside. Unlike the pre-layer-norm block, the residual stream is normalised in every
    block, and keys and values read the un-normalised input."""

    def __init__(self, width: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.ffn = FeedForward(width, ffn_mult, dropout, relu=True)
        self.drop = Dropout(dropout)

    def _ffn(self, y: torch.Tensor) -> torch.Tensor:
        f = self.ln2(y)
        return f + self.drop(self.ffn(f))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.ln1(x)
        return self._ffn(q + self.attn(q, mask, kv=x))

    def last(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`forward(x, mask)[:, -1:]` (B, 1, C), computed for the last position only."""
        q = self.ln1(x[:, -1:])
        return self._ffn(q + self.attn(q, mask[:, :, -1:], kv=x))

    def two_stream(
        self, h: torch.Tensor, g: torch.Tensor, mask_h: torch.Tensor, mask_g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`TransformerBlock.two_stream` in this layout."""
        hq, gq = self.ln1(h), self.ln1(g)
        h2 = hq + self.attn(hq, mask_h, kv=h)
        g2 = gq + self.attn(gq, mask_g, kv=h)
        return self._ffn(h2), self._ffn(g2)


#: Transformer block layouts by name (`SequentialConfig.block`).
BLOCKS: dict[str, type[nn.Module]] = {"pre_ln": TransformerBlock, "sasrec": SASRecBlock}


class TransformerEncoder(nn.Module):
    """A stack of blocks (`BLOCKS[block]`) and a final layer norm."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        ffn_mult: int,
        dropout: float,
        block: str = "pre_ln",
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, not {block!r}")
        self.blocks = nn.ModuleList(
            BLOCKS[block](width, heads, ffn_mult, dropout) for _ in range(layers)
        )
        self.ln = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def last(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`forward(x, mask)[:, -1]` (B, C): the last block only for the last position (what
        inference reads), so it skips the query, output and feed-forward work of the rest."""
        for block in self.blocks[:-1]:
            x = block(x, mask)
        if len(self.blocks):
            x = self.blocks[-1].last(x, mask)
        return self.ln(x[:, -1])

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
        init_std: float | None = None,
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
        std = 1.0 / math.sqrt(width) if init_std is None else init_std
        nn.init.normal_(self.table.weight, std=std)
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

    def weight(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(1 + n_items + n_special, C) vectors of every token; with `ids` (sorted unique
        token ids) only those rows are computed, the others may be left zero."""
        w = self.table.weight
        if self.mode != "fuse":
            return w
        m = self.id_mask
        if self.training and self.id_dropout > 0:
            m = m * (torch.rand_like(m) >= self.id_dropout).to(m.dtype)
        if ids is not None:
            i = ids[(ids >= 1) & (ids <= self.n_items)] - 1
            rows = w[1 + i] * m[i, None] + self.proj(self.text[i])  # (k, C)
            return _scatter_rows(w, 1 + i, rows)
        items = w[1 : 1 + self.n_items] * m[:, None] + self.proj(self.text)  # (n, C)
        return torch.cat([w[:1], items, w[1 + self.n_items :]], dim=0)

    def text_rows(self, vectors: torch.Tensor) -> torch.Tensor:
        """Rows of the `text` buffer for new items of these encoder vectors (mode fuse)."""
        if self.mode != "fuse":
            raise ValueError(f"items are placed by text only in mode fuse, not {self.mode!r}")
        return vectors

    def items(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(n_items, C) output vectors of the items (from `weight()` when given)."""
        w = self.weight() if weight is None else weight
        return w[1 : 1 + self.n_items]


def _scatter_rows(table: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A copy of `table` (N, C) whose `rows` are replaced by `values`, differentiable in both;
    the other rows keep the table's (unadapted) values."""
    return table.index_put((rows,), values)


def text_reduction(text: torch.Tensor, dim: int, whiten: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (1, D), map (D, k)) with k = min(dim, D) such that (text - mean) @ map are the
    text vectors centred, projected on their k principal directions and, with `whiten`,
    scaled towards equal variance per direction, with unit mean norm. Language-model vectors
    are anisotropic (a few directions shared by all texts dominate); whitening them separates
    items better (WhitenRec, Zhang et al., ICDE 2024). The whitening is shrunk: direction j
    with variance l_j is scaled by 1 / sqrt(l_j + mean(l)), so directions of little variance
    (noise, or all of them when the catalogue has fewer items than dimensions) are not blown
    up. The same map places new items later. Cheap to adapt at every training step."""
    t = text.float()
    mean = t.mean(0, keepdim=True)
    t = t - mean
    d = t.shape[1]
    k = min(dim, d)
    _, s, v = torch.linalg.svd(t, full_matrices=False)  # s: (min(n, D),)
    var = s**2 / max(len(t), 1)
    proj = v[:k].T  # (D, k') with k' = min(k, n, D)
    if proj.shape[1] < k:  # fewer items than dimensions: pad with unused directions
        proj = torch.cat([proj, torch.zeros(d, k - proj.shape[1])], dim=1)
        var = torch.cat([var, torch.zeros(k - len(var))])
    if whiten:
        proj = proj / torch.sqrt(var[:k] + var.mean()).clamp(min=1e-8)
    proj = proj.contiguous()
    norm = (t @ proj).norm(dim=1).mean().clamp(min=1e-8)
    return mean, proj / norm


class DualViewEmbedding(nn.Module):
    """Item vectors from two views: a frozen text view and a learned id view, gated per item.

    e_i = A(t_i) + g_i * id_i, where t_i is the item's frozen language-model text vector
    (centred and scaled to unit mean norm), A a trained two-layer adapter (LLMEmb, Liu et al.,
    AAAI 2025: the text embedding is adapted by a trained projection, never replaced), id_i a
    free id vector and g_i = sigmoid(W p_i + b) in (0, 1)^C a gate computed from the item's
    training popularity p_i (log count, standardised): the network learns how much of the id
    view each item needs (head items lean on their id, tail items on text; LLM-ESR, Liu et al.,
    NeurIPS 2024, fuses a frozen text view with an id view for the same reason). Items without
    training data have g_i = 0 (text only); with `id_dropout`, an item's id view is dropped in
    a training step with that chance (DropoutNet), so the text view alone must place it.

    views: "both" (the above), "text" (A(t_i) alone: any item with text can be ranked) or "id"
    (id_i alone; the ablation).
    """

    def __init__(
        self,
        n_items: int,
        width: int,
        text: torch.Tensor,
        *,
        n_special: int = 1,
        views: str = "both",
        id_dropout: float = 0.0,
        adapter_dropout: float = 0.0,
        text_dim: int = 128,
        whiten: bool = True,
        id_init: float = 0.1,
    ):
        super().__init__()
        if views not in ("both", "text", "id"):
            raise ValueError(f"views must be both, text or id, not {views!r}")
        self.n_items = n_items
        self.views = views
        self.id_dropout = id_dropout
        mean, proj = text_reduction(text, text_dim, whiten)
        self.register_buffer("text_mean", mean)  # (1, D)
        self.register_buffer("text_map", proj)  # (D, k)
        self.register_buffer("text", (text.float() - mean) @ proj)  # (n, k)
        d = self.text.shape[1]
        self.table = nn.Embedding(1 + n_items + n_special, width, padding_idx=PAD)
        nn.init.normal_(self.table.weight, std=1.0 / math.sqrt(width))
        with torch.no_grad():
            self.table.weight[PAD].zero_()
            if views == "both":  # training starts from the text view; ids learn the residual
                self.table.weight[1 : 1 + n_items].mul_(id_init)
        self.adapter = nn.Sequential(
            nn.Linear(d, d),
            nn.GELU(),
            Dropout(adapter_dropout),
            nn.Linear(d, width),
        )
        self.skip = nn.Linear(d, width, bias=False)
        self.gate = nn.Linear(1, width)
        nn.init.zeros_(self.gate.weight)
        # Standardised log training count of each item; items without training data: id off.
        self.register_buffer("popularity", torch.zeros(n_items, 1))
        self.register_buffer("id_mask", torch.ones(n_items))

    def set_popularity(self, counts: torch.Tensor) -> None:
        """Tell the gate each item's training interaction count (n_items,)."""
        p = torch.log1p(counts.float())
        p = (p - p.mean()) / p.std().clamp(min=1e-6)
        self.popularity.copy_(p[:, None])
        self.id_mask.copy_((counts > 0).float())

    def text_view(self, i: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(k, C) adapted text vectors of items `i` (default: all)."""
        t = self.text[i]
        return self.adapter(t) + self.skip(t)

    def id_gate(self, i: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """(k, C) weight of the id view of items `i` (default: all)."""
        m = self.id_mask[i]
        if self.training and self.id_dropout > 0:
            m = m * (torch.rand_like(m) >= self.id_dropout).to(m.dtype)
        return torch.sigmoid(self.gate(self.popularity[i])) * m[:, None]

    def _items(self, i: torch.Tensor | slice) -> torch.Tensor:
        ids = self.table.weight[1 : 1 + self.n_items][i]
        if self.views == "id":
            return ids
        if self.views == "text":
            return self.text_view(i)
        return self.text_view(i) + self.id_gate(i) * ids

    def weight(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(1 + n_items + n_special, C) vectors of every token; with `ids` (sorted unique
        token ids) only those rows are computed, the others may be left zero."""
        w = self.table.weight
        if ids is not None:
            i = ids[(ids >= 1) & (ids <= self.n_items)] - 1
            return _scatter_rows(w, 1 + i, self._items(i))
        items = self._items(slice(None))
        return torch.cat([w[:1], items, w[1 + self.n_items :]], dim=0)

    @torch.no_grad()
    def borrow_ids(self, start: int, k: int = 5, temperature: float = 0.02) -> None:
        """Place items `start`.. (new, without training data) where the trained items they
        read like are: each new item's vector becomes the softmax(cos / temperature)-weighted
        mean of the vectors of its `k` most text-similar trained items (cosine of the
        centred principal text coordinates, i.e. before whitening), its popularity their
        mean; its id vector is set to what the gate needs for that. A new item then competes
        with trained items on their terms (popularity and collaborative part included), not
        from the text-only region that no trained item occupies. Measured on ML-100K (the demo
        model): a new "Star Wars: Episode I" ranked 9th of 1,684 after a Raiders / Indiana
        Jones / Blade Runner session this way, 237th by its text view alone."""
        trained = torch.nonzero(self.id_mask[:start] > 0).squeeze(1)
        if len(trained) == 0 or start >= self.n_items:
            return
        pca = self.text / self.text_map.norm(dim=0).clamp(min=1e-12)  # undo the whitening
        t = torch.nn.functional.normalize(pca, dim=1)
        sim = t[start:] @ t[trained].T  # (new, trained)
        top, idx = sim.topk(min(k, len(trained)), dim=1)
        w = torch.softmax(top / temperature, dim=1)[..., None]  # (new, k, 1)
        nb = trained[idx]  # (new, k) neighbour item indices
        self.id_mask[start:] = 1.0
        self.popularity[start:] = (w * self.popularity[nb]).sum(1)
        was = self.training
        self.eval()
        target = (w * self._items(nb.reshape(-1)).view(*nb.shape, -1)).sum(1)  # (new, C)
        new = torch.arange(start, self.n_items, device=nb.device)
        gate = torch.sigmoid(self.gate(self.popularity[new])).clamp(min=1e-3)
        if self.views == "both":
            self.table.weight[1 + start : 1 + self.n_items] = (target - self.text_view(new)) / gate
        self.train(was)

    def text_rows(self, vectors: torch.Tensor) -> torch.Tensor:
        """Rows of the `text` buffer for new items of these encoder vectors: the map fitted
        on the training catalogue's text, applied to them."""
        if self.views == "id":
            raise ValueError("items are placed by text only with a text view")
        return (vectors - self.text_mean) @ self.text_map

    def items(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(n_items, C) output vectors of the items (from `weight()` when given)."""
        w = self.weight() if weight is None else weight
        return w[1 : 1 + self.n_items]
