"""Tests of `reuse_nets.report.results`: a real tiny tuned study's trial runs as DataFrames.

The study (see `tiny_study`) is read back from its SQLite stores; every row and
value is checked against what MLflow and Optuna hold.
"""

import math
import os

import mlflow
import optuna
import pandas as pd
import pytest
import tiny_study

from reuse_nets.design import plan, study_files
from reuse_nets.errors import StudyError, SweepError
from reuse_nets.report import results

pytestmark = pytest.mark.slow  # reads a study run on real data

PARAMS = ("strategy", "depth", "width", "learning_rate", "seed", "epochs", "split.train", "learned_mask")
EPOCH_METRICS = ["loss", "accuracy", "val_loss", "val_accuracy"]
TEST_METRICS = ["test_accuracy", "test_loss"]
CAPACITY = ["model/trainable_params", "model/effective_params", "model/total_params", "model/flops_per_example"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study.finished_study(tmp_path_factory)


@pytest.fixture(scope="module")
def client(study):
    return mlflow.MlflowClient(tracking_uri=study.tracking_uri)


@pytest.fixture(scope="module")
def tune(study):
    return results.trials(study.spec, "tune", storage=study.storage, tracking_uri=study.tracking_uri)


@pytest.fixture(scope="module")
def final(study):
    return results.final_runs(str(tiny_study.STUDY_FILE), storage=study.storage, tracking_uri=study.tracking_uri)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_tune_has_one_row_per_tuning_trial_with_the_documented_columns(study, tune):
    spec = study.spec
    cells = [cell.key for cell in spec.cells()]

    assert len(tune) == spec.tune.trials_per_cell * len(cells)
    assert (
        list(tune.columns[: len(results.RUN_COLUMNS + results.OPTUNA_COLUMNS)])
        == results.RUN_COLUMNS + results.OPTUNA_COLUMNS
    )
    assert set(PARAMS) <= set(tune.columns)
    assert list(tune.columns[-len(EPOCH_METRICS + CAPACITY) :]) == EPOCH_METRICS + CAPACITY
    assert not [c for c in tune.columns if c.startswith("test_")]  # tuning never looks at test
    assert list(tune["cell"]) == [key for key in cells for _ in range(spec.tune.trials_per_cell)]
    assert list(tune["trial"]) == list(range(spec.tune.trials_per_cell)) * len(cells)
    assert (
        set(tune["phase"]) == {"tune"} and set(tune["state"]) == {"COMPLETE"} and set(tune["outcome"]) == {"completed"}
    )
    assert (
        tune["learning_rate"].dtype.kind == "f"
        and tune["depth"].dtype.kind == "i"
        and tune["learned_mask"].dtype == bool
    )


def test_final_has_one_row_per_cell_and_seed_with_test_metrics(study, final):
    spec = study.spec
    assert len(final) == len(spec.final.seeds) * len(spec.cells())
    expected = EPOCH_METRICS + TEST_METRICS + CAPACITY
    assert list(final.columns[-len(expected) :]) == expected
    assert not final[CAPACITY].isna().any().any() and (final["model/trainable_params"] > 0).all()
    assert sorted(zip(final["cell"], final["seed"])) == sorted(
        (c.key, s) for c in spec.cells() for s in spec.final.seeds
    )
    assert not final[TEST_METRICS].isna().any().any()


def test_every_row_is_the_mlflow_run_it_names(study, client, tune, final):
    for row in pd.concat([tune, final]).to_dict("records"):  # keys as named: "dataset.train_split"
        run = client.get_run(row["run_id"])
        tags = run.data.tags
        assert (row["phase"], row["cell"], str(row["trial"])) == (
            tags["reuse_nets.phase"],
            tags["reuse_nets.cell"],
            tags["optuna.trial_number"],
        )
        assert row["state"] == tags["optuna.trial_state"] and row["outcome"] == tags["reuse_nets.outcome"]
        assert row["status"] == run.info.status and row["run_name"] == run.info.run_name
        for name in PARAMS:
            assert str(row[name]) == run.data.params[name], name
        for name in EPOCH_METRICS + (TEST_METRICS if row["phase"] == "final" else []):
            assert row[name] == run.data.metrics[name], name
        # The value at the last epoch, not any other.
        history = client.get_metric_history(row["run_id"], "val_loss")
        assert [m.step for m in history] == list(range(1, study.spec.base.epochs + 1))
        assert row["val_loss"] == max(history, key=lambda m: m.step).value


def test_optuna_columns_are_the_trials_slot_and_objective(study, tune, final):
    for phase_frame, names in (
        (tune, {c.key: plan.tune_study_name(study.spec, c) for c in study.spec.cells()}),
        (final, None),
    ):
        for row in phase_frame.itertuples(index=False):
            name = names[row.cell] if names else plan.final_study_name(study.spec)
            trial = optuna.load_study(study_name=name, storage=study.storage).trials[row.trial]
            assert trial.user_attrs["mlflow_run_id"] == row.run_id
            assert (row.slot, row.value) == (trial.user_attrs["slot"], trial.value)
            assert math.isclose(row.value, getattr(row, study.spec.objective.metric))  # selected on it


def test_both_phases_without_storage_are_the_same_runs_without_optuna_columns(study, tune, final):
    both = results.trials(study.spec, tracking_uri=study.tracking_uri)

    assert list(both["run_id"]) == list(tune["run_id"]) + list(final["run_id"])
    assert not set(results.OPTUNA_COLUMNS) & set(both.columns)
    assert both["test_accuracy"].isna().sum() == len(tune)


def test_unknown_study_is_a_one_line_study_error(study):
    with pytest.raises(StudyError) as error:
        results.trials("no_such_study", tracking_uri=study.tracking_uri)
    assert "no study 'no_such_study'" in one_line(error)


def test_a_missing_tracking_store_is_an_error_and_is_not_created(study, tmp_path):
    with pytest.raises(SweepError) as error:
        results.trials(study.spec, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert "no MLflow tracking store" in one_line(error)
    assert not os.listdir(tmp_path)


def test_a_study_that_never_ran_there_is_a_one_line_error(study):
    with pytest.raises(SweepError) as error:
        results.final_runs("smoke", tracking_uri=study.tracking_uri)
    assert "has no MLflow experiment" in one_line(error)


def test_a_plain_grid_has_no_tune_phase(study):
    with pytest.raises(SweepError) as error:
        results.trials("smoke", "tune", tracking_uri=study.tracking_uri)
    assert "plain grid" in one_line(error)


def test_other_overrides_than_the_run_are_refused(study):
    with pytest.raises(SweepError) as error:
        results.trials(str(tiny_study.STUDY_FILE), overrides=["final.seeds=[7]"], tracking_uri=study.tracking_uri)
    assert "different spec" in one_line(error)


def test_a_study_with_no_trial_runs_yet_is_a_one_line_error(tmp_path):
    spec = study_files.load_study(str(tiny_study.STUDY_FILE))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(spec.name)  # the runner's first step, then nothing

    with pytest.raises(SweepError) as error:
        results.trials(spec, "final", tracking_uri=uri)
    assert "has no final runs yet" in one_line(error)


def test_an_unknown_phase_is_a_value_error(study):
    with pytest.raises(ValueError, match="phase='tuning'"):
        results.trials(study.spec, "tuning", tracking_uri=study.tracking_uri)
