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
- `directional`: the verdicts' decision rule, Holm within each direction (the
  one-sided tests "above 0" form one family, "below 0" another, each at alpha/2),
  with the simultaneous confidence intervals compatible with it (Strassburger and
  Bretz 2008): a verdict can be read off its interval.
- `tost_p`: two one-sided t-tests: "equivalent within ±epsilon".
- `detectable_difference`: the smallest true difference a paired t-test detects
  with the given power, for an assumed seed-to-seed SD of the differences;
  `equivalence_margin`: the smallest margin TOST shows with that power.
- `variance_components`: between-tuning and between-seed variance of results
  grouped by tuning repeat (one-way random-effects ANOVA).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

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


def sign_patterns(n: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """The sign-flip test's patterns: all 2^n (up to 16 seeds), else `SIGN_FLIP_SAMPLES` seeded random ones
    (then `True`: the observed pattern counts too, so p is never 0; Phipson and Smyth, 2010)."""
    if n <= SIGN_FLIP_EXACT_MAX:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n))), False
    return np.random.default_rng(seed).choice((1.0, -1.0), size=(SIGN_FLIP_SAMPLES, n)), True


def sign_flip_p(diffs, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test (exact up to 16 seeds)."""
    values = np.asarray(diffs, dtype="float64")
    if len(values) == 0:
        return math.nan
    signs, sampled = sign_patterns(len(values), seed)
    extreme = np.sum(np.abs(signs @ values) / len(values) >= abs(values.mean()) - TIE_TOLERANCE)
    return float((extreme + 1) / (len(signs) + 1) if sampled else extreme / len(signs))


def _flip_thresholds(values: np.ndarray, seed: int) -> tuple[np.ndarray, int, int]:
    """`(thresholds, extra, total)`: the one-sided sign-flip p-value of "mean <= delta" is
    `(extra + #{thresholds <= delta}) / total`.

    A pattern counts when its mean of the shifted differences is at least the observed one,
    `s.(d - delta) >= sum(d - delta) - n * tol`, that is when delta is at least the mean of the
    differences it flips (less the tie tolerance): Hartigan's (1969) subsample means. The
    pattern that flips nothing always counts (-inf).
    """
    signs, sampled = sign_patterns(len(values), seed)
    flipped = len(values) - signs.sum(axis=1)  # twice the number of flipped signs
    gap = values.sum() - signs @ values - len(values) * TIE_TOLERANCE  # twice their sum, less the tolerance
    thresholds = np.full(len(signs), -math.inf)
    np.divide(gap, flipped, out=thresholds, where=flipped > 0)
    return np.sort(thresholds), int(sampled), len(signs) + int(sampled)


def sign_flip_greater(diffs, seed: int = 0) -> float:
    """One-sided p-value of the sign-flip test of "mean <= 0" (small when the differences are positive)."""
    values = np.asarray(diffs, dtype="float64")
    if len(values) == 0:
        return math.nan
    thresholds, extra, total = _flip_thresholds(values, seed)
    return float((extra + np.searchsorted(thresholds, 0.0, side="right")) / total)


def sign_flip_lower_bound(diffs, level: float, seed: int = 0) -> float:
    """The lower confidence bound (confidence 1 - level) that inverts `sign_flip_greater`: the smallest
    delta whose test of "mean <= delta" has a p-value of at least `level`; -inf when every delta has."""
    values = np.asarray(diffs, dtype="float64")
    if len(values) < 2:
        return math.nan
    thresholds, extra, total = _flip_thresholds(values, seed)
    k = math.ceil(level * total - extra)
    return -math.inf if k <= 0 else float(thresholds[k - 1])


def t_greater(diffs) -> float:
    """One-sided p-value of the t-test of "mean <= 0"; nan below two values."""
    from scipy import special

    if len(diffs) < 2:
        return math.nan
    mean, se = mean_and_se(diffs)
    if se == 0:
        return 0.0 if mean > 0 else 1.0
    return float(special.stdtr(len(diffs) - 1, -mean / se))  # scipy.stats.t.sf, without its overhead


def t_lower_bound(diffs, level: float) -> float:
    """The Student-t lower confidence bound of the mean at confidence 1 - level (inverts `t_greater`)."""
    from scipy import special

    if len(diffs) < 2:
        return math.nan
    mean, se = mean_and_se(diffs)
    return float(mean + special.stdtrit(len(diffs) - 1, level) * se)  # stdtrit(df, level) = -t.isf(level, df)


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


ONE_SIDED = {"t": (t_greater, t_lower_bound), "sign_flip": (sign_flip_greater, sign_flip_lower_bound)}


@dataclasses.dataclass(frozen=True)
class Directional:
    """One comparison's directional decision, and the simultaneous interval compatible with it."""

    p_adjusted: float  # in the direction of its mean: min(1, 2 x adjusted one-sided p), below alpha to claim
    sign: int  # +1: shown above 0; -1: shown below 0; 0: neither
    interval: tuple[float, float]


def directional(
    samples: Sequence[Sequence[float]], alpha: float, test: str = "t", step_down: bool = True
) -> list[Directional]:
    """Holm within each direction, and the simultaneous intervals compatible with it.

    The one-sided hypotheses "mean_i <= 0" (rejecting one shows mean_i above 0) form one family
    and "mean_i >= 0" another. Each is tested at alpha/2 with Holm's procedure (`step_down`) or
    Bonferroni over the one-sided p-values of `test`, so the chance of any false or wrong-sign
    claim stays below alpha under any dependence. Whenever Holm over the two-sided p-values
    claims in one direction only, the claims are the same as its. Samples of fewer than two
    values count as p = 1 and get no interval (nan).

    Intervals: per family, the lower bounds compatible with Holm (Strassburger and Bretz 2008,
    Stat Med 27:4914-4927; Guilbaud 2008, Biom J 50:678-692), with R the rejected hypotheses,
    K = m - |R| the others and L_i(g) the one-sided lower bound at confidence 1 - g:

        R empty or partial:  L_i = 0 for i in R (mean_i > 0, exclusive),  L_i = L_i(alpha / 2K) otherwise;
        R everything:        L_i = max(0, L_i(alpha / 2m)).

    Upper bounds are the same construction on the negated samples; with Bonferroni every bound
    is L_i(alpha / 2m). Together the bounds cover every mean with probability at least 1 - alpha,
    and a claim is made exactly when its interval excludes 0 (a claim's bound of 0 is exclusive).
    With nothing rejected they are the Bonferroni t intervals at 1 - alpha/m.
    """
    greater, lower_bound = ONE_SIDED[test]
    m, half = len(samples), alpha / 2
    sides = []
    for sign in (1.0, -1.0):
        flipped = [[sign * x for x in s] for s in samples]
        p = [greater(s) if len(s) >= 2 else 1.0 for s in flipped]
        adjusted = [min(1.0, 2 * a) for a in (holm(p) if step_down else bonferroni(p))]
        rejected = [a < alpha for a in adjusted]
        kept = m - sum(rejected)
        if not step_down:
            bounds = [lower_bound(s, half / m) for s in flipped]
        elif kept:
            bounds = [0.0 if r else lower_bound(s, half / kept) for s, r in zip(flipped, rejected)]
        else:
            bounds = [max(0.0, lower_bound(s, half / m)) for s in flipped]
        sides.append((adjusted, rejected, bounds))
    (up_p, up, lower), (down_p, down, upper) = sides
    return [
        Directional(min(up_p[i], down_p[i]), 1 if up[i] else -1 if down[i] else 0, (lower[i], -upper[i]))
        for i in range(m)
    ]


def step_divisors(pvalues: list[float], alpha: float, step_down: bool = True) -> list[int]:
    """Per p-value (none nan), the divisor of `alpha` at the step that decided it.

    Holm rejects its k-th smallest (k from 0) at alpha / (m - k) and keeps the others at
    alpha / (m - rejected); Bonferroni decides every one at alpha / m.
    """
    m = len(pvalues)
    if not step_down:
        return [m] * m
    adjusted = holm(pvalues)
    rejected = sum(a < alpha for a in adjusted)
    divisors = [m - rejected] * m
    for rank, (_, i) in enumerate(sorted((p, i) for i, p in enumerate(pvalues))):
        if adjusted[i] < alpha:
            divisors[i] = m - rank
    return divisors


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


def equivalence_margin(n: int, sd: float, alpha: float, power: float = 0.8) -> float:
    """Smallest margin epsilon within which TOST at `alpha` shows equivalence with `power`, when the true
    mean difference is 0 (for `n` paired seeds whose differences have SD `sd`).

    Exact for normal differences: TOST rejects when |mean| < epsilon - t * s / sqrt(n) (t the
    1 - alpha quantile), so its power is E[max(0, 2 Phi(sqrt(n) epsilon / sd - t W / sqrt(n - 1)) - 1)]
    over W = sqrt(n - 1) s / sd, chi-distributed with n - 1 degrees of freedom (integrated numerically).
    """
    from scipy import integrate, optimize, stats

    if n < 2:
        return math.inf
    df = n - 1
    critical = float(stats.t.isf(alpha, df))
    log_norm = (df / 2 - 1) * math.log(2) + math.lgamma(df / 2)  # of the chi density

    def shortfall(margin: float) -> float:
        shift = math.sqrt(n) * margin / sd

        def rejects(w: float) -> float:
            inside = math.erf((shift - critical * w / math.sqrt(df)) / math.sqrt(2))  # 2 Phi(x) - 1
            return inside * math.exp((df - 1) * math.log(w) - w * w / 2 - log_norm) if w > 0 else 0.0

        top = math.sqrt(df) * shift / critical  # beyond this sample SD TOST cannot reject
        return integrate.quad(rejects, 0.0, top, limit=200)[0] - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10 * sd))


def variance_components(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
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
