"""Benchmark sections that run a depth-heavy study through the real command.

- `study_profile`: the study with the compile cache off and on, side by side; each
  run's wall time split into profile sections (`runtime.profile`).
- `workers`: the same study (cache on) with 2 worker processes, against 1.

Part of the benchmark (`reuse_nets.bench.benchmark`; its plans are in `bench.plans`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from reuse_nets.bench.plans import Plan
from reuse_nets.bench.sweeps import study_command
from reuse_nets.names import TRAINER_REUSED_TAG
from reuse_nets.runtime import profile
from reuse_nets.train import data, trainers, training

# Sections holding tracing and compilation when a trainer is compiled afresh. An upper
# bound: each also holds one ordinary step or validation pass per trial.
TRACING = ("build and compile", training.FIRST_STEP, training.FIRST_VALIDATION)


def run_command(plan: Plan, source: data.DataSource, folder: Path, cache: int, workers: int = 1) -> dict:
    """`sweeps/run.py` on the plan's profile study in `folder`: wall time, profile, traced trials."""
    folder.mkdir(parents=True, exist_ok=True)
    overrides = (*plan.profile_overrides, f"execution.compile_cache={cache}")
    argv = study_command(plan.profile_study, overrides, folder, source, "--quiet", "--workers", str(workers))
    start = time.time()
    env = {**os.environ, profile.ENV: os.fspath(folder / "profile"), profile.START_ENV: repr(start)}
    proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"profile study failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    sections: dict[str, float] = {}
    for file in folder.glob("profile.*.json"):
        for name, seconds in json.loads(file.read_text())["sections"].items():
            sections[name] = sections.get(name, 0.0) + seconds
    return {"wall_s": round(wall, 1), "sections": sections, **_trials(folder)}


def _trials(folder: Path) -> dict:
    """How many trial runs the study logged, and how many traced their own steps."""
    import mlflow

    from reuse_nets.store import readback

    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = [
        run
        for experiment in client.search_experiments()
        for run in readback.trial_runs(client, experiment.experiment_id)
        if TRAINER_REUSED_TAG in run.data.tags
    ]
    return {"trials": len(runs), "traced": sum(r.data.tags[TRAINER_REUSED_TAG] == "false" for r in runs)}


def _shares(run: dict) -> dict:
    """Each section's seconds and share of the wall time; the rest is `other`."""
    wall, sections = run["wall_s"], run.pop("sections")
    table = {name: seconds for name, seconds in sorted(sections.items(), key=lambda item: -item[1])}
    table["other (imports, stores, Optuna, exit)"] = max(0.0, wall - sum(sections.values()))
    run["sections"] = {name: {"s": round(s, 1), "share": round(s / wall, 3)} for name, s in table.items()}
    run["tracing_s"] = round(sum(sections.get(name, 0.0) for name in TRACING), 1)
    run["tracing_share"] = round(run["tracing_s"] / wall, 3)
    return run


def study_profile(plan: Plan, source: data.DataSource, scratch: Path) -> dict:
    """The profile study with the compile cache off, then on (one worker each)."""
    off = _shares(run_command(plan, source, scratch / "cache-off", cache=0))
    on = _shares(run_command(plan, source, scratch / "cache-on", cache=trainers.DEFAULT_CAPACITY))
    return {
        "study": plan.profile_study,
        "overrides": list(plan.profile_overrides),
        "cache_off": off,
        "cache_on": on,
        "wall_ratio": round(on["wall_s"] / off["wall_s"], 3),
    }


def workers(plan: Plan, source: data.DataSource, scratch: Path, one_worker: dict) -> dict:
    """The profile study with 2 workers (cache on), against its 1-worker run."""
    two = run_command(plan, source, scratch, cache=trainers.DEFAULT_CAPACITY, workers=2)
    result: dict = {"study": plan.profile_study, "overrides": list(plan.profile_overrides)}
    for count, run in (("1", one_worker), ("2", two)):
        result[count] = {
            "trials": run["trials"],
            "traced": run["traced"],
            "wall_s": run["wall_s"],
            "trials_per_minute": round(60 * run["trials"] / run["wall_s"], 2),
        }
    result["speedup"] = round(result["2"]["trials_per_minute"] / result["1"]["trials_per_minute"], 3)
    return result
