"""A study's trial runs, and its comparisons, as pandas DataFrames, for notebooks: one call, one table.

    df = results.trials("strategy_depth", phase="tune", tracking_uri="sqlite:///mlflow.db")
    family = results.comparisons("strategy_depth", storage="sqlite:///optuna.db", tracking_uri=...)

`comparisons` is the report's family, one row per comparison (see its docstring).

Read back from the stores, like the report, never from memory. One row per MLflow
run of a trial (a slot whose process died and was retried has a row per attempt).
Columns, in this order:

- `run_id`, `run_name`, `phase` ("tune" | "final"), `cell` (e.g.
  "strategy=plain,depth=4"), `repeat` (the tuning repeat, 0 without
  `tune.repeats`), `trial` (Optuna trial number in its cell's or the
  final study), `state` (Optuna trial state), `outcome` (completed, pruned,
  diverged, error, died, ...), `status` (MLflow run status), `start_time`;
- with `storage`: `slot` (the planned trial it fills) and `value` (the objective
  Optuna recorded; NaN unless COMPLETE), and only runs that are trials there;
- every logged param under its own name (`strategy`, `depth`, `learning_rate`,
  `seed`, `split.train`, ...), as numbers or bools where every value is one;
- the metrics at the last epoch the run logged (`loss`, `accuracy`, `val_loss`,
  `val_accuracy`), `test_*` where present (final runs), and the network's capacity
  (`model/trainable_params`, `model/total_params`, `model/flops_per_example`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reuse_nets.design import plan, study_files
from reuse_nets.design.study_spec import StudySpec
from reuse_nets.errors import SweepError, first_line
from reuse_nets.names import (
    CAPACITY_METRICS,
    CELL_TAG,
    EPOCH_METRICS,
    IDENTITY_TAG,
    OUTCOME_TAG,
    PHASE_TAG,
    REPEAT_TAG,
    RUN_ID_ATTR,
    SLOT_ATTR,
    STATE_TAG,
    TEST_PREFIX,
    TRIAL_TAG,
    Phase,
    TrialState,
)
from reuse_nets.store import optuna_store, parent_run, readback

if TYPE_CHECKING:
    import pandas as pd

PHASES = tuple(Phase)
RUN_COLUMNS = ["run_id", "run_name", "phase", "cell", "repeat", "trial", "state", "outcome", "status", "start_time"]
OPTUNA_COLUMNS = ["slot", "value"]
BOOLEANS = {"True": True, "False": False}  # how MLflow logs a bool param


def trials(
    study: str | StudySpec,
    phase: str | None = None,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    overrides: Sequence[str] = (),
) -> pd.DataFrame:
    """The study's trial runs, one row each (columns: see the module docstring).

    Args:
        study: a study name in `experiments/`, a study file's path, or a `StudySpec`.
        phase: "tune" or "final"; None: both.
        storage: the Optuna storage URL the study ran with; adds `slot` and `value`.
        tracking_uri: the MLflow tracking URI; None: MLflow's default resolution.
        overrides: the `--set` overrides the study was run with, for a name or path.

    Raises:
        StudyError: no such study file, or an invalid override.
        SweepError: no such store, the study has not run there (or ran with other
            overrides), or it has no trial runs of `phase` yet.
    """
    import pandas as pd

    spec = study if isinstance(study, StudySpec) else study_files.load_study(study, list(overrides))
    if phase not in (None, *PHASES):
        raise ValueError(f"`phase` must be one of {tuple(p.value for p in PHASES)} or None. Received: phase={phase!r}")
    if phase == Phase.TUNE and not spec.tune:
        raise SweepError(f"study {spec.name!r} is a plain grid: it has no tune phase")
    runs = _trial_runs(spec, phase, tracking_uri)
    rows = [_row(run) for run in runs]
    columns = list(RUN_COLUMNS)
    if storage is not None:
        optuna_trials = _optuna_trials(spec, phase, storage)
        rows = [{**row, **optuna_trials[row["run_id"]]} for row in rows if row["run_id"] in optuna_trials]
        columns += OPTUNA_COLUMNS
    if not rows:
        raise SweepError(f"study {spec.name!r} has no {phase or 'trial'} runs yet; run it first with reuse-nets run")
    frame = pd.DataFrame(rows)
    params = sorted({name for run in runs for name in run.data.params} - set(columns))
    metrics = [name for name in _metric_names(runs) if name not in columns]
    frame = frame.reindex(columns=[*columns, *params, *metrics])
    frame[params] = frame[params].apply(_typed)
    frame["start_time"] = pd.to_datetime(frame["start_time"], unit="ms")
    for name in ("repeat", "trial", "slot"):
        if name in frame:
            frame[name] = frame[name].astype("Int64")  # integers, missing where a run has none
    order = {cell.key: index for index, cell in enumerate(spec.cells())}
    frame = frame.assign(_phase=frame["phase"].map(PHASES.index), _cell=frame["cell"].map(order))
    return (
        frame.sort_values(["_phase", "_cell", "repeat", "trial"])
        .drop(columns=["_phase", "_cell"])
        .reset_index(drop=True)
    )


def final_runs(study: str | StudySpec, **kwargs) -> pd.DataFrame:
    """`trials(study, "final", ...)`: the retrained runs; the report's numbers are those with state COMPLETE."""
    return trials(study, Phase.FINAL, **kwargs)


def _row(run) -> dict:
    tags, metrics = run.data.tags, run.data.metrics
    number = tags.get(TRIAL_TAG)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "phase": tags.get(PHASE_TAG),
        "cell": tags.get(CELL_TAG),
        "repeat": int(tags.get(REPEAT_TAG, 0)),  # the tuning repeat (`tune.repeats`; 0 without)
        "trial": int(number) if number is not None else None,
        "state": tags.get(STATE_TAG),
        "outcome": tags.get(OUTCOME_TAG),
        "status": run.info.status,
        "start_time": run.info.start_time,
        **run.data.params,
        **{name: value for name, value in metrics.items() if _is_final_metric(name)},
    }


def _is_final_metric(name: str) -> bool:
    return name in EPOCH_METRICS or name.startswith(TEST_PREFIX) or name in CAPACITY_METRICS.values()


def _metric_names(runs) -> list[str]:
    """Per-epoch metrics in `EPOCH_METRICS` order, then the test metrics, sorted, then capacity."""
    logged = {name for run in runs for name in run.data.metrics if _is_final_metric(name)}
    capacity = [name for name in CAPACITY_METRICS.values() if name in logged]
    return [
        *(name for name in EPOCH_METRICS if name in logged),
        *sorted(logged - set(EPOCH_METRICS) - set(capacity)),
        *capacity,
    ]


def _typed(column: pd.Series) -> pd.Series:
    """MLflow params are strings: numbers or bools where every value is one, else as logged."""
    import pandas as pd

    if column.isin(list(BOOLEANS)).all():
        return column.map(BOOLEANS)
    try:
        return pd.to_numeric(column)
    except (ValueError, TypeError):
        return column


def _trial_runs(spec: StudySpec, phase: str | None, tracking_uri: str | None) -> list:
    """The trial runs of `spec` in its experiment (reproductions and the parent run excluded)."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    optuna_store.require_existing_sqlite(uri, "MLflow tracking store")
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        experiment = client.get_experiment_by_name(spec.name)
    except mlflow.exceptions.MlflowException as error:
        raise SweepError(f"MLflow tracking store {uri} is unusable: {first_line(error)}") from None
    if experiment is None:
        raise SweepError(f"study {spec.name!r} has no MLflow experiment in {uri}; run it first with reuse-nets run")
    _check_identity(client, spec, experiment.experiment_id)
    return readback.trial_runs(client, experiment.experiment_id, study=spec.name, phase=phase)


def _check_identity(client, spec: StudySpec, experiment_id: str) -> None:
    """Refuses a spec other than the one the experiment's parent run was made for."""

    found = readback.parent(client, experiment_id, spec.name)
    stored = found.data.tags.get(IDENTITY_TAG) if found else None
    if stored is not None and stored != parent_run.spec_digest(spec):
        raise SweepError(
            f"study {spec.name!r} in MLflow was run with a different spec (other overrides?); "
            "pass the overrides it was run with"
        )


def _optuna_trials(spec: StudySpec, phase: str | None, url: str) -> dict[str, dict]:
    """MLflow run id -> `slot` and `value` of its Optuna trial, over the phase's studies."""
    optuna_store.require_existing_sqlite(url, "Optuna storage")
    optuna_store.check_storage(url)
    storage = optuna_store.make_storage(url, spec.execution)
    names = []
    if phase in (None, Phase.TUNE):
        names += [job.study_name for job in plan.tune_jobs(spec)]
    if phase in (None, Phase.FINAL):
        names.append(plan.final_study_name(spec))
    found = {}
    for name in names:
        study = optuna_store.load_existing(storage, name)
        for trial in study.get_trials(deepcopy=False) if study is not None else ():
            if RUN_ID_ATTR in trial.user_attrs:
                value = trial.value if trial.state.name == TrialState.COMPLETE else float("nan")
                found[trial.user_attrs[RUN_ID_ATTR]] = {"slot": trial.user_attrs.get(SLOT_ATTR), "value": value}
    return found


COMPARISON_COLUMNS = [
    "comparison",
    "condition",
    "declared",
    "n",
    "mean",
    "low",
    "high",
    "interval",
    "p_t",
    "p_sign_flip",
    "p_adjusted",
    "equivalence_p",
    "verdict",
    "wins",
    "per_unit",
]


def comparisons(
    study: str | StudySpec,
    *,
    storage: str,
    tracking_uri: str | None = None,
    overrides: Sequence[str] = (),
) -> pd.DataFrame:
    """The report's family, one row per comparison, in the report's order: the contrast
    pairs per condition, then each declared contrast (`report.contrasts`) per condition.

    Columns: `comparison` ("residual − plain", or a declared contrast's name),
    `condition` ("depth=64": the compared knobs held fixed), `declared`, `n` (paired
    units: seeds, or tuning repeats), `mean`, `low` and `high` (the interval printed
    beside the verdict, and what it is: `interval`), `p_t`, `p_sign_flip` (unadjusted),
    `p_adjusted` (the verdict's), `equivalence_p`, `verdict`, `wins` and `per_unit`
    (the paired values the tests use).

    Raises:
        StudyError: no such study file, or an invalid override.
        SweepError: no such store, or the study has not run there (or ran with other overrides).
    """
    import pandas as pd

    from reuse_nets.report import analysis, writer

    spec = study if isinstance(study, StudySpec) else study_files.load_study(study, list(overrides))
    runs = writer.final_runs_of(spec, storage, tracking_uri)
    rows = []
    for a in analysis.assess(spec, analysis.paired_differences(spec, runs)):
        d = a.difference
        low, high = a.verdict_interval
        rows.append(
            {
                "comparison": d.label,
                "condition": ",".join(f"{n}={v}" for n, v in d.condition.items()),
                "declared": d.declared,
                "n": d.interval.n,
                "mean": d.interval.mean,
                "low": low,
                "high": high,
                "interval": a.interval_label,
                "p_t": a.p_t,
                "p_sign_flip": a.p_sign_flip,
                "p_adjusted": a.p_adjusted,
                "equivalence_p": a.equivalence_p,
                "verdict": str(a.verdict),
                "wins": d.wins,
                "per_unit": list(d.diffs),
            }
        )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
