"""Differential privacy: the Gaussian mechanism with a Rényi-DP accountant.

`gaussian_sigma(epsilon, delta, sensitivity)` is the smallest noise scale whose RDP curve,
epsilon(alpha) = alpha * sensitivity^2 / (2 sigma^2) (Mironov 2017, one release), converts to
(epsilon, delta)-DP by the conversion of Balle et al. 2020 (Prop. 12 / Canonne et al.):

    epsilon = min_alpha  eps_alpha + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1)

over a grid of orders alpha (`ORDERS`). `spent(sigma, delta, sensitivity)` is the epsilon a
given sigma spends. Neighbouring datasets differ by one user (add or remove), whose
contribution is clipped so that its L2 norm is at most `sensitivity`.

`dp_gram(x, epsilon, delta, max_items, rng)` is the noisy item Gram matrix X'X of DP-EASE: each
user's row is clipped to their `max_items` most recent items, so one user changes the upper
triangle (with the diagonal) of X'X by at most sqrt(c (c + 1) / 2) in L2 norm; Gaussian noise
of that sensitivity is added to the upper triangle and mirrored. Everything computed from the
noisy Gram (the regularisation, the inverse, the weights) is post-processing.
"""

from __future__ import annotations

__all__ = ["ORDERS", "Privacy", "dp_gram", "gaussian_sigma", "spent"]

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError

#: Rényi orders of the accountant.
ORDERS = np.concatenate([np.linspace(1.01, 10, 200), np.arange(11, 257, dtype=float)])


@dataclass(frozen=True)
class Privacy:
    """The budget a model spent: (epsilon, delta)-DP by the accountant, its noise and clip."""

    epsilon: float
    delta: float
    sigma: float
    sensitivity: float
    mechanism: str

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def spent(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """Epsilon of one Gaussian release with noise `sigma` at `delta` (RDP accountant)."""
    a = ORDERS
    rdp = a * sensitivity**2 / (2.0 * sigma**2)
    eps = rdp + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    return float(max(eps.min(), 0.0))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest sigma (to 0.1%) whose release is (epsilon, delta)-DP by `spent`."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise LmrecError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    lo, hi = 1e-4 * sensitivity, 1e4 * sensitivity
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        if spent(mid, delta, sensitivity) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def clip_rows(x: sp.csr_matrix, ts: np.ndarray | None, max_items: int) -> sp.csr_matrix:
    """Binary rows with at most `max_items` ones each (the latest by `ts` where given, else
    the last stored)."""
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    x.data[:] = 1.0
    counts = np.diff(x.indptr)
    if counts.max(initial=0) <= max_items:
        return x
    keep = np.ones(x.nnz, bool)
    for u in np.flatnonzero(counts > max_items).tolist():
        lo, hi = x.indptr[u], x.indptr[u + 1]
        order = np.argsort(ts[lo:hi], kind="stable") if ts is not None else np.arange(hi - lo)
        drop = order[: hi - lo - max_items]
        keep[lo + drop] = False
    x.data = keep.astype(np.float64)
    x.eliminate_zeros()
    return x


def dp_gram(
    x: sp.csr_matrix,
    epsilon: float,
    delta: float,
    max_items: int,
    rng: np.random.Generator,
    ts: np.ndarray | None = None,
) -> tuple[np.ndarray, Privacy]:
    """(the noisy Gram X'X of rows clipped to `max_items`, the budget it spent)."""
    xc = clip_rows(x, ts, max_items)
    sens = math.sqrt(max_items * (max_items + 1) / 2.0)
    sigma = gaussian_sigma(epsilon, delta, sens)
    g = (xc.T @ xc).toarray()
    n = len(g)
    noise = np.triu(rng.normal(0.0, sigma, (n, n)))
    g += noise + np.triu(noise, 1).T
    return g, Privacy(spent(sigma, delta, sens), delta, sigma, sens, "gaussian gram (ease)")
