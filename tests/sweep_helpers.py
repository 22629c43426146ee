"""Shared helpers of the end-to-end sweep tests (`tests/test_sweep_*.py`, and
`tests/test_auth.py` and `tests/test_many_machines.py`): `sweeps/run.py` in a
subprocess, real fashion_mnist (prepared offline), then assertions on what the Optuna
and MLflow stores hold.

Every run works in its own temporary directory (the runner's working directory),
so `mlflow.db`, `optuna.db`, `mlruns/` and `reports/` land there. Studies run on
small slices of the data (`SMALL_DATA`). Not a test file: nothing here is collected;
a test file that imports `quiet_optuna` gets it as an autouse fixture.
"""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import fashion_mnist_manual_dir
from mlflow.entities import ViewType

from reuse_nets.design import study_files

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "sweeps" / "run.py"


MANUAL_DIR = fashion_mnist_manual_dir()
STRATEGIES = ("plain", "concat", "residual", "masked")
# Slices small enough for a trial to take a second or two.
SMALL_DATA = (
    "base.dataset.train_split=train[:1000]",
    "base.dataset.validation_split=train[50000:50500]",
    "base.dataset.test_split=test[:500]",
)
# TensorFlow/absl log lines that may precede anything we print.
LOG_NOISE = ("WARNING: All log messages", "I0000", "E0000", "W0000", "WARNING:absl:")
RUN_TIMEOUT = 240  # seconds; a smoke run takes about 50


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


def assert_wrote_nothing(directory: Path, keep: set[str] = frozenset()):
    left = {path.name for path in directory.iterdir()} - set(keep)
    assert not left, f"an invalid command wrote {sorted(left)}"
