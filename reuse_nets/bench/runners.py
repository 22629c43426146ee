"""Benchmark section `runners`: many runners at once on one study, through PostgreSQL and `mlflow server`.

The set-up of docs/many-machines.md on one machine: a throwaway PostgreSQL (the
Optuna storage and MLflow's backend store) and one `mlflow server --workers 1` on
it (`bench.servers`), then `plan.runners` runner processes started at the same
moment, each in a folder of its own as on a machine of its own, all on one study of
tiny trials. Each runner is the real command under `bench.store_calls`, which
times its Optuna storage calls and its HTTP requests to the tracking server.

Recorded: every runner's exit code; whether every slot ran exactly once, read back
from Optuna (one COMPLETE trial per slot) and from MLflow (one FINISHED trial run
per COMPLETE trial, one parent run); trials per minute; and the store latency seen
by the runners (median and 95th percentile, per runner and over all).
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reuse_nets.bench import servers
from reuse_nets.bench.plans import Plan
from reuse_nets.bench.sweeps import study_command
from reuse_nets.names import OUTCOME_ATTR, RUN_ID_ATTR, SLOT_ATTR, RunStatus, TrialState
from reuse_nets.train import data

RUNNERS_TIMEOUT = 1800  # seconds for all runners together
TOP_CALLS = 8  # the calls listed by their total time, per store
STARTED = ": started ["  # the runner's line as a trial starts


def runners(plan: Plan, source: data.DataSource, folder: Path) -> dict:
    """`plan.runners` runners at once on the plan's runners study; what the stores hold, throughput, latency."""
    from reuse_nets.design import study_files

    folder.mkdir(parents=True, exist_ok=True)
    spec = study_files.load_study(plan.runners_study, list(plan.runners_overrides))
    bin_dir = servers.find_postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError(
            "the runners section needs PostgreSQL's server binaries (Debian: apt-get install postgresql)"
        )
    postgres = servers.Postgres(bin_dir)
    env = servers.client_env()
    # MLflow's job runner (more Python processes, for GenAI jobs) is not used here.
    server_env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        started = time.monotonic()
        postgres.start()
        (folder / "server").mkdir()
        with servers.serving_mlflow(postgres.url("mlflow"), folder / "server", env=server_env) as tracking_uri:
            servers_s = time.monotonic() - started
            run = _run_all(plan, source, folder, postgres.url("optuna"), tracking_uri, env)
            stores = _check_stores(spec, postgres.url("optuna"), tracking_uri)
    finally:
        postgres.stop()
    wall, span, latency_ms = run.pop("wall_s"), stores.pop("training_span_s"), run.pop("latency_ms")
    complete = stores["optuna"]["complete"]
    return {
        "study": plan.runners_study,
        "overrides": list(plan.runners_overrides),
        "runners": plan.runners,
        "slots": spec.n_tuning_trials + spec.n_final_runs,
        **run,
        **stores,
        "servers_start_s": round(servers_s, 1),
        "wall_s": round(wall, 1),  # from starting the runners to the last one's exit
        "training_span_s": round(span, 1),  # from the first trial's start to the last one's end
        "trials_per_minute": round(60 * complete / wall, 2),
        "trials_per_minute_training": round(60 * complete / span, 2),
        "latency_ms": latency_ms,
    }


def _run_all(plan: Plan, source: data.DataSource, folder: Path, storage: str, tracking_uri: str, env: dict) -> dict:
    """Starts every runner at once and waits for all; exit codes, trials per runner, call times."""
    processes = []
    start = time.monotonic()
    for index in range(plan.runners):
        home = folder / f"runner-{index + 1}"
        home.mkdir()
        args = study_command(
            plan.runners_study, plan.runners_overrides, home, source, storage=storage, tracking_uri=tracking_uri
        )[2:]
        argv = [sys.executable, "-m", "reuse_nets.bench.store_calls", os.fspath(home / "calls.json"), "--", *args]
        with open(home / "output.txt", "w") as output:
            processes.append(
                subprocess.Popen(
                    argv, cwd=home, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    try:
        for process in processes:
            process.wait(max(1.0, start + RUNNERS_TIMEOUT - time.monotonic()))
    except subprocess.TimeoutExpired:
        for process in processes:
            servers.stop_group(process, grace=30)
        raise RuntimeError(f"the runners did not finish in {RUNNERS_TIMEOUT} s") from None
    wall = time.monotonic() - start
    homes = [folder / f"runner-{index + 1}" for index in range(plan.runners)]
    outputs = [(home / "output.txt").read_text() for home in homes]
    calls = [_load_calls(home / "calls.json") for home in homes]
    codes = [process.returncode for process in processes]
    return {
        "exit_codes": codes,
        "failed_runners": sum(code != 0 for code in codes),
        "failures": [output[-2000:] for code, output in zip(codes, outputs) if code != 0],
        "trials_started_by_runner": [output.count(STARTED) for output in outputs],
        "wall_s": wall,
        "latency_ms": latency(calls),
    }


def _load_calls(path: Path) -> dict[str, dict[str, list[float]]]:
    return json.loads(path.read_text()) if path.exists() else {}


def _check_stores(spec, storage: str, tracking_uri: str) -> dict:
    """Every slot once? Read back from the Optuna storage and, through the tracking server, from MLflow."""
    import mlflow

    from reuse_nets.design import plan as study_plan
    from reuse_nets.store import optuna_store, readback

    names = [study_plan.tune_study_name(spec, cell, repeat) for cell, repeat in study_plan.units(spec)]
    names.append(study_plan.final_study_name(spec))
    trials = []
    slots_of: collections.Counter = collections.Counter()  # (Optuna study, slot) -> COMPLETE trials
    for name in names:
        study = optuna_store.load_existing(storage, name)
        for trial in study.get_trials(deepcopy=False) if study is not None else ():
            trials.append(trial)
            if trial.state.name == TrialState.COMPLETE:
                slots_of[(name, trial.user_attrs.get(SLOT_ATTR))] += 1
    complete = [t for t in trials if t.state.name == TrialState.COMPLETE]
    expected = spec.n_tuning_trials + spec.n_final_runs
    states = collections.Counter(t.state.name for t in trials)
    outcomes = collections.Counter(
        str(t.user_attrs.get(OUTCOME_ATTR)) for t in trials if t.state.name != TrialState.COMPLETE
    )

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    # Every parent run, not only the one readers use: runners racing to start the study must leave one.
    parents = (
        client.search_runs([experiment.experiment_id], readback.parent_filter(spec.name), max_results=100)
        if experiment is not None
        else []
    )
    runs = readback.trial_runs(client, experiment.experiment_id) if experiment is not None else []
    finished = {r.info.run_id for r in runs if r.info.status == RunStatus.FINISHED}
    by_run = collections.Counter(t.user_attrs.get(RUN_ID_ATTR) for t in complete)
    span = max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete) if complete else None
    optuna_once = len(slots_of) == expected == len(complete)
    mlflow_once = len(parents) == 1 and len(finished) == expected == sum(run_id in finished for run_id in by_run)
    return {
        "every_slot_once": optuna_once and mlflow_once,
        "optuna": {
            "every_slot_once": optuna_once,
            "complete": len(complete),
            "slots_run_twice": sum(count > 1 for count in slots_of.values()),
            "states": dict(states),
            "other_outcomes": dict(outcomes),
        },
        "mlflow": {
            "every_slot_once": mlflow_once,
            "parent_runs": len(parents),
            "finished_trial_runs": len(finished),
            "complete_trials_with_their_run": sum(run_id in finished for run_id in by_run),
            "unfinished_trial_runs": sum(r.info.status != RunStatus.FINISHED for r in runs),
        },
        "training_span_s": span.total_seconds() if span else float("nan"),
    }


def _summary(seconds: list[float]) -> dict:
    """Calls, median, 95th percentile and largest, in ms."""
    if not seconds:
        return {"calls": 0}
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "calls": len(ordered),
        "median": round(1000 * statistics.median(ordered), 1),
        "p95": round(1000 * p95, 1),
        "max": round(1000 * ordered[-1], 1),
    }


def latency(calls: list[dict[str, dict[str, list[float]]]]) -> dict:
    """Store call times of every runner: over all, per runner, and the calls that took the most time."""
    result: dict = {}
    for store in ("optuna", "mlflow"):
        pooled: dict[str, list[float]] = collections.defaultdict(list)
        for runner in calls:
            for name, seconds in runner.get(store, {}).items():
                pooled[name] += seconds
        heaviest = sorted(pooled, key=lambda name: -sum(pooled[name]))[:TOP_CALLS]
        result[store] = {
            "all": _summary([s for seconds in pooled.values() for s in seconds]),
            "by_runner": [_summary([s for seconds in r.get(store, {}).values() for s in seconds]) for r in calls],
            "by_call": {name: _summary(pooled[name]) for name in heaviest},
        }
    return result
