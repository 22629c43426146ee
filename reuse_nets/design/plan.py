"""The pure plan of a study: its Optuna studies, their slots, and the `--dry-run` text.

1. **tune**: one job per compared cell (and tuning repeat), `trials_per_cell`
   slots each, the sampler choosing the tuned knobs with the tuning seed
   (`base.seed`, shifted per repeat);
2. **final**: one job whose slots are every cell x repeat x `final.seeds`, each
   running that repeat's selected config of the cell with a fresh seed. A plain
   grid (no `tune`) has only this phase.

Nothing here reads or writes a store: `reuse_nets.sweep.phases` fills these jobs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import yaml

from reuse_nets import statistics
from reuse_nets.design import datasets, study_spec
from reuse_nets.design.selection import Selection
from reuse_nets.design.study_spec import Cell, StudySpec
from reuse_nets.names import Phase
from reuse_nets.nn import capacity


@dataclasses.dataclass(frozen=True)
class Spread:
    """A pilot study's measured paired-difference SDs, for `--dry-run`'s power lines."""

    seed_sd: float  # between seeds
    tuning_sd: float | None  # between tuning runs; None if the pilot tuned once
    source: str  # where they came from, in words


REPEAT_PARAM = "repeat"  # a final trial's tuning repeat, among its Optuna params (with tune.repeats > 1)


@dataclasses.dataclass(frozen=True)
class Job:
    """One Optuna study to fill: a cell's tuning trials, or the final runs.

    `slots[i]` is the cell of slot `i` and the parameters enqueued for it
    (`{}` for a tuning slot: the sampler chooses).
    """

    phase: Phase
    study_name: str
    slots: tuple[tuple[Cell, dict[str, Any]], ...]
    label: str  # for console lines, e.g. "tune strategy=plain,depth=4"
    # What the job's Optuna study must have been made from (checked on resume): the tuning
    # identity of its cell and repeat, or the study's identity for the final job.
    identity: dict[str, Any] = dataclasses.field(hash=False, compare=False)
    repeat: int = 0  # a tuning job's repeat (`tune.repeats`); final slots carry theirs in REPEAT_PARAM


def unit_key(spec: StudySpec, cell: Cell, repeat: int = 0) -> str:
    """What one tuning selects for: the cell key, plus ` repeat r` when the study repeats its tuning."""
    return cell.key if spec.repeats == 1 else f"{cell.key} repeat {repeat}"


def units(spec: StudySpec) -> list[tuple[Cell, int]]:
    """Every (cell, tuning repeat), cells first."""
    return [(cell, repeat) for cell in spec.cells() for repeat in range(spec.repeats)]


def tune_study_name(spec: StudySpec, cell: Cell, repeat: int = 0) -> str:
    name = f"{spec.name}:{Phase.TUNE}:{cell.key}"
    return name if spec.repeats == 1 else f"{name}:repeat={repeat}"


def final_study_name(spec: StudySpec) -> str:
    return f"{spec.name}:{Phase.FINAL}"


def tune_jobs(spec: StudySpec) -> list[Job]:
    """One job per cell and tuning repeat."""
    if not spec.tune:
        return []
    jobs = []
    for cell, repeat in units(spec):
        # Tuning slots leave the choice to the sampler, except on a grid or a Sobol
        # sequence, where slot i is point i in every cell (of one repeat).
        points = spec.tune.points(repeat) or [{} for _ in range(spec.tune.trials_per_cell or 0)]
        slots = tuple((cell, point) for point in points)
        label = f"tune {unit_key(spec, cell, repeat)}"
        name = tune_study_name(spec, cell, repeat)
        jobs.append(Job(Phase.TUNE, name, slots, label, spec.tune_identity(cell, repeat), repeat))
    return jobs


def final_job(spec: StudySpec, selection: Selection) -> Job:
    """Every cell (and repeat) with a selected config, times that repeat's final seeds."""
    slots = []
    for cell, repeat in units(spec):
        chosen = selection.get(unit_key(spec, cell, repeat))
        if spec.tune and chosen is None:
            continue  # no tuning trial of this cell completed: nothing to retrain
        params = chosen.params if spec.tune and chosen is not None else {}
        tag = {REPEAT_PARAM: repeat} if spec.repeats > 1 else {}
        for seed in spec.final_seeds(repeat):
            slots.append((cell, {**cell.values, **params, "seed": seed, **tag}))
    return Job(Phase.FINAL, final_study_name(spec), tuple(slots), "final runs", spec.identity())


def describe_plan(
    spec: StudySpec,
    storage_url: str,
    tracking_uri: str | None,
    workers: int,
    threads: int,
    pilot: Spread | str | None = None,
) -> str:
    """What running `spec` would do, as text; reads and writes nothing.

    `pilot`: the paired-difference SD measured on a finished pilot study (`report.pilot`),
    as `(sd, where it came from)`, or the one-line reason it could not be.
    """
    cells = spec.cells()
    lines = [
        f"study {spec.name}: {len(cells)} cells ({' x '.join(f'{n} {v}' for n, v in spec.compare.items())}), "
        f"objective {spec.objective.direction} {spec.objective.metric}; report on {spec.objective.test_metric}, "
        f"{spec.contrast} compared with {spec.baseline!r}",
        f"storage {storage_url}; MLflow tracking {tracking_uri or 'MLflow default (MLFLOW_TRACKING_URI or sqlite:///mlflow.db)'}",
        f"workers {workers} x {threads} TensorFlow threads, XLA {'on' if spec.execution.xla else 'off'}",
    ]
    if spec.tune:
        tune = spec.tune
        lines.append(
            f"tune: {tune.trials_per_cell} trials per cell ({spec.n_tuning_trials} in all), sampler {sampler_text(tune.sampler)}, "
            f"pruner {tune.pruner.type} within each cell, tuning seed {spec.base.seed}"
        )
        if spec.repeats > 1:
            lines.append(
                f"  repeats: {spec.repeats} independent tune -> select -> retrain runs of every cell; repeat r shifts "
                f"every seed by r x {study_spec.REPEAT_SEED_STRIDE} (tuning seeds "
                f"{[spec.tuning_seed(r) for r in range(spec.repeats)]}); verdicts rest on the repeats' means"
            )
        for name, param in tune.search_space.items():
            lines.append(f"  {name}: {param.model_dump(exclude_none=True)}")
    else:
        lines.append("tune: none (a plain grid: every cell runs the base config)")
    per_repeat = (
        f"; repeat r's seeds shifted by r x {study_spec.REPEAT_SEED_STRIDE}, {spec.all_final_seeds()}"
        if spec.repeats > 1
        else ""
    )
    lines.append(
        f"final: best {'tuned ' if spec.tune else ''}config of each cell{' and repeat' if spec.repeats > 1 else ''} "
        f"x seeds {spec.final.seeds}{per_repeat} = {spec.n_final_runs} runs"
    )
    if spec.match:
        knob, value = spec.match_reference
        lines.append(
            f"match: {spec.match.solve} solved per cell so that {spec.match.measure} is within "
            f"{spec.match.tolerance:.0%} of the {knob}={value} cell with the same other values"
        )
    capacities = cell_capacities(spec)
    lines.append("cells:" if capacities else "cells (capacity unknown: the dataset's shape cannot be read):")
    for index, cell in enumerate(cells):
        budget = f"{(spec.tune.trials_per_cell or 0) * spec.repeats} tuning trials + " if spec.tune else ""
        counted = f"; {capacity_text(spec, cell, capacities)}" if capacities else ""
        lines.append(f"  {index:3d}: {cell.key}  ({budget}{len(spec.final.seeds) * spec.repeats} final runs{counted})")
    lines += power_lines(spec, pilot)
    total = spec.n_tuning_trials + spec.n_final_runs
    epochs = max(spec.cell_config(cell).epochs for cell in cells)
    lines.append(f"total: {total} training runs of up to {epochs} epochs")
    lines += ["resolved study:", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).rstrip()]
    return "\n".join(lines)


def power_lines(spec: StudySpec, pilot: Spread | str | None = None) -> list[str]:
    """The smallest difference the final seeds (or tuning repeats) can detect, for a paired-difference SD,
    and the smallest equivalence margin TOST can show (true difference 0), both with 80% power.

    The SD is the one measured on a pilot study, else the study file's `report.assumed_sd`.
    """
    report, m = spec.report, spec.family_size
    head = f"verdicts: {m} comparisons, {report.adjust}-adjusted at alpha {report.alpha}, {report.test} test"
    head += f", equivalence within ±{report.min_effect}" if report.min_effect else ", no min_effect (no equivalence)"
    lines = [head]
    seed_sd: float | None = None
    tuning_sd: float | None = None
    source = ""
    if isinstance(pilot, Spread):
        seed_sd, tuning_sd, source = pilot.seed_sd, pilot.tuning_sd, pilot.source
    elif isinstance(pilot, str):
        lines.append(f"power: the pilot gives no SD ({pilot})")
    if seed_sd is None and report.assumed_sd is not None:
        seed_sd, source = report.assumed_sd, "report.assumed_sd"
    if seed_sd is None:
        return [*lines, "power: unknown; set report.assumed_sd or report.pilot (a finished pilot study) to see it"]
    n, unit, sd, caveat = len(spec.final.seeds), "seeds", seed_sd, ""
    if spec.repeats > 1:
        # Units are repeat means: variance = between tuning + between seeds / seeds.
        n, unit = spec.repeats, "tuning repeats"
        sd = math.sqrt((tuning_sd or 0.0) ** 2 + seed_sd**2 / len(spec.final.seeds))
        if tuning_sd is None:
            caveat = " (a lower bound: the SD of a repeat mean without the tuning's variance, unknown here)"
    elif tuning_sd is not None:
        caveat = f" (one tuning run's seeds; between tuning runs the pilot's SD was {tuning_sd:.4g}, not in this test)"
    first = statistics.detectable_difference(n, sd, report.alpha / m)
    alone = statistics.detectable_difference(n, sd, report.alpha)
    margin = statistics.equivalence_margin(n, sd, report.alpha / m)
    lines.append(
        f"power: with {n} {unit} and a paired-difference SD of {sd:.4g} ({source}), a t-test detects with 80% power "
        f"a difference of {first:.4f} at alpha/{m} (the strictest Holm step; {alone:.4f} for one comparison alone), "
        f"and TOST shows equivalence within ±{margin:.4f} at alpha/{m} when there is no difference{caveat}"
    )
    for contrast in report.contrasts:
        # A contrast's per-seed value is a weighted sum of cells; with independent cells of one SD,
        # its SD is the paired difference's (weights +1, -1) times sqrt(sum of squared weights / 2).
        weights = spec.contrast_weights(contrast, spec.contrast_conditions(contrast)[0]).values()
        scale = math.sqrt(sum(w * w for w in weights) / 2)
        detectable = statistics.detectable_difference(n, sd * scale, report.alpha / m)
        lines.append(
            f"power: contrast {contrast.name!r} (SD x {scale:.3g} of a difference's) is detected with 80% power "
            f"at {detectable:.4f} at alpha/{m}"
        )
    if report.test == "sign_flip" and 2 / 2**n >= report.alpha / m:
        lines.append(
            f"warning: with {n} {unit} the sign-flip test's smallest p-value is {2 / 2**n:.4g}: no verdict can be better or worse"
        )
    if report.min_effect is not None and first > report.min_effect:
        lines.append(
            f"warning: that is larger than report.min_effect ({report.min_effect}): more seeds, or a smaller family, are needed"
        )
    if report.min_effect is not None and margin > report.min_effect:
        lines.append(
            f"warning: report.min_effect ({report.min_effect}) is below the margin TOST shows with 80% power: "
            "an equivalent verdict is unlikely"
        )
    return lines


def sampler_text(sampler) -> str:
    """`tpe (seed 0, 4 startup)`; a grid has neither seed nor startup trials."""
    if sampler.type == "grid":
        return "grid (every point once, in order, the same in every cell)"
    if sampler.type == "sobol":
        return f"sobol (seed {sampler.seed}: slot k tries the k-th quasi-random point, the same in every cell)"
    startup = f", {sampler.n_startup_trials} startup" if sampler.type == "tpe" else ""
    return f"{sampler.type} (seed {sampler.seed}{startup})"


def cell_capacities(spec: StudySpec) -> dict[str, capacity.Capacity]:
    """Each cell's network capacity by cell key; `{}` when the dataset's shape is unknown."""
    try:
        shape, classes = datasets.features(spec.base.dataset.name)
    except ValueError:
        return {}
    return {cell.key: capacity.of_config(spec.cell_config(cell), shape, classes) for cell in spec.cells()}


def capacity_text(spec: StudySpec, cell: Cell, capacities: dict[str, capacity.Capacity]) -> str:
    """`width 22, 1.14M params, 2.28M FLOPs/example, +0.2% vs baseline`: one cell's capacity."""
    counted = capacities[cell.key]
    config = spec.cell_config(cell)
    fixed = f" (+{capacity.human(counted.non_trainable)} fixed)" if counted.non_trainable else ""
    inert = f" ({capacity.human(counted.effective)} effective)" if counted.inert else ""
    text = (
        f"width {config.width}, {capacity.human(counted.trainable)} params{inert}{fixed}, "
        f"{capacity.human(counted.flops)} FLOPs/example"
    )
    reference = reference_cell(spec, cell)
    if reference.key != cell.key:
        knob, value = reference_of(spec)
        measure = spec.match.measure if spec.match else "trainable_params"
        ratio = counted.of(measure) / capacities[reference.key].of(measure)
        text += f", {ratio - 1:+.1%} {measure} vs {knob}={value}"
    return text


def reference_of(spec: StudySpec) -> tuple[str, object]:
    """What cells' capacity is compared with: the match's reference, else the report's baseline."""
    return spec.match_reference if spec.match else (spec.contrast, spec.baseline)


def reference_cell(spec: StudySpec, cell: Cell) -> Cell:
    knob, value = reference_of(spec)
    return Cell(values={**cell.values, knob: value})


def selection_rows(spec: StudySpec, selection: Selection) -> list[str]:
    """One console line per cell: the selected config and its validation value."""
    rows = []
    for cell, repeat in units(spec):
        key = unit_key(spec, cell, repeat)
        chosen = selection.get(key)
        if chosen is None:
            rows.append(f"  {key}: no completed tuning trial; it has no final runs")
        else:
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.params.items())
            rows.append(f"  {key}: trial {chosen.trial} ({params}) {spec.objective.metric}={chosen.value:.4f}")
    return rows
