"""`bayesmf`: Bayesian matrix factorisation with biases by Gibbs sampling (BPMF, Salakhutdinov
& Mnih, ICML 2008; with the bias terms and the sampled noise precision of libFM's MCMC
solver, Rendle, TIST 2012).

    r_ui ~ N(mu + b_u + b_i + p_u . q_i, 1 / alpha)

Each user's augmented vector (p_u, b_u) and each item's (q_i, b_i) has a Gaussian prior whose
mean and precision carry a Normal-Wishart hyperprior (mean 0, beta0 = 2, nu0 = dimension,
W0 = I), and alpha a Gamma(1, 1) prior. A sweep samples the hyperparameters, every user's
vector given the items, every item's given the users, then alpha. The prediction is the
posterior mean, averaged over the sweeps after `burn_in`: nothing is tuned by hand and
nothing is early-stopped, which is why Bayesian factorisation is the strongest plain rating
model in the comparisons of Rendle et al. ("On the difficulty of evaluating baselines",
2019). The average of the sampled p_u . q_i is kept as one low-rank factorisation (`rank`),
updated after each kept sweep by a QR + SVD truncation, so memory stays that of `rank`
factors whatever the number of sweeps; the biases are plain means. A user or item without
ratings gets its prior mean (the population's), so a cold item is rated mu + b_u + the mean
item bias + p_u . (the mean item factor).
"""

from __future__ import annotations

__all__ = ["BayesMF", "BayesMFConfig"]

from typing import Self

import numpy as np
from pydantic import Field, model_validator

from lmrec.data import Dataset
from lmrec.models.rating import FactorRatingConfig, FactorRatingModel, Ratings


class BayesMFConfig(FactorRatingConfig):
    embedding_size: int = Field(10, ge=1)
    """Number of latent factors of each sample (chosen on ML-100K folds: RMSE 0.8965 on fold 0
    with 10 and 200 sweeps; `benchmarks/ratings.md`)."""
    sweeps: int = Field(200, ge=2)
    """Gibbs sweeps in all, burn-in included."""
    burn_in: int = Field(50, ge=1)
    """Sweeps discarded before the posterior mean is averaged."""
    rank: int = Field(64, ge=1)
    """Rank of the saved posterior mean of p_u . q_i (the sampled factorisations' average,
    truncated by SVD)."""

    @model_validator(mode="after")
    def _burn_in_below_sweeps(self) -> Self:
        if self.burn_in >= self.sweeps:
            raise ValueError(
                f"burn_in ({self.burn_in}) must be below sweeps ({self.sweeps}): no sample "
                "would be averaged"
            )
        return self


def _truncate(a: np.ndarray, b: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Factors (A', B') of the best rank-`rank` approximation of A B^T."""
    qa, ra = np.linalg.qr(a)
    qb, rb = np.linalg.qr(b)
    u, s, vt = np.linalg.svd(ra @ rb.T)
    r = min(rank, len(s))
    h = np.sqrt(s[:r])
    return qa @ (u[:, :r] * h), qb @ (vt[:r].T * h)


class _Side:
    """One side's ratings grouped by row (users, or items), for the conditional draws."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int):
        order = np.argsort(rows, kind="stable")
        self.rows, self.cols, self.values = rows[order], cols[order], values[order]
        self.n_rows = n_rows
        self.count = np.bincount(self.rows, minlength=n_rows)
        self.rated = np.flatnonzero(self.count)
        self.starts = np.concatenate([[0], np.cumsum(self.count)])

    def sample(
        self,
        other: np.ndarray,
        target: np.ndarray,
        mean: np.ndarray,
        prec: np.ndarray,
        alpha: float,
        rng: np.random.Generator,
        block: int = 65536,
    ) -> np.ndarray:
        """Draws (n_rows, D) of the rows' vectors given the other side's design rows `other`
        (n_other, D), the residual targets (one per rating, in this side's order) and the
        Gaussian prior (mean, precision). Rows without ratings get the prior mean."""
        d = other.shape[1]
        out = np.tile(mean, (self.n_rows, 1))
        rated = self.rated
        lo = 0
        while lo < len(rated):  # blocks of rows with at most `block` ratings (memory)
            first = self.starts[rated[lo]]
            hi = int(np.searchsorted(self.starts[rated + 1], first + block, side="right"))
            hi = max(hi, lo + 1)
            rows = rated[lo:hi]
            s, e = self.starts[rows[0]], self.starts[rows[-1] + 1]
            f = other[self.cols[s:e]]
            seg = self.starts[rows] - s
            gram = np.add.reduceat(f[:, :, None] * f[:, None, :], seg, axis=0)
            rhs = np.add.reduceat(f * target[s:e, None], seg, axis=0)
            p = prec[None] + alpha * gram
            r = (prec @ mean)[None] + alpha * rhs
            chol = np.linalg.cholesky(p)
            mu = np.linalg.solve(p, r[..., None])[..., 0]
            z = rng.standard_normal((len(rows), d))
            # x = mu + L^-T z has covariance (L L^T)^-1 = p^-1.
            out[rows] = mu + np.linalg.solve(np.swapaxes(chol, 1, 2), z[..., None])[..., 0]
            lo = hi
        return out


def _hyper(x: np.ndarray, rng: np.random.Generator, beta0: float = 2.0) -> tuple:
    """(mean, precision) drawn from the Normal-Wishart posterior given the vectors `x`."""
    from scipy import stats

    n, d = x.shape
    xbar = x.mean(axis=0)
    dev = x - xbar
    beta, nu = beta0 + n, d + n
    w_inv = np.eye(d) + dev.T @ dev + (beta0 * n / beta) * np.outer(xbar, xbar)
    w = np.linalg.inv(w_inv)
    prec = stats.wishart.rvs(df=nu, scale=(w + w.T) / 2, random_state=rng)
    prec = np.atleast_2d(prec)
    mean = rng.multivariate_normal(n * xbar / beta, np.linalg.inv(beta * prec))
    return mean, prec


class BayesMF(FactorRatingModel):
    """Bayesian biased matrix factorisation by Gibbs sampling; predicts the posterior mean."""

    name = "bayesmf"
    config_class = BayesMFConfig
    config: BayesMFConfig

    def _fit_ratings(self, r: Ratings, dataset: Dataset) -> None:
        c = self.config
        k, d = c.embedding_size, c.embedding_size + 1
        rng = np.random.default_rng(c.seed)
        users = _Side(r.user, r.item, r.value, dataset.n_users)
        items = _Side(r.item, r.user, r.value, dataset.n_items)
        u = np.zeros((dataset.n_users, d))
        v = np.zeros((dataset.n_items, d))
        u[:, :k] = rng.standard_normal((dataset.n_users, k)) * 0.1
        v[:, :k] = rng.standard_normal((dataset.n_items, k)) * 0.1
        alpha = 2.0
        bu, bi = np.zeros(dataset.n_users), np.zeros(dataset.n_items)
        pa, qa = np.zeros((dataset.n_users, 0)), np.zeros((dataset.n_items, 0))
        kept = 0
        for sweep in range(c.sweeps):
            # Users: (p_u, b_u) against the item design rows (q_i, 1), target r - mu - b_i.
            mean, prec = _hyper(u[users.rated], rng)
            design = np.hstack([v[:, :k], np.ones((len(v), 1))])
            u = users.sample(design, users.values - self.mu_ - v[users.cols, k], mean, prec,
                             alpha, rng)  # fmt: skip
            mean, prec = _hyper(v[items.rated], rng)
            design = np.hstack([u[:, :k], np.ones((len(u), 1))])
            v = items.sample(design, items.values - self.mu_ - u[items.cols, k], mean, prec,
                             alpha, rng)  # fmt: skip
            pred = u[r.user, k] + v[r.item, k] + np.einsum("nk,nk->n", u[r.user, :k],
                                                           v[r.item, :k])  # fmt: skip
            sse = float(np.sum((r.value - self.mu_ - pred) ** 2))
            alpha = float(rng.gamma(1.0 + len(r) / 2.0, 1.0 / (1.0 + sse / 2.0)))
            if sweep < c.burn_in:
                continue
            kept += 1
            bu += u[:, k]
            bi += v[:, k]
            pa, qa = np.hstack([pa, u[:, :k]]), np.hstack([qa, v[:, :k]])
            if pa.shape[1] >= c.rank + k:
                pa, qa = _truncate(pa, qa, c.rank)
        pa, qa = _truncate(pa, qa, c.rank)
        self.bu_, self.bi_ = bu / kept, bi / kept
        self.user_vec_, self.item_vec_ = pa / np.sqrt(kept), qa / np.sqrt(kept)
        self.noise_precision_ = alpha
