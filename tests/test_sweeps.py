"""End-to-end tests of the sweep runner: `sweeps/run.py` in a subprocess, real
fashion_mnist (prepared offline), then assertions on what the Optuna and MLflow
stores hold.

Every run works in its own temporary directory (the runner's working directory),
so `mlflow.db`, `optuna.db`, `mlruns/` and `reports/` land there. Studies run on
small slices of the data; one finished `smoke` study is shared by the tests that
only read it.
"""

import json
import math
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from conftest import fashion_mnist_manual_dir
from mlflow.entities import ViewType

from reuse_nets.errors import plain_text
from reuse_nets.report import results
from reuse_nets.runtime.interrupts import SHUTDOWN_GRACE
from reuse_nets.spec import study_files
from reuse_nets.store import tracking
from reuse_nets.train import execution

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "sweeps" / "run.py"
PRUNE_FAIL = ROOT / "tests" / "studies" / "prune_fail.yaml"
MANUAL_DIR = fashion_mnist_manual_dir()
STRATEGIES = ("plain", "concat", "residual", "masked")
# Slices small enough for a trial to take a second or two.
SMALL_DATA = (
    "base.dataset.train_split=train[:1000]",
    "base.dataset.validation_split=train[50000:50500]",
    "base.dataset.test_split=test[:500]",
)
# A tuned study small enough for CI: 2 cells x 3 tuning trials, then 2 cells x 2 seeds.
TINY_TUNED = (
    "compare.depth=[2]",
    "base.epochs=2",
    "base.width=16",
    "tune.trials_per_cell=3",
    "tune.pruner.n_startup_trials=1",
    "tune.pruner.n_warmup_steps=0",
    "final.seeds=[1, 2]",
    "execution.heartbeat_interval=2",
    "execution.grace_period=8",
)
# TensorFlow/absl log lines that may precede anything we print.
LOG_NOISE = ("WARNING: All log messages", "I0000", "E0000", "W0000", "WARNING:absl:")
RUN_TIMEOUT = 240  # seconds; a smoke run takes about 50

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- Helpers ------------------------------------------------------------------------------


def storage_url(directory: Path) -> str:
    return f"sqlite:///{directory}/optuna.db"


def tracking_url(directory: Path) -> str:
    return f"sqlite:///{directory}/mlflow.db"


def sweep_command(directory: Path, study: str, *extra: str, small: bool = True, manual_dir: bool = True) -> list[str]:
    """The runner's command line, with both stores in `directory`."""
    command = [sys.executable, str(RUNNER), "--study", study]
    if manual_dir:
        command += ["--manual-dir", MANUAL_DIR]
    command += ["--storage", storage_url(directory), "--tracking-uri", tracking_url(directory)]
    for override in SMALL_DATA if small else ():
        command += ["--set", override]
    return command + list(extra)


def run(command: list[str], cwd: Path, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=runner_env())


def runner_env() -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # the command line says where to track
    env.pop("MLFLOW_RUN_ID", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"


def run_sweep(directory: Path, study: str, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    result = run(sweep_command(directory, study, *extra, **kwargs), cwd=directory)
    assert result.returncode == 0, explain(result)
    return result


class Stores:
    """Read access to one directory's Optuna and MLflow stores."""

    def __init__(self, directory: Path, study_name: str):
        self.directory, self.study_name = directory, study_name
        self.client = mlflow.MlflowClient(tracking_uri=tracking_url(directory))

    def optuna_study(self, name: str):
        return optuna.load_study(study_name=name, storage=storage_url(self.directory))

    def final(self):
        """The Optuna study of the final runs."""
        return self.optuna_study(f"{self.study_name}:final")

    def tune(self, cell_key: str):
        return self.optuna_study(f"{self.study_name}:tune:{cell_key}")

    def optuna_names(self) -> list[str]:
        return sorted(s.study_name for s in optuna.get_all_study_summaries(storage=storage_url(self.directory)))

    def experiment(self):
        experiment = self.client.get_experiment_by_name(self.study_name)
        assert experiment is not None, f"no MLflow experiment {self.study_name!r}"
        return experiment

    def runs(self) -> list:
        """Every run of the study's experiment, whatever its state."""
        return self.client.search_runs([self.experiment().experiment_id], run_view_type=ViewType.ALL, max_results=1000)

    def parent_runs(self) -> list:
        return [r for r in self.runs() if r.data.tags.get("reuse_nets.kind") == "study"]

    def parent(self):
        parents = self.parent_runs()
        assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
        return parents[0]

    def children(self) -> list:
        return [r for r in self.runs() if r.data.tags.get("reuse_nets.kind") == "trial"]

    def child_of(self, trial):
        return self.client.get_run(trial.user_attrs["mlflow_run_id"])

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, metric))

    def artifacts(self, run_id: str, path: str | None = None) -> set[str]:
        return {a.path for a in self.client.list_artifacts(run_id, path)}


def trials_in(study, state: str) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == state]


def slots(trials) -> list[int]:
    return sorted(t.user_attrs["slot"] for t in trials)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a failed command; nothing but TF/absl log noise beside it."""
    assert "Traceback" not in result.stderr, explain(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, explain(result)
    others = [line for line in lines if not line.startswith(("error:", *LOG_NOISE))]
    assert not others, explain(result)
    assert errors[0].removeprefix("error:").strip(), explain(result)
    return errors[0]


def small_spec(study: str, *extra: str):
    return study_files.load_study(study, [*SMALL_DATA, *extra])


# --- smoke: a plain grid through the whole pipeline, then what the stores hold ----------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One finished `smoke` study (8 cells, one final run each, 2 epochs), shared by readers.

    Run by 4 worker processes on the default SQLite storage: more writers than cores.
    """
    directory = tmp_path_factory.mktemp("smoke")
    result = run_sweep(directory, "smoke", "--workers", "4")
    return result, Stores(directory, "smoke")


def test_smoke_prints_a_summary_with_verdicts_and_tables(smoke):
    result, _ = smoke
    assert "study smoke: complete" in result.stdout
    assert "## Verdict" in result.stdout
    assert "depth 2: residual - plain = " in result.stdout  # one seed: a difference, no claim
    section = result.stdout.split("## Final test_accuracy per cell")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| strategy=")]
    assert len([line for line in table if "| 1 |" in line]) == 8, result.stdout  # every cell, n=1


def test_four_workers_on_sqlite_lose_and_duplicate_no_point(smoke):
    result, stores = smoke
    assert all(f"[worker {i}]" in result.stdout for i in (1, 2, 3, 4)), result.stdout[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    assert "LOST" not in result.stdout  # no trial was cut short by a storage error
    study = stores.final()
    complete = trials_in(study, "COMPLETE")
    assert slots(complete) == list(range(8))  # every point once: none lost, none twice
    for trial in study.get_trials():
        assert trial.state.name == "COMPLETE" or trial.user_attrs.get("outcome") == "unused", trial
    assert len(stores.children()) == 8


def test_smoke_has_one_experiment_and_one_finished_parent_run(smoke):
    _, stores = smoke
    experiments = stores.client.search_experiments(view_type=ViewType.ALL)
    assert sorted(e.name for e in experiments) == ["Default", "smoke"]  # MLflow's own, and ours
    experiment = stores.experiment()
    # The description as one escaped Markdown paragraph: the UI renders it as written.
    assert experiment.tags["mlflow.note.content"] == plain_text(small_spec("smoke").description)
    parent = stores.parent()
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "smoke"
    assert parent.data.tags["reuse_nets.study"] == "smoke"
    assert parent.data.params["compare"] == "strategy=['plain', 'concat', 'residual', 'masked'], depth=[1, 2]"
    assert parent.data.params["tuned"] == "none"
    # The report is the parent run's description in the MLflow UI.
    assert parent.data.tags["mlflow.note.content"].startswith("# Study `smoke`")
    assert stores.optuna_names() == ["smoke:final"]  # a plain grid has no tuning studies


def test_smoke_parent_run_carries_spec_and_report(smoke):
    _, stores = smoke
    parent_id = stores.parent().info.run_id
    assert {"study.yaml", "report"} <= stores.artifacts(parent_id)
    report = stores.artifacts(parent_id, "report")
    expected = {"report.md", "report.html", "isolation.png", "paired_differences.png", "grad_norm_vs_depth.png"}
    assert {f"report/{name}" for name in expected} <= report
    # The resolved spec travels with the result: it validates back to what was run.
    spec_file = stores.client.download_artifacts(parent_id, "study.yaml", str(stores.directory / "download"))
    from reuse_nets.spec.studies import StudySpec

    assert StudySpec.model_validate(yaml.safe_load(Path(spec_file).read_text())) == small_spec("smoke")
    png = stores.client.download_artifacts(parent_id, "report/isolation.png", str(stores.directory / "download"))
    assert Path(png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_smoke_has_one_finished_child_run_per_final_slot(smoke):
    _, stores = smoke
    study = stores.final()
    parent_id = stores.parent().info.run_id
    trials = study.get_trials()
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert len(stores.runs()) == 9  # nothing else in the experiment
    spec = small_spec("smoke")
    for trial in trials:
        run = stores.child_of(trial)
        tags = run.data.tags
        cell = spec.cells()[trial.user_attrs["slot"]]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"final-{cell.key}-seed=0"
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["reuse_nets.study"] == "smoke"
        assert tags["reuse_nets.phase"] == "final"
        assert tags["reuse_nets.cell"] == cell.key
        assert tags["optuna.study_name"] == "smoke:final"
        assert tags["optuna.trial_number"] == str(trial.number)
        assert tags["optuna.trial_state"] == "COMPLETE"
        assert tags["reuse_nets.outcome"] == "completed"
        assert tags["reuse_nets.exec.compile_cache"] == "4"
        assert tags["reuse_nets.exec.trainer_reused"] in ("true", "false")
        assert trial.params == {**cell.values, "seed": 0}
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value), name
        assert run.data.params["width"] == "32"
        assert run.data.params["learning_rate"] == "0.002"
        assert run.data.params["epochs"] == "2"
        assert run.data.params["split.train"] == "train[:1000]"


def test_smoke_child_runs_have_per_epoch_metrics(smoke):
    _, stores = smoke
    for trial in stores.final().get_trials():
        run_id = trial.user_attrs["mlflow_run_id"]
        val_accuracy = stores.history(run_id, "val_accuracy")
        assert [step for step, _ in val_accuracy] == [1, 2]
        assert trial.value == pytest.approx(val_accuracy[-1][1], abs=1e-7)
        assert trial.intermediate_values == {}  # final runs are never reported to a pruner
        assert [step for step, _ in stores.history(run_id, "grad_norm/block_01")] == [1, 2]
        block_02 = stores.history(run_id, "grad_norm/block_02")
        assert [step for step, _ in block_02] == ([1, 2] if trial.params["depth"] == 2 else [])
        metrics = stores.client.get_run(run_id).data.metrics
        assert {"loss", "accuracy", "val_loss", "test_accuracy", "test_loss"} <= set(metrics)
        assert trial.user_attrs["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_smoke_report_numbers_are_the_final_runs_test_metrics(smoke):
    _, stores = smoke
    report = (stores.directory / "reports" / "smoke" / "report.md").read_text()
    for trial in stores.final().get_trials():
        cell = small_spec("smoke").cells()[trial.user_attrs["slot"]]
        test = stores.client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics["test_accuracy"]
        assert f"| {cell.key} | {test:.4f} | 1 | 0 | {trial.value:.4f} |" in report  # one seed: no interval


def test_resume_of_a_finished_study_runs_nothing_new(smoke):
    """Re-running the same command on a finished study: no trial, no second parent run.

    Runs after the read-only smoke tests above (it touches the shared stores).
    """
    _, stores = smoke
    before_trials = [(t.number, t.state.name, t.value) for t in stores.final().get_trials()]
    before_runs = {r.info.run_id: r.info.status for r in stores.runs()}
    parent_id = stores.parent().info.run_id

    result = run_sweep(stores.directory, "smoke")

    assert "started" not in result.stdout, result.stdout  # no trial ran
    assert "study smoke: complete" in result.stdout
    assert [(t.number, t.state.name, t.value) for t in stores.final().get_trials()] == before_trials
    assert {r.info.run_id: r.info.status for r in stores.runs()} == before_runs
    assert stores.parent().info.run_id == parent_id
    assert stores.parent().info.status == "FINISHED"


# --- pruned and failed tuning trials ---------------------------------------------------------


@pytest.fixture(scope="module")
def prune_fail(tmp_path_factory):
    """tests/studies/prune_fail.yaml: tuning trials 0 complete, 1 pruned, 2 diverged (by design)."""
    directory = tmp_path_factory.mktemp("prune_fail")
    result = run(sweep_command(directory, str(PRUNE_FAIL), small=False), cwd=directory)
    return result, Stores(directory, "prune_fail")


def trial_with_lr(study, learning_rate: float):
    found = [t for t in study.get_trials() if t.params["learning_rate"] == learning_rate]
    assert len(found) == 1, [(t.number, t.state.name, t.params) for t in study.get_trials()]
    return found[0]


def test_prune_fail_tunes_three_slots_then_retrains_the_complete_one(prune_fail):
    result, stores = prune_fail
    assert result.returncode == 0, explain(result)
    assert "study prune_fail: complete" in result.stdout
    tune = stores.tune("depth=2")
    assert [t.params["learning_rate"] for t in sorted(tune.get_trials(), key=lambda t: t.number)] == [0.003, 1e-6, 1e10]
    assert slots(tune.get_trials()) == [0, 1, 2]
    good = trial_with_lr(tune, 0.003)
    assert good.state.name == "COMPLETE"
    assert stores.child_of(good).info.status == "FINISHED"
    # Tuning never looks at the test split; the final run is scored on it.
    assert "test_accuracy" not in stores.child_of(good).data.metrics
    assert "test_accuracy" not in good.user_attrs
    (final,) = stores.final().get_trials()
    assert final.state.name == "COMPLETE"
    assert final.params == {"depth": 2, "learning_rate": 0.003, "seed": 1}
    run = stores.child_of(final)
    assert run.data.params["learning_rate"] == "0.003" and run.data.params["seed"] == "1"
    assert "test_accuracy" in run.data.metrics
    assert stores.parent().info.status == "FINISHED"
    assert len(stores.children()) == 4
    report = (stores.directory / "reports" / "prune_fail" / "report.md").read_text()
    assert "| depth=2 | 1 | 1 | 1 | 0 | learning_rate=0.003 |" in report  # the budget table


def test_pruned_trial_is_mirrored_as_killed_run(prune_fail):
    result, stores = prune_fail
    pruned = trial_with_lr(stores.tune("depth=2"), 1e-6)
    assert pruned.state.name == "PRUNED", explain(result)
    assert pruned.user_attrs["outcome"] == "pruned"
    assert list(pruned.intermediate_values) == [1]  # pruned after its first epoch
    run = stores.child_of(pruned)
    assert run.info.status == "KILLED"
    assert run.data.tags["optuna.trial_state"] == "PRUNED"
    assert run.data.tags["reuse_nets.outcome"] == "pruned"
    assert run.data.tags["reuse_nets.phase"] == "tune"
    assert "pruned at epoch 1" in run.data.tags["reuse_nets.failure_reason"]
    assert run.data.tags["reuse_nets.exec.trainer_reused"] in ("true", "false")  # tagged before training
    assert [step for step, _ in stores.history(run.info.run_id, "val_accuracy")] == [1]
    assert "test_accuracy" not in run.data.metrics


def test_diverged_trial_is_mirrored_as_failed_run(prune_fail):
    result, stores = prune_fail
    diverged = trial_with_lr(stores.tune("depth=2"), 1e10)
    run = stores.child_of(diverged)
    loss = stores.history(run.info.run_id, "loss")
    assert loss and loss[-1][1] != loss[-1][1], f"the loss did not become NaN: {loss}"  # NaN != NaN
    assert diverged.state.name == "FAIL"
    assert diverged.user_attrs["outcome"] == "diverged"
    assert run.info.status == "FAILED"
    assert run.data.tags["optuna.trial_state"] == "FAIL"
    assert run.data.tags["reuse_nets.outcome"] == "diverged"
    assert "non-finite loss" in run.data.tags["reuse_nets.failure_reason"]
    assert "FAILED (diverged" in result.stdout


def reproduce_command(directory: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "sweeps" / "reproduce.py"),
        *args,
        "--manual-dir",
        MANUAL_DIR,
        "--tracking-uri",
        tracking_url(directory),
    ]


def run_reproduce(directory: Path, run_id: str) -> subprocess.CompletedProcess:
    return run(reproduce_command(directory, run_id), cwd=directory)


def reproductions_of(stores: Stores, run_id: str) -> list:
    return [r for r in stores.runs() if r.data.tags.get("reproduces") == run_id]


def test_a_pruned_trial_reproduces_exactly_as_far_as_it_ran(prune_fail):
    _, stores = prune_fail
    original = stores.child_of(trial_with_lr(stores.tune("depth=2"), 1e-6))

    proc = run_reproduce(stores.directory, original.info.run_id)

    assert proc.returncode == 0, explain(proc)
    assert "the original ended pruned after epoch 1: re-training exactly that far" in proc.stdout
    assert "AGREE within tolerance 0" in proc.stdout, explain(proc)
    (copy,) = reproductions_of(stores, original.info.run_id)
    # Ended the way the original did, with the same epochs and nothing more.
    assert copy.info.status == "KILLED"
    assert copy.data.tags["reuse_nets.outcome"] == "pruned"
    assert copy.data.tags["optuna.trial_state"] == "PRUNED"
    # MLflow's system/* samples are the machine's, taken every few seconds: a run that
    # outlasts the interval on a loaded machine has them, a quick one not. Results only.
    results = {name for name in original.data.metrics if not name.startswith("system/")}
    assert {name for name in copy.data.metrics if not name.startswith("system/")} == results
    for name in results:
        if name not in ("epoch_time", "throughput"):
            assert stores.history(copy.info.run_id, name) == stores.history(original.info.run_id, name), name


def test_a_diverged_trial_reproduces_its_divergence(prune_fail):
    _, stores = prune_fail
    original = stores.child_of(trial_with_lr(stores.tune("depth=2"), 1e10))

    proc = run_reproduce(stores.directory, original.info.run_id)

    assert proc.returncode == 0, explain(proc)  # NaN equals NaN: the same divergence
    (copy,) = reproductions_of(stores, original.info.run_id)
    assert copy.data.tags["reuse_nets.outcome"] == "diverged"
    steps = [step for step, _ in stores.history(original.info.run_id, "loss")]
    assert [step for step, _ in stores.history(copy.info.run_id, "loss")] == steps


# --- pruning stays inside a cell ------------------------------------------------------------


def test_pruning_never_compares_trials_of_different_cells(tmp_path):
    """Cell lr=1e-6 learns nothing (0.14 after epoch 1) and lr=0.003 learns (0.43).

    With one pruner over both cells, the first would be pruned at epoch 1 against
    the second (median pruner, one finished trial, no warm-up). Each cell has its
    own Optuna study and pruner, so it completes.
    """
    extra = (
        "--set",
        "compare={learning_rate: [0.003, 0.000001]}",
        "--set",
        "tune={search_space: {width: [32]}, sampler: {type: grid}, "
        "pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}}",
        "--set",
        "final.seeds=[1]",
    )
    run_sweep(tmp_path, str(PRUNE_FAIL), *extra, small=False)
    stores = Stores(tmp_path, "prune_fail")
    good, slow = stores.tune("learning_rate=0.003"), stores.tune("learning_rate=1e-06")
    (good_trial,), (slow_trial,) = good.get_trials(), slow.get_trials()
    assert good_trial.state.name == slow_trial.state.name == "COMPLETE"
    assert list(slow_trial.intermediate_values) == [1, 2, 3]  # reported every epoch, to its own pruner
    assert slow_trial.intermediate_values[1] < good_trial.intermediate_values[1]
    for study in (good, slow):
        cells = {stores.child_of(t).data.tags["reuse_nets.cell"] for t in study.get_trials()}
        assert len(cells) == 1  # an Optuna study holds one cell's trials only


# --- a tuned study: equal budget per cell, final runs of the selected configs ----------------


def assert_equal_budget(stores: Stores, spec) -> None:
    """Every cell: exactly `trials_per_cell` slots with a result, each slot once."""
    for cell in spec.cells():
        trials = stores.tune(cell.key).get_trials()
        ended = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert slots(ended) == list(range(spec.tune.trials_per_cell)), (
            cell.key,
            [(t.number, t.state.name) for t in trials],
        )
        assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def assert_final_retrains_the_selection(stores: Stores, spec) -> None:
    """Final runs = each cell's best COMPLETE tuning trial (on val) x the declared seeds."""
    final = stores.final().get_trials()
    for cell in spec.cells():
        complete = [t for t in stores.tune(cell.key).get_trials() if t.state.name == "COMPLETE"]
        best = max(complete, key=lambda t: (t.value, -t.number))
        runs = [
            t for t in final if t.state.name == "COMPLETE" and all(t.params[k] == v for k, v in cell.values.items())
        ]
        assert sorted(t.params["seed"] for t in runs) == spec.final.seeds
        for trial in runs:
            assert trial.params["learning_rate"] == best.params["learning_rate"]
            logged = stores.child_of(trial).data.params
            assert float(logged["learning_rate"]) == best.params["learning_rate"]
            assert logged["seed"] == str(trial.params["seed"]) and logged["seed"] != "0"  # fresh, not the tuning seed


def test_two_workers_give_every_cell_the_same_budget(tmp_path):
    result = run_sweep(tmp_path, "residual_depth", "--workers", "2", *[a for o in TINY_TUNED for a in ("--set", o)])
    assert "[worker 1]" in result.stdout and "[worker 2]" in result.stdout
    assert "study residual_depth: complete" in result.stdout
    spec = small_spec("residual_depth", *TINY_TUNED)
    stores = Stores(tmp_path, "residual_depth")
    assert_equal_budget(stores, spec)
    assert_final_retrains_the_selection(stores, spec)
    for cell in spec.cells():
        # Regression: workers with one sampler seed drew the same start-up values.
        rates = [t.params["learning_rate"] for t in stores.tune(cell.key).get_trials() if "learning_rate" in t.params]
        assert len(set(rates)) == len(rates) == spec.tune.trials_per_cell, (cell.key, rates)
    final = stores.final().get_trials()
    assert slots([t for t in final if t.state.name == "COMPLETE"]) == [0, 1, 2, 3]
    # A worker that asked after the last slot was taken gets an unused trial, and no run.
    for study in [stores.final()] + [stores.tune(c.key) for c in spec.cells()]:
        for trial in study.get_trials():
            if trial.state.name not in ("COMPLETE", "PRUNED"):
                assert trial.state.name == "FAIL" and trial.user_attrs.get("outcome") == "unused", trial
    runs = stores.runs()
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(stores.parent_runs()) == 1
    # Every MLflow run's tags agree with its Optuna trial.
    for run in stores.children():
        trial = stores.optuna_study(run.data.tags["optuna.study_name"]).trials[
            int(run.data.tags["optuna.trial_number"])
        ]
        assert run.data.tags["optuna.trial_state"] == trial.state.name
    # The report's numbers: mean test metric of the final runs of each cell.
    report = (tmp_path / "reports" / "residual_depth" / "report.md").read_text()
    for cell in spec.cells():
        tests = [
            t.user_attrs["test_accuracy"]
            for t in final
            if t.state.name == "COMPLETE" and all(t.params[k] == v for k, v in cell.values.items())
        ]
        assert f"| {cell.key} | {sum(tests) / len(tests):.4f} ± " in report

    # Each worker pinned its share of the cores and logged it; a run reproduces
    # bit-exactly in a process whose own default would be another thread count.
    # The run reproduced trained on a trainer an earlier trial of its worker traced
    # (the compile cache): the fresh process traces its own and still agrees.
    threads = max(1, execution.machine_cores() // 2)
    finals = [stores.child_of(t) for t in final if t.state.name == "COMPLETE"]
    assert {r.data.tags["reuse_nets.exec.compile_cache"] for r in finals} == {"4"}
    reused = [r for r in finals if r.data.tags["reuse_nets.exec.trainer_reused"] == "true"]
    assert reused, "no final run reused its cell's compiled trainer"
    original = reused[0]
    assert original.data.tags["reuse_nets.exec.intra_op_threads"] == str(threads)
    assert "--workers 2" in original.data.tags["reuse_nets.command"]
    proc = run_reproduce(tmp_path, original.info.run_id)
    assert proc.returncode == 0, explain(proc)
    assert f"execution: {threads} intra-op / {min(threads, 2)} inter-op threads" in proc.stdout, explain(proc)
    assert "AGREE within tolerance 0" in proc.stdout, explain(proc)


def test_an_interrupted_tuned_study_resumes_to_the_same_budget(tmp_path):
    overrides = [a for o in TINY_TUNED for a in ("--set", o)]
    # 2 s: less than the first trial takes (tracing, MLflow) on any machine, so tuning cannot finish.
    first = run(sweep_command(tmp_path, "residual_depth", *overrides, "--timeout", "2"), cwd=tmp_path)
    assert first.returncode == 1, explain(first)  # out of time: incomplete, resumable
    assert "incomplete (re-run the same command to resume)" in first.stdout
    stores = Stores(tmp_path, "residual_depth")
    assert stores.parent().info.status == "KILLED"
    assert "residual_depth:final" not in stores.optuna_names()  # tuning was not done

    run_sweep(tmp_path, "residual_depth", *overrides)

    spec = small_spec("residual_depth", *TINY_TUNED)
    assert_equal_budget(stores, spec)
    assert_final_retrains_the_selection(stores, spec)
    assert stores.parent().info.status == "FINISHED"


# --- a process killed mid-trial, then the same command again -----------------------------


def wait_for_line(log: Path, process: subprocess.Popen, *needles: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if all(needle in line for needle in needles):
                return line
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.fail(f"no line with {needles} after {timeout} s (exit {process.returncode}):\n{log.read_text()[-3000:]}")


# Two final runs of 6 epochs: long enough to be stopped mid-trial.
INTERRUPTIBLE = ("compare.strategy=[plain, residual]", "compare.depth=[2]", "base.epochs=6")


def session_alive(session: int) -> bool:
    try:
        os.killpg(session, 0)
    except ProcessLookupError:
        return False
    return True


def stop_sweep(directory: Path, how: str, workers: str, env: dict | None = None) -> float:
    """Starts the INTERRUPTIBLE sweep and stops it with one signal in its first epoch; returns
    the seconds from the signal to the end of its last process."""
    overrides = [a for o in INTERRUPTIBLE for a in ("--set", o)]
    command = sweep_command(directory, "smoke", *overrides, "--workers", workers)
    log, errors = directory / "stopped.log", directory / "stopped.err"
    with open(log, "w") as out, open(errors, "w") as err:
        process = subprocess.Popen(
            command, cwd=directory, stdout=out, stderr=err, env=env or runner_env(), start_new_session=True
        )
        try:
            wait_for_line(log, process, "epoch 1/6")
            sent = time.monotonic()
            if how == "ctrl-c":
                os.killpg(process.pid, signal.SIGINT)
            else:
                os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
            took = time.monotonic() - sent
            for _ in range(40):  # orphaned workers, if any, would still be in the session
                if not session_alive(process.pid):
                    break
                time.sleep(0.05)
            assert not session_alive(process.pid), "a process of the sweep outlived it"
        finally:
            if process.poll() is None or session_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    stderr = errors.read_text()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.count("interrupted: ") == 1, stderr[-3000:]
    return took


def assert_stopped_cleanly(stores: Stores) -> None:
    """Every trial the signal stopped is closed as interrupted, its run KILLED; nothing RUNNING."""
    study = stores.final()
    assert not trials_in(study, "RUNNING")
    interrupted = [t for t in study.get_trials() if t.user_attrs.get("outcome") == "interrupted"]
    assert len(interrupted) >= 1, [(t.number, t.state.name, t.user_attrs) for t in study.get_trials()]
    for trial in interrupted:
        run_ = stores.child_of(trial)
        assert run_.info.status == "KILLED"
        assert run_.data.tags["reuse_nets.outcome"] == "interrupted"
        assert run_.data.tags["optuna.trial_state"] == trial.state.name == "FAIL"
    assert not [r.info.run_name for r in stores.runs() if r.info.status == "RUNNING"]
    assert stores.parent().info.status == "KILLED"


@pytest.mark.parametrize(
    "how, workers",
    [
        pytest.param("ctrl-c", "1", id="ctrl-c-one-process"),  # the terminal signals the whole group
        pytest.param("sigterm", "2", id="sigterm-two-workers"),  # a scheduler's `kill PID`: the runner forwards it
    ],
)
def test_one_signal_stops_the_sweep_cleanly_and_the_same_command_finishes_it(tmp_path, how, workers):
    took = stop_sweep(tmp_path, how, workers)
    assert took < 15, f"stopping took {took:.1f} s"

    stores = Stores(tmp_path, "smoke")
    assert_stopped_cleanly(stores)

    overrides = [a for o in INTERRUPTIBLE for a in ("--set", o)]
    result = run_sweep(tmp_path, "smoke", *overrides, "--workers", workers)

    assert "study smoke: complete" in result.stdout
    study = stores.final()
    assert slots(trials_in(study, "COMPLETE")) == [0, 1]
    assert not trials_in(study, "RUNNING") and not trials_in(study, "WAITING")
    assert not [r.info.run_name for r in stores.runs() if r.info.status == "RUNNING"]
    assert stores.parent().info.status == "FINISHED"


# Python's own exit, made as slow as TensorFlow's and MLflow's teardown is on a loaded
# machine (about 2.5 s of CPU per process here; over 10 s measured under load), in the
# runner and its workers (not in multiprocessing's resource tracker, which ends after them).
SLOW_EXIT = """import atexit, sys, time
if "resource_tracker" not in " ".join(sys.orig_argv):
    atexit.register(time.sleep, 30)
"""


def test_a_stopped_sweep_ends_once_its_runs_are_closed_however_slow_python_exits(tmp_path):
    # Every process of the sweep, runner and workers, imports this `sitecustomize` at start.
    (tmp_path / "slow_exit").mkdir()
    (tmp_path / "slow_exit" / "sitecustomize.py").write_text(SLOW_EXIT)
    paths = [str(tmp_path / "slow_exit"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**runner_env(), "PYTHONPATH": os.pathsep.join(paths)}

    took = stop_sweep(tmp_path, "sigterm", "2", env)

    # Less than the grace after which the runner kills a worker: none was killed, and
    # none of the three waited for its teardown. Before the fix: 40 s (10 + 30).
    assert took < SHUTDOWN_GRACE, f"stopping took {took:.1f} s"
    assert_stopped_cleanly(Stores(tmp_path, "smoke"))


def test_a_point_that_kills_its_worker_every_time_fails_for_good_after_max_retry(tmp_path):
    overrides = [a for o in (*INTERRUPTIBLE[:2], "base.epochs=2", "execution.max_retry=1") for a in ("--set", o)]
    command = sweep_command(tmp_path, "smoke", *overrides, "--workers", "2")
    env = {**runner_env(), "REUSE_NETS_KILL_AT": "trial@final strategy=plain"}  # as an OOM kill would

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)

    assert result.returncode == 0, explain(result)  # the study went on without the point
    assert "Traceback" not in result.stderr, explain(result)
    stores = Stores(tmp_path, "smoke")
    study = stores.final()
    by_slot = {}
    for trial in study.get_trials():
        by_slot.setdefault(trial.user_attrs.get("slot"), []).append(trial)
    plain, residual = by_slot[0], by_slot[1]  # cells in compare order: plain, then residual
    assert [t.state.name for t in residual] == ["COMPLETE"]
    # The first attempt and max_retry=1 retry, each killed; no third attempt.
    assert [t.state.name for t in plain] == ["FAIL", "FAIL"], [(t.number, t.state.name, t.user_attrs) for t in plain]
    assert all("outcome" not in t.user_attrs for t in plain)
    runs = [stores.child_of(t) for t in plain]
    assert all(r.info.status == "FAILED" and r.data.tags["reuse_nets.outcome"] == "died" for r in runs)
    assert all(r.data.tags["optuna.trial_state"] == "FAIL" for r in runs)
    assert "retried up to execution.max_retry" in runs[0].data.tags["reuse_nets.failure_reason"]
    assert runs[1].data.tags["reuse_nets.failure_reason"].startswith("failed for good")
    assert not [r.info.run_name for r in stores.runs() if r.info.status == "RUNNING"]
    report = (tmp_path / "reports" / "smoke" / "report.md").read_text()
    assert "| strategy=plain,depth=2 | no finished final run | 0 | 1 | |" in report, report
    assert "**Warning:** strategy=plain,depth=2: 1 of 1 final runs failed" in report, report
    assert stores.parent().info.status == "FINISHED"


def assert_stores_consistent(stores: Stores, directory: Path, killed: int = 0) -> None:
    """At most `killed` trials RUNNING (the one a SIGKILL just cut off: nobody can know
    yet that it died), every run's tags agree with its trial, no artifacts without a run."""
    names = stores.optuna_names() if (directory / "optuna.db").exists() else []
    running = [t for name in names for t in trials_in(stores.optuna_study(name), "RUNNING")]
    assert len(running) <= killed, running
    if not (directory / "mlflow.db").exists() or stores.client.get_experiment_by_name(stores.study_name) is None:
        return
    runs = stores.runs()
    live = [r for r in runs if r.info.status == "RUNNING" and r.data.tags.get("reuse_nets.kind") == "trial"]
    assert sorted(r.info.run_id for r in live) == sorted(
        t.user_attrs["mlflow_run_id"] for t in running if "mlflow_run_id" in t.user_attrs
    )
    for run_ in stores.children():
        trial = stores.optuna_study(run_.data.tags["optuna.study_name"]).trials[
            int(run_.data.tags["optuna.trial_number"])
        ]
        assert run_.data.tags["optuna.trial_state"] == trial.state.name, (run_.info.run_name, trial.state.name)
        assert trial.user_attrs["mlflow_run_id"] == run_.info.run_id
    run_ids = {r.info.run_id for r in runs}
    for experiment in (directory / "mlruns").iterdir() if (directory / "mlruns").exists() else ():
        for entry in experiment.iterdir():
            if entry.name == "models":
                for model in entry.iterdir():  # MLflow 3 logged models: each from a run of ours
                    source = stores.client.get_logged_model(model.name).source_run_id
                    assert source in run_ids, (model.name, source)
            elif entry.is_dir():
                assert entry.name in run_ids, f"artifacts of no run: {entry}"


def test_sigkill_at_five_points_then_each_rerun_keeps_the_stores_whole(tmp_path):
    """SIGKILL (as the OOM killer) while preparing data, in a trial, mid-epoch, logging
    the model and writing the report, then at a random moment; the same command each
    time, so each start first recovers what the previous kill left. In between, the
    stores hold only agreeing records; at the end exactly the wanted ones."""
    grace = 8  # seconds without a heartbeat before a trial counts as dead
    overrides = [
        a
        for o in (
            *INTERRUPTIBLE[:2],
            "base.epochs=2",
            "execution.max_retry=4",
            "execution.heartbeat_interval=2",
            f"execution.grace_period={grace}",
        )
        for a in ("--set", o)
    ]
    command = sweep_command(tmp_path, "smoke", *overrides)
    stores = None  # opening the MLflow store would create it
    # In the order the starts reach them: a start runs waiting slots first, then
    # retries the slot the previous kill left once its heartbeat is stale.
    points = [
        "data",
        "trial@final strategy=plain",
        "epoch@final strategy=residual,depth=2 epoch 1",
        "model@final strategy=plain",
        "report",
    ]
    for point in points:
        env = {**runner_env(), "REUSE_NETS_KILL_AT": point}
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)
        assert result.returncode == -signal.SIGKILL, f"not killed at {point}: " + explain(result)
        if point == "data":
            assert_wrote_nothing(tmp_path)  # killed before anything was written
            stores = Stores(tmp_path, "smoke")
        # The next start closes what this kill left, once the dead trial's heartbeat is
        # stale: nobody can tell a dead trial from a live one before that.
        assert_stores_consistent(stores, tmp_path, killed=1)
        time.sleep(grace + 2)
    # Now at a random moment (seeded, so a failure can be replayed).
    delay = random.Random(20261125).uniform(2.0, 12.0)
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=runner_env()
    )
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert_stores_consistent(stores, tmp_path, killed=1)

    result = run_sweep(tmp_path, "smoke", *overrides)

    assert "study smoke: complete" in result.stdout
    assert_stores_consistent(stores, tmp_path)
    study = stores.final()
    complete = trials_in(study, "COMPLETE")
    assert slots(complete) == [0, 1]  # exactly the wanted finished trials, once each
    assert len({t.user_attrs["mlflow_run_id"] for t in complete}) == 2
    assert all(stores.child_of(t).info.status == "FINISHED" for t in complete)
    assert stores.parent().info.status == "FINISHED"
    assert len(stores.parent_runs()) == 1
    assert (tmp_path / "reports" / "smoke" / "report.md").exists()


def test_sigkill_mid_trial_then_rerun_completes_the_grid(tmp_path):
    command = sweep_command(tmp_path, "smoke")
    log = tmp_path / "killed.log"
    with open(log, "w") as out, open(tmp_path / "killed.err", "w") as err:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=err, env=runner_env())
        try:
            wait_for_line(log, process, "trial 2", "epoch 1")
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL

    stores = Stores(tmp_path, "smoke")
    running = trials_in(stores.final(), "RUNNING")
    assert len(running) == 1, "the kill did not land mid-trial"
    dead = running[0]
    assert dead.number == 2
    dead_run_id = dead.user_attrs["mlflow_run_id"]
    assert stores.client.get_run(dead_run_id).info.status == "RUNNING"

    result = run_sweep(tmp_path, "smoke")

    assert "study smoke: complete" in result.stdout
    study = stores.final()
    complete = trials_in(study, "COMPLETE")
    assert slots(complete) == list(range(8))  # each slot completed exactly once
    assert not trials_in(study, "RUNNING") and not trials_in(study, "WAITING")
    # The dead trial failed without an outcome (it died); its slot was retried.
    failed = trials_in(study, "FAIL")
    assert [t.number for t in failed] == [dead.number]
    assert "outcome" not in failed[0].user_attrs
    assert dead.user_attrs["slot"] in slots(complete)

    runs = stores.runs()
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    dead_run = stores.client.get_run(dead_run_id)
    assert dead_run.info.status == "FAILED"
    assert dead_run.data.tags["reuse_nets.outcome"] == "died"
    assert dead_run.data.tags["optuna.trial_state"] == "FAIL"
    assert dead_run.data.tags["reuse_nets.failure_reason"]
    assert stores.parent().info.status == "FINISHED"
    finished_children = {r.info.run_id for r in stores.children() if r.info.status == "FINISHED"}
    assert finished_children == {t.user_attrs["mlflow_run_id"] for t in complete}
    assert len(stores.children()) == 9  # 8 finished, 1 died


def test_another_spec_of_the_same_study_in_the_same_experiment_is_refused(smoke, tmp_path):
    """A second storage (or a deleted optuna.db) would otherwise mix two designs in one report."""
    _, stores = smoke
    command = sweep_command(stores.directory, "smoke", "--set", "base.epochs=1")
    command[command.index("--storage") + 1] = f"sqlite:///{tmp_path}/other.db"
    result = run(command, cwd=stores.directory)
    assert result.returncode == 2, explain(result)
    assert "holds a run of a different spec of this study" in error_line(result)
    assert len(stores.parent_runs()) == 1


def test_report_rebuild_refuses_a_different_spec(smoke):
    _, stores = smoke
    base = [
        sys.executable,
        str(ROOT / "sweeps" / "report.py"),
        "--study",
        "smoke",
        "--storage",
        storage_url(stores.directory),
        "--tracking-uri",
        tracking_url(stores.directory),
    ]
    overrides = [a for o in SMALL_DATA for a in ("--set", o)]
    rebuilt = run(base + overrides, cwd=stores.directory)
    assert rebuilt.returncode == 0, explain(rebuilt)
    assert "## Verdict" in rebuilt.stdout
    forgot = run(base, cwd=stores.directory)  # without the overrides the study ran with
    assert forgot.returncode == 2, explain(forgot)
    assert "already exists in this storage with a different spec" in error_line(forgot)


# --- user errors: one line, exit 2, nothing written --------------------------------------------


def study_file_data(name: str) -> dict:
    return yaml.safe_load((study_files.EXPERIMENTS_DIR / f"{name}.yaml").read_text())


def with_unknown_key(data):
    data["epoch"] = 3
    return data


def with_depth_zero(data):
    data["compare"]["depth"] = [0, 1]
    return data


def with_range_under_grid(data):
    data["tune"]["sampler"] = {"type": "grid"}
    return data


def with_float_range_for_width(data):
    # Every width between 32.0 and 256.0 but the integral ones is invalid.
    data["tune"]["search_space"]["width"] = {"low": 32.0, "high": 256.0}
    return data


def with_misspelt_metric(data):
    # Regression: this once loaded, then crashed after the first trial.
    data["objective"]["metric"] = "val_acc"
    return data


def with_invalid_combination(data):
    # Regression: `plain` refuses reuse_source=input; this once failed inside a trial.
    data["tune"]["search_space"]["reuse_source"] = ["input", "previous"]
    return data


def with_value(*keys_and_value):
    """Sets one field, e.g. `with_value("tune", "sampler", "type", "cmaes")`."""
    *keys, value = keys_and_value

    def breaks(data):
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        return data

    return breaks


BROKEN_STUDY = "broken_study.yaml"  # the file a study-file case writes, in the runner's working directory
ERROR_TIMEOUT = 120  # seconds: every bad input fails before any training; no server is retried for minutes


def study_file(content: str, breaks=None):
    """A study file: raw text, or a study of experiments/ and what breaks it."""

    def make(directory: Path) -> list[str]:
        path = directory / BROKEN_STUDY
        text = content if breaks is None else yaml.safe_dump(breaks(study_file_data(content)), sort_keys=False)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))  # "\udce9": a stray byte 0xe9
        return sweep_command(directory, str(path))

    return make


def command(study: str, *extra: str):
    """A runner command line (both stores in the test's directory, small data), plus `extra`."""
    return lambda directory: sweep_command(directory, study, *extra)


def bare_command(*args: str):
    """A runner command line of exactly `args`."""
    return lambda directory: [sys.executable, str(RUNNER), *args]


def reports_at_a_file(directory: Path) -> list[str]:
    """A runner command whose --reports names an existing file: refused before training."""
    (directory / REPORTS_FILE).write_text("")
    return sweep_command(directory, "smoke", "--reports", str(directory / REPORTS_FILE))


REPORTS_FILE = "reports_file"
READ_ONLY_DB = "read_only.db"


def read_only_storage(directory: Path) -> list[str]:
    """A runner command whose Optuna storage opens read-only: refused before MLflow or data are touched."""
    sqlite3.connect(directory / READ_ONLY_DB).execute("CREATE TABLE t (x)").connection.close()
    command = sweep_command(directory, "smoke")
    command[command.index("--storage") + 1] = f"sqlite:///file:{directory / READ_ONLY_DB}?mode=ro&uri=true"
    return command


def bare_script(script: str, *args: str):
    """Another script of sweeps/ with exactly `args`."""
    return lambda directory: [sys.executable, str(RUNNER.parent / script), *args]


def assert_wrote_nothing(directory: Path, keep: set[str] = frozenset()):
    left = {path.name for path in directory.iterdir()} - set(keep)
    assert not left, f"an invalid command wrote {sorted(left)}"


# id, how to make the input, what the one error line says ({file}: the study file's path).
BAD_INPUTS = [
    # --- study files: checked when they load, before any data, storage or tracking
    pytest.param(
        study_file("name: invalid_yaml\ncompare: {depth: [1, 2\n"), "{file}: line 3 invalid YAML", id="invalid_yaml"
    ),
    pytest.param(study_file("- plain\n- residual\n"), "{file}: a study file must be a mapping", id="not_a_mapping"),
    pytest.param(
        study_file("smoke", with_unknown_key), "{file}: epoch: Extra inputs are not permitted", id="unknown_key"
    ),
    pytest.param(
        study_file("smoke", with_value("base", "epochs", "five")),
        "{file}: base.epochs: Input should be a valid integer",
        id="wrong_type",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "search_space", {})),
        "{file}: tune.search_space: Dictionary should have at least 1 item",
        id="empty_search_space",
    ),
    pytest.param(
        study_file("smoke", with_depth_zero),
        "{file}: the combination strategy=plain, depth=0 is not a valid trial",
        id="depth_zero",
    ),
    pytest.param(
        study_file("smoke", with_value("compare", "depth", [1, 10**6])),
        "{file}: the combination strategy=plain, depth=1000000 is not a valid trial: depth: Input should be less than or equal to 256",
        id="depth_million",
    ),
    pytest.param(
        study_file("smoke", with_value("compare", "strategy", ["plain", "resnet"])),
        "{file}: the combination strategy=resnet, depth=1 is not a valid trial: strategy: unknown strategy 'resnet'",
        id="unknown_strategy",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "sampler", "type", "cmaes")),
        "{file}: tune.sampler.type: Input should be 'tpe', 'random', 'grid' or 'sobol'",
        id="unknown_sampler",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "pruner", "type", "percentile")),
        "{file}: tune.pruner.type: Input should be 'none', 'median' or 'hyperband'",
        id="unknown_pruner",
    ),
    pytest.param(
        study_file("smoke", with_value("objective", "metric", "f1_score")),
        "{file}: objective.metric: unknown metric 'f1_score'; training logs",
        id="unknown_metric",
    ),
    pytest.param(
        study_file("residual_depth", with_misspelt_metric),
        "{file}: objective.metric: unknown metric 'val_acc'; did you mean 'val_accuracy'?",
        id="misspelt_metric",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "search_space", "learning_rate", {"low": 1e-2, "high": 1e-4})),
        "{file}: tune.search_space: learning_rate: low (0.01) must not exceed high (0.0001)",
        id="low_above_high",
    ),
    pytest.param(
        study_file(
            "residual_depth", with_value("tune", "search_space", "learning_rate", {"low": 0, "high": 1e-2, "log": True})
        ),
        "{file}: tune.search_space: learning_rate: log ranges need low > 0, got 0",
        id="log_range_from_zero",
    ),
    pytest.param(
        study_file("residual_depth", with_range_under_grid),
        "{file}: tune: the grid sampler needs choices, not ranges, for: learning_rate",
        id="range_under_grid",
    ),
    pytest.param(
        study_file("residual_depth", with_float_range_for_width),
        "{file}: tune.search_space.width: an integer field needs integer low, high and step",
        id="float_range_for_width",
    ),
    pytest.param(
        study_file("residual_depth", with_invalid_combination),
        "{file}: the combination strategy=plain, depth=1, learning_rate=1e-05, reuse_source=input is not a valid trial",
        id="invalid_combination",
    ),
    pytest.param(  # Regression: every trial of this study once failed to build, and the sweep exited 0.
        study_file("smoke", with_value("base", "activation", "relux")),
        "{file}: base.activation: unknown activation 'relux'; did you mean 'relu'?",
        id="unknown_activation",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "search_space", "activation", ["relu", "swiss"])),
        "{file}: the combination strategy=plain, depth=1, learning_rate=1e-05, activation=swiss is not a valid trial: "
        "activation: unknown activation 'swiss'; did you mean 'swish'?",
        id="tuned_activation_typo",
    ),
    pytest.param(  # Found when the data loads: before either store is opened.
        study_file("smoke", with_value("base", "dataset", "name", "not_a_dataset")),
        "unknown TFDS dataset 'not_a_dataset'",
        id="unknown_dataset_in_file",
    ),
    # --- command lines: the study, its overrides, the stores, the options
    pytest.param(command("no_such_study"), "no study 'no_such_study'", id="unknown_study"),
    pytest.param(bare_command(), "--study is required (or --list)", id="no_study"),
    pytest.param(
        command("smoke", "--set", "base.epochs=zero"), "base.epochs: Input should be a valid integer", id="epochs_zero"
    ),
    pytest.param(command("smoke", "--set", "compare.depth=[0]"), "depth=0 is not a valid trial", id="depth_0"),
    pytest.param(command("smoke", "--set", "base.epochs.count=1"), "'epochs' is not a mapping", id="set_into_scalar"),
    pytest.param(command("smoke", "--set", "epochs"), "expected key=value", id="set_without_value"),
    pytest.param(command("smoke", "--set", "=3"), "--set '=3': expected key=value", id="set_without_key"),
    pytest.param(
        command("smoke", "--set", "base..epochs=3"),
        "--set 'base..epochs=3': empty part in key 'base..epochs'",
        id="set_empty_key_part",
    ),
    pytest.param(
        command("smoke", "--set", "objective.metric=val_acc"), "did you mean 'val_accuracy'?", id="metric_typo"
    ),
    pytest.param(
        command("residual_depth", "--set", "tune.search_space.reuse_source=[input]"),
        "the combination strategy=plain, depth=1, learning_rate=1e-05, reuse_source=input",
        id="bad_combination",
    ),
    pytest.param(
        command("smoke", "--set", "base.dataset.name=not_a_dataset"),
        "unknown TFDS dataset 'not_a_dataset'",
        id="unknown_dataset",
    ),
    # The last --storage/--tracking-uri wins over the test directory's.
    pytest.param(
        command("smoke", "--storage", "notaurl"), "cannot open Optuna storage 'notaurl'", id="storage_not_a_url"
    ),
    pytest.param(
        command("smoke", "--storage", "postgresql://nobody@127.0.0.1:1/x"),
        "cannot open Optuna storage 'postgresql://nobody@127.0.0.1:1/x'",
        id="storage_unreachable",
    ),
    pytest.param(
        command("smoke", "--tracking-uri", "http://127.0.0.1:1"),
        "MLflow tracking server http://127.0.0.1:1 is unreachable: [Errno 111] Connection refused",
        id="tracking_server_unreachable",
    ),
    pytest.param(
        command("smoke", "--tracking-uri", "notaurl"),
        "MLflow tracking store notaurl is unusable",
        id="tracking_not_a_uri",
    ),
    # --- capacity matching and the knobs that separate reuse from initialisation
    pytest.param(
        command("strategy_depth", "--set", "match.tolerance=0.001"),
        "match: cell strategy=concat,depth=1 cannot be matched on trainable_params",
        id="match_infeasible",
    ),
    pytest.param(
        command("strategy_depth", "--set", "compare.width=[64, 128]"),
        "match.solve: 'width' is compared",
        id="match_solves_a_compared_knob",
    ),
    pytest.param(
        command("strategy_depth", "--set", "tune.search_space.normalization=[none, layer]"),
        "tune.search_space.normalization: it changes trainable_params within a cell",
        id="match_undone_by_tuning",
    ),
    pytest.param(
        command("strategy_depth", "--set", "base.dataset.name=not_a_dataset"),
        "match: unknown TFDS dataset 'not_a_dataset'",
        id="match_unknown_dataset",
    ),
    pytest.param(
        command("smoke", "--set", "base.kernel_initializer=zeros"),
        "unknown kernel_initializer 'zeros'",
        id="unknown_initializer",
    ),
    pytest.param(
        command("smoke", "--set", "compare.reuse_source=[stem]"),
        "reuse_source 'stem' is not allowed for strategy 'plain'",
        id="stem_for_plain",
    ),
    pytest.param(command("smoke", "--workers", "0"), "--workers must be between 1 and 64, got 0", id="workers_0"),
    pytest.param(
        command("smoke", "--workers", "two"), "argument --workers: invalid int value: 'two'", id="workers_not_a_number"
    ),
    pytest.param(
        command("smoke", "--timeout", "-5"),
        "--timeout must be a non-negative number of seconds, got -5.0",
        id="negative_timeout",
    ),
    # --- hostile or absurd inputs (issue 22): one line, exit 2, nothing written
    pytest.param(
        study_file("smoke", with_value("name", "..")),
        "{file}: name: name '..' is a path, not a study name",
        id="name_dotdot",
    ),
    pytest.param(
        study_file("smoke", with_value("final", "seeds", [-1, 2])),
        "{file}: final.seeds.0: Input should be greater than or equal to 0",
        id="negative_seed",
    ),
    pytest.param(
        study_file("smoke", with_value("final", "seeds", [2**32])),
        "{file}: final.seeds.0: Input should be less than or equal to 4294967039",
        id="seed_too_large",
    ),
    pytest.param(
        study_file("smoke", with_value("base", "learning_rate", float("inf"))),
        "{file}: base.learning_rate: Input should be a finite number",
        id="infinite_learning_rate",
    ),
    pytest.param(
        study_file("smoke", with_value("base", "width", 10**9)),
        "{file}: base.width: Input should be less than or equal to 65536",
        id="width_billion",
    ),
    pytest.param(
        study_file(
            'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\n'
        ),
        "{file}: line 2 invalid YAML: anchors and aliases (&, *) are not allowed in a study file",
        id="alias_bomb",
    ),
    pytest.param(study_file("name: caf\udce9\n"), "{file}: not UTF-8 text", id="not_utf8"),
    pytest.param(bare_command("--study", "x" * 5000, "--dry-run"), "--study is 5000 characters long", id="long_study"),
    pytest.param(
        command("smoke", "--timeout", "nan"),
        "--timeout must be a non-negative number of seconds, got nan",
        id="nan_timeout",
    ),
    pytest.param(reports_at_a_file, "is a file, not a folder", id="reports_is_a_file"),
    pytest.param(
        command("smoke", "--workers", "100000"), "--workers must be between 1 and 64, got 100000", id="workers"
    ),
    pytest.param(command("smoke", "--frobnicate"), "unrecognized arguments: --frobnicate", id="unknown_flag"),
    pytest.param(
        command("smoke", "--set", "base.dataset.validation_split=train[900:1100]"),
        "the train split 'train[:1000]' and the validation split 'train[900:1100]' of dataset 'fashion_mnist' "
        "share 100 example(s)",
        id="overlapping_splits",
    ),
    pytest.param(read_only_storage, "attempt to write a readonly database", id="read_only_storage"),
    pytest.param(
        command("smoke", "--tracking-uri", "http://reuser:hunter2@127.0.0.1:1"),
        "MLflow tracking server http://reuser:***@127.0.0.1:1 is unreachable",
        id="tracking_password_masked",
    ),
    pytest.param(
        command("smoke", "--storage", "postgresql+psycopg://reuser:hunter2@127.0.0.1:1/db"),
        "cannot open Optuna storage 'postgresql+psycopg://reuser:***@127.0.0.1:1/db'",
        id="storage_password_masked",
    ),
    pytest.param(
        bare_script("report.py", "--study", "smoke"), "no Optuna storage at sqlite:///optuna.db", id="report_unrun"
    ),
    pytest.param(
        bare_script("register.py", "--study", "smoke"), "no Optuna storage at sqlite:///optuna.db", id="register_unrun"
    ),
    pytest.param(
        bare_script("reproduce.py", "0" * 32, "--tracking-uri", "http://127.0.0.1:1"),
        "MLflow tracking server http://127.0.0.1:1 is unreachable",
        id="reproduce_unreachable",
    ),
]


@pytest.mark.parametrize("make_input, message", BAD_INPUTS)
def test_a_bad_input_is_a_one_line_error(tmp_path, make_input, message):
    """Exit 2, one `error:` line naming the problem, no traceback, and neither store touched."""
    result = run(make_input(tmp_path), cwd=tmp_path, timeout=ERROR_TIMEOUT)
    assert result.returncode == 2, explain(result)
    line = error_line(result)
    assert message.replace("{file}", str(tmp_path / BROKEN_STUDY)) in line, line
    assert_wrote_nothing(tmp_path, keep={BROKEN_STUDY, REPORTS_FILE, READ_ONLY_DB})
    assert "hunter2" not in result.stdout + result.stderr  # passwords never printed


@pytest.mark.parametrize(
    "state, message",
    [("deleted", "MLflow experiment 'smoke' was deleted"), ("foreign", "holds runs that are not this study's")],
)
def test_an_unusable_experiment_of_the_study_name_is_a_one_line_error(tmp_path, state, message):
    client = mlflow.MlflowClient(tracking_uri=tracking_url(tmp_path))
    experiment_id = client.create_experiment("smoke")
    if state == "deleted":
        client.delete_experiment(experiment_id)
    else:
        client.create_run(experiment_id, run_name="someone else's run")
    before = {r.info.run_id for r in client.search_runs([experiment_id], run_view_type=ViewType.ALL)}

    result = run(sweep_command(tmp_path, "smoke"), cwd=tmp_path)

    assert result.returncode == 2, explain(result)
    assert message in error_line(result)
    assert_wrote_nothing(tmp_path, keep={"mlflow.db", "mlruns"})  # no Optuna storage either
    assert {r.info.run_id for r in client.search_runs([experiment_id], run_view_type=ViewType.ALL)} == before


def test_missing_offline_data_is_a_one_line_error(tmp_path):
    data_dir = tmp_path / "tfds"
    command = sweep_command(
        tmp_path, "smoke", "--set", "base.dataset.name=mnist", "--data-dir", str(data_dir), manual_dir=False
    )
    result = run(command, cwd=tmp_path)
    assert result.returncode == 2, explain(result)
    line = error_line(result)
    assert "'mnist' is not prepared" in line and "--manual-dir" in line, line
    assert_wrote_nothing(tmp_path)


# --- dry run, listing, help --------------------------------------------------------------------


def test_dry_run_prints_cells_budget_and_final_runs_and_writes_nothing(tmp_path):
    result = run(sweep_command(tmp_path, "residual_depth", "--dry-run"), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    spec = small_spec("residual_depth")
    assert f"tune: {spec.tune.trials_per_cell} trials per cell" in result.stdout
    for index, cell in enumerate(spec.cells()):
        assert (
            f"{index:3d}: {cell.key}  ({spec.tune.trials_per_cell} tuning trials + {len(spec.final.seeds)} final runs; width "
            in result.stdout
        )
    assert f"= {spec.final_runs} runs" in result.stdout
    assert "train_split: train[:1000]" in result.stdout  # the resolved study, overrides applied
    assert_wrote_nothing(tmp_path)


def test_dry_run_splits_several_overrides_in_one_set(tmp_path):
    command = sweep_command(tmp_path, "smoke", "--dry-run", "--set", "base.epochs=1 compare.depth=[1, 2, 4]")
    result = run(command, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert "study smoke: 12 cells" in result.stdout
    assert "\n  epochs: 1\n" in result.stdout
    assert_wrote_nothing(tmp_path)


def test_list_shows_the_studies(tmp_path):
    result = run([sys.executable, str(RUNNER), "--list"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert {"smoke", "strategy_depth", "residual_depth", "masked_keep_ratio"} <= set(listed)
    assert listed == sorted(path.stem for path in study_files.EXPERIMENTS_DIR.glob("*.yaml"))
    assert_wrote_nothing(tmp_path)


def test_help_exits_zero(tmp_path):
    result = run([sys.executable, str(RUNNER), "--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert result.stdout.startswith("usage:")
    for option in ("--study", "--set", "--workers", "--dry-run", "--storage", "--tracking-uri", "--manual-dir"):
        assert option in result.stdout
    assert_wrote_nothing(tmp_path)


# --- capacity: matched cells, counts on every run, learning curves in the report ----------


MATCHED = (
    "compare.strategy=[plain, concat, residual]",
    "compare.depth=[4]",
    "base.epochs=3",
    "tune.search_space.learning_rate=[0.001, 0.003]",
    "tune.pruner.type=none",
    "final.seeds=[1, 2]",
    "execution.heartbeat_interval=2",
    "execution.grace_period=8",
)


def test_a_matched_study_logs_capacity_and_reports_learning_curves(tmp_path):
    from reuse_nets.nn import capacity
    from reuse_nets.spec import datasets

    run_sweep(tmp_path, "strategy_depth", *(arg for o in MATCHED for arg in ("--set", o)))
    spec = small_spec("strategy_depth", *MATCHED)
    stores = Stores(tmp_path, spec.name)
    shape, classes = datasets.features("fashion_mnist")
    children = stores.children()
    assert len(children) == 3 * 2 + 3 * 2
    trainable = {}
    for child in children:
        cell = next(c for c in spec.cells() if c.key == child.data.tags["reuse_nets.cell"])
        config = spec.cell_config(cell)
        # The solved width is what the run trained, and its counts are on record.
        assert int(child.data.params["width"]) == config.width
        counted = capacity.of_config(config, shape, classes)
        metrics = child.data.metrics
        assert metrics["model/trainable_params"] == counted.trainable
        assert metrics["model/total_params"] == counted.total
        assert metrics["model/effective_params"] == counted.effective
        assert metrics["model/flops_per_example"] == counted.flops
        trainable[cell.key] = counted.trainable
    plain = trainable["strategy=plain,depth=4"]
    assert spec.cell_config(spec.cells()[0]).width == 128  # the baseline keeps base's width
    for key, count in trainable.items():
        assert abs(count - plain) / plain <= 0.05, (key, count, plain)
    assert spec.cell_config(spec.cells()[1]).width != 128  # concat was resized

    # The report: capacity per cell, and learning curves that are the final runs' own.
    report = (tmp_path / "reports" / spec.name / "report.md").read_text()
    section = report.split("## Capacity and convergence per cell")[1].split("\n## ")[0]
    for cell in spec.cells():
        row = next(line for line in section.splitlines() if line.startswith(f"| {cell.key} | "))
        assert f"| {spec.cell_config(cell).width} | {trainable[cell.key]:,} | {trainable[cell.key]:,} |" in row
    assert "![learning_curves.png](learning_curves.png)" in report
    assert {"report/learning_curves.png", "report/learning_curves.csv"} <= stores.artifacts(
        stores.parent().info.run_id, "report"
    )
    rows = (tmp_path / "reports" / spec.name / "learning_curves.csv").read_text().splitlines()[1:]
    finals = [c for c in children if c.data.tags["reuse_nets.phase"] == "final"]
    for cell in spec.cells():
        histories = [
            stores.history(c.info.run_id, "val_accuracy") for c in finals if c.data.tags["reuse_nets.cell"] == cell.key
        ]
        assert len(histories) == 2 and all(len(h) == 3 for h in histories)
        cell_rows = [r.split('",')[1].split(",") for r in rows if r.startswith(f'"{cell.key}"')]
        assert [int(r[0]) for r in cell_rows] == [1, 2, 3]
        for epoch, mean, _, n in cell_rows:
            expected = sum(h[int(epoch) - 1][1] for h in histories) / 2
            assert float(mean) == pytest.approx(expected, abs=1e-6) and int(n) == 2


def test_sobol_candidates_and_selections_do_not_depend_on_the_workers(tmp_path):
    """Slot k of every cell tries the k-th point of one seeded Sobol sequence, however many workers."""
    overrides = [a for o in (*TINY_TUNED, "tune.sampler.type=sobol") for a in ("--set", o)]
    found = {}
    for workers in (1, 2):
        directory = tmp_path / f"workers{workers}"
        directory.mkdir()
        run_sweep(directory, "residual_depth", "--workers", str(workers), *overrides)
        stores = Stores(directory, "residual_depth")
        spec = small_spec("residual_depth", *TINY_TUNED, "tune.sampler.type=sobol")
        tried = {
            cell.key: {t.user_attrs["slot"]: t.params["learning_rate"] for t in stores.tune(cell.key).get_trials()}
            for cell in spec.cells()
        }
        finals = {
            (t.params["strategy"], t.params["seed"]): (t.params["learning_rate"], t.value)
            for t in trials_in(stores.final(), "COMPLETE")
        }
        found[workers] = (tried, finals)
    points = [p["learning_rate"] for p in spec.tune.points()]
    for tried in (found[1][0], found[2][0]):
        assert all(list(dict(sorted(slots.items())).values()) == points for slots in tried.values()), tried
    # The same candidates, the same selections, and bit-identical final runs.
    assert found[1] == found[2]


def test_repeated_tuning_is_retrained_per_repeat_and_reported_with_its_variance(tmp_path):
    """`tune.repeats: 2`: each cell tuned twice with shifted seeds, each selection retrained
    with its own final seeds, and the report's tests run over the repeats' means."""
    extra = (*TINY_TUNED, "tune.sampler.type=sobol", "tune.repeats=2")
    spec = small_spec("residual_depth", *extra)
    study_file = tmp_path / "repeated.yaml"  # a file, so that a later study can name it as its pilot
    study_file.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    run_sweep(tmp_path, str(study_file), small=False)
    stores = Stores(tmp_path, "residual_depth")
    assert stores.optuna_names() == sorted(
        [f"residual_depth:tune:{c.key}:repeat={r}" for c in spec.cells() for r in (0, 1)] + ["residual_depth:final"]
    )
    by_id = {c.info.run_id: c for c in stores.children()}
    selected = {}
    for cell in spec.cells():
        for repeat in (0, 1):
            study = stores.optuna_study(f"residual_depth:tune:{cell.key}:repeat={repeat}")
            trials = study.get_trials(deepcopy=False)
            assert len(trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
            # Slot k tries the k-th point of the repeat's own Sobol sequence, the same in every cell.
            tried = [t.params["learning_rate"] for t in sorted(trials, key=lambda t: t.user_attrs["slot"])]
            assert tried == [p["learning_rate"] for p in spec.tune.points(repeat)]
            for t in trials:  # tuning trains with the repeat's tuning seed, and says which repeat
                logged = by_id[t.user_attrs["mlflow_run_id"]]
                assert logged.data.params["seed"] == str(repeat * 1000)
                assert logged.data.tags["reuse_nets.repeat"] == str(repeat)
            best = max(trials_in(study, "COMPLETE"), key=lambda t: (t.value, -t.number))
            selected[(cell.key, repeat)] = best.params["learning_rate"]
    assert spec.tune.points(0) != spec.tune.points(1)

    finals = trials_in(stores.final(), "COMPLETE")
    assert len(finals) == len(spec.cells()) * 2 * 2
    seen = set()
    for t in finals:
        logged = by_id[t.user_attrs["mlflow_run_id"]]
        cell, repeat, seed = (
            logged.data.tags["reuse_nets.cell"],
            int(logged.data.tags["reuse_nets.repeat"]),
            t.params["seed"],
        )
        assert t.params["repeat"] == repeat and seed in spec.final_seeds(repeat)
        assert t.params["learning_rate"] == selected[(cell, repeat)]  # the repeat's own selection
        seen.add((cell, repeat, seed))
    assert seen == {(c.key, r, s) for c in spec.cells() for r in (0, 1) for s in spec.final_seeds(r)}

    # The report: per-cell n counts repeats, verdicts rest on repeat means, and the variance is split.
    tests = {
        (r.data.tags["reuse_nets.cell"], int(r.data.tags["reuse_nets.repeat"])): []
        for r in by_id.values()
        if r.data.tags["reuse_nets.phase"] == "final"
    }
    for logged in by_id.values():
        if logged.data.tags["reuse_nets.phase"] == "final":
            tests[(logged.data.tags["reuse_nets.cell"], int(logged.data.tags["reuse_nets.repeat"]))].append(
                logged.data.metrics["test_accuracy"]
            )
    report = (tmp_path / "reports" / "residual_depth" / "report.md").read_text()
    section = report.split("## Tuning variance")[1].split("\n## ")[0]
    for cell in spec.cells():
        groups = [np.array(tests[(cell.key, r)]) for r in (0, 1)]
        within = np.mean([g.var(ddof=1) for g in groups])
        row = next(line for line in section.splitlines() if line.startswith(f"| {cell.key} | "))
        assert f"| {math.sqrt(within):.4f} |" in row, (row, within)
        repeat_means = [g.mean() for g in groups]
        cell_row = next(line for line in report.splitlines() if line.startswith(f"| {cell.key} | ") and "± " in line)
        assert f"| {np.mean(repeat_means):.4f} ± " in cell_row and "| 2 |" in cell_row, cell_row
    assert "tuning repeat" in report.split("## Verdict")[1].split("\n## ")[0]
    assert "| per-repeat |" in report

    frame = results.final_runs(str(study_file), tracking_uri=tracking_url(tmp_path))
    assert sorted(frame["repeat"].tolist()) == [0] * 4 + [1] * 4

    # As a pilot: --dry-run's power uses its paired differences' SD between seeds (pooled within
    # repeats), and names their SD between tuning runs.
    by_seed = {
        (r.data.tags["reuse_nets.cell"], int(r.data.tags["reuse_nets.repeat"]), r.data.params["seed"]): r.data.metrics[
            "test_accuracy"
        ]
        for r in by_id.values()
        if r.data.tags["reuse_nets.phase"] == "final"
    }
    plain, residual = (c.key for c in spec.cells())
    diffs = [
        [by_seed[(residual, r, str(s))] - by_seed[(plain, r, str(s))] for s in spec.final_seeds(r)] for r in (0, 1)
    ]
    seed_sd = math.sqrt(np.mean([np.var(d, ddof=1) for d in diffs]))
    dry = run(
        [*sweep_command(tmp_path, "residual_depth", "--dry-run", "--set", f"report.pilot={study_file}")], tmp_path
    )
    assert dry.returncode == 0, explain(dry)
    assert f"a paired-difference SD of {seed_sd:.4g} (between seeds, pooled over 1 comparisons" in dry.stdout, (
        dry.stdout
    )
    assert "between tuning runs the pilot's SD was" in dry.stdout


TIMING_METRICS = ("epoch_time", "throughput")  # wall-clock measurements: never equal between two runs


def test_a_trial_killed_in_epoch_3_of_5_resumes_from_its_checkpoint_bit_exactly(tmp_path):
    """SIGKILL at the end of epoch 3 (logged, not yet checkpointed), then the same command:
    the retried slot resumes after epoch 2 and ends byte-identical to a run never stopped."""
    grace = 8
    overrides = [
        a
        for o in (
            "compare.strategy=[residual]",
            "compare.depth=[2]",
            "base.epochs=5",
            "execution.heartbeat_interval=2",
            f"execution.grace_period={grace}",
        )
        for a in ("--set", o)
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    run_sweep(whole, "smoke", *overrides)
    env = {**runner_env(), "REUSE_NETS_KILL_AT": "epoch@final strategy=residual,depth=2 epoch 3"}
    command = sweep_command(killed, "smoke", *overrides)
    result = subprocess.run(command, cwd=killed, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)
    assert result.returncode == -signal.SIGKILL, explain(result)
    (folder,) = (killed / "checkpoints").iterdir()
    assert len(json.loads((folder / "meta.json").read_text())["history"]) == 2  # epoch 3 never checkpointed
    time.sleep(grace + 2)  # until the dead trial's heartbeat is stale

    result = run_sweep(killed, "smoke", *overrides)

    assert "resumed after epoch 2" in result.stdout, explain(result)
    # The console tells replayed epochs from trained ones: no time for a restored epoch.
    epochs = [line for line in result.stdout.splitlines() if re.match(r"\s+trial \d+ epoch \d/5: ", line)]
    assert [line.split("epoch ")[1][:3] for line in epochs] == ["1/5", "2/5", "3/5", "4/5", "5/5"], explain(result)
    assert all(line.endswith("(restored from checkpoint)") for line in epochs[:2]), epochs
    assert all(re.search(r"\(\d+\.\ds\)$", line) for line in epochs[2:]), epochs
    assert not (killed / "checkpoints").exists()  # removed once the run ended
    stores = {name: Stores(directory, "smoke") for name, directory in (("whole", whole), ("killed", killed))}
    (died,) = trials_in(stores["killed"].final(), "FAIL")
    (resumed,) = trials_in(stores["killed"].final(), "COMPLETE")
    (reference,) = trials_in(stores["whole"].final(), "COMPLETE")
    assert resumed.user_attrs["slot"] == died.user_attrs["slot"] == 0  # Optuna's slot accounting unchanged
    run = stores["killed"].child_of(resumed)
    assert run.data.tags["reuse_nets.resumed_epochs"] == "2"
    assert run.data.tags["reuse_nets.resumed_from"] == died.user_attrs["mlflow_run_id"]
    original = stores["whole"].child_of(reference)
    results = {name for name in original.data.metrics if name not in TIMING_METRICS and not name.startswith("system/")}
    names_ = results
    assert names_ == {n for n in run.data.metrics if n not in TIMING_METRICS and not n.startswith("system/")}
    assert "grad_norm/block_02" in names_
    for name in sorted(names_):  # every epoch of every metric, as bytes
        history = [(s, struct.pack("<d", v)) for s, v in stores["killed"].history(run.info.run_id, name)]
        expected = [(s, struct.pack("<d", v)) for s, v in stores["whole"].history(original.info.run_id, name)]
        assert history == expected, name
    assert resumed.value == reference.value
    weights = {}
    for name, logged in (("whole", original), ("killed", run)):
        mlflow.set_tracking_uri(tracking_url(stores[name].directory))
        model = tracking.load_logged_model(logged.data.tags["reuse_nets.model_uri"])
        weights[name] = [w.numpy().tobytes() for w in model.weights]
    assert weights["killed"] == weights["whole"]


def test_trial_runs_record_mlflow_system_metrics(smoke):
    """MLflow's own system-metrics logging, one sample per `SYSTEM_METRICS_INTERVAL`: a trial
    longer than that holds CPU and memory series (GPU ones only where a GPU is present)."""
    _, stores = smoke
    sampled = [run for run in stores.children() if "system/cpu_utilization_percentage" in run.data.metrics]
    assert sampled, "no trial run of the smoke study holds system metrics"
    for run in sampled:
        metrics = run.data.metrics
        assert metrics["system/system_memory_usage_megabytes"] > 0 and 0 <= metrics["system/cpu_utilization_percentage"]
        assert not any(name.startswith("system/gpu") for name in metrics)  # no GPU on this machine
        history = stores.history(run.info.run_id, "system/cpu_utilization_percentage")
        assert [step for step, _ in history] == list(range(len(history)))  # one per sample, from 0


def test_every_trial_names_its_cell_phase_and_mlflow_run_for_optuna_dashboard(smoke):
    _, stores = smoke
    experiment_id = stores.experiment().experiment_id
    for trial in stores.final().get_trials(deepcopy=False):
        run = stores.child_of(trial)
        assert trial.user_attrs["cell"] == run.data.tags["reuse_nets.cell"]
        assert trial.user_attrs["phase"] == "final"
        assert trial.user_attrs["mlflow_run_url"] == (
            f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run.info.run_id}"
        )
