"""Significance of differences between models: paired tests over per-user values and
percentile-bootstrap confidence intervals (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993; for IR evaluation see Sakai, SIGIR 2006 and Urbano et al., SIGIR 2019)."""

from __future__ import annotations

__all__ = ["bootstrap_ci", "paired_test"]

from typing import Any, Literal

import numpy as np

from lmrec.errors import LmrecError


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of the mean of `values`.

    Draws n_boot resamples of the n values with replacement; the interval is the alpha/2 and
    1 - alpha/2 quantiles of the resampled means. NaN values are dropped first.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if len(v) == 0:
        raise LmrecError("bootstrap_ci needs at least one value")
    if not 0 < alpha < 1:
        raise LmrecError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise LmrecError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # Resample in chunks of about 4M indices so that large user sets stay in memory.
    step = max(1, 4_000_000 // len(v))
    for s in range(0, n_boot, step):
        m = min(step, n_boot - s)
        means[s : s + m] = v[rng.integers(0, len(v), size=(m, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _aligned(res_a: Any, res_b: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    for name, r in (("first", res_a), ("second", res_b)):
        if metric not in r.per_user:
            have = ", ".join(sorted(r.per_user))
            raise LmrecError(f"the {name} result has no per-user {metric!r} (it has: {have})")
    ua, ub = np.asarray(res_a.users), np.asarray(res_b.users)
    a, b = np.asarray(res_a.per_user[metric], float), np.asarray(res_b.per_user[metric], float)
    if not np.array_equal(ua, ub):
        common, ia, ib = np.intersect1d(ua, ub, return_indices=True)
        if len(common) == 0:
            raise LmrecError("the two results share no users: a paired test needs the same users")
        a, b = a[ia], b[ib]
    ok = ~(np.isnan(a) | np.isnan(b))
    return a[ok], b[ok]


def paired_test(
    res_a: Any,
    res_b: Any,
    metric: str = "ndcg@10",
    test: Literal["wilcoxon", "ttest"] = "wilcoxon",
) -> dict[str, float | int | str]:
    """Paired test of per-user `metric` of two results on the same users.

    "ttest": Student's paired t-test on d_u = b_u - a_u (t = mean(d) / (sd(d) / sqrt(n))).
    "wilcoxon": Wilcoxon signed-rank test on the non-zero d_u (two-sided). Returns p_value,
    mean_a, mean_b, diff = mean_b - mean_a, n (paired users), the test and its statistic.
    When every difference is zero the p-value is 1.
    """
    from scipy import stats

    if test not in ("wilcoxon", "ttest"):
        raise LmrecError(f"test must be 'wilcoxon' or 'ttest', got {test!r}")
    a, b = _aligned(res_a, res_b, metric)
    n = len(a)
    if n < 2:
        raise LmrecError(f"a paired test needs at least 2 users with {metric}, got {n}")
    d = b - a
    if np.all(d == 0):
        stat, p = 0.0, 1.0
    elif test == "ttest":
        if np.all(d == d[0]):  # constant non-zero difference: no variance, certain
            stat, p = float("inf") * np.sign(d[0]), 0.0
        else:
            r = stats.ttest_rel(b, a)
            stat, p = float(r.statistic), float(r.pvalue)
    else:
        r = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        stat, p = float(r.statistic), float(r.pvalue)
    return {
        "metric": metric,
        "test": test,
        "statistic": stat,
        "p_value": p,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": float(d.mean()),
        "n": int(n),
    }
