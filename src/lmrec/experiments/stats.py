"""Statistics of A/B experiments: Wilson intervals, the mixture sequential probability ratio
test (mSPRT) for a difference of two proportions, and the sample-ratio-mismatch check.

The mSPRT (Robbins 1970; Johari, Koomen, Pekelis and Walsh, "Always valid inference", 2017,
2022) puts a normal mixture N(0, tau^2) over the difference theta = p_B - p_A and compares the
mixture likelihood of the observed difference with that under theta = 0, using the normal
approximation of the difference of two proportions (estimate d, variance V):

    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

Lambda is a nonnegative martingale under H0, so by Ville's inequality P(sup Lambda >= 1/alpha)
<= alpha: the always-valid p-value p_n = min(p_{n-1}, 1 / Lambda_n) may be looked at after
every exposure and the test stopped whenever p_n < alpha, without inflating the type-I error
(which a fixed-horizon z-test looked at daily would). The always-valid confidence interval is
d +- sqrt(V (V + tau^2) / tau^2 * (log((V + tau^2) / V) - 2 log alpha)).
"""

from __future__ import annotations

__all__ = ["SequentialResult", "msprt", "srm_check", "wilson"]

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion (0, 1 for n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _variance(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    # The variance of a proportion with (s + 1) / (n + 2) in place of s / n: never 0, so that
    # an arm with no clicks yet does not make the test certain.
    p = (s + 1.0) / (n + 2.0)
    return p * (1 - p) / np.maximum(n, 1)


def log_lambda(
    n_a: np.ndarray, s_a: np.ndarray, n_b: np.ndarray, s_b: np.ndarray, tau: float
) -> np.ndarray:
    """log of the mSPRT statistic after each look (cumulative counts per arm)."""
    n_a, s_a, n_b, s_b = (np.asarray(x, dtype=np.float64) for x in (n_a, s_a, n_b, s_b))
    d = s_b / np.maximum(n_b, 1) - s_a / np.maximum(n_a, 1)
    v = _variance(s_a, n_a) + _variance(s_b, n_b)
    t2 = tau * tau
    out = 0.5 * np.log(v / (v + t2)) + d * d * t2 / (2 * v * (v + t2))
    return np.where((n_a > 0) & (n_b > 0), out, 0.0)


@dataclass(frozen=True)
class SequentialResult:
    """The mSPRT after the last look: estimate, always-valid interval and p-value."""

    difference: float  # p_B - p_A
    ci_low: float
    ci_high: float
    p_value: float  # always valid: the running minimum of 1 / Lambda
    p_values: list[float]  # after each look
    looks: int
    alpha: float
    tau: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


def msprt(
    n_a: Sequence[int],
    s_a: Sequence[int],
    n_b: Sequence[int],
    s_b: Sequence[int],
    *,
    alpha: float = 0.05,
    tau: float = 0.05,
) -> SequentialResult:
    """The mSPRT over looks at cumulative (exposures, successes) of arms A and B."""
    arrays = [np.asarray(x, dtype=np.float64) for x in (n_a, s_a, n_b, s_b)]
    if not len(arrays[0]):
        return SequentialResult(0.0, -1.0, 1.0, 1.0, [], 0, alpha, tau)
    ll = log_lambda(*arrays, tau=tau)
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-ll)))
    na, sa, nb, sb = (x[-1] for x in arrays)
    d = sb / max(nb, 1) - sa / max(na, 1)
    v = float(_variance(np.array(sa), np.array(na)) + _variance(np.array(sb), np.array(nb)))
    t2 = tau * tau
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(alpha)))
    return SequentialResult(
        difference=float(d),
        ci_low=float(d - half),
        ci_high=float(d + half),
        p_value=float(p[-1]),
        p_values=[float(x) for x in p],
        looks=len(p),
        alpha=alpha,
        tau=tau,
    )


def srm_check(observed: Sequence[int], shares: Sequence[float]) -> tuple[float, float]:
    """Chi-square goodness of fit of the units per arm to the configured shares: (statistic,
    p-value); p = 1 while nothing is observed."""
    obs = np.asarray(observed, dtype=np.float64)
    total = obs.sum()
    if total <= 0:
        return 0.0, 1.0
    exp = np.asarray(shares, dtype=np.float64) / float(np.sum(shares)) * total
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    return chi2, float(stats.chi2.sf(chi2, len(obs) - 1))
