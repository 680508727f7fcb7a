"""DCN-v2 over dense features, to rank the candidates of a query.

Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale
Learning to Rank Systems", WWW 2021. The input x0 is the row's standardised dense features
(NaN -> the training mean, clipped to +-`CLIP` standard deviations), followed by the item's
and the user's text vectors, each projected by one shared learned matrix to `text_size`
(so that the cross layers can multiply item and user coordinates). Each cross layer is

    x_{l+1} = x0 * (W_l x_l + b_l) + x_l

and a ReLU MLP ("deep") either follows the cross network (`stacked`) or runs beside it on x0,
its output concatenated with the cross network's (`parallel`); a linear head gives the score.

Training (`forward(batch)`) takes a batch of queries, each with its candidates padded to one
length, and returns a listwise softmax cross entropy (the relevant candidates share the target
mass) or a pairwise logistic loss over (relevant, other) pairs of one query.
`attributions` gives integrated gradients (Sundararajan et al., ICML 2017) from the all-zero
input (every feature at its training mean, no text): per input coordinate, summing to the score
minus the baseline's score.
"""

from __future__ import annotations

__all__ = ["CLIP", "DCNv2", "RankBatch", "listwise_loss"]

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Standardised features are clipped to this many standard deviations.
CLIP = 8.0


@dataclass
class RankBatch:
    """Q queries with C candidate slots each: dense features (Q, C, F), candidate item indices
    (Q, C), relevance (Q, C), valid slots (Q, C) bool; the item text vectors (n_items, D) and
    each query's user text vector (Q, D), or None without text."""

    dense: torch.Tensor
    item: torch.Tensor
    rel: torch.Tensor
    mask: torch.Tensor
    item_text: torch.Tensor | None = None
    user_text: torch.Tensor | None = None


class CrossLayer(nn.Module):
    """x_{l+1} = x0 * (W x_l + b) + x_l (full-rank W)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.linear.weight, gain=0.5)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class DCNv2(nn.Module):
    """Scores rows of dense features (plus optional item / user text vectors)."""

    def __init__(
        self,
        n_dense: int,
        text_dim: int = 0,
        text_size: int = 16,
        cross_layers: int = 3,
        deep_layers: Sequence[int] = (128, 64),
        structure: str = "stacked",
        dropout: float = 0.1,
        loss: str = "softmax",
    ):
        super().__init__()
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"structure must be 'stacked' or 'parallel', got {structure!r}")
        if loss not in ("softmax", "pairwise"):
            raise ValueError(f"loss must be 'softmax' or 'pairwise', got {loss!r}")
        self.structure, self.loss = structure, loss
        self.n_dense, self.text_size = n_dense, text_size if text_dim else 0
        self.register_buffer("mean", torch.zeros(n_dense))
        self.register_buffer("std", torch.ones(n_dense))
        self.text = nn.Linear(text_dim, text_size, bias=False) if text_dim else None
        width = n_dense + 2 * self.text_size
        self.width = width
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cross_layers))
        layers: list[nn.Module] = []
        size = width
        for h in deep_layers:
            layers += [nn.Linear(size, h), nn.ReLU(), nn.Dropout(dropout)]
            size = h
        self.deep = nn.Sequential(*layers)
        self.head = nn.Linear(size if structure == "stacked" else width + size, 1)

    def set_scaler(self, x: np.ndarray) -> None:
        """Standardise by the mean and standard deviation of these training rows (NaN-aware;
        a constant or all-missing column gets mean 0 and deviation 1)."""
        x = np.asarray(x, np.float64)
        seen = np.isfinite(x)
        n = seen.sum(axis=0)
        filled = np.where(seen, x, 0.0)
        mean = filled.sum(axis=0) / np.maximum(n, 1)
        var = (np.where(seen, x - mean, 0.0) ** 2).sum(axis=0) / np.maximum(n, 1)
        std = np.sqrt(var)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def inputs(
        self,
        dense: torch.Tensor,
        item: torch.Tensor,
        query: torch.Tensor,
        item_text: torch.Tensor | None,
        user_text: torch.Tensor | None,
    ) -> torch.Tensor:
        """(N, width) x0 of N rows: dense (N, F), item and query indices (N,) into the text
        tables item_text (n_items, D) and user_text (Q, D)."""
        z = ((dense - self.mean) / self.std).nan_to_num(0.0, 0.0, 0.0).clamp(-CLIP, CLIP)
        if self.text is None:
            return z
        assert item_text is not None and user_text is not None
        return torch.cat([z, self.text(item_text)[item], self.text(user_text)[query]], dim=-1)

    def head_of(self, x0: torch.Tensor) -> torch.Tensor:
        """Scores (...,) of inputs x0 (..., width)."""
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        h = self.deep(x) if self.structure == "stacked" else torch.cat([x, self.deep(x0)], -1)
        return self.head(h).squeeze(-1)

    def scores(
        self,
        dense: torch.Tensor,
        item: torch.Tensor,
        query: torch.Tensor,
        item_text: torch.Tensor | None = None,
        user_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head_of(self.inputs(dense, item, query, item_text, user_text))

    def forward(self, batch: RankBatch) -> torch.Tensor:
        """The training loss of a batch of queries."""
        q, c, f = batch.dense.shape
        query = torch.arange(q, device=batch.dense.device).repeat_interleave(c)
        s = self.scores(
            batch.dense.reshape(q * c, f),
            batch.item.reshape(-1),
            query,
            batch.item_text,
            batch.user_text,
        ).reshape(q, c)
        return listwise_loss(s, batch.rel, batch.mask, self.loss)

    def attributions(self, x0: torch.Tensor, steps: int = 64) -> tuple[torch.Tensor, float]:
        """Integrated gradients of the score along the straight path from 0 to each row of x0
        (N, width), midpoint rule with `steps` points: (N, width) attributions and the score of
        the zero input (the baseline: each term plus it adds up to the score)."""
        alphas = (torch.arange(steps, dtype=x0.dtype, device=x0.device) + 0.5) / steps
        total = torch.zeros_like(x0)
        for a in alphas:  # one point at a time: memory of one forward pass
            point = (a * x0).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.head_of(point).sum(), point)
            total += grad
        with torch.no_grad():
            base = float(self.head_of(torch.zeros(1, x0.shape[1], dtype=x0.dtype)).item())
        return (x0 * total / steps).detach(), base


def listwise_loss(
    s: torch.Tensor, rel: torch.Tensor, mask: torch.Tensor, kind: str
) -> torch.Tensor:
    """Mean loss over the queries with a relevant candidate: scores, relevance and valid slots
    (Q, C). "softmax": -sum_i rel_i log softmax(s)_i / sum_i rel_i over the valid slots;
    "pairwise": mean softplus(s_j - s_i) over relevant i and non-relevant valid j."""
    pos = (rel > 0) & mask
    has = pos.any(dim=1)
    if not has.any():
        return s.sum() * 0.0
    s, rel, mask, pos = s[has], rel[has], mask[has], pos[has]
    if kind == "softmax":
        logp = torch.log_softmax(s.masked_fill(~mask, float("-inf")), dim=1)
        w = torch.where(pos, rel, torch.zeros_like(rel))
        return (-(w * logp.masked_fill(~pos, 0.0)).sum(1) / w.sum(1)).mean()
    neg = mask & ~pos
    pairs = pos[:, :, None] & neg[:, None, :]
    loss = F.softplus(s[:, None, :] - s[:, :, None])
    per = (loss * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)
    return per.mean()
