"""Confidence intervals for the numbers privbench reports (every number has n and a 95% CI).

Written here rather than taken from statsmodels: a few short closed forms do not justify a
heavy dependency (and statsmodels has no interval for a difference of paired proportions),
and scipy (already present through scikit-image) supplies the quantiles.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); (nan, nan) when n = 0."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean with a Student-t interval; the interval is (mean, mean) for one value or no spread."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2 or float(v.std()) == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def median_interval(
    values: np.ndarray, confidence: float = 0.95
) -> tuple[float, float | None, float | None, float]:
    """Median with a distribution-free order-statistic interval (binomial; Conover 1999 §3.2):
    (median, low, high, coverage).

    The interval [v_(k), v_(n+1−k)] (1-based order statistics) covers the median with
    probability 1 − 2·P(B ≤ k − 1), B ~ Binomial(n, ½); k is the largest whose coverage is at
    least ``confidence``. When even the full range (k = 1) covers less, e.g. 1 − 2·0.5⁵ =
    93.75% for n = 5, the full range is returned with its real coverage. One value: no
    interval (None, None) and coverage 0.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    med = float(np.median(v))
    if n < 2:
        return med, None, None, 0.0
    k = 1
    while k + 1 <= (n + 1) // 2 and 1 - 2 * stats.binom.cdf(k, n, 0.5) >= confidence:
        k += 1
    coverage = float(1 - 2 * stats.binom.cdf(k - 1, n, 0.5))
    return med, float(v[k - 1]), float(v[n - k]), coverage


def paired_difference_interval(
    both: int, only_first: int, only_second: int, neither: int, z: float = Z95
) -> tuple[float, float, float]:
    """Difference p₁ − p₂ of two proportions measured on the same n items, with the
    Bonett-Price adjusted Wald interval for paired data (Bonett and Price, Journal of
    Educational and Behavioral Statistics 2012): (difference, low, high).

    ``both``: items counted by both proportions, ``only_first`` / ``only_second``: by one,
    ``neither``: by none; the difference is (only_first − only_second)/n. The interval adds
    one to each discordant count and two to n, so it keeps a width when there is no
    discordant pair (where Newcombe's hybrid score interval collapses to a point).
    """
    n = both + only_first + only_second + neither
    if n == 0:
        return (math.nan, math.nan, math.nan)
    first = (only_first + 1) / (n + 2)
    second = (only_second + 1) / (n + 2)
    centre = first - second
    half = z * math.sqrt(max(0.0, first + second - centre**2) / (n + 2))
    return (only_first - only_second) / n, max(-1.0, centre - half), min(1.0, centre + half)
