"""Dead trials: failing the trials whose process died, and closing their MLflow runs.

A trial whose heartbeat went stale (its process was killed, or its machine lost) is
failed in Optuna; its MLflow run, left RUNNING, is closed with the reason, and the
slot is retried up to `execution.max_retry` times (`optuna_store.open_slots`).
"""

from __future__ import annotations

import warnings

from reuse_nets.names import OPTUNA_STUDY_TAG, OUTCOME_ATTR, SLOT_ATTR, TRIAL_TAG, Outcome, RunStatus, TrialState
from reuse_nets.store import optuna_store, tracking

DIED_REASON = "the trial's process died (no heartbeat); its slot is retried up to execution.max_retry times"
DISK_FULL_REASON = "a full disk stopped the study, and refused this run's closing writes; its slot is run again"


def reconcile(study, experiment_id: str, max_retry: int) -> int:
    """Fails trials whose process died and closes their MLflow runs; returns how many runs.

    The run of a slot's last allowed attempt says that the slot failed for good.
    """
    import mlflow

    op = optuna_store.optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", op.exceptions.ExperimentalWarning)
        op.storages.fail_stale_trials(study)
    client = mlflow.MlflowClient()
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = 0
    dangling = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = '{RunStatus.RUNNING}' and tags.`{OPTUNA_STUDY_TAG}` = '{study.study_name}'",
    )
    for run in dangling:
        number = run.data.tags.get(TRIAL_TAG)
        trial = by_number.get(int(number)) if number is not None else None
        # A RUNNING trial is alive: a dead one was just failed by its stale heartbeat.
        if trial is None or trial.state.name == TrialState.RUNNING:
            continue
        if trial.user_attrs.get(OUTCOME_ATTR) == Outcome.DISK_FULL:  # stopped, not dead: no retry used
            tracking.close_run(client, run.info.run_id, Outcome.DISK_FULL, DISK_FULL_REASON)
            closed += 1
            continue
        # Lost attempts of this slot up to this one: the last allowed one fails it for good.
        attempts = optuna_store.slot_trials(study).get(trial.user_attrs.get(SLOT_ATTR), [trial])
        lost = optuna_store.deaths([t for t in attempts if t.number <= trial.number])
        reason = DIED_REASON
        if lost > max_retry:
            reason = (
                f"failed for good: {lost} attempts lost (process died or storage error), the first and all "
                f"execution.max_retry={max_retry} retries; the study goes on without it"
            )
        tracking.close_run(client, run.info.run_id, Outcome.DIED, reason)
        closed += 1
    return closed
