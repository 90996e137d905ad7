"""Confidence intervals for the numbers privbench reports (every number has n and a 95% CI).

The intervals are short closed forms written here (statsmodels has no interval for a
difference of paired proportions), with scipy's quantiles. The tests come from libraries:
statsmodels' exact McNemar test and Holm correction, scipy's paired bootstrap and
sign-flip permutation test.
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


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value (statsmodels): the binomial test of the discordant
    pairs; 1.0 when there are none."""
    if only_first + only_second == 0:
        return 1.0
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[0, only_first], [only_second, 0]], exact=True).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' ``multipletests``), in the given order."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(pvalues, method="holm")[1]]


def paired_mean_difference(
    first: np.ndarray, second: np.ndarray, seed: int, resamples: int = 9999
) -> tuple[float, float, float, float]:
    """Mean of ``first − second`` over paired items with a 95% paired bootstrap interval (BCa,
    scipy) and a two-sided sign-flip permutation p-value: (difference, low, high, p).
    Identical samples give (0, 0, 0, 1); a constant difference has a zero-width interval."""
    d = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    diff = float(d.mean())
    if len(d) == 0 or not np.any(d):
        return diff, diff, diff, 1.0
    rng = np.random.default_rng(seed)
    if len(d) < 2 or np.ptp(d) <= 1e-12 * max(1.0, abs(diff)):
        lo = hi = diff
    else:
        boot = stats.bootstrap(
            (d,), np.mean, n_resamples=resamples, method="BCa", random_state=rng, vectorized=True
        )
        lo, hi = (float(x) for x in boot.confidence_interval)
    perm = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        n_resamples=resamples,
        random_state=rng,
        vectorized=True,
    )
    return diff, lo, hi, float(perm.pvalue)
