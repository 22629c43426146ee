"""The statistics of a study's report: per-cell intervals, paired differences, verdicts.

Pure functions over final runs (no stores): the numbers are test metrics of the
configs selected on validation, retrained with the final seeds. Differences
between compared values are paired by seed (the same seed gives the same data
order in both cells), following Bouthillier et al. (2021) on benchmark variance.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

from reuse_nets import statistics
from reuse_nets.spec.studies import Cell, Choices, Range, StudySpec

CONFIDENCE = 0.95
EDGE_FRACTION = 0.1  # a selected value this close to a range end (in its own scale) is "at the edge"


@dataclasses.dataclass(frozen=True)
class FinalRun:
    run_id: str
    cell: str  # cell key
    values: dict[str, Any]  # compared values
    seed: int
    test: float  # the report metric (test split)
    val: float  # the selection metric at the last epoch (validation split)
    grad_first: float  # block_01 gradient norm, last epoch mean
    grad_last: float  # last block's gradient norm, last epoch mean
    curve: tuple[float, ...] = ()  # the selection metric at every epoch (validation split)
    width: int | None = None  # the block width the run trained (solved, when capacity is matched)
    trainable_params: int | None = None  # None: logged before capacity was recorded
    effective_params: int | None = None  # trainable minus those that never learn (behind a fixed mask)
    flops: int | None = None  # per example, forward pass
    repeat: int = 0  # the tuning repeat whose selection it retrained (`tune.repeats`)


@dataclasses.dataclass(frozen=True)
class Interval:
    mean: float
    half: float  # half-width of the Student-t interval; 0 for n = 1, nan for n = 0
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


@dataclasses.dataclass(frozen=True)
class Difference:
    """`value` minus `reference` of the contrast knob, in one condition, paired by seed."""

    condition: dict[str, Any]
    value: Any
    interval: Interval
    wins: int  # seeds where `value` did better than the reference
    diffs: tuple[float, ...]  # the units the tests use: per seed, or per tuning repeat (its seeds' mean)
    reference: Any = None  # the value subtracted: the baseline, or another value (`report.pairs: all`)
    by_repeat: tuple[tuple[float, ...], ...] = ()  # per tuning repeat, its per-seed differences

    @property
    def unit(self) -> str:
        """What one of `diffs` is: a seed's difference, or a tuning repeat's mean difference."""
        return "tuning repeat" if self.by_repeat else "seed"


class Outcome:
    """What a verdict can say about one comparison."""

    BETTER = "better"
    WORSE = "worse"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"


@dataclasses.dataclass(frozen=True)
class Assessed:
    """One comparison of the report's family, with every statistic the report shows."""

    difference: Difference
    p_t: float  # paired t-test, two-sided, unadjusted
    p_sign_flip: float  # exact paired sign-flip test, two-sided, unadjusted
    p_adjusted: float  # the verdict's test, adjusted across the family
    simultaneous: tuple[float, float]  # t interval at 1 - alpha/m (Bonferroni-simultaneous)
    bootstrap: tuple[float, float]  # percentile bootstrap interval of the mean (95%)
    equivalence_p: float | None  # TOST within ±min_effect, adjusted across the family; None: no min_effect
    outcome: str  # an `Outcome`


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and half-width of its Student-t confidence interval."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, 0.0, 1)
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)), n)


def by_cell(runs: list[FinalRun], key: str = "test", repeated: bool = False) -> dict[str, Interval]:
    """Per cell: the interval over its seeds, or over its tuning repeats' means (`repeated`:
    the study repeats its tuning, `tune.repeats` > 1)."""
    return {cell: mean_interval(units_of(groups, repeated)) for cell, groups in by_repeat(runs, key).items()}


def by_repeat(runs: list[FinalRun], key: str = "test") -> dict[str, list[list[float]]]:
    """Per cell: the runs' values grouped by tuning repeat."""
    cells: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        cells.setdefault(run.cell, {}).setdefault(run.repeat, []).append(getattr(run, key))
    return {cell: [repeats[r] for r in sorted(repeats)] for cell, repeats in cells.items()}


def units_of(groups: list[list[float]] | tuple[tuple[float, ...], ...], repeated: bool) -> list[float]:
    """The values inference treats as independent: the seeds (one tuning run), or each
    repeat's mean (`repeated`), even when only some repeats have finished runs.

    Seeds nest within tuning repeats, so the mean of a repeat carries both its
    tuning's and its seeds' variance (a two-stage, cluster-level analysis).
    """
    groups = [g for g in groups if g]
    if not repeated:
        return [x for g in groups for x in g]
    return [sum(g) / len(g) for g in groups]


def conditions(spec: StudySpec) -> list[dict[str, Any]]:
    """Every combination of the compared knobs other than the contrast."""
    others = {n: v for n, v in spec.compare.items() if n != spec.contrast}
    return [dict(zip(others, values)) for values in itertools.product(*others.values())]


def cell_key(spec: StudySpec, condition: dict[str, Any], value: Any) -> str:
    """The key of the cell that gives the contrast `value` under `condition`."""
    return Cell(values={n: (value if n == spec.contrast else condition[n]) for n in spec.compare}).key


def paired_differences(spec: StudySpec, runs: list[FinalRun]) -> list[Difference]:
    """Every contrast of the family (`StudySpec.contrast_pairs`), per condition, over shared seeds."""
    maximize = spec.objective.direction == "maximize"
    tests = {(r.cell, r.repeat, r.seed): r.test for r in runs}
    found = []
    for condition in conditions(spec):
        for value, reference in spec.contrast_pairs():
            key, base_key = cell_key(spec, condition, value), cell_key(spec, condition, reference)
            per_repeat = []
            for repeat in range(spec.repeats):
                # Repeat r of both cells shares its tuning seeds, and each final seed: pairs.
                seeds = [
                    s for s in spec.final_seeds(repeat) if (key, repeat, s) in tests and (base_key, repeat, s) in tests
                ]
                per_repeat.append(tuple(tests[(key, repeat, s)] - tests[(base_key, repeat, s)] for s in seeds))
            diffs = tuple(units_of(per_repeat, spec.repeats > 1))
            wins = sum(1 for d in diffs if (d > 0 if maximize else d < 0))
            grouped = tuple(per_repeat) if spec.repeats > 1 else ()
            found.append(Difference(condition, value, mean_interval(list(diffs)), wins, diffs, reference, grouped))
    return found


@dataclasses.dataclass(frozen=True)
class VarianceSplit:
    """Where the spread of a result comes from, with tuning repeated (`tune.repeats`)."""

    between_tuning: float  # variance between tuning repeats' true means (0 when not measurable)
    between_seed: float  # variance between seeds of one repeat
    repeats: int
    single: Interval  # over repeat 0's seeds alone: what one tuning run would report
    pooled: Interval  # over every run as if independent: ignores the tuning
    clustered: Interval  # over the repeats' means: what the report's verdicts use

    @property
    def tuning_share(self) -> float:
        """The share of one run's variance that comes from the tuning."""
        total = self.between_tuning + self.between_seed
        return self.between_tuning / total if total > 0 else math.nan


def variance_split(groups: list[list[float]] | tuple[tuple[float, ...], ...]) -> VarianceSplit | None:
    """The split of values grouped by tuning repeat; None without two repeats."""
    groups = [list(g) for g in groups if g]
    if len(groups) < 2:
        return None
    between, within = statistics.variance_components(groups)
    return VarianceSplit(
        between_tuning=between,
        between_seed=within,
        repeats=len(groups),
        single=mean_interval(groups[0]),
        pooled=mean_interval([x for g in groups for x in g]),
        clustered=mean_interval(units_of(groups, repeated=True)),
    )


def assess(spec: StudySpec, differences: list[Difference]) -> list[Assessed]:
    """Tests, intervals and the verdict of every comparison, adjusted across the whole family.

    The family is every comparison the report declares (all conditions x
    `StudySpec.contrast_pairs`), whether or not its runs finished: a comparison
    without two paired seeds counts as p = 1, has no test and stays inconclusive.
    Equivalence (TOST within ±min_effect) takes precedence over a significant
    difference: a real difference smaller than the smallest one worth caring about is
    called equivalent (the sentence says it is detectable).
    """
    report = spec.report
    m = max(len(differences), 1)

    def tested(p: float, d: Difference) -> float:
        return p if d.interval.n >= 2 and not math.isnan(p) else 1.0

    p_t = [statistics.t_test(d.diffs) for d in differences]
    p_sign = [statistics.sign_flip_p(d.diffs) if d.diffs else math.nan for d in differences]
    adjust = statistics.holm if report.adjust == "holm" else statistics.bonferroni
    p_adjusted = adjust([tested(p, d) for p, d in zip(p_t if report.test == "t" else p_sign, differences)])
    equivalence: list[float | None] = [None] * len(differences)
    if report.min_effect is not None:
        tost = [tested(statistics.tost_p(d.diffs, report.min_effect), d) for d in differences]
        equivalence = list(adjust(tost))
    maximize = spec.objective.direction == "maximize"
    assessed = []
    for i, d in enumerate(differences):
        outcome = Outcome.INCONCLUSIVE
        if d.interval.n < 2:
            pass
        elif equivalence[i] is not None and equivalence[i] < report.alpha:
            outcome = Outcome.EQUIVALENT
        elif p_adjusted[i] < report.alpha:
            outcome = Outcome.BETTER if (d.interval.mean > 0) == maximize else Outcome.WORSE
        assessed.append(
            Assessed(
                difference=d,
                p_t=p_t[i],
                p_sign_flip=p_sign[i],
                p_adjusted=p_adjusted[i],
                simultaneous=statistics.t_interval(d.diffs, 1 - report.alpha / m),
                bootstrap=statistics.bootstrap_interval(d.diffs, CONFIDENCE),
                equivalence_p=equivalence[i],
                outcome=outcome,
            )
        )
    return assessed


def family_text(spec: StudySpec, assessed: list[Assessed]) -> str:
    """How the verdicts were decided: the family, its size, the test and the adjustment."""
    report = spec.report
    m = len(assessed)
    paired = sum(1 for a in assessed if a.difference.interval.n >= 2)
    test = "paired t-test" if report.test == "t" else "exact paired sign-flip test"
    other = "exact sign-flip" if report.test == "t" else "t-test"
    pairs = "every pair of values" if report.pairs == "all" else f"each value against {spec.baseline}"
    unit = "tuning repeats" if spec.repeats > 1 else "seeds"
    missing = f", {m - paired} of them without two paired {unit} (counted as p = 1)" if paired < m else ""
    text = (
        f"{m} comparisons ({spec.contrast}: {pairs}, in each of {len(conditions(spec))} condition(s){missing}), "
        f"decided together: better or worse when the {report.adjust.capitalize()}-adjusted p-value of the {test} "
        f"is below {report.alpha} (family-wise error rate); the {other} p-value and a bootstrap interval are shown beside. "
    )
    if report.min_effect is not None:
        text += (
            f"Equivalent: both one-sided t-tests (TOST) reject a difference of ±{report.min_effect} or more, "
            f"{report.adjust.capitalize()}-adjusted. "
        )
    else:
        text += "No `report.min_effect` is declared, so no comparison can be called equivalent. "
    if spec.repeats > 1:
        text += (
            f"Tuning was repeated {spec.repeats} times: each test's units are the {spec.repeats} repeats' mean "
            f"differences (t with {spec.repeats - 1} degrees of freedom), so intervals include the variance "
            "between tuning runs, not only between seeds. "
        )
    if report.test == "sign_flip":
        seeds = max((a.difference.interval.n for a in assessed), default=0)
        smallest = 2 / 2**seeds if seeds else 1.0
        if smallest * m >= report.alpha:  # the first Holm step compares m * p with alpha
            text += (
                f"With {seeds} paired {unit} the sign-flip test cannot go below p = {smallest:.4g}, "
                f"{smallest * m:.4g} after adjusting for {m} comparisons: no verdict can be better or worse."
            )
    return text.rstrip()


def verdict(spec: StudySpec, assessed: Assessed, metric: str) -> str:
    """One sentence: better / worse / equivalent / inconclusive, by how much, and how sure."""
    difference = assessed.difference
    reference = spec.baseline if difference.reference is None else difference.reference
    where = ", ".join(f"{n} {v}" for n, v in difference.condition.items()) or "overall"
    i, n = difference.interval, difference.interval.n
    if n == 0:
        return f"{where}: {difference.value} vs {reference}: no paired runs."
    if n < 2:
        return (
            f"{where}: {difference.value} - {reference} = {i.mean:+.4f} {metric} on one {difference.unit}; "
            "no interval, inconclusive."
        )
    test = "t-test" if spec.report.test == "t" else "sign-flip"
    low, high = assessed.simultaneous
    sized = (
        f"{difference.value} - {reference} = {i.mean:+.4f} {metric} (simultaneous {1 - spec.report.alpha:.0%} CI "
        f"{low:+.4f} to {high:+.4f}; adjusted p = {assessed.p_adjusted:.3g} by {test}; "
        f"better on {difference.wins}/{n} {difference.unit}s)"
    )
    if assessed.outcome == Outcome.BETTER:
        return f"{where}: {difference.value} is better than {reference}: {sized}."
    if assessed.outcome == Outcome.WORSE:
        return f"{where}: {difference.value} is worse than {reference}: {sized}."
    if assessed.outcome == Outcome.EQUIVALENT:
        detectable = (
            " (the difference is detectable, but smaller than the smallest worth caring about)"
            if assessed.p_adjusted < spec.report.alpha
            else ""
        )
        return (
            f"{where}: {difference.value} and {reference} are equivalent within ±{spec.report.min_effect}{detectable}: "
            f"{sized}; TOST adjusted p = {assessed.equivalence_p:.3g}."
        )
    return f"{where}: inconclusive between {difference.value} and {reference}: {sized}."


@dataclasses.dataclass(frozen=True)
class Convergence:
    """Whether a cell's final runs had stopped improving on the selection metric."""

    last: Interval  # the metric at the last epoch
    gain: Interval  # paired by run: last epoch minus `window` epochs before (sign: improvement > 0)
    window: int  # epochs the gain is measured over
    rising: bool  # the gain's 95% interval lies above 0: still improving at the end


def convergence_window(epochs: int) -> int:
    """Epochs over which a run's late improvement is measured: the last quarter, at least one."""
    return max(1, round(epochs / 4))


def learning_curves(runs: list[FinalRun]) -> dict[str, list[Interval]]:
    """Per cell, per epoch: the mean and interval over seeds of the selection metric."""
    curves: dict[str, list[tuple[float, ...]]] = {}
    for run in runs:
        if run.curve:
            curves.setdefault(run.cell, []).append(run.curve)
    return {
        cell: [mean_interval([c[e] for c in runs_curves if len(c) > e]) for e in range(max(map(len, runs_curves)))]
        for cell, runs_curves in curves.items()
    }


def convergence(spec: StudySpec, runs: list[FinalRun]) -> dict[str, Convergence]:
    """Per cell: the last-epoch metric and whether it was still improving (`Convergence`)."""
    sign = 1.0 if spec.objective.direction == "maximize" else -1.0
    curves: dict[str, list[tuple[float, ...]]] = {}
    for run in runs:
        if len(run.curve) >= 2:
            curves.setdefault(run.cell, []).append(run.curve)
    found = {}
    for cell, cell_curves in curves.items():
        window = min(convergence_window(len(cell_curves[0])), min(map(len, cell_curves)) - 1)
        gain = mean_interval([sign * (c[-1] - c[-1 - window]) for c in cell_curves])
        rising = gain.n >= 2 and gain.low > 0
        found[cell] = Convergence(mean_interval([c[-1] for c in cell_curves]), gain, window, rising)
    return found


def edge_warnings(spec: StudySpec, selection: dict[str, dict | None]) -> list[str]:
    """Cells whose selected tuned value lies at the edge of its search range."""
    if not spec.tune:
        return []
    warnings = []
    for cell_name, chosen in selection.items():
        if chosen is None:
            continue
        for name, param in spec.tune.search_space.items():
            value = chosen["params"].get(name)
            if value is None:
                continue
            if isinstance(param, Range) and param.high > param.low:
                scale = (lambda v: math.log(v)) if param.log else (lambda v: v)
                position = (scale(value) - scale(param.low)) / (scale(param.high) - scale(param.low))
                if position < EDGE_FRACTION or position > 1 - EDGE_FRACTION:
                    side = "low" if position < 0.5 else "high"
                    warnings.append(
                        f"{cell_name}: selected {name}={value:.4g} lies at the {side} edge of [{param.low}, {param.high}]; "
                        "the best value may lie outside the range"
                    )
            elif isinstance(param, Choices) and len(param.choices) >= 3:
                numeric = [c for c in param.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
                if len(numeric) == len(param.choices) and value in (min(numeric), max(numeric)):
                    warnings.append(
                        f"{cell_name}: selected {name}={value} is the {'smallest' if value == min(numeric) else 'largest'} choice"
                    )
    return warnings
