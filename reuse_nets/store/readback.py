"""Reading a study back from the stores: its parent run, trial runs, final runs and selection.

The one place where the report, `results`, `register`, `reproduce --study` and the
benchmark find a study's runs, so that all of them mean the same runs by the same
words (docs/glossary.md):

- a **trial run** is the MLflow run of one Optuna trial (`Kind.TRIAL`), under the
  study's parent run;
- a **final run** is a final-phase trial run; the report's numbers come from the
  *completed* ones (Optuna state COMPLETE and outcome `completed`). Given the Optuna
  storage, only the run of each final slot's earliest COMPLETE trial counts: a run
  another storage made under the same name, or a duplicate of a trial judged dead
  while it still ran, is left out.

Reading never creates a store: a missing SQLite file is an error, not a new database.
"""

from __future__ import annotations

from reuse_nets.design import plan
from reuse_nets.design.selection import Selection
from reuse_nets.design.study_spec import StudySpec
from reuse_nets.errors import SweepError
from reuse_nets.names import (
    KIND_TAG,
    OUTCOME_TAG,
    PARENT_TAG,
    PHASE_TAG,
    RUN_ID_ATTR,
    STATE_TAG,
    STUDY_TAG,
    Kind,
    Outcome,
    Phase,
    TrialState,
)
from reuse_nets.store import optuna_store

PAGE_SIZE = 1000  # runs per MLflow search request


def parent_filter(study_name: str) -> str:
    """The MLflow search filter that finds a study's parent run(s)."""
    return f"tags.`{KIND_TAG}` = '{Kind.STUDY}' and tags.`{STUDY_TAG}` = '{study_name}'"


def parent(client, experiment_id: str, study_name: str):
    """The study's parent run (the earliest, if runners raced to make one), or None."""
    found = client.search_runs(
        [experiment_id], filter_string=parent_filter(study_name), order_by=["attributes.start_time ASC"], max_results=1
    )
    return found[0] if found else None


def trial_runs(client, experiment_id: str, *, parent_run_id: str | None = None, study: str | None = None, phase=None):
    """Every trial run of the experiment under `parent_run_id` and/or tagged with `study`, of `phase` if given."""
    where = [f"tags.`{KIND_TAG}` = '{Kind.TRIAL}'"]
    if parent_run_id is not None:
        where.append(f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    if study is not None:
        where.append(f"tags.`{STUDY_TAG}` = '{study}'")
    if phase is not None:
        where.append(f"tags.`{PHASE_TAG}` = '{phase}'")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], " and ".join(where), max_results=PAGE_SIZE, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def is_completed_final_run(run) -> bool:
    """A final run that ran to its end (state COMPLETE, outcome completed)."""
    tags = run.data.tags
    return (
        tags.get(PHASE_TAG) == Phase.FINAL
        and tags.get(STATE_TAG) == TrialState.COMPLETE
        and tags.get(OUTCOME_TAG) == Outcome.COMPLETED
    )


def final_run_ids(spec: StudySpec, storage) -> set[str]:
    """The run of each final slot's earliest COMPLETE trial, from the Optuna storage."""
    study = optuna_store.load_existing(storage, plan.final_study_name(spec))
    ids = set()
    for trials in optuna_store.slot_trials(study).values() if study else ():
        complete = [t for t in trials if t.state.name == TrialState.COMPLETE and RUN_ID_ATTR in t.user_attrs]
        if complete:
            ids.add(complete[0].user_attrs[RUN_ID_ATTR])
    return ids


def completed_final_runs(client, experiment_id: str, parent_run_id: str, spec: StudySpec | None = None, storage=None):
    """The study's completed final runs (see the module docstring); with `spec` and `storage`, one per slot."""
    runs = [
        run
        for run in trial_runs(client, experiment_id, parent_run_id=parent_run_id, phase=Phase.FINAL)
        if is_completed_final_run(run)
    ]
    if spec is None or storage is None:
        return runs
    wanted = final_run_ids(spec, storage)
    return [run for run in runs if run.info.run_id in wanted]


def selection(spec: StudySpec, storage) -> Selection | None:
    """The selection stored when the final phase began, or None before it began."""
    study = optuna_store.load_existing(storage, plan.final_study_name(spec))
    return optuna_store.stored_selection(study) if study is not None else None


def open_finished(spec: StudySpec, storage_url: str, tracking_uri: str | None):
    """`(Optuna storage, parent run id)` of a study that has run in these stores.

    Raises:
        SweepError: no such store, the study has no final runs or no parent run in it,
            or it was run from a different spec (other overrides).
    """
    import mlflow

    from reuse_nets.store import tracking

    tracking.set_tracking_uri(tracking_uri)
    # Reading must not create empty stores (./optuna.db, ./mlflow.db) on the way to an error.
    optuna_store.require_existing_sqlite(storage_url, "Optuna storage")
    optuna_store.require_existing_sqlite(mlflow.get_tracking_uri(), "MLflow tracking store")
    storage = optuna_store.make_storage(storage_url, spec.execution)
    if optuna_store.load_existing(storage, plan.final_study_name(spec)) is None:
        raise SweepError(f"study {spec.name!r} has no final runs in this storage yet; run it first with reuse-nets run")
    # The same spec (overrides included) as the run, or the numbers would describe another study.
    optuna_store.check_identity(storage, plan.final_study_name(spec), spec.identity())
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(spec.name)
    found = parent(client, experiment.experiment_id, spec.name) if experiment else None
    if found is None:
        raise SweepError(f"study {spec.name!r} has no MLflow parent run yet; run it first with reuse-nets run")
    return storage, found.info.run_id
