"""The network and training task of `lmmf` (`lmrec.models.lmmf`), trained by
`lmrec.nn.trainer.Trainer`: a module whose `forward(batch)` returns the loss, and a task that
supplies the batches. Imported only when an LMMF model is fitted (it needs torch)."""

from __future__ import annotations

__all__ = ["LMMFNet", "LMMFTask"]

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from lmrec.models.lmmf import LMMFConfig


class LMMFNet(nn.Module):
    """Item factors q = X Wq + Oq, history factors e = X We + Oe and biases b = X wb + ob over
    the (n, d) projection inputs X; a user is the mean of their history's e (FISM), plus
    u_text Wu with `user_text`. `forward(batch)` returns the loss of a batch of positives."""

    def __init__(
        self,
        inputs: np.ndarray,
        active: np.ndarray,
        k: int,
        loss: str,
        user_vectors: np.ndarray | None,
    ):
        super().__init__()
        n, d = inputs.shape
        self.loss = loss
        self.register_buffer("text", torch.from_numpy(inputs), persistent=False)  # (n, d)
        self.register_buffer("untrained", torch.from_numpy(~active), persistent=False)  # (n,)
        self.wq = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, k)))
        self.we = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, k)))
        self.wb = nn.Parameter(torch.zeros(d))
        self.oq = nn.Parameter(torch.zeros(n, k))
        self.oe = nn.Parameter(torch.zeros(n, k))
        self.ob = nn.Parameter(torch.zeros(n))
        self.user_text = user_vectors is not None
        if user_vectors is not None:  # (n_users, d_text) buffer, (d_text, k) projection
            self.wu = nn.Parameter(torch.zeros(user_vectors.shape[1], k))
            self.register_buffer("user_vectors", torch.from_numpy(user_vectors), persistent=False)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        q = self.text @ self.wq + self.oq  # (n, k)
        e = self.text @ self.we + self.oe  # (n, k)
        b = self.text @ self.wb + self.ob  # (n,)
        ti, tw = batch["item"], batch["weight"]  # (B,)
        # The user's history without the target item (FISM: no self-prediction).
        hsum = torch.sparse.mm(batch["rows"], e) - tw[:, None] * e[ti]  # (B, k)
        uvec = hsum / batch["count"].clamp(min=1.0)[:, None]
        if self.user_text:
            uvec = uvec + self.user_vectors[batch["user"]] @ self.wu
        if self.loss == "softmax":
            logits = (uvec @ q.T + b).masked_fill(self.untrained, float("-inf"))  # (B, n)
            return F.cross_entropy(logits, ti)
        neg = batch["negative"]
        pos_s = (uvec * q[ti]).sum(1) + b[ti]
        neg_s = (uvec * q[neg]).sum(1) + b[neg]
        return -F.logsigmoid(pos_s - neg_s).mean()


class LMMFTask:
    """Batches of positives in a seeded random order (`lmrec.nn.trainer.TrainTask`); nothing
    to validate on (LMMF trains a fixed number of epochs).

    The two regularisers are decoupled weight decays of different strength (`reg` on the
    text projections, `offset_reg` on the free per-item offsets, none on offsets when
    `use_offset` is off); the trainer's AdamW has one, so the decay p <- p (1 - lr * wd) is
    applied here before each step, as AdamW does at the start of its step.
    """

    def __init__(self, net: LMMFNet, m: Any, c: LMMFConfig):
        coo = m.tocoo()
        self.net, self.m, self.c = net, m, c
        self.pu, self.pi = coo.row.astype(np.int64), coo.col.astype(np.int64)
        self.pw = coo.data
        self.counts = np.asarray(m.sum(axis=1)).ravel()
        self.active_items = np.flatnonzero(~net.untrained.numpy())
        self.rng = np.random.default_rng(c.seed)
        proj = [net.wq, net.we, net.wb] + ([net.wu] if net.user_text else [])
        self.decay = [(p, c.reg) for p in proj]
        if c.use_offset:
            self.decay += [(p, c.offset_reg) for p in (net.oq, net.oe, net.ob)]
        else:
            for p in (net.oq, net.oe, net.ob):
                p.requires_grad_(False)

    def _decay(self) -> None:
        with torch.no_grad():
            for p, wd in self.decay:
                if wd > 0:
                    p.mul_(1.0 - self.c.learning_rate * wd)

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[dict[str, torch.Tensor]]:
        c, m, n = self.c, self.m, self.m.shape[1]
        order = self.rng.permutation(len(self.pu))
        for s in range(0, len(order), c.batch_size):
            sel = order[s : s + c.batch_size]
            u, i, w = self.pu[sel], self.pi[sel], self.pw[sel]
            rows = m[u].tocoo()
            batch = {
                "rows": torch.sparse_coo_tensor(
                    np.vstack([rows.row, rows.col]),
                    rows.data,
                    (len(sel), n),
                    dtype=torch.float32,
                    check_invariants=False,
                ),
                "item": torch.from_numpy(i),
                "weight": torch.from_numpy(w.astype(np.float32)),
                "count": torch.from_numpy(self.counts[u] - w).float(),
                "user": torch.from_numpy(u),
            }
            if c.loss == "bpr":
                batch["negative"] = torch.from_numpy(self.rng.choice(self.active_items, len(sel)))
            self._decay()
            yield batch

    def validate(self, module: nn.Module, rank: int, world: int) -> tuple[float, float]:
        return 0.0, 0.0
