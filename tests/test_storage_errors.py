"""Which failures count as a storage's passing trouble (the slot is retried), and
how lost attempts count against `execution.max_retry`."""

import sqlite3

import mlflow
import optuna
import pytest
import requests
import sqlalchemy.exc
from mlflow.protos import databricks_pb2

from reuse_nets import names
from reuse_nets.store import optuna_store, storage_errors


def locked() -> Exception:
    return sqlalchemy.exc.OperationalError("UPDATE trials SET ...", {}, sqlite3.OperationalError("database is locked"))


def wrapped_by_mlflow() -> Exception:
    # MLflow's SQL store re-raises SQLAlchemy's errors as its own exception type.
    try:
        try:
            raise locked()
        except sqlalchemy.exc.OperationalError as error:
            raise mlflow.exceptions.MlflowException(f"(sqlite3.OperationalError) {error.orig}") from error
    except mlflow.exceptions.MlflowException as outer:
        return outer


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(locked, id="sqlite-locked"),
        pytest.param(wrapped_by_mlflow, id="mlflow-wrapping-sqlalchemy"),
        pytest.param(
            lambda: requests.exceptions.ConnectionError(
                "Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch"
            ),
            id="server-down",
        ),
        pytest.param(lambda: requests.exceptions.ReadTimeout("read timed out"), id="server-slow"),
        pytest.param(
            lambda: mlflow.exceptions.MlflowException("busy", error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE),
            id="mlflow-503",
        ),
        pytest.param(
            lambda: sqlalchemy.exc.OperationalError(
                "SELECT 1", {}, Exception("server closed the connection unexpectedly")
            ),
            id="pg-dropped",
        ),
    ],
)
def test_storage_trouble_is_transient(make):
    assert storage_errors.is_transient(make())


@pytest.mark.parametrize(
    "error",
    [
        ValueError("width must be positive"),
        MemoryError(),
        mlflow.exceptions.MlflowException("Invalid metric name", error_code=databricks_pb2.INVALID_PARAMETER_VALUE),
        sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
        RuntimeError("Graph execution error: Incompatible shapes"),
    ],
    ids=["value", "memory", "mlflow-bad-request", "integrity", "tensorflow"],
)
def test_a_trials_own_errors_are_not_transient(error):
    assert not storage_errors.is_transient(error)


def test_backoff_doubles_and_is_capped():
    pauses = [storage_errors.backoff(n) for n in range(1, 10)]
    assert pauses[:3] == [2.0, 4.0, 8.0]
    assert max(pauses) == storage_errors.BACKOFF_MAX
    assert pauses == sorted(pauses)


def failed(outcome=None, slot=0):
    attrs = {"slot": slot, **({"outcome": outcome} if outcome else {})}
    return optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs)


def test_lost_attempts_are_retried_up_to_max_retry_and_errors_are_results():
    lost = [failed(), failed(names.Outcome.TRANSIENT)]  # a death, then a storage error
    assert optuna_store.deaths(lost) == 2
    assert not optuna_store.slot_done(lost, max_retry=2)  # one more retry allowed
    assert optuna_store.slot_done(lost + [failed(names.Outcome.TRANSIENT)], max_retry=2)  # used up
    # A trial's own error is its result: finished, never retried, not a lost attempt.
    assert optuna_store.slot_done([failed("error")], max_retry=2)
    assert optuna_store.deaths([failed("error"), failed("interrupted")]) == 0


def test_a_slot_lost_to_a_storage_error_is_enqueued_again():
    study = optuna.create_study()
    study.add_trial(failed(names.Outcome.TRANSIENT, slot=0))
    study.add_trial(failed("error", slot=1))
    assert optuna_store.enqueue_slots(study, [{"x": 0}, {"x": 1}], max_retry=1) == 1
    waiting = optuna_store.trials_in(study, "WAITING")
    assert [t.user_attrs["slot"] for t in waiting] == [0]
    assert optuna_store.pending(study, 2, max_retry=1) == 1
