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
from collections.abc import Sequence
from typing import Any

from reuse_nets import statistics
from reuse_nets.design import plan
from reuse_nets.design.selection import Selection
from reuse_nets.design.study_spec import Cell, Choices, Range, StudySpec
from reuse_nets.names import Verdict

CONFIDENCE = 0.95
EDGE_FRACTION = 0.1  # a selected value this close to a range end (in its own scale) is "at the edge"


@dataclasses.dataclass(frozen=True)
class FinalRun:
    run_id: str
    cell: str  # cell key
    values: dict[str, Any]  # compared values
    seed: int
    test: float  # the report metric (test split)
    val: float  # the selection metric of the weights the run ended with (the best epoch's under early stopping)
    grad_first: float  # block_01 gradient norm, last epoch mean
    grad_last: float  # last block's gradient norm, last epoch mean
    curve: tuple[float, ...] = ()  # the selection metric at every epoch (validation split)
    width: int | None = None  # the block width the run trained (solved, when capacity is matched)
    trainable_params: int | None = None  # None: logged before capacity was recorded
    effective_params: int | None = None  # trainable minus those that never learn (behind a fixed mask)
    flops: int | None = None  # per example, forward pass
    repeat: int = 0  # the tuning repeat whose selection it retrained (`tune.repeats`)
    patience: int | None = None  # early stopping's patience; None: a fixed budget (or logged before it existed)
    epochs_trained: int | None = None
    plateaued: bool | None = None  # early stopping: a plateau stopped it (True) or the epoch cap did (False)


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
    declared: bool = False  # a declared contrast (`report.contrasts`): `value` is its name

    @property
    def label(self) -> str:
        """What is compared: a declared contrast's name, or `value − reference`."""
        return str(self.value) if self.declared else f"{self.value} − {self.reference}"

    @property
    def unit(self) -> str:
        """What one of `diffs` is: a seed's difference, or a tuning repeat's mean difference."""
        return "tuning repeat" if self.by_repeat else "seed"


@dataclasses.dataclass(frozen=True)
class Assessed:
    """One comparison of the report's family, with every statistic the report shows."""

    difference: Difference
    p_t: float  # paired t-test, two-sided, unadjusted
    p_sign_flip: float  # exact paired sign-flip test, two-sided, unadjusted
    p_adjusted: float  # the verdict's test in the direction of the mean, adjusted within that direction's family
    verdict_interval: tuple[float, float]  # the interval the verdict can be read from (`interval_label`)
    verdict_confidence: float  # 1 - alpha (simultaneous); for "equivalent", TOST's 1 - 2 alpha / h
    bootstrap: tuple[float, float]  # percentile bootstrap interval of the mean (95%)
    equivalence_p: float | None  # TOST within ±min_effect, adjusted across the family; None: no min_effect
    verdict: Verdict

    @property
    def interval_label(self) -> str:
        """What `verdict_interval` is: the simultaneous interval, or for "equivalent" TOST's interval."""
        kind = "equivalence" if self.verdict == Verdict.EQUIVALENT else "simultaneous"
        return f"{kind} {100 * self.verdict_confidence:.4g}% CI"


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


def units_of(groups: Sequence[Sequence[float]], repeated: bool) -> list[float]:
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
    """Every comparison of the family, over shared seeds: the contrast pairs (`StudySpec.contrast_pairs`)
    per condition, then each declared contrast (`report.contrasts`) per condition."""
    tests = {(r.cell, r.repeat, r.seed): r.test for r in runs}
    found = []
    for condition in conditions(spec):
        for value, reference in spec.contrast_pairs():
            weights = {cell_key(spec, condition, value): 1.0, cell_key(spec, condition, reference): -1.0}
            found.append(_difference(spec, tests, weights, condition, value, reference))
    for contrast in spec.report.contrasts:
        for condition in spec.contrast_conditions(contrast):
            weights = spec.contrast_weights(contrast, condition)
            found.append(_difference(spec, tests, weights, condition, contrast.name, None, declared=True))
    return found


def _difference(spec, tests, weights: dict[str, float], condition, value, reference, declared=False) -> Difference:
    """The weighted sum of cells' test metrics per seed (a difference: weights +1 and -1), paired
    by repeat and seed over the seeds every weighted cell finished."""
    maximize = spec.objective.direction == "maximize"
    per_repeat = []
    for repeat in range(spec.repeats):
        # Repeat r of every cell shares its tuning seeds, and each final seed: pairs.
        seeds = [s for s in spec.final_seeds(repeat) if all((key, repeat, s) in tests for key in weights)]
        per_repeat.append(tuple(sum(w * tests[(key, repeat, s)] for key, w in weights.items()) for s in seeds))
    diffs = tuple(units_of(per_repeat, spec.repeats > 1))
    wins = sum(1 for d in diffs if (d > 0 if maximize else d < 0))
    grouped = tuple(per_repeat) if spec.repeats > 1 else ()
    return Difference(condition, value, mean_interval(list(diffs)), wins, diffs, reference, grouped, declared)


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

    Better or worse: Holm (or Bonferroni) within each direction, at alpha/2 each
    (`statistics.directional`). Every verdict's interval agrees with it: an equivalent
    one's lies inside ±min_effect, any other's does not; a better or worse one's is
    bounded at 0 or beyond on its side; an inconclusive one's contains 0.
    """
    report = spec.report
    step_down = report.adjust == "holm"

    def tested(p: float, d: Difference) -> float:
        return p if d.interval.n >= 2 and not math.isnan(p) else 1.0

    p_t = [statistics.t_test(d.diffs) for d in differences]
    p_sign = [statistics.sign_flip_p(d.diffs) if d.diffs else math.nan for d in differences]
    decided = statistics.directional([d.diffs for d in differences], report.alpha, report.test, step_down)
    equivalence: list[float | None] = [None] * len(differences)
    divisors = [len(differences)] * len(differences)
    if report.min_effect is not None:
        tost = [tested(statistics.tost_p(d.diffs, report.min_effect), d) for d in differences]
        equivalence = list((statistics.holm if step_down else statistics.bonferroni)(tost))
        divisors = statistics.step_divisors(tost, report.alpha, step_down)
    maximize = spec.objective.direction == "maximize"
    assessed = []
    for i, d in enumerate(differences):
        decision, equivalence_p = decided[i], equivalence[i]
        verdict, interval, confidence = Verdict.INCONCLUSIVE, decision.interval, 1 - report.alpha
        if d.interval.n >= 2:
            if decision.sign:
                verdict = Verdict.BETTER if (decision.sign > 0) == maximize else Verdict.WORSE
            if report.min_effect is not None and equivalence_p is not None:
                # TOST's interval at the step that decided it lies inside ±min_effect exactly when it is equivalent.
                tost_confidence = 1 - 2 * report.alpha / divisors[i]
                tost_interval = statistics.t_interval(d.diffs, tost_confidence)
                if equivalence_p < report.alpha:
                    verdict, interval, confidence = Verdict.EQUIVALENT, tost_interval, tost_confidence
                else:
                    interval = outside_margin(interval, tost_interval, report.min_effect, decision.sign)
        assessed.append(
            Assessed(
                difference=d,
                p_t=p_t[i],
                p_sign_flip=p_sign[i],
                p_adjusted=decision.p_adjusted,
                verdict_interval=interval,
                verdict_confidence=confidence,
                bootstrap=statistics.bootstrap_interval(d.diffs, CONFIDENCE),
                equivalence_p=equivalence[i],
                verdict=verdict,
            )
        )
    return assessed


def outside_margin(
    interval: tuple[float, float], tost_interval: tuple[float, float], margin: float, sign: int
) -> tuple[float, float]:
    """A verdict's interval that TOST did not call equivalent, widened if it lies inside ±margin.

    It is widened out to TOST's interval at the step that kept it (which reaches ±margin then),
    on the sides its directional decision leaves open: after a claim (`sign`), only the side
    away from 0. Widening keeps its coverage and its agreement with the directional decision.
    """
    low, high = interval
    if not -margin < low <= high < margin:
        return interval
    return (low if sign > 0 else min(low, tost_interval[0]), high if sign < 0 else max(high, tost_interval[1]))


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
    declared = [c.name for c in report.contrasts]
    contrasts = (
        f" and {m - len(conditions(spec)) * len(spec.contrast_pairs())} of declared contrasts ({', '.join(declared)})"
    )
    text = (
        f"{m} comparisons ({spec.contrast}: {pairs}, in each of {len(conditions(spec))} condition(s)"
        f"{contrasts if declared else ''}{missing}), "
        f"decided together: better or worse when the {report.adjust.capitalize()}-adjusted p-value of the {test} "
        f"is below {report.alpha}, adjusted within each direction (the one-sided tests of a difference above 0 form "
        f"one family, those below 0 another, each at {report.alpha}/2), so the chance of any false or wrong-way claim "
        f"stays below {report.alpha}. Each verdict's simultaneous {100 * (1 - report.alpha):.4g}% interval is "
        "compatible with it (Strassburger and Bretz 2008): a better or worse one's is bounded at 0 or beyond on its "
        f"side, an inconclusive one's contains 0. The {other} p-value and a bootstrap interval are shown beside. "
    )
    if report.min_effect is not None:
        text += (
            f"Equivalent: both one-sided t-tests (TOST) reject a difference of ±{report.min_effect} or more, "
            f"{report.adjust.capitalize()}-adjusted; its interval is the t interval at 1 - 2 x {report.alpha}/h, h the "
            f"divisor of the step that decided it, which lies inside ±{report.min_effect} exactly when TOST shows "
            f"equivalence (another verdict's interval that would lie inside is widened out to it). "
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


def verdict(spec: StudySpec, assessed: Assessed, metric: str, edges: dict[str, list[str]] | None = None) -> str:
    """One sentence: better / worse / equivalent / inconclusive, by how much, and how sure; it
    names a cell of the comparison whose selection sat at an edge of the search space (`edge_notes`)."""
    return _verdict(spec, assessed, metric).removesuffix(".") + edge_note(spec, assessed.difference, edges) + "."


def _verdict(spec: StudySpec, assessed: Assessed, metric: str) -> str:
    difference = assessed.difference
    reference = spec.baseline if difference.reference is None else difference.reference
    where = ", ".join(f"{n} {v}" for n, v in difference.condition.items()) or "overall"
    # A declared contrast is read as a value: positive is better (for a metric to maximize).
    subject, versus = (f"contrast {difference.value}", "0") if difference.declared else (difference.value, reference)
    i, n = difference.interval, difference.interval.n
    if n == 0:
        return f"{where}: {subject} vs {versus}: no paired runs."
    if n < 2:
        named = difference.label if difference.declared else f"{subject} - {versus}"
        return f"{where}: {named} = {i.mean:+.4f} {metric} ({no_interval(difference.unit)}); inconclusive."
    test = "t-test" if spec.report.test == "t" else "sign-flip"
    low, high = assessed.verdict_interval
    sized = (
        f"{difference.label if difference.declared else f'{subject} - {versus}'} = {i.mean:+.4f} {metric} "
        f"({assessed.interval_label} {low:+.4f} to {high:+.4f}; adjusted p = {assessed.p_adjusted:.3g} by {test}; "
        f"better on {difference.wins}/{n} {difference.unit}s)"
    )
    if assessed.verdict == Verdict.BETTER:
        return f"{where}: {subject} is better than {versus}: {sized}."
    if assessed.verdict == Verdict.WORSE:
        return f"{where}: {subject} is worse than {versus}: {sized}."
    if assessed.verdict == Verdict.EQUIVALENT:
        detectable = (
            " (the difference is detectable, but smaller than the smallest worth caring about)"
            if assessed.p_adjusted < spec.report.alpha
            else ""
        )
        return (
            f"{where}: {subject} and {versus} are equivalent within ±{spec.report.min_effect}{detectable}: "
            f"{sized}; TOST adjusted p = {assessed.equivalence_p:.3g}."
        )
    return f"{where}: inconclusive between {subject} and {versus}: {sized}."


def no_interval(unit: str = "seed") -> str:
    """What stands for an interval over one value: a zero-width interval would not be one."""
    return f"1 {unit}, no interval"


def verdict_line(spec: StudySpec, assessed: Assessed, metric: str, edges: dict[str, list[str]] | None = None) -> str:
    """One plain-text line for a terminal: cell vs reference, verdict, difference and its interval, adjusted p,
    and the comparison's cells selected at an edge of the search space (`edge_notes`)."""
    return _verdict_line(spec, assessed, metric) + edge_note(spec, assessed.difference, edges)


def _verdict_line(spec: StudySpec, assessed: Assessed, metric: str) -> str:
    d = assessed.difference
    reference = spec.baseline if d.reference is None else d.reference
    where = ",".join(f"{n}={v}" for n, v in d.condition.items())
    if d.declared:
        compared = f"contrast {d.value}" + (f" at {where}" if where else "")
    else:
        compared = f"{cell_key(spec, d.condition, d.value)} vs {spec.contrast}={reference}"
    i = d.interval
    if i.n == 0:
        return f"{compared}: no paired runs"
    if i.n < 2:
        return f"{compared}: {Verdict.INCONCLUSIVE}, {i.mean:+.4f} {metric} ({no_interval(d.unit)})"
    low, high = assessed.verdict_interval
    return (
        f"{compared}: {assessed.verdict}, {i.mean:+.4f} {metric} ({assessed.interval_label} "
        f"{low:+.4f} to {high:+.4f}), {spec.report.adjust.capitalize()}-adjusted p = {assessed.p_adjusted:.3g}"
    )


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


@dataclasses.dataclass(frozen=True)
class Stopping:
    """How a cell's early-stopped final runs ended: epochs trained, and plateau versus cap."""

    epochs: Interval  # epochs trained, over the cell's final runs
    fewest: int
    most: int
    plateaued: int  # runs a plateau stopped (patience epochs without improvement)
    capped: int  # runs that reached the epoch cap still improving within their patience


def stopping(runs: list[FinalRun]) -> dict[str, Stopping]:
    """Per cell whose final runs stopped early on a plateau (`patience`): how they ended."""
    by_cell: dict[str, list[FinalRun]] = {}
    for run in runs:
        if run.patience is not None and run.epochs_trained is not None:
            by_cell.setdefault(run.cell, []).append(run)
    found = {}
    for cell, cell_runs in by_cell.items():
        epochs = [r.epochs_trained for r in cell_runs if r.epochs_trained is not None]
        plateaued = sum(bool(r.plateaued) for r in cell_runs)
        found[cell] = Stopping(
            mean_interval([float(e) for e in epochs]), min(epochs), max(epochs), plateaued, len(cell_runs) - plateaued
        )
    return found


def convergence(spec: StudySpec, runs: list[FinalRun]) -> dict[str, Convergence]:
    """Per cell trained on a fixed budget: the last-epoch metric and whether it was still improving
    (`Convergence`). Early-stopped cells say how they ended instead (`stopping`)."""
    sign = 1.0 if spec.objective.direction == "maximize" else -1.0
    curves: dict[str, list[tuple[float, ...]]] = {}
    for run in runs:
        if len(run.curve) >= 2 and run.patience is None:
            curves.setdefault(run.cell, []).append(run.curve)
    found = {}
    for cell, cell_curves in curves.items():
        window = min(convergence_window(len(cell_curves[0])), min(map(len, cell_curves)) - 1)
        gain = mean_interval([sign * (c[-1] - c[-1 - window]) for c in cell_curves])
        rising = gain.n >= 2 and gain.low > 0
        found[cell] = Convergence(mean_interval([c[-1] for c in cell_curves]), gain, window, rising)
    return found


def edge_warnings(spec: StudySpec, selection: Selection) -> list[str]:
    """Units whose selected tuned value lies at an edge of its search space (`edge_text`)."""
    if not spec.tune:
        return []
    warnings = []
    for unit, chosen in selection.items():
        for text in _edges(spec, chosen):
            warnings.append(f"{unit}: selected {text}; the best value may lie outside the search space")
    return warnings


def edge_notes(spec: StudySpec, selection: Selection) -> dict[str, list[str]]:
    """Per cell key: its selections (any tuning repeat) at an edge of the search space."""
    notes: dict[str, list[str]] = {}
    for cell, repeat in plan.units(spec):
        for text in _edges(spec, selection.get(plan.unit_key(spec, cell, repeat))):
            notes.setdefault(cell.key, []).append(f"{text} (repeat {repeat})" if spec.repeats > 1 else text)
    return notes


def _edges(spec: StudySpec, chosen) -> list[str]:
    """A selection's tuned values at an edge: within EDGE_FRACTION of a range's end (in its own
    scale), or a grid's smallest or largest numeric choice (a grid of 2 points included)."""
    if chosen is None or not spec.tune:
        return []
    found = []
    for name, param in spec.tune.search_space.items():
        value = chosen.params.get(name)
        if value is None:
            continue
        if isinstance(param, Range) and param.high > param.low:
            scale = (lambda v: math.log(v)) if param.log else (lambda v: v)
            position = (scale(value) - scale(param.low)) / (scale(param.high) - scale(param.low))
            if position < EDGE_FRACTION or position > 1 - EDGE_FRACTION:
                side = "low" if position < 0.5 else "high"
                found.append(f"{name}={value:.4g} lies at the {side} edge of [{param.low}, {param.high}]")
        elif isinstance(param, Choices) and len(param.choices) >= 2:
            numeric = [c for c in param.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if len(numeric) == len(param.choices) and value in (min(numeric), max(numeric)):
                found.append(f"{name}={value} is the {'smallest' if value == min(numeric) else 'largest'} choice")
    return found


def comparison_cells(spec: StudySpec, d: Difference) -> list[str]:
    """The cells a comparison is computed from: its two cells, or a declared contrast's weighted ones."""
    if d.declared:
        contrast = next(c for c in spec.report.contrasts if c.name == d.value)
        return list(spec.contrast_weights(contrast, d.condition))
    return [cell_key(spec, d.condition, d.value), cell_key(spec, d.condition, d.reference)]


def edge_note(spec: StudySpec, d: Difference, notes: dict[str, list[str]] | None) -> str:
    """` (selected at a search edge: cell: learning_rate=..., ...)` when a cell of the comparison was."""
    found = [f"{cell}: {text}" for cell in comparison_cells(spec, d) for text in (notes or {}).get(cell, [])]
    return f" (selected at a search edge: {'; '.join(found)})" if found else ""
