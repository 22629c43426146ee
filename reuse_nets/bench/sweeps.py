"""Benchmark sections about whole studies: sweep overhead, start-up, pruning.

Part of the benchmark (`reuse_nets.bench.benchmark`; its plans are in `bench.plans`); see its docstring. Every
study runs with its stores in a scratch folder the caller provides.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reuse_nets.bench.plans import Plan
from reuse_nets.bench.training_speed import plain_pipeline
from reuse_nets.design import plan
from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.names import Phase
from reuse_nets.runtime.paths import PROJECT_ROOT
from reuse_nets.train import data


def _study(name: str, overrides: tuple[str, ...], tag: str):
    from reuse_nets.design import study_files

    spec = study_files.load_study(os.fspath(PROJECT_ROOT / "experiments" / f"{name}.yaml"), list(overrides))
    # Its own study name per measurement: separate Optuna studies and experiments.
    return spec.model_copy(update={"name": f"{spec.name}-{tag}"})


def _run(spec, scratch: Path, source: data.DataSource, workers: int = 1) -> float:
    """Runs `spec` through the real runner with stores under `scratch`; wall seconds."""
    from reuse_nets.sweep import runner
    from reuse_nets.train import trainers

    # Each measured study starts as a fresh process would: no trainer compiled by an
    # earlier section or variant in this process (the key ignores the study).
    trainers.clear()
    scratch.mkdir(parents=True, exist_ok=True)
    options = runner.SweepOptions(
        storage=f"sqlite:///{scratch}/optuna.db",
        tracking_uri=f"sqlite:///{scratch}/mlflow.db",
        workers=workers,
        data=source,
        verbose=False,
    )
    start = time.perf_counter()
    with contextlib.chdir(scratch):
        result = runner.run_study(spec, options)
    seconds = time.perf_counter() - start
    if not result.complete:
        raise RuntimeError(f"benchmark study {spec.name} did not complete")
    return seconds


def _bare_fit(config: TrialConfig, dataset: data.Dataset) -> float:
    """A hand-written trial: build, compile, fit with validation, score the test split."""
    start = time.perf_counter()
    import keras

    from reuse_nets.train import training

    keras.backend.clear_session()
    training.seed_everything(config.seed)
    model = training.build(config, dataset)
    model = training.compile_for_training(model, config, track_gradients=False, xla=False)
    model.fit(
        plain_pipeline(dataset, "train", config.batch_size, config.seed),
        validation_data=plain_pipeline(dataset, "validation", config.batch_size, None),
        epochs=config.epochs,
        verbose=0,
        shuffle=False,
    )
    if "test" in dataset.splits:
        model.evaluate(plain_pipeline(dataset, "test", config.batch_size, None), verbose=0)
    return time.perf_counter() - start


def sweep_overhead(plan: Plan, source: data.DataSource, scratch: Path) -> dict:
    """The smoke study (a plain grid, no tuning) through the runner vs bare fits of its configs.

    The dataset is loaded before both (once per process, as the runner does), so
    both sides measure trials, not TFDS.
    """
    spec = _study("smoke", plan.sweep_overrides, "sweep")
    dataset = data.load(spec.base.dataset, source)
    configs = [spec.cell_config(cell, seed=seed) for cell in spec.cells() for seed in spec.final.seeds]
    sweep = _run(spec, scratch, source)
    bare = [_bare_fit(config, dataset) for config in configs]
    return {
        "study": "smoke",
        "overrides": list(plan.sweep_overrides),
        "trials": len(configs),
        "sweep_s": round(sweep, 2),
        "bare_fits_s": round(sum(bare), 2),
        "ratio": round(sweep / sum(bare), 3),
        "per_trial_overhead_s": round((sweep - sum(bare)) / len(configs), 2),
    }


def command(*args: str) -> list[str]:
    """`sweeps/run.py` with `args`, under this interpreter."""
    return [sys.executable, os.fspath(PROJECT_ROOT / "sweeps" / "run.py"), *args]


def study_command(
    study: str,
    overrides,
    folder: Path,
    source: data.DataSource,
    *flags: str,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> list[str]:
    """`sweeps/run.py` on `study` with `overrides`, its reports and (unless given) its stores in `folder`."""
    return command(
        "--study",
        study,
        *flags,
        "--storage",
        storage or f"sqlite:///{folder}/optuna.db",
        "--tracking-uri",
        tracking_uri or f"sqlite:///{folder}/mlflow.db",
        "--reports",
        os.fspath(folder / "reports"),
        *[a for o in overrides for a in ("--set", o)],
        *data_args(source),
    )


def data_args(source: data.DataSource) -> list[str]:
    """The command-line flags that name `source`."""
    args = []
    if source.data_dir:
        args += ["--data-dir", source.data_dir]
    if source.manual_dir:
        args += ["--manual-dir", source.manual_dir]
    return args


def startup(plan: Plan, source: data.DataSource, scratch: Path) -> dict:
    """Seconds from starting `sweeps/run.py` to its `--dry-run` output, and to the first step.

    The first step's time is read back from MLflow: the first epoch's logged
    `epoch_time` metric ends at its timestamp, so the step started that long before.
    """
    import mlflow

    from reuse_nets.store import readback

    scratch.mkdir(parents=True, exist_ok=True)
    dry = []
    for _ in range(plan.startup_repeats):
        start = time.time()
        subprocess.run(command("--study", "smoke", "--dry-run"), cwd=scratch, check=True, capture_output=True)
        dry.append(time.time() - start)
    first_step = []
    for repeat in range(plan.startup_repeats):
        tracking_uri = f"sqlite:///{scratch}/mlflow-{repeat}.db"
        args = [
            "--study",
            "smoke",
            "--quiet",
            "--tracking-uri",
            tracking_uri,
            "--storage",
            f"sqlite:///{scratch}/optuna-{repeat}.db",
            "--set",
            "compare.strategy=[plain] compare.depth=[1] base.epochs=1",
            *data_args(source),
        ]
        start = time.time()
        subprocess.run(command(*args), cwd=scratch, check=True, capture_output=True)
        client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("smoke")
        if experiment is None:
            raise RuntimeError(f"benchmark study smoke logged no experiment to {tracking_uri}")
        runs = readback.trial_runs(client, experiment.experiment_id, phase=Phase.FINAL)
        [epoch_time] = client.get_metric_history(runs[0].info.run_id, "epoch_time")
        first_step.append(epoch_time.timestamp / 1000 - epoch_time.value - start)
    return {
        "dry_run_s": round(statistics.median(dry), 2),
        "first_step_s": round(statistics.median(first_step), 2),
        "repeats": plan.startup_repeats,
    }


def _epochs_and_best(spec, scratch: Path) -> tuple[int, str]:
    """Epochs the tuning trials trained (from Optuna's per-epoch reports) and the best cell."""
    import mlflow

    from reuse_nets.report import writer as report
    from reuse_nets.store import optuna_store, readback

    storage = optuna_store.make_storage(f"sqlite:///{scratch}/optuna.db", spec.execution)
    epochs = 0
    for cell, repeat in plan.units(spec):
        study = optuna_store.load_existing(storage, plan.tune_study_name(spec, cell, repeat))
        epochs += sum(len(trial.intermediate_values) for trial in study.get_trials(deepcopy=False))
    mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(spec.name)
    parent = readback.parent(client, experiment.experiment_id, spec.name) if experiment is not None else None
    if parent is None:
        raise RuntimeError(f"benchmark study {spec.name} logged no parent run")
    runs = report.collect_final_runs(spec, parent.info.run_id, storage)
    by_cell: dict[str, list[float]] = {}
    for run in runs:
        by_cell.setdefault(run.cell, []).append(run.test)
    pick = max if spec.objective.direction == "maximize" else min
    best = pick(by_cell, key=lambda cell: statistics.mean(by_cell[cell]))
    return epochs, best


def pruning(plan: Plan, source: data.DataSource, scratch: Path) -> dict:
    """experiments/pruning_check.yaml run with its median pruner and with none (one worker)."""
    result: dict[str, Any] = {"study": "pruning_check", "overrides": list(plan.study_overrides)}
    variants = {"pruned": (), "unpruned": ("tune.pruner.type=none",)}  # JSON fields
    for label, pruner in variants.items():
        spec = _study("pruning_check", plan.study_overrides + pruner, label)
        folder = scratch / label
        seconds = _run(spec, folder, source)
        epochs, best = _epochs_and_best(spec, folder)
        trials = spec.n_tuning_trials + spec.n_final_runs
        result[label] = {"tuning_epochs": epochs, "wall_s": round(seconds, 1), "trials": trials, "best_cell": best}
    result["epochs_saved"] = round(1 - result["pruned"]["tuning_epochs"] / result["unpruned"]["tuning_epochs"], 3)
    result["time_saved"] = round(1 - result["pruned"]["wall_s"] / result["unpruned"]["wall_s"], 3)
    result["same_best_cell"] = result["pruned"]["best_cell"] == result["unpruned"]["best_cell"]
    return result
