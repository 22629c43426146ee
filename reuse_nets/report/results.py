"""A study's trial runs as pandas DataFrames, for notebooks: one call, one table.

    df = results.trials("strategy_depth", phase="tune", tracking_uri="sqlite:///mlflow.db")

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

from reuse_nets.errors import SweepError, first_line
from reuse_nets.names import (
    CAPACITY_METRICS,
    CELL_TAG,
    EPOCH_METRICS,
    IDENTITY_TAG,
    KIND_TAG,
    OUTCOME_TAG,
    PHASE_TAG,
    REPEAT_TAG,
    RUN_ID_ATTR,
    SLOT_ATTR,
    STATE_TAG,
    STUDY_TAG,
    TEST_PREFIX,
    TRIAL_TAG,
    Kind,
    Phase,
)
from reuse_nets.spec import plan, study_files
from reuse_nets.spec.studies import StudySpec
from reuse_nets.store import optuna_store, study_runs

if TYPE_CHECKING:
    import pandas as pd

PHASES = tuple(Phase)
RUN_COLUMNS = ["run_id", "run_name", "phase", "cell", "repeat", "trial", "state", "outcome", "status", "start_time"]
OPTUNA_COLUMNS = ["slot", "value"]
PAGE_SIZE = 1000  # runs per MLflow search request
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
    where = f"tags.`{KIND_TAG}` = '{Kind.TRIAL}' and tags.`{STUDY_TAG}` = '{spec.name}'"
    if phase:
        where += f" and tags.`{PHASE_TAG}` = '{phase}'"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], where, max_results=PAGE_SIZE, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def _check_identity(client, spec: StudySpec, experiment_id: str) -> None:
    """Refuses a spec other than the one the experiment's parent run was made for."""

    parents = client.search_runs(
        [experiment_id],
        study_runs.parent_filter(spec.name),
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    stored = parents[0].data.tags.get(IDENTITY_TAG) if parents else None
    if stored is not None and stored != study_runs.spec_digest(spec):
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
                value = trial.value if trial.state.name == "COMPLETE" else float("nan")
                found[trial.user_attrs[RUN_ID_ATTR]] = {"slot": trial.user_attrs.get(SLOT_ATTR), "value": value}
    return found
