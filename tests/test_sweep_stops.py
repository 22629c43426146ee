"""End-to-end: sweeps stopped by a signal, killed (SIGKILL, as the OOM killer) at named
points or at random, then finished by the same command; a point that kills its worker
every time; a trial killed mid-way that resumes from its checkpoint bit-exactly.
"""

import json
import os
import random
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from sweep_helpers import (
    RUN_TIMEOUT,
    Stores,
    assert_wrote_nothing,
    explain,
    quiet_optuna,  # noqa: F401  (autouse: Optuna's log at WARNING in every test here)
    run_reproduce,
    run_sweep,
    runner_env,
    slots,
    sweep_command,
    tracking_url,
    trials_in,
)

from reuse_nets.runtime.interrupts import SHUTDOWN_GRACE
from reuse_nets.store import tracking

pytestmark = pytest.mark.slow


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


# --- a trial killed in an epoch resumes from its checkpoint ----------------------------------


TIMING_METRICS = ("epoch_time", "throughput")  # wall-clock measurements: never equal between two runs


# Early stopping that cannot see an improvement of 0.5 in accuracy: epoch 1 is the best, and
# with a patience of 3 the run stops on a plateau at epoch 4 of its cap of 5.
EARLY_STOPPING = ("base.patience=3", "base.min_delta=0.5")


@pytest.mark.parametrize("budget", [(), EARLY_STOPPING], ids=["fixed budget", "early stopping"])
def test_a_trial_killed_in_epoch_3_of_5_resumes_from_its_checkpoint_bit_exactly(tmp_path, budget):
    """SIGKILL at the end of epoch 3 (logged, not yet checkpointed), then the same command:
    the retried slot resumes after epoch 2 and ends byte-identical to a run never stopped.
    With early stopping, the best epoch's weights come back from the checkpoint too, the run
    stops on its plateau before the cap, and `reproduce` agrees with it exactly."""
    grace = 8
    overrides = [
        a
        for o in (
            "compare.strategy=[residual]",
            "compare.depth=[2]",
            "base.epochs=5",
            "execution.heartbeat_interval=2",
            f"execution.grace_period={grace}",
            *budget,
        )
        for a in ("--set", o)
    ]
    epochs_run = 4 if budget else 5
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
    assert [line.split("epoch ")[1][:3] for line in epochs] == [f"{e}/5" for e in range(1, epochs_run + 1)], explain(
        result
    )
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
    if not budget:
        return
    metrics = run.data.metrics
    assert (metrics["epochs_trained"], metrics["best_epoch"], metrics["stopped_on_plateau"]) == (4, 1, 1)
    first_epoch = dict(stores["killed"].history(run.info.run_id, "val_accuracy"))[1]
    assert metrics["selected/val_accuracy"] == first_epoch == resumed.value  # selected on the kept weights
    proc = run_reproduce(killed, run.info.run_id)
    assert proc.returncode == 0 and "AGREE" in proc.stdout and "within tolerance 0" in proc.stdout, explain(proc)
