"""Paired-difference statistics: tests, intervals, multiplicity and power.

Pure functions over the per-seed differences of two cells (value minus baseline,
paired by seed). Every one is checked against SciPy in tests/test_statistics.py.

- `t_test`: the one-sample Student-t test of mean 0 (assumes roughly normal differences).
- `sign_flip_p`: the exact paired permutation test: under "no difference", each
  difference's sign is a fair coin, so all 2^n sign patterns are equally likely.
  It assumes only symmetry. With n seeds its smallest two-sided p-value is
  2 / 2^n (0.0625 for n = 5); adjusted over m comparisons, m * 2 / 2^n must be
  below alpha for any verdict (12 comparisons at 0.05: at least 9 seeds).
- `bootstrap_interval`: the percentile bootstrap of the mean (seeded). It
  under-covers with few seeds (below about 10 it is narrower than the t interval):
  a check, never what a verdict rests on.
- `holm`: Holm's step-down adjustment, controlling the family-wise error rate
  across all the comparisons a report makes.
- `tost_p`: two one-sided t-tests: "equivalent within ±epsilon".
- `detectable_difference`: the smallest true difference a paired t-test detects
  with the given power, for an assumed seed-to-seed SD of the differences.
- `variance_components`: between-tuning and between-seed variance of results
  grouped by tuning repeat (one-way random-effects ANOVA).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

SIGN_FLIP_EXACT_MAX = 16  # seeds up to which all 2^n sign patterns are enumerated
SIGN_FLIP_SAMPLES = 200_000  # random sign patterns beyond that (seeded)
BOOTSTRAP_RESAMPLES = 20_000
# Differences closer than this to the observed statistic count as "as extreme":
# floating-point sums of the same values in another order differ in the last bits.
TIE_TOLERANCE = 1e-12


def mean_and_se(diffs) -> tuple[float, float]:
    values = np.asarray(diffs, dtype="float64")
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan


def t_test(diffs) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0; nan below two values."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return math.nan
    mean, se = mean_and_se(diffs)
    if se == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * stats.t.sf(abs(mean / se), n - 1))


def t_interval(diffs, confidence: float) -> tuple[float, float]:
    """The Student-t interval of the mean at `confidence` (e.g. 0.95, or 1 - 0.05/m)."""
    from scipy import stats

    mean, se = mean_and_se(diffs)
    if len(diffs) < 2:
        return (math.nan, math.nan)
    half = float(stats.t.ppf((1 + confidence) / 2, len(diffs) - 1) * se)
    return (mean - half, mean + half)


def sign_flip_p(diffs, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test (exact up to 16 seeds)."""
    values = np.asarray(diffs, dtype="float64")
    n = len(values)
    if n == 0:
        return math.nan
    observed = abs(values.mean())
    if n <= SIGN_FLIP_EXACT_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(SIGN_FLIP_SAMPLES, n))
        # Sampled: the observed pattern counts too, so p is never 0 (Phipson and Smyth, 2010).
        extreme = np.sum(np.abs(signs @ values) / n >= observed - TIE_TOLERANCE)
        return float((extreme + 1) / (SIGN_FLIP_SAMPLES + 1))
    means = np.abs(signs @ values) / n
    return float(np.mean(means >= observed - TIE_TOLERANCE))


def bootstrap_interval(diffs, confidence: float, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (nan below two values)."""
    values = np.asarray(diffs, dtype="float64")
    if len(values) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (nan stays nan and is not counted)."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def bonferroni(pvalues: list[float]) -> list[float]:
    m = sum(1 for p in pvalues if not math.isnan(p))
    return [p if math.isnan(p) else min(1.0, m * p) for p in pvalues]


def tost_p(diffs, epsilon: float) -> float:
    """p-value of two one-sided t-tests that the mean difference lies within ±epsilon."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return math.nan
    mean, se = mean_and_se(diffs)
    if se == 0:
        return 0.0 if abs(mean) < epsilon else 1.0
    lower = stats.t.sf((mean + epsilon) / se, n - 1)  # H0: mean <= -epsilon
    upper = stats.t.cdf((mean - epsilon) / se, n - 1)  # H0: mean >= +epsilon
    return float(max(lower, upper))


def detectable_difference(n: int, sd: float, alpha: float, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t-test at `alpha` detects with `power`.

    Exact (non-central t), for `n` paired seeds whose differences have SD `sd`.
    """
    from scipy import optimize, stats

    if n < 2:
        return math.inf
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(effect: float) -> float:
        shift = effect / (sd / math.sqrt(n))
        # The far tail is negligible once the shift is large, where SciPy's nct.cdf can return nan.
        far = stats.nct.cdf(-critical, df, shift)
        achieved = stats.nct.sf(critical, df, shift) + (0.0 if math.isnan(far) else far)
        return achieved - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10 * sd))


def variance_components(groups: list[list[float]]) -> tuple[float, float]:
    """`(between, within)`: one-way random-effects ANOVA estimates of the variance
    between groups (tuning repeats) and within them (seeds of one repeat).

    Method of moments with the unbalanced-design group size n0; the between part is
    truncated at 0, as usual, when the groups' means vary less than their seeds
    would make them. Groups with fewer than one value are ignored; both are nan
    without two groups or without a group of two values.
    """
    groups = [list(g) for g in groups if len(g) >= 1]
    k, total = len(groups), sum(len(g) for g in groups)
    if k < 2 or total <= k:
        return math.nan, math.nan
    grand = sum(sum(g) for g in groups) / total
    means = [sum(g) / len(g) for g in groups]
    ss_between = sum(len(g) * (m - grand) ** 2 for g, m in zip(groups, means))
    ss_within = sum((x - m) ** 2 for g, m in zip(groups, means) for x in g)
    ms_between, ms_within = ss_between / (k - 1), ss_within / (total - k)
    n0 = (total - sum(len(g) ** 2 for g in groups) / total) / (k - 1)
    return max(0.0, (ms_between - ms_within) / n0), ms_within
