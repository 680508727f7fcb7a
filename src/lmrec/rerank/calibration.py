"""Calibrated relevance (relevance="prob"): fit the temperature and rank term of
softmax(score / T - b log(rank + 1)) over the pool on held-out items (`calibrate`)."""

from __future__ import annotations

__all__ = ["Calibration", "calibrate"]

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmrec.errors import LmrecError
from lmrec.rerank.greedy import _ranks

if TYPE_CHECKING:
    from lmrec.data import Dataset
    from lmrec.models.base import Recommender


@dataclass(frozen=True)
class Calibration:
    """The fitted relevance="prob" parameters and how the fit went (see `calibrate`)."""

    temperature: float
    rank_power: float
    pool: int
    #: held-out items whose user's pool contains them (the fit uses these) and all of them.
    targets_in_pool: int
    targets: int
    #: mean negative log-likelihood of the held-out items under the fitted softmax, and under
    #: the uniform one over the pool (a reference).
    nll: float
    nll_uniform: float

    def params(self) -> dict[str, float]:
        """`temperature` and `rank_power`, as fields of `RerankConfig` (`config.replace(**...)`)."""
        return {"temperature": self.temperature, "rank_power": self.rank_power}


def calibrate(
    model: Recommender,
    history: Dataset,
    heldout: Dataset,
    pool: int = 100,
    *,
    fit_rank: bool = True,
    batch_size: int = 512,
) -> Calibration:
    """Fit relevance="prob": P(item i is the user's next item | it is in the pool) =
    softmax over the pool of score_i / temperature - rank_power log(r_i + 1), r_i the model's
    rank (0-based) of i in the pool, by maximum likelihood of the `heldout` items (e.g. the
    validation part of a split) given `history` (what the model saw, e.g. split.train).

    Only held-out items that are in their user's pool count (the conditional likelihood);
    with `fit_rank=False`, rank_power = 0 (a temperature alone). The likelihood is convex in
    (1 / temperature, rank_power). Fit on validation data, never on the test part.
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    from lmrec.models.base import History

    if pool < 2:
        raise LmrecError(f"calibration needs a pool of at least 2 items, got {pool}")
    model.check_fitted()
    if (history.n_users, history.n_items) != (heldout.n_users, heldout.n_items):
        raise LmrecError(
            f"history ({history.n_users} users, {history.n_items} items) and held-out data "
            f"({heldout.n_users} users, {heldout.n_items} items) are not over the same "
            "vocabularies: pass two parts of one split"
        )
    if len(model.items) != history.n_items:
        raise LmrecError(
            f"the model knows {len(model.items)} items but the data has {history.n_items}: "
            "calibrate with the data the model was fitted on (the same split)"
        )
    held = heldout.matrix().tocsr()
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    if len(users) == 0:
        raise LmrecError("the held-out data has no interactions to calibrate on")
    feats, tpos = [], []  # per pool row with targets: (scores, log(rank + 1)), target positions
    n_targets = 0
    for b0 in range(0, len(users), batch_size):
        ub = users[b0 : b0 + batch_size]
        idx, val, _ = model.rank(History.from_dataset(history, ub), pool)
        for r, u in enumerate(ub):
            ok = (idx[r] >= 0) & np.isfinite(val[r])
            items, sc = idx[r][ok], np.asarray(val[r][ok], np.float64)
            targets = held.indices[held.indptr[u] : held.indptr[u + 1]]
            n_targets += len(targets)
            hit = np.flatnonzero(np.isin(items, targets))
            if len(hit) and len(items) > 1:
                feats.append((sc, np.log1p(_ranks(sc))))
                tpos.append(hit)
    n_in = int(sum(len(h) for h in tpos))
    if n_in == 0:
        raise LmrecError(
            f"none of the {n_targets} held-out items is in its user's top {pool}: use a larger pool"
        )
    # Rows padded to the pool size: scores X, log ranks LR, validity V, target counts C.
    m = max(len(f[0]) for f in feats)
    x = np.zeros((len(feats), m))
    lr = np.zeros((len(feats), m))
    valid = np.zeros((len(feats), m), bool)
    cnt = np.zeros((len(feats), m))
    for r, ((sc, lrk), hit) in enumerate(zip(feats, tpos, strict=True)):
        x[r, : len(sc)], lr[r, : len(sc)], valid[r, : len(sc)] = sc, lrk, True
        cnt[r, hit] = 1.0
    scale = float(x[valid].std()) or 1.0  # fit 1 / temperature in units of the scores' spread
    x /= scale
    n_row = cnt.sum(axis=1)

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = theta[0], (theta[1] if fit_rank else 0.0)
        z = np.where(valid, a * x - b * lr, -np.inf)
        lse = logsumexp(z, axis=1)
        p = np.exp(z - lse[:, None])
        total = -float((cnt * np.where(valid, z, 0.0)).sum() - n_row @ lse)
        ga = -float((cnt * x).sum() - n_row @ (p * x).sum(axis=1))
        gb = float((cnt * lr).sum() - n_row @ (p * lr).sum(axis=1)) if fit_rank else 0.0
        return total / n_in, np.array([ga, gb]) / n_in

    res = minimize(
        nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(1e-6, None), (None, None)]
    )
    a, b = float(res.x[0]), float(res.x[1]) if fit_rank else 0.0
    uniform = float(n_row @ np.log(valid.sum(axis=1)) / n_in)
    return Calibration(
        temperature=scale / a,
        rank_power=b,
        pool=int(pool),
        targets_in_pool=n_in,
        targets=int(n_targets),
        nll=float(res.fun),
        nll_uniform=uniform,
    )
