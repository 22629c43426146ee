"""End-to-end tests of the sweep runner: `sweeps/run.py` in a subprocess, real
fashion_mnist (prepared offline), then assertions on what the Optuna and MLflow
stores hold.

Every run works in its own temporary directory (the runner's working directory),
so `mlflow.db`, `optuna.db`, `mlruns/` and `reports/` land there. Studies run on
small slices of the data; one finished `smoke` study is shared by the tests that
only read it.
"""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from mlflow.entities import ViewType

from conftest import fashion_mnist_manual_dir
from reuse_nets import studies

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "sweeps" / "run.py"
PRUNE_FAIL = ROOT / "tests" / "studies" / "prune_fail.yaml"
MANUAL_DIR = fashion_mnist_manual_dir()
STRATEGIES = ("plain", "concat", "residual", "masked")
# Slices small enough for a trial to take a second or two.
SMALL_DATA = (
    "dataset.train_split=train[:1000]",
    "dataset.validation_split=train[50000:50500]",
    "dataset.test_split=test[:500]",
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

    def study(self):
        return optuna.load_study(study_name=self.study_name, storage=storage_url(self.directory))

    def experiment(self):
        experiment = self.client.get_experiment_by_name(self.study_name)
        assert experiment is not None, f"no MLflow experiment {self.study_name!r}"
        return experiment

    def runs(self) -> list:
        """Every run of the study's experiment, whatever its state."""
        return self.client.search_runs(
            [self.experiment().experiment_id], run_view_type=ViewType.ALL, max_results=1000
        )

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


def grid_points(trials) -> list[int]:
    return sorted(t.user_attrs["grid_point"] for t in trials)


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
    return studies.load_study(study, [*SMALL_DATA, *extra])


# --- smoke: the whole pipeline, then what the stores hold -----------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One finished `smoke` study (8 trials, 2 epochs), shared by the tests that read it."""
    directory = tmp_path_factory.mktemp("smoke")
    result = run_sweep(directory, "smoke")
    return result, Stores(directory, "smoke")


def test_smoke_prints_a_summary_table(smoke):
    result, _ = smoke
    assert "study smoke: 8/8 trials finished" in result.stdout
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| val_accuracy | depth 1 | depth 2 |"), result.stdout
    for strategy in STRATEGIES:
        rows = [line for line in table if line.startswith(f"| {strategy} |")]
        assert len(rows) == 1, f"no summary row for {strategy}:\n{result.stdout}"
        assert rows[0].count("(n=1)") == 2  # both depths, one seed each


def test_smoke_has_one_experiment_and_one_finished_parent_run(smoke):
    _, stores = smoke
    experiments = stores.client.search_experiments(view_type=ViewType.ALL)
    assert sorted(e.name for e in experiments) == ["Default", "smoke"]  # MLflow's own, and ours
    parent = stores.parent()
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "smoke"
    assert parent.data.tags["optuna.study_name"] == "smoke"
    assert parent.data.tags["n_trials"] == "8"
    # The best trial, as Optuna sees it, is what the parent run names.
    study = stores.study()
    best = study.best_trial
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags["best_trial"] == str(best.number)
    assert parent.data.tags["best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.tags["best.strategy"] == best.params["strategy"]
    assert parent.data.tags["best.depth"] == str(best.params["depth"])
    assert parent.data.tags["best.width"] == "32"
    assert parent.data.tags["best.learning_rate"] == "0.002"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id


def test_smoke_parent_run_carries_spec_and_report(smoke):
    _, stores = smoke
    parent_id = stores.parent().info.run_id
    assert {"study.yaml", "report"} <= stores.artifacts(parent_id)
    report = stores.artifacts(parent_id, "report")
    expected = {"report.md", "report.html", "objective_vs_depth.png", "first_block_grad_norm_vs_depth.png", "best_curves.png"}
    assert {f"report/{name}" for name in expected} <= report
    # The resolved spec travels with the result: it validates back to what was run.
    spec_file = stores.client.download_artifacts(parent_id, "study.yaml", str(stores.directory / "download"))
    logged = studies.StudySpec.model_validate(yaml.safe_load(Path(spec_file).read_text()))
    assert logged == small_spec("smoke")
    report_md = (stores.directory / "reports" / "smoke" / "report.md").read_text()
    assert "**Best trial**" in report_md and "Trials: 8 complete." in report_md
    png = stores.client.download_artifacts(parent_id, "report/best_curves.png", str(stores.directory / "download"))
    assert Path(png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_smoke_has_one_finished_child_run_per_trial(smoke):
    _, stores = smoke
    study = stores.study()
    parent_id = stores.parent().info.run_id
    trials = study.get_trials()
    assert len(trials) == 8
    assert all(t.state.name == "COMPLETE" for t in trials)
    children = stores.children()
    assert sorted(r.info.run_name for r in children) == sorted(f"trial-{t.number}" for t in trials)
    assert len(stores.runs()) == 9  # nothing else in the experiment
    for trial in trials:
        run = stores.child_of(trial)
        tags = run.data.tags
        assert run.info.run_name == f"trial-{trial.number}"
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["optuna.study_name"] == "smoke"
        assert tags["optuna.trial_number"] == str(trial.number)
        assert tags["optuna.trial_state"] == "COMPLETE"
        assert tags["reuse_nets.outcome"] == "completed"
        # What Optuna searched is what MLflow logged; fixed values are logged too.
        assert set(trial.params) == {"strategy", "depth"}
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value), name
        assert run.data.params["width"] == "32"
        assert run.data.params["learning_rate"] == "0.002"
        assert run.data.params["seed"] == "0"
        assert run.data.params["epochs"] == "2"
        assert run.data.params["split.train"] == "train[:1000]"


def test_smoke_child_runs_have_per_epoch_metrics(smoke):
    _, stores = smoke
    for trial in stores.study().get_trials():
        run_id = trial.user_attrs["mlflow_run_id"]
        val_accuracy = stores.history(run_id, "val_accuracy")
        assert [step for step, _ in val_accuracy] == [1, 2]
        # The trial's value is the final epoch's objective metric, as logged.
        assert trial.value == pytest.approx(val_accuracy[-1][1], abs=1e-7)
        # Every epoch was reported to the pruner, with the values MLflow logged.
        reported = sorted(trial.intermediate_values.items())
        assert [step for step, _ in reported] == [1, 2]
        assert [value for _, value in reported] == pytest.approx([value for _, value in val_accuracy], abs=1e-7)
        assert [step for step, _ in stores.history(run_id, "grad_norm/block_01")] == [1, 2]
        block_02 = stores.history(run_id, "grad_norm/block_02")
        if trial.params["depth"] == 2:
            assert [step for step, _ in block_02] == [1, 2]
        else:
            assert block_02 == []
        assert stores.history(run_id, "grad_norm/block_03") == []
        metrics = stores.client.get_run(run_id).data.metrics
        assert {"loss", "accuracy", "val_loss", "test_accuracy", "test_loss"} <= set(metrics)


def test_smoke_runs_every_grid_point_exactly_once(smoke):
    _, stores = smoke
    trials = stores.study().get_trials()
    assert grid_points(trials) == list(range(8))
    grid = small_spec("smoke").grid()
    for trial in trials:
        point = grid[trial.user_attrs["grid_point"]]
        assert trial.params == {"strategy": point["strategy"], "depth": point["depth"]}
    assert len({(t.params["strategy"], t.params["depth"]) for t in trials}) == 8


def test_resume_of_a_finished_study_runs_nothing_new(smoke):
    """Re-running the same command on a finished study: no trial, no second parent run.

    Runs after the read-only smoke tests above (it touches the shared stores).
    """
    _, stores = smoke
    before_trials = [(t.number, t.state.name, t.value) for t in stores.study().get_trials()]
    before_runs = {r.info.run_id: r.info.status for r in stores.runs()}
    parent_id = stores.parent().info.run_id

    result = run_sweep(stores.directory, "smoke")

    assert "0 enqueued now" in result.stdout
    assert "started" not in result.stdout, result.stdout  # no trial ran
    assert "study smoke: 8/8 trials finished" in result.stdout
    assert [(t.number, t.state.name, t.value) for t in stores.study().get_trials()] == before_trials
    assert {r.info.run_id: r.info.status for r in stores.runs()} == before_runs
    assert stores.parent().info.run_id == parent_id
    assert stores.parent().info.status == "FINISHED"


# --- pruned and failed trials ----------------------------------------------------------


@pytest.fixture(scope="module")
def prune_fail(tmp_path_factory):
    """tests/studies/prune_fail.yaml: trials 0 complete, 1 pruned, 2 diverged (by design)."""
    directory = tmp_path_factory.mktemp("prune_fail")
    result = run(sweep_command(directory, str(PRUNE_FAIL), small=False), cwd=directory)
    return result, Stores(directory, "prune_fail")


def trial_with_lr(study, learning_rate: float):
    found = [t for t in study.get_trials() if t.params["learning_rate"] == learning_rate]
    assert len(found) == 1, [(t.number, t.state.name, t.params) for t in study.get_trials()]
    return found[0]


def test_prune_fail_study_counts_pruned_and_diverged_as_finished(prune_fail):
    result, stores = prune_fail
    assert result.returncode == 0, explain(result)
    assert "study prune_fail: 3/3 trials finished" in result.stdout
    study = stores.study()
    assert [t.params["learning_rate"] for t in sorted(study.get_trials(), key=lambda t: t.number)] == [0.003, 1e-6, 1e10]
    assert grid_points(study.get_trials()) == [0, 1, 2]
    good = trial_with_lr(study, 0.003)
    assert good.state.name == "COMPLETE"
    assert stores.child_of(good).info.status == "FINISHED"
    parent = stores.parent()
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial"] == str(good.number)
    assert len(stores.children()) == 3


def test_pruned_trial_is_mirrored_as_killed_run(prune_fail):
    result, stores = prune_fail
    pruned = trial_with_lr(stores.study(), 1e-6)
    assert pruned.state.name == "PRUNED", explain(result)
    assert pruned.user_attrs["outcome"] == "pruned"
    assert list(pruned.intermediate_values) == [1]  # pruned after its first epoch
    run = stores.child_of(pruned)
    assert run.info.status == "KILLED"
    assert run.data.tags["optuna.trial_state"] == "PRUNED"
    assert run.data.tags["reuse_nets.outcome"] == "pruned"
    assert "pruned at epoch 1" in run.data.tags["reuse_nets.failure_reason"]
    assert [step for step, _ in stores.history(run.info.run_id, "val_accuracy")] == [1]
    assert "test_accuracy" not in run.data.metrics


def test_diverged_trial_is_mirrored_as_failed_run(prune_fail):
    result, stores = prune_fail
    diverged = trial_with_lr(stores.study(), 1e10)
    run = stores.child_of(diverged)
    loss = stores.history(run.info.run_id, "loss")
    assert loss and loss[-1][1] != loss[-1][1], f"the loss did not become NaN: {loss}"  # NaN != NaN
    assert diverged.state.name == "FAIL", (
        f"a trial whose loss became NaN ended {diverged.state.name} "
        f"(outcome {diverged.user_attrs.get('outcome')!r}), not FAIL/diverged"
    )
    assert diverged.user_attrs["outcome"] == "diverged"
    assert run.info.status == "FAILED"
    assert run.data.tags["optuna.trial_state"] == "FAIL"
    assert run.data.tags["reuse_nets.outcome"] == "diverged"
    assert "non-finite loss" in run.data.tags["reuse_nets.failure_reason"]
    assert "FAILED (diverged" in result.stdout


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
    running = trials_in(stores.study(), "RUNNING")
    assert len(running) == 1, "the kill did not land mid-trial"
    dead = running[0]
    assert dead.number == 2, f"killed during trial {dead.number}, not during trial 2's second epoch"
    dead_run_id = dead.user_attrs["mlflow_run_id"]
    assert stores.client.get_run(dead_run_id).info.status == "RUNNING"

    result = run_sweep(tmp_path, "smoke")

    assert "study smoke: 8/8 trials finished" in result.stdout
    study = stores.study()
    complete = trials_in(study, "COMPLETE")
    assert len(complete) == 8
    assert grid_points(complete) == list(range(8))  # each point completed exactly once
    assert not trials_in(study, "RUNNING") and not trials_in(study, "WAITING")
    # The dead trial failed without an outcome (it died); its point was retried.
    failed = trials_in(study, "FAIL")
    assert [t.number for t in failed] == [dead.number]
    assert "outcome" not in failed[0].user_attrs
    assert dead.user_attrs["grid_point"] in grid_points(complete)

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


# --- parallel workers -----------------------------------------------------------------------


def test_two_workers_finish_the_grid_without_duplicates(tmp_path):
    result = run_sweep(tmp_path, "smoke", "--workers", "2")
    assert "[worker 1]" in result.stdout and "[worker 2]" in result.stdout
    assert "study smoke: 8/8 trials finished" in result.stdout
    stores = Stores(tmp_path, "smoke")
    study = stores.study()
    complete = trials_in(study, "COMPLETE")
    assert len(complete) == 8
    assert grid_points(complete) == list(range(8))
    assert len({(t.params["strategy"], t.params["depth"]) for t in complete}) == 8
    # A worker that asked after the last grid point was taken gets an unused trial.
    for trial in study.get_trials():
        if trial.state.name != "COMPLETE":
            assert trial.state.name == "FAIL" and trial.user_attrs.get("outcome") == "unused", trial
            assert "mlflow_run_id" not in trial.user_attrs
    runs = stores.runs()
    assert Counter(r.info.status for r in runs) == {"FINISHED": 9}
    assert len(stores.parent_runs()) == 1
    assert {r.info.run_id for r in stores.children()} == {t.user_attrs["mlflow_run_id"] for t in complete}


@pytest.mark.slow
def test_fewer_trials_than_grid_points_stops_and_resumes(tmp_path):
    # Regression: grid points enqueued beyond --n-trials once kept the runner looping.
    first = run(sweep_command(tmp_path, "smoke", "--n-trials", "2"), cwd=tmp_path, timeout=120)
    assert first.returncode == 0, explain(first)
    assert "study smoke: 2/2 trials finished" in first.stdout
    study = Stores(tmp_path, "smoke").study()
    assert grid_points(trials_in(study, "COMPLETE")) == [0, 1]
    assert grid_points(trials_in(study, "WAITING")) == [2, 3, 4, 5, 6, 7]
    second = run(sweep_command(tmp_path, "smoke", "--n-trials", "3"), cwd=tmp_path, timeout=120)
    assert second.returncode == 0, explain(second)
    study = Stores(tmp_path, "smoke").study()
    assert grid_points(trials_in(study, "COMPLETE")) == [0, 1, 2]
    assert len(study.get_trials()) == 8  # no point enqueued twice


# --- user errors: one line, exit 2, nothing written --------------------------------------------


def study_file_data(name: str) -> dict:
    return yaml.safe_load((studies.EXPERIMENTS_DIR / f"{name}.yaml").read_text())


def with_unknown_key(data):
    data["epoch"] = 3
    return data


def with_depth_zero(data):
    data["search_space"]["depth"] = [0, 1]
    return data


def with_range_under_grid(data):
    data["search_space"]["learning_rate"] = {"low": 1.0e-4, "high": 1.0e-2, "log": True}
    return data


def with_float_range_for_width(data):
    # Every width between 32.0 and 256.0 but the integral ones is invalid. Tiny
    # budget, so that a runner which does not refuse this finishes soon.
    data["search_space"]["width"] = {"low": 32.0, "high": 256.0}
    data.update(n_trials=1, epochs=1)
    return data


# name: (the study it breaks and how, or raw text; what the error line says)
BROKEN_FILES = {
    "unknown_key": (("smoke", with_unknown_key), "epoch: Extra inputs are not permitted"),
    "depth_zero": (("smoke", with_depth_zero), "search_space.depth"),
    "range_under_grid": (("smoke", with_range_under_grid), "grid sampler needs choices, not ranges, for: learning_rate"),
    # Exposes a bug: loads, then the first trial crashes the runner (see test_studies).
    "float_range_for_width": (("residual_depth", with_float_range_for_width), "search_space.width"),
    "invalid_yaml": ("name: invalid_yaml\nsearch_space: {depth: [1, 2\n", "invalid YAML"),
    "not_a_mapping": ("- plain\n- residual\n", "must be a mapping"),
}


def assert_wrote_nothing(directory: Path, keep: set[str] = frozenset()):
    left = {path.name for path in directory.iterdir()} - set(keep)
    assert not left, f"an invalid command wrote {sorted(left)}"


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_broken_study_file_is_a_one_line_error(tmp_path, name):
    content, message = BROKEN_FILES[name]
    path = tmp_path / f"{name}.yaml"
    if not isinstance(content, str):
        study, breaks = content
        content = yaml.safe_dump(breaks(study_file_data(study)), sort_keys=False)
    path.write_text(content)
    result = run(sweep_command(tmp_path, str(path)), cwd=tmp_path)
    assert result.returncode == 2, explain(result)
    line = error_line(result)
    assert str(path) in line and message in line, line
    assert_wrote_nothing(tmp_path, keep={path.name})


@pytest.mark.parametrize(
    "study, extra, message",
    [
        pytest.param("no_such_study", (), "no study 'no_such_study'", id="unknown_study"),
        pytest.param("smoke", ("--set", "epochs=zero"), "epochs: Input should be a valid integer", id="epochs_zero"),
        pytest.param("smoke", ("--set", "search_space.depth=[0]"), "search_space.depth", id="depth_0"),
        pytest.param("smoke", ("--set", "epochs.count=1"), "'epochs' is not a mapping", id="set_into_scalar"),
        pytest.param("smoke", ("--set", "epochs"), "expected key=value", id="set_without_value"),
        pytest.param("smoke", ("--n-trials", "9"), "n_trials=9 exceeds the 8 points", id="n_trials_over_grid"),
        pytest.param(
            "smoke", ("--set", "dataset.name=not_a_dataset"), "unknown TFDS dataset 'not_a_dataset'", id="unknown_dataset"
        ),
    ],
)
def test_bad_command_is_a_one_line_error(tmp_path, study, extra, message):
    result = run(sweep_command(tmp_path, study, *extra), cwd=tmp_path)
    assert result.returncode == 2, explain(result)
    assert message in error_line(result)
    assert_wrote_nothing(tmp_path)


def test_missing_offline_data_is_a_one_line_error(tmp_path):
    data_dir = tmp_path / "tfds"
    command = sweep_command(tmp_path, "smoke", "--set", "dataset.name=mnist", "--data-dir", str(data_dir), manual_dir=False)
    result = run(command, cwd=tmp_path)
    assert result.returncode == 2, explain(result)
    line = error_line(result)
    assert "'mnist' is not prepared" in line and "--manual-dir" in line, line
    assert_wrote_nothing(tmp_path)


# --- dry run, listing, help --------------------------------------------------------------------


def test_dry_run_prints_the_grid_and_writes_nothing(tmp_path):
    result = run(sweep_command(tmp_path, "smoke", "--dry-run"), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert "grid of 8 points:" in result.stdout
    for index, point in enumerate(small_spec("smoke").grid()):
        assert f"{index:3d}: {point}" in result.stdout
    assert "train_split: train[:1000]" in result.stdout  # the resolved study, overrides applied
    assert_wrote_nothing(tmp_path)


def test_dry_run_splits_several_overrides_in_one_set(tmp_path):
    command = sweep_command(tmp_path, "smoke", "--dry-run", "--set", "epochs=1 search_space.depth=[1, 2, 4]")
    result = run(command, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert "grid of 12 points:" in result.stdout
    assert "\nepochs: 1\n" in result.stdout
    assert_wrote_nothing(tmp_path)


def test_list_shows_the_studies(tmp_path):
    result = run([sys.executable, str(RUNNER), "--list"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert {"smoke", "strategy_depth", "residual_depth", "masked_keep_ratio"} <= set(listed)
    assert listed == sorted(path.stem for path in studies.EXPERIMENTS_DIR.glob("*.yaml"))
    assert_wrote_nothing(tmp_path)


def test_help_exits_zero(tmp_path):
    result = run([sys.executable, str(RUNNER), "--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert result.stdout.startswith("usage:")
    for option in ("--study", "--set", "--workers", "--dry-run", "--storage", "--tracking-uri", "--manual-dir"):
        assert option in result.stdout
    assert_wrote_nothing(tmp_path)
