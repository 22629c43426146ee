"""The seed-to-seed spread of a finished pilot study, for a new study's power (`report.pilot`).

Reads the pilot's COMPLETE final runs from MLflow (never creating a store) and
pools the sample variances of its paired differences, the quantity `--dry-run`'s
power line needs.
"""

from __future__ import annotations

import dataclasses
import math

from reuse_nets import statistics
from reuse_nets.design import plan, study_files
from reuse_nets.errors import StudyError, SweepError
from reuse_nets.names import Phase, TrialState
from reuse_nets.report import analysis, results


@dataclasses.dataclass(frozen=True)
class PilotSpread:
    study: str
    seed_sd: float  # pooled SD of one paired difference between seeds (of one tuning run)
    tuning_sd: float | None  # SD between tuning runs of a paired difference; None: the pilot tuned once
    comparisons: int  # the pilot's comparisons with at least two paired units
    runs: int  # its complete final runs


def spread(pilot: str, tracking_uri: str | None) -> PilotSpread:
    """The pooled paired-difference SDs of `pilot`'s finished final runs.

    Between seeds: the pooled within-repeat variance of its paired differences.
    Between tuning runs, when the pilot repeated its tuning (`tune.repeats`): the
    mean of its comparisons' between-repeat variance components.

    Raises:
        SweepError: the pilot has not run in this tracking store, or has too few runs.
    """
    try:
        spec = study_files.load_study(pilot, [])
    except StudyError as error:
        raise SweepError(f"report.pilot: {error}") from None
    frame = results.trials(spec, Phase.FINAL, tracking_uri=tracking_uri)
    complete = frame[frame["state"] == TrialState.COMPLETE]
    cells = {cell.key: cell for cell in spec.cells()}
    runs = [
        analysis.FinalRun(
            row.run_id,
            row.cell,
            cells[row.cell].values,
            int(row.seed),
            float(getattr(row, spec.objective.test_metric)),
            math.nan,
            math.nan,
            math.nan,
            repeat=int(row.repeat),
        )
        for row in complete.itertuples()
        if row.cell in cells
    ]
    # Per comparison, its paired differences grouped by tuning repeat (one group without repeats).
    # Paired differences only: a declared contrast's SD is a difference's times sqrt(sum of w^2 / 2).
    grouped = [d.by_repeat or (d.diffs,) for d in analysis.paired_differences(spec, runs) if not d.declared]
    within = [(sum(len(g) - 1 for g in groups if len(g) > 1), _pooled(groups)) for groups in grouped]
    within = [(df, variance) for df, variance in within if df > 0]
    if not within:
        raise SweepError(f"report.pilot: study {spec.name!r} has no comparison with two paired final runs yet")
    seed_variance = sum(df * v for df, v in within) / sum(df for df, _ in within)
    tuning_sd = None
    if spec.repeats > 1:
        between = [statistics.variance_components(list(groups))[0] for groups in grouped]
        between = [b for b in between if not math.isnan(b)]
        tuning_sd = math.sqrt(sum(between) / len(between)) if between else None
    return PilotSpread(spec.name, math.sqrt(seed_variance), tuning_sd, len(within), len(runs))


def _pooled(groups) -> float:
    """The pooled within-group sample variance (groups of one value add nothing)."""
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        return math.nan
    return sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in groups if len(g) > 1) / df


def power_spread(pilot: str, tracking_uri: str | None) -> plan.Spread | str:
    """`report.pilot`'s measured paired-difference SD for the power line, or why there is none."""
    try:
        found = spread(pilot, tracking_uri)
    except SweepError as error:
        return str(error)
    source = (
        f"between seeds, pooled over {found.comparisons} comparisons of pilot {found.study!r}, {found.runs} final runs"
    )
    return plan.Spread(found.seed_sd, found.tuning_sd, source)
