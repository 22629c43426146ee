"""The seed-to-seed spread of a finished pilot study, for a new study's power (`report.pilot`).

Reads the pilot's COMPLETE final runs from MLflow (never creating a store) and
pools the sample variances of its paired differences, the quantity `--dry-run`'s
power line needs.
"""

from __future__ import annotations

import dataclasses
import math

from reuse_nets.errors import StudyError, SweepError
from reuse_nets.names import Phase
from reuse_nets.report import analysis, results
from reuse_nets.spec import study_files


@dataclasses.dataclass(frozen=True)
class PilotSpread:
    study: str
    sd: float  # pooled SD of one paired difference (per seed, or per tuning repeat)
    comparisons: int  # the pilot's comparisons with at least two paired units
    runs: int  # its complete final runs
    unit: str  # "seed" or "tuning repeat"


def spread(pilot: str, tracking_uri: str | None) -> PilotSpread:
    """The pooled paired-difference SD of `pilot`'s finished final runs.

    Raises:
        SweepError: the pilot has not run in this tracking store, or has too few runs.
    """
    try:
        spec = study_files.load_study(pilot, [])
    except StudyError as error:
        raise SweepError(f"report.pilot: {error}") from None
    frame = results.trials(spec, Phase.FINAL, tracking_uri=tracking_uri)
    complete = frame[frame["state"] == "COMPLETE"]
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
    differences = [d for d in analysis.paired_differences(spec, runs) if len(d.diffs) >= 2]
    if not differences:
        raise SweepError(f"report.pilot: study {spec.name!r} has no comparison with two paired final runs yet")
    df = sum(len(d.diffs) - 1 for d in differences)
    pooled = sum((len(d.diffs) - 1) * _variance(d.diffs) for d in differences) / df
    return PilotSpread(spec.name, math.sqrt(pooled), len(differences), len(runs), differences[0].unit)


def _variance(values) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
