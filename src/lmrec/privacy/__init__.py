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

DP-SGD (Abadi et al., CCS 2016) for the models trained by gradient steps (`biasedmf`, the
sequence models through `lmrec.nn.trainer`): the unit of privacy is one user (all of a user's
ratings or sequence windows are one sample). Every step draws each user independently with
chance q (Poisson sampling, the assumption of the accountant), clips each drawn user's
gradient to L2 norm `max_grad_norm` C, sums them, adds N(0, (z C)^2) noise to every
coordinate and divides by the expected batch q N. `dpsgd_noise(epsilon, delta, q, steps)` is
the smallest noise multiplier z whose subsampled-Gaussian RDP over `steps` steps (Mironov,
Talwar & Zhang 2019, computed by Opacus's `compute_rdp`) converts to (epsilon, delta)-DP by
the same conversion as above; `dpsgd_spent` is the epsilon a run spent. `DPSGD` holds what a
training loop needs (z, C, q, the steps, the noise generator) and writes the `Privacy` record.
"""

from __future__ import annotations

__all__ = [
    "DPSGD",
    "ORDERS",
    "SGD_ORDERS",
    "Privacy",
    "check_dp_options",
    "dp_gram",
    "dpsgd_noise",
    "dpsgd_spent",
    "gaussian_sigma",
    "spent",
]

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmrec.errors import LmrecError

#: Rényi orders of the accountant.
ORDERS = np.concatenate([np.linspace(1.01, 10, 200), np.arange(11, 257, dtype=float)])
#: Rényi orders of the DP-SGD accountant: a few fractional ones (each costs a series in
#: Opacus, 20 ms) and the integers to 64, then up to 1024 (integer orders cost a sum).
SGD_ORDERS = [1.1, 1.25, 1.5, 1.75, 2.25, 2.5, 3.5, 4.5, *range(2, 65)]
SGD_ORDERS += [80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]


@dataclass(frozen=True)
class Privacy:
    """The budget a model spent: (epsilon, delta)-DP by the accountant, its noise and clip."""

    epsilon: float
    delta: float
    sigma: float
    """Standard deviation of the noise added to the released sum."""
    sensitivity: float
    """L2 bound of one user's contribution to that sum."""
    mechanism: str
    noise_multiplier: float | None = None
    """DP-SGD: sigma / sensitivity."""
    sample_rate: float | None = None
    """DP-SGD: the chance q that a user is in a step (Poisson sampling)."""
    steps: int | None = None
    """DP-SGD: noisy steps taken (the accountant composes this many)."""
    unit: str = "user"
    """What neighbouring datasets differ by (adding or removing it)."""
    note: str | None = None
    """What the guarantee does not cover in this model."""

    def as_dict(self) -> dict[str, float | str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


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


def check_dp_options(epsilon: float, delta: float, n_users: int, where: str) -> None:
    """Refuse budgets that mean nothing: epsilon <= 0, delta outside (0, 1 / n_users)."""
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise LmrecError(f"{where}: epsilon must be a positive finite number, got {epsilon}")
    if n_users < 2:
        raise LmrecError(f"{where}: differential privacy needs at least 2 users, got {n_users}")
    if not 0 < delta < 1.0 / n_users:
        raise LmrecError(
            f"{where}: delta must be in (0, 1/n_users) = (0, {1.0 / n_users:.3g}) for "
            f"{n_users} users (a delta of 1/n lets the release reveal one user outright), "
            f"got {delta}"
        )


def dpsgd_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of `steps` Poisson-subsampled Gaussian steps (RDP, Opacus's `compute_rdp`)."""
    import warnings

    try:
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    except ImportError:
        raise LmrecError(
            "DP-SGD's accountant needs Opacus: pip install 'lmrec[privacy]' (opacus>=1.6)"
        ) from None
    if steps == 0:
        return 0.0
    rdp = compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=SGD_ORDERS
    )
    with warnings.catch_warnings():  # "optimal order is the largest alpha": see the bisection
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=SGD_ORDERS, rdp=rdp, delta=delta)
    return float(eps)


def dpsgd_noise(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to 0.1%) whose `steps` steps at `sample_rate` are
    (epsilon, delta)-DP by `dpsgd_spent`."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise LmrecError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    if not (0 < sample_rate <= 1) or steps < 1:
        raise LmrecError(f"need 0 < sample_rate <= 1 and steps >= 1, got {sample_rate}, {steps}")
    lo, hi = 0.05, 1.0
    while dpsgd_spent(hi, sample_rate, steps, delta) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e5:
            raise LmrecError(f"no noise multiplier below 1e5 reaches epsilon {epsilon}")
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        if dpsgd_spent(mid, sample_rate, steps, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


class DPSGD:
    """One DP-SGD run: the noise multiplier for (epsilon, delta) over `steps` steps that draw
    each of `n_users` users with chance `batch_size / n_users`, the clip, the noise."""

    def __init__(
        self,
        epsilon: float,
        delta: float,
        max_grad_norm: float,
        n_users: int,
        batch_size: int,
        epochs: int,
        seed: int,
        where: str,
    ):
        import torch

        check_dp_options(epsilon, delta, n_users, where)
        if not max_grad_norm > 0:
            raise LmrecError(f"{where}: max_grad_norm must be > 0, got {max_grad_norm}")
        self.epsilon, self.delta, self.clip = epsilon, delta, float(max_grad_norm)
        self.n_users = n_users
        self.sample_rate = min(1.0, batch_size / n_users)
        #: Steps per epoch: an epoch draws n_users users in expectation.
        self.steps_per_epoch = max(1, round(1.0 / self.sample_rate))
        self.max_steps = epochs * self.steps_per_epoch
        self.noise_multiplier = dpsgd_noise(epsilon, delta, self.sample_rate, self.max_steps)
        self.expected_batch = self.sample_rate * n_users
        self.steps = 0
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self.rng = np.random.default_rng([seed, 7919])

    def draw(self) -> np.ndarray:
        """The users of one step: each independently with chance q (may be none)."""
        return np.flatnonzero(self.rng.random(self.n_users) < self.sample_rate)

    def clip_factors(self, norms: Any) -> Any:
        """min(1, C / norm) per user (torch tensor of per-user gradient norms)."""
        return (self.clip / (norms + 1e-12)).clamp(max=1.0)

    def noisy_mean(self, total: Any) -> Any:
        """(sum of clipped gradients + N(0, (z C)^2)) / (q N) for one tensor; count a step
        with `step_done` once per step, not per tensor."""
        import torch

        noise = torch.randn(total.shape, generator=self.generator, dtype=total.dtype)
        return (total + noise.to(total.device) * (self.noise_multiplier * self.clip)) / (
            self.expected_batch
        )

    def step_done(self) -> None:
        self.steps += 1

    def privacy(self, note: str | None = None) -> Privacy:
        """The budget spent by the steps taken so far."""
        eps = dpsgd_spent(self.noise_multiplier, self.sample_rate, self.steps, self.delta)
        return Privacy(
            eps,
            self.delta,
            self.noise_multiplier * self.clip,
            self.clip,
            "dp-sgd (poisson sampling, per-user clipping, rdp accountant)",
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            unit="user",
            note=note,
        )
