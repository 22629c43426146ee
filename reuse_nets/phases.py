"""The two phases of a study as Optuna jobs, and the selection between them.

1. **tune**: one job per compared cell, `trials_per_cell` slots each, the
   sampler choosing the tuned knobs with the tuning seed (`base.seed`);
2. **final**: one job whose slots are every cell x `final.seeds`, each running the
   cell's best tuning trial's config (chosen on the validation objective, never
   on test) with a fresh seed. A plain grid (no `tune`) has only this phase.

The selection is computed once, when the final phase starts, and stored on the
final study: the final runs retrain exactly what it names.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import yaml

from reuse_nets import optuna_store
from reuse_nets.names import RUN_ID_ATTR, SELECTION_ATTR
from reuse_nets.studies import Cell, StudySpec


@dataclasses.dataclass(frozen=True)
class Job:
    """One Optuna study to fill: a cell's tuning trials, or the final runs.

    `slots[i]` is the cell of slot `i` and the parameters enqueued for it
    (`{}` for a tuning slot: the sampler chooses).
    """

    phase: str  # "tune" | "final"
    study_name: str
    slots: tuple[tuple[Cell, dict[str, Any]], ...]
    label: str  # for console lines, e.g. "tune strategy=plain,depth=4"


def tune_study_name(spec: StudySpec, cell: Cell) -> str:
    return f"{spec.name}:tune:{cell.key}"


def final_study_name(spec: StudySpec) -> str:
    return f"{spec.name}:final"


def tune_jobs(spec: StudySpec) -> list[Job]:
    if not spec.tune:
        return []
    # Tuning slots leave the choice to the sampler, except on a grid, where slot i is point i.
    if spec.tune.sampler.type == "grid":
        points = spec.tune.grid()
    else:
        points = [{} for _ in range(spec.tune.trials_per_cell)]
    return [
        Job("tune", tune_study_name(spec, cell), tuple((cell, point) for point in points), f"tune {cell.key}")
        for cell in spec.cells()
    ]


def final_job(spec: StudySpec, selection: dict[str, dict | None]) -> Job:
    """Every cell with a selected config, times every final seed."""
    slots = []
    for cell in spec.cells():
        chosen = selection.get(cell.key) if spec.tune else {"params": {}}
        if chosen is None:
            continue  # no tuning trial of this cell completed: nothing to retrain
        for seed in spec.final.seeds:
            slots.append((cell, {**cell.values, **chosen["params"], "seed": seed}))
    return Job("final", final_study_name(spec), tuple(slots), "final runs")


def open_job(spec: StudySpec, storage, job: Job, identity: dict, stream: int = 0):
    """The job's Optuna study; `stream` is the worker index (see `optuna_store.sampler`)."""
    epochs = {cell.values.get("epochs", spec.base.epochs) for cell, _ in job.slots} or {spec.base.epochs}
    existing = optuna_store.load_existing(storage, job.study_name)
    trials_before = len(existing.get_trials(deepcopy=False)) if existing is not None else 0
    return optuna_store.open_study(
        storage,
        job.study_name,
        identity,
        direction=spec.objective.direction,
        sampler=optuna_store.sampler(spec, job.phase, stream, trials_before),
        pruner=optuna_store.pruner(spec, max(epochs), job.phase),
    )


def select_best(spec: StudySpec, storage) -> dict[str, dict | None]:
    """Per cell, its best COMPLETE tuning trial by the objective (ties: lowest number)."""
    maximize = spec.objective.direction == "maximize"
    selection: dict[str, dict | None] = {}
    for cell in spec.cells():
        study = optuna_store.load_existing(storage, tune_study_name(spec, cell))
        complete = optuna_store.trials_in(study, "COMPLETE") if study else []
        if not complete:
            selection[cell.key] = None
            continue
        best = min(complete, key=lambda t: ((-t.value if maximize else t.value), t.number))
        selection[cell.key] = {
            "trial": best.number,
            "value": best.value,
            "params": dict(best.params),
            "run_id": best.user_attrs.get(RUN_ID_ATTR),
        }
    return selection


def stored_selection(study) -> dict[str, dict | None] | None:
    raw = study.user_attrs.get(SELECTION_ATTR)
    return None if raw is None else json.loads(raw)


def store_selection(study, selection: dict) -> None:
    study.set_user_attr(SELECTION_ATTR, json.dumps(selection, sort_keys=True))


def describe_plan(spec: StudySpec, storage_url: str, tracking_uri: str | None, workers: int, threads: int) -> str:
    """What running `spec` would do, as text; reads and writes nothing."""
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
            f"tune: {tune.trials_per_cell} trials per cell ({spec.tuning_trials} in all), sampler {tune.sampler.type} "
            f"(seed {tune.sampler.seed}, {tune.sampler.n_startup_trials} startup), pruner {tune.pruner.type} within each cell, "
            f"tuning seed {spec.base.seed}"
        )
        for name, param in tune.search_space.items():
            lines.append(f"  {name}: {param.model_dump(exclude_none=True)}")
    else:
        lines.append("tune: none (a plain grid: every cell runs the base config)")
    lines.append(
        f"final: best {'tuned ' if spec.tune else ''}config of each cell x seeds {spec.final.seeds} = {spec.final_runs} runs"
    )
    lines.append("cells:")
    for index, cell in enumerate(cells):
        budget = f"{spec.tune.trials_per_cell} tuning trials + " if spec.tune else ""
        lines.append(f"  {index:3d}: {cell.key}  ({budget}{len(spec.final.seeds)} final runs)")
    total = spec.tuning_trials + spec.final_runs
    epochs = max(spec.cell_config(cell).epochs for cell in cells)
    lines.append(f"total: {total} training runs of up to {epochs} epochs")
    lines += ["resolved study:", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).rstrip()]
    return "\n".join(lines)


def selection_rows(spec: StudySpec, selection: dict[str, Any]) -> list[str]:
    """One console line per cell: the selected config and its validation value."""
    rows = []
    for cell in spec.cells():
        chosen = selection.get(cell.key)
        if chosen is None:
            rows.append(f"  {cell.key}: no completed tuning trial; the cell has no final runs")
        else:
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen["params"].items())
            rows.append(f"  {cell.key}: trial {chosen['trial']} ({params}) {spec.objective.metric}={chosen['value']:.4f}")
    return rows
