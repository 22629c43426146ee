"""A full disk stops a study with one line naming what could not be written, leaves
the stores whole, and the same command then resumes the study, running every slot
once (docs/reliability.md, "Disk").

- Every shape in which libraries report a full disk is recognised, and never retried
  as a passing storage error; a real SQLite file that cannot grow is named by store.
- Injected at every write point (`REUSE_NETS_DISK_FULL_AT`): checkpoint, config.yaml,
  model, report.md, report.html, mlflow.db and optuna.db. Two chains of runs of
  `reuse-nets run` in this process (no TensorFlow start-up per run), each run meeting
  the next point, then one clean run.
- A real small filesystem (tmpfs, needs root) filled by a study in a subprocess.
"""

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import full_disk_worker
import mlflow
import optuna
import pytest
import sqlalchemy.exc
from conftest import fashion_mnist_manual_dir
from mlflow.entities import Metric, ViewType
from mlflow.protos import databricks_pb2

from reuse_nets import commands
from reuse_nets.commands import common
from reuse_nets.errors import DiskFull
from reuse_nets.runtime import disk, faults, interrupts, noise
from reuse_nets.store import storage_errors
from reuse_nets.sweep import workers

ROOT = Path(__file__).resolve().parents[1]
STUDY = "smoke"
OVERRIDES = (
    "compare.strategy=[plain, residual]",
    "compare.depth=[2]",
    "base.epochs=2",
    "base.dataset.train_split=train[:500]",
    "base.dataset.validation_split=train[50000:50300]",
    "base.dataset.test_split=test[:300]",
    # A trial whose FAIL state a full optuna.db refused is judged dead after 2 s, not 8.
    "execution.heartbeat_interval=1",
    "execution.grace_period=2",
)
PLAIN = "final strategy=plain,depth=2"  # the context of the plain cell's kill points (slot 0)
SLOTS = 2

# --- every shape of a full disk is recognised, and never retried -------------------------


def sqlite_full() -> Exception:
    return sqlalchemy.exc.OperationalError(
        "INSERT INTO metrics ...", {}, sqlite3.OperationalError("database or disk is full")
    )


def raised_from(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as error:
            raise outer from error
    except Exception as caught:
        return caught


FULL = [
    pytest.param(lambda: OSError(errno.ENOSPC, "No space left on device", "f"), id="enospc"),
    pytest.param(lambda: OSError(errno.EDQUOT, "Disk quota exceeded"), id="quota"),
    pytest.param(sqlite_full, id="sqlite"),
    pytest.param(  # MLflow's SQL store re-raises as "temporarily unavailable", a code that is otherwise transient
        lambda: raised_from(
            mlflow.exceptions.MlflowException("see cause", error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE),
            sqlite_full(),
        ),
        id="mlflow-wrapped",
    ),
    pytest.param(
        lambda: raised_from(
            optuna.exceptions.StorageInternalError("An exception is raised during the commit."), sqlite_full()
        ),
        id="optuna-wrapped",
    ),
    pytest.param(
        lambda: sqlalchemy.exc.OperationalError(
            "INSERT", {}, Exception('could not extend file "base/16384/2619": No space left on device')
        ),
        id="postgresql",
    ),
    pytest.param(  # h5py (Keras's weights) reports the errno only in its text
        lambda: OSError(
            "Unable to synchronously write data (file write failed: errno = 28, error message = 'No space left on device')"
        ),
        id="h5py",
    ),
]


@pytest.mark.parametrize("make", FULL)
def test_every_shape_of_a_full_disk_is_recognised_and_never_retried(make):
    error = make()
    assert disk.is_disk_full(error)
    assert not storage_errors.is_transient(error)  # retrying would only meet it again
    assert str(disk.describe(error)).startswith("disk full: could not write ")


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked")),
        OSError(errno.ENOENT, "No such file or directory"),
        ValueError("width must be positive"),
    ],
    ids=["locked", "missing-file", "value"],
)
def test_other_errors_are_not_a_full_disk(error):
    assert not disk.is_disk_full(error)


def cap_sqlite_file(engine) -> None:
    """SQLite may no longer grow the file: it then raises its real SQLITE_FULL, "database or
    disk is full", through SQLAlchemy and the library above, as on a full disk."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def cap(connection, record):
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")

    engine.dispose()  # connections opened before the cap


def test_a_real_full_sqlite_file_is_named_by_the_store_it_belongs_to(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    cap_sqlite_file(storage.engine)
    with pytest.raises(Exception) as optuna_full:
        study.set_user_attr("big", "x" * 100_000)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(tracking)
    try:
        client = mlflow.MlflowClient()
        run = client.create_run(client.create_experiment("e"))
        cap_sqlite_file(client._tracking_client.store.engine)
        with pytest.raises(Exception) as mlflow_full:
            client.log_batch(run.info.run_id, metrics=[Metric(f"m{i}", 1.0, 0, 0) for i in range(2000)])
        mlflow_message = str(disk.describe(mlflow_full.value, optuna_storage=url))
    finally:
        mlflow.set_tracking_uri(None)
    assert disk.is_disk_full(optuna_full.value) and not storage_errors.is_transient(optuna_full.value)
    assert f"could not write the Optuna storage {url} (filesystem " in str(
        disk.describe(optuna_full.value, optuna_storage=url)
    )
    assert disk.is_disk_full(mlflow_full.value) and not storage_errors.is_transient(mlflow_full.value)
    assert f"could not write the MLflow tracking store {tracking} (filesystem " in mlflow_message


def test_a_worker_stopped_by_a_full_disk_stops_the_others_and_its_message_is_raised_once():
    message = "disk full: could not write the checkpoint /somewhere"
    started = time.monotonic()
    with pytest.raises(DiskFull) as stopped:
        workers.run_workers(
            full_disk_worker.stopped_by_a_full_disk,
            lambda index: (index, workers.DISK_FULL_EXIT, message),
            2,
            poll=lambda: None,
        )
    assert str(stopped.value) == message  # the worker's own line, raised once by the parent
    assert time.monotonic() - started < 30  # the other worker was stopped, not waited for


# --- injected at every write point, then the same command finishes the study ------------------


@dataclasses.dataclass
class Ran:
    code: int
    out: str
    err: str


class Stores:
    """Read access to one folder's stores (opened afresh: they must open after any stop)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.storage = f"sqlite:///{directory}/optuna.db"
        self.tracking = f"sqlite:///{directory}/mlflow.db"
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking)

    def trials(self) -> list:
        return optuna.load_study(study_name=f"{STUDY}:final", storage=self.storage).get_trials()

    def of_slot(self, slot: int) -> list:
        return [t for t in self.trials() if t.user_attrs.get("slot") == slot]

    def runs(self) -> list:
        """Every run of the study, oldest first."""
        experiment = self.client.get_experiment_by_name(STUDY)
        runs = self.client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=100)
        return sorted(runs, key=lambda r: r.info.start_time)

    def trial_runs(self) -> list:
        return [r for r in self.runs() if r.data.tags.get("reuse_nets.kind") == "trial"]

    def parent(self):
        (parent,) = [r for r in self.runs() if r.data.tags.get("reuse_nets.kind") == "study"]
        return parent

    def checkpoints(self) -> list[dict]:
        """The metadata of every slot's checkpoint, each checked whole (its arrays' digest)."""
        found = []
        for folder in sorted((self.directory / "checkpoints").glob("*")):
            meta = json.loads((folder / "meta.json").read_text())
            assert meta["digest"] == hashlib.sha256((folder / "state.npz").read_bytes()).hexdigest(), folder
            found.append(meta)
        return found


def assert_whole(stores: Stores, running: int = 0) -> None:
    """Both SQLite files pass SQLite's integrity check and open; no temporary file is left;
    every closed run agrees with its trial; at most `running` trials are still RUNNING
    (one whose FAIL state a full optuna.db refused: the next start fails it as dead)."""
    for name in ("optuna.db", "mlflow.db"):
        with sqlite3.connect(f"file:{stores.directory / name}?mode=ro", uri=True) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",), name
    assert not [p for p in stores.directory.rglob("*.tmp")], "a half-written file was left"
    trials = stores.trials()
    assert sum(t.state.name == "RUNNING" for t in trials) <= running
    for run in stores.trial_runs():
        trial = trial_of(stores, run)
        # Either side may be left open by its full store (RUNNING): the next start closes it.
        if "RUNNING" not in (run.info.status, trial.state.name):
            assert run.data.tags["optuna.trial_state"] == trial.state.name, run.info.run_name
    stores.checkpoints()


def assert_stopped(ran: Ran, place: str) -> str:
    """Exit 2, the disk-full line last on stderr, naming `place`; no traceback; said once."""
    assert ran.code == 2, (ran.code, ran.out[-2000:], ran.err[-3000:])
    assert "Traceback" not in ran.err, ran.err[-3000:]
    lines = [line for line in ran.err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: disk full: could not write {place}"), ran.err[-3000:]
    assert lines[-1].endswith("; free space there, then re-run the same command to resume"), lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1, ran.err[-3000:]
    return lines[-1]


def assert_stopped_trial(stores: Stores, run) -> None:
    """A run a full disk cut short: KILLED, outcome disk_full, its trial failed without a result."""
    assert run.info.status == "KILLED", run.info
    assert run.data.tags["reuse_nets.outcome"] == "disk_full"
    trial = trial_of(stores, run)
    assert trial.state.name == "FAIL" and trial.user_attrs["outcome"] == "disk_full"


def trial_of(stores: Stores, run):
    """The Optuna trial of a trial run (by its tag: a run stopped while starting has no id in Optuna)."""
    return stores.trials()[int(run.data.tags["optuna.trial_number"])]


def assert_completed(stores: Stores, ran: Ran) -> None:
    """The clean run finished the study: every slot has exactly one complete trial and one
    FINISHED run; every other attempt was stopped (disk_full) or died; nothing is left open."""
    assert ran.code == 0, (ran.out[-3000:], ran.err[-3000:])
    assert "study smoke: complete" in ran.out
    assert_whole(stores)
    complete = [t for t in stores.trials() if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["slot"] for t in complete) == list(range(SLOTS))
    finished = {r.info.run_id for r in stores.trial_runs() if r.info.status == "FINISHED"}
    assert finished == {t.user_attrs["mlflow_run_id"] for t in complete}
    assert all(t.user_attrs.get("outcome") in ("completed", "disk_full", None) for t in stores.trials())
    assert not [r.info.run_name for r in stores.runs() if r.info.status == "RUNNING"]
    assert stores.parent().info.status == "FINISHED"
    assert {"report.md", "report.html"} <= {p.name for p in (stores.directory / "reports" / STUDY).iterdir()}
    assert not (stores.directory / "checkpoints").exists()  # each removed once its slot ended


def latest_run(stores: Stores):
    return stores.trial_runs()[-1]


def check_checkpoint(stores: Stores, ran: Ran) -> None:
    (meta,) = stores.checkpoints()  # the previous, complete one: epoch 1's
    assert len(meta["history"]) == 1
    assert_stopped_trial(stores, latest_run(stores))
    assert stores.parent().info.status == "KILLED"  # stopped, to be resumed


def check_config(stores: Stores, ran: Ran) -> None:
    run = latest_run(stores)
    assert_stopped_trial(stores, run)
    assert "config.yaml" not in {a.path for a in stores.client.list_artifacts(run.info.run_id)}


def check_model(stores: Stores, ran: Ran) -> None:
    assert "resumed after epoch 1" in ran.out  # from the checkpoint the first stop kept
    run = latest_run(stores)
    assert_stopped_trial(stores, run)
    assert "reuse_nets.model_uri" not in run.data.tags
    (meta,) = stores.checkpoints()
    assert len(meta["history"]) == 2  # kept: the resumed trial only logs the model


def check_report(stores: Stores, ran: Ran) -> None:
    assert "resumed after epoch 2" in ran.out
    assert sorted(t.user_attrs["slot"] for t in stores.trials() if t.state.name == "COMPLETE") == [0, 1]
    assert not (stores.directory / "reports" / STUDY / "report.md").exists()
    assert stores.parent().info.status == "KILLED"


def check_html(stores: Stores, ran: Ran) -> None:
    report = stores.directory / "reports" / STUDY
    assert (report / "report.md").exists() and not (report / "report.html").exists()


def check_mlflow_db(stores: Stores, ran: Ran) -> None:
    run = latest_run(stores)
    # Its closing writes were refused: left RUNNING, with epoch 1's metrics and no half of epoch 2's.
    assert run.info.status == "RUNNING"
    assert [m.step for m in stores.client.get_metric_history(run.info.run_id, "loss")] == [1]
    (trial,) = stores.of_slot(0)
    assert trial.state.name == "FAIL" and trial.user_attrs["outcome"] == "disk_full"
    (meta,) = stores.checkpoints()
    assert len(meta["history"]) == 1


def check_optuna_db(stores: Stores, ran: Ran) -> None:
    first, stopped = [r for r in stores.trial_runs() if "plain" in r.info.run_name]
    # The run the full mlflow.db left open was closed by this start, as stopped by a full disk.
    assert_stopped_trial(stores, first)
    assert "resumed after epoch 1" in ran.out
    # Its outcome could not be stored in Optuna: the run still says why it stopped.
    assert stopped.info.status == "KILLED" and stopped.data.tags["reuse_nets.outcome"] == "disk_full"
    (meta,) = stores.checkpoints()
    assert len(meta["history"]) == 2


@dataclasses.dataclass(frozen=True)
class Step:
    fault: str  # REUSE_NETS_DISK_FULL_AT
    place: str  # what the error line names, `{d}` the study's folder
    check: object  # (stores, ran) -> None
    running: int = 0  # Optuna trials a full optuna.db may leave RUNNING
    in_trial: bool = True  # the trial running says so on stdout (not the report's writes)


# Each run meets the next point; the clean run after the last finishes the study.
FILE_POINTS = [
    Step("checkpoint@epoch 2", "the checkpoint {d}/checkpoints/", check_checkpoint),
    Step("config", "the artifacts of MLflow run ", check_config),
    Step("model", "the artifacts of MLflow run ", check_model),
    Step(f"report@{STUDY}", "the report folder {d}/reports/smoke (filesystem ", check_report, in_trial=False),
    Step(f"html@{STUDY}", "the report folder {d}/reports/smoke (filesystem ", check_html, in_trial=False),
]
DATABASE_POINTS = [
    Step(
        f"mlflow.db@{PLAIN} epoch 1", "the MLflow tracking store sqlite:///{d}/mlflow.db (filesystem ", check_mlflow_db
    ),
    Step(f"optuna.db@{PLAIN} epoch 1", "the Optuna storage sqlite:///{d}/optuna.db (filesystem ", check_optuna_db, 1),
]


def command(directory: Path) -> list[str]:
    overrides = [a for o in OVERRIDES for a in ("--set", o)]
    stores = Stores(directory)
    return [
        "--study",
        STUDY,
        "--manual-dir",
        fashion_mnist_manual_dir(),
        "--storage",
        stores.storage,
        "--tracking-uri",
        stores.tracking,
        *overrides,
    ]


@pytest.fixture
def run_here(tmp_path, monkeypatch, capsys):
    """`reuse-nets run` of the study in a folder (`tmp_path` unless told), in this process,
    through the command's own error handling (`main_guard`); `run_here(fault)` returns its
    exit code and output. No TensorFlow start-up per run."""
    # Process-wide changes a command makes for good, kept out of the test process.
    monkeypatch.setattr(common, "prepare_process", lambda: None)
    monkeypatch.setattr(interrupts, "stop_on_signals", lambda: None)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    for name in noise.RERAISING_LOGGERS:  # as `noise.quiet_environment` quiets them in a command
        monkeypatch.setattr(logging.getLogger(name), "disabled", True)

    def run(fault: str | None, directory: Path = tmp_path) -> Ran:
        monkeypatch.chdir(directory)  # checkpoints/ and reports/ go here
        if fault:
            monkeypatch.setenv(faults.DISK_FULL_ENV, fault)
        else:
            monkeypatch.delenv(faults.DISK_FULL_ENV, raising=False)
        capsys.readouterr()
        try:
            code = commands.main(["run", *command(directory)])
        finally:
            mlflow.set_tracking_uri(None)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


@pytest.mark.slow
@pytest.mark.parametrize("steps", [FILE_POINTS, DATABASE_POINTS], ids=["files", "databases"])
def test_a_full_disk_at_each_write_point_stops_with_one_line_and_the_same_command_finishes(tmp_path, run_here, steps):
    stores = Stores(tmp_path)
    for step in steps:
        ran = run_here(step.fault)

        line = assert_stopped(ran, step.place.format(d=tmp_path))
        assert not step.in_trial or f"STOPPED ({line.removeprefix('error: ')})" in ran.out, ran.out[-3000:]
        assert_whole(stores, running=step.running)
        step.check(stores, ran)

    assert_completed(stores, run_here(None))


# --- a real small filesystem, filled by a study -------------------------------------------------

# The stores' schemas take about 1.1 MiB; the first trial's model (about 1 MiB of weights and
# code) no longer fits.
SMALL_DISK = "2m"
FREED_DISK = "64m"


def mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mounts a tmpfs of `size` at `folder`; why not, if it cannot."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        return "mounting a small filesystem needs root and mount(8)"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", os.fspath(folder)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"mount -t tmpfs is not permitted here: {done.stderr.strip()}"


@pytest.mark.slow
def test_a_study_that_fills_a_real_small_filesystem_stops_with_one_line_and_resumes_once_space_is_freed(
    tmp_path, run_here
):
    """The run that fills it is a real process: its whole stderr is checked. The resume runs
    in this process (the same command, without a second TensorFlow start-up)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    why_not = mount_tmpfs(folder, SMALL_DISK)
    if why_not:
        pytest.skip(why_not)
    try:
        runner = [sys.executable, os.fspath(ROOT / "sweeps" / "run.py"), *command(folder)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REUSE_NETS_"))}

        full = subprocess.run(runner, cwd=folder, env=env, capture_output=True, text=True, timeout=300)

        line = assert_stopped(Ran(full.returncode, full.stdout, full.stderr), "")
        assert f"(filesystem {folder}, " in line, line
        lines = [each for each in full.stderr.splitlines() if each.strip()]
        assert lines == [line], full.stderr[-3000:]  # nothing else: no library's log, no thread's traceback
        stores = Stores(folder)
        assert_whole(stores, running=1)
        subprocess.run(["mount", "-o", f"remount,size={FREED_DISK}", os.fspath(folder)], check=True)

        resumed = run_here(None, folder)

        assert_completed(stores, resumed)
    finally:
        subprocess.run(["umount", "-l", os.fspath(folder)], capture_output=True)
