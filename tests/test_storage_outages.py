"""A sweep rides out transient storage errors: in the runner's own bookkeeping and
inside a trial. The study still ends with every point once (in-process run, real
data, both stores in a temporary directory; the errors are injected)."""

import sqlite3

import mlflow
import optuna
import pytest
import sqlalchemy.exc

from reuse_nets.design import study_files
from reuse_nets.store import storage_errors, tracking
from reuse_nets.sweep import reconcile as reconciliation
from reuse_nets.sweep import runner

pytestmark = pytest.mark.slow

OVERRIDES = [
    "compare.strategy=[plain, residual]",
    "compare.depth=[2]",
    "base.epochs=1",
    "base.dataset.train_split=train[:500]",
    "base.dataset.validation_split=train[50000:50300]",
    "base.dataset.test_split=test[:300]",
]


def locked() -> Exception:
    return sqlalchemy.exc.OperationalError("UPDATE runs SET ...", {}, sqlite3.OperationalError("database is locked"))


def failing_first(times: int, real):
    """`real`, except that its first `times` calls raise "database is locked"."""
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise locked()
        return real(*args, **kwargs)

    flaky.calls = calls
    return flaky


def test_transient_storage_errors_never_lose_a_point(tmp_path, monkeypatch, data_source, capsys):
    spec = study_files.load_study("smoke", OVERRIDES)
    reconcile = failing_first(2, reconciliation.reconcile)  # the runner's bookkeeping, twice
    log_model = failing_first(1, tracking._log_model)  # one trial's model logging, once
    monkeypatch.setattr(reconciliation, "reconcile", reconcile)
    monkeypatch.setattr(tracking, "_log_model", log_model)
    monkeypatch.setattr(storage_errors, "BACKOFF_BASE", 0.2)  # the pauses, shortened
    monkeypatch.chdir(tmp_path)  # the report goes to ./reports
    options = runner.SweepOptions(
        storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", data=data_source
    )
    try:
        result = runner.run_study(spec, options)
    finally:
        mlflow.set_tracking_uri(None)
    out = capsys.readouterr().out

    assert result.complete, out
    assert reconcile.calls["n"] > 2 and log_model.calls["n"] >= 2
    rounds = [line for line in out.splitlines() if line.startswith("storage error (OperationalError")]
    assert len(rounds) == 2 and all("retrying in" in line for line in rounds), out
    assert "LOST to a storage error" in out, out
    study = optuna.load_study(study_name="smoke:final", storage=options.storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["slot"] for t in complete) == [0, 1]  # every point, once
    (lost,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert lost.user_attrs["outcome"] == "transient"
    client = mlflow.MlflowClient(tracking_uri=options.tracking_uri)
    run = client.get_run(lost.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["reuse_nets.outcome"] == "transient"
    assert run.data.tags["optuna.trial_state"] == "FAIL"
    assert "database is locked" in run.data.tags["reuse_nets.failure_reason"]
    retried = [t for t in complete if t.user_attrs["slot"] == lost.user_attrs["slot"]]
    assert len(retried) == 1 and retried[0].number > lost.number
