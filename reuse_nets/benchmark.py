"""How fast training runs, and what the framework around it costs, measured side by side.

Six measurements, each a section of one JSON document (`measure`):

- `training`: the same network and batches trained by plain `keras.Model.fit` and
  by this project (gradient norms, MLflow logging), interleaved; examples/s and ratio.
- `sweep`: a study through the real runner vs the sum of bare fits of its configs.
- `startup`: seconds from the command to `--dry-run` output and to the first step.
- `pruning`: one tuned study with and without its pruner: epochs, time, best cell.
- `workers`: one study with 1 and with 2 worker processes: trials per minute.
- `ceiling`: this machine's float32 matmul rate, to judge each step's FLOP rate.

Every store the benchmark writes lives in a temporary directory; nothing of the
user's (mlflow.db, optuna.db, reports/) is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reuse_nets import data, execution, provenance
from reuse_nets.config import DatasetConfig, TrialConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Size:
    """One measured network: depth x width, and how many examples an epoch holds."""

    depth: int
    width: int
    examples: int  # per epoch: enough steps that per-epoch costs do not dominate


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the benchmark runs; `FULL` and `QUICK` are the two plans."""

    sizes: tuple[Size, ...]
    batch_size: int
    epochs: int  # per measured fit; the first (tracing, compiling) is not timed
    repeats: int  # interleaved repetitions of each variant
    xla: bool  # also measure the framework with XLA
    sweep_overrides: tuple[str, ...]  # applied to experiments/smoke.yaml
    study_overrides: tuple[str, ...]  # applied to experiments/pruning_check.yaml (pruning, workers)
    startup_repeats: int
    matmul_size: int


FULL = Plan(
    sizes=(Size(8, 128, 20480), Size(64, 128, 5120), Size(8, 512, 10240), Size(64, 512, 2560)),
    batch_size=256,
    epochs=3,
    repeats=3,
    xla=True,
    sweep_overrides=("base.dataset.train_split=train[:20000]", "base.width=128", "base.epochs=3", "compare.depth=[2, 8]"),
    study_overrides=(),
    startup_repeats=3,
    matmul_size=2048,
)
QUICK = Plan(
    sizes=(Size(2, 32, 2048),),
    batch_size=256,
    epochs=2,
    repeats=1,
    xla=False,
    sweep_overrides=("compare.strategy=[plain, residual]", "compare.depth=[1]", "base.epochs=1"),
    study_overrides=(
        "compare.strategy=[plain]", "compare.depth=[1]", "tune.trials_per_cell=3", "base.epochs=2", "final.seeds=[1]",
        "tune.pruner.n_startup_trials=1", "base.dataset.train_split=train[:1000]",
        "base.dataset.validation_split=train[50000:50500]", "base.dataset.test_split=test[:500]",
    ),
    startup_repeats=1,
    matmul_size=512,
)
VALIDATION_SPLIT = "train[50000:51000]"  # disjoint from every train slice above


def measure(plan: Plan, source: data.DataSource, say=print) -> dict:
    """Runs every section of `plan`; the JSON-able result (see the module docstring)."""
    started = time.monotonic()
    result = {"schema": SCHEMA_VERSION, "machine": machine(), "quick": plan is QUICK}
    settings = execution.pin(execution.for_workers(1))
    result["execution"] = settings.describe()
    import mlflow

    previous_uri = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="reuse-nets-bench-") as scratch, contextlib.chdir(scratch):
        mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
        say("ceiling: float32 matmul rate")
        result["ceiling"] = matmul_ceiling(plan.matmul_size)
        say("training: plain fit vs framework, interleaved")
        result["training"] = [training_speed(size, plan, source, result["ceiling"]["gflops"], say) for size in plan.sizes]
        say("sweep: real runner vs bare fits")
        result["sweep"] = sweep_overhead(plan, source, Path(scratch) / "sweep")
        say("startup: command to --dry-run output and to the first training step")
        result["startup"] = startup(plan, source, Path(scratch) / "startup")
        say("pruning: the same study with and without its pruner")
        result["pruning"] = pruning(plan, source, Path(scratch) / "pruning")
        say("workers: the unpruned study again with 2 workers")
        result["workers"] = workers(plan, source, Path(scratch) / "workers", result["pruning"]["unpruned"])
    mlflow.set_tracking_uri(previous_uri)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def machine() -> dict:
    """Where and when: CPU, cores, libraries, commit, date."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": provenance.cpu_model(),
        "cores": execution.machine_cores(),
        "python": platform.python_version(),
        "libraries": provenance.library_versions(),
        "commit": provenance.git_state()["commit"] + (" (dirty)" if provenance.git_state()["dirty"] == "true" else ""),
        "command": provenance.command_line(),
    }


# --- ceiling -------------------------------------------------------------------


def matmul_ceiling(n: int, repeats: int = 20) -> dict:
    """The best float32 rate of an n x n matmul here (2 n^3 FLOPs each), in GFLOP/s."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2))
    b = tf.random.stateless_normal((n, n), seed=(3, 4))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return {"matmul_size": n, "gflops": round(2 * n**3 / min(times) / 1e9, 2), "median_gflops": round(2 * n**3 / statistics.median(times) / 1e9, 2)}


def training_flops_per_example(model) -> int:
    """Forward + backward FLOPs of one example through the dense kernels (3x forward).

    Counts the matmuls (2 * fan_in * fan_out per example each), which dominate
    an MLP's step; elementwise ops are left out, so the rate is a lower bound.
    """
    forward = 0
    for weight in model.trainable_weights:
        if len(weight.shape) == 2:
            forward += 2 * int(weight.shape[0]) * int(weight.shape[1])
    return 3 * forward


# --- training ------------------------------------------------------------------


def _dataset(size: Size, source: data.DataSource) -> data.Dataset:
    splits = data.Splits(train=f"train[:{size.examples}]", validation=VALIDATION_SPLIT, test=None)
    return data.load_dataset("fashion_mnist", splits, source)


def _config(size: Size, plan: Plan) -> TrialConfig:
    return TrialConfig(
        strategy="residual",
        depth=size.depth,
        width=size.width,
        batch_size=plan.batch_size,
        epochs=plan.epochs,
        dataset=DatasetConfig(train_split=f"train[:{size.examples}]", validation_split=VALIDATION_SPLIT, test_split=None),
    )


def _plain_pipeline(dataset: data.Dataset, role: str, batch_size: int, seed: int | None):
    """What a plain Keras user writes for in-memory data: the same batches as ours."""
    import tensorflow as tf

    images, labels = dataset.arrays[role]
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if seed is not None:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _timed_epochs(examples: int):
    """A callback timing each epoch's training part (validation excluded): examples/s."""
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rates, self.seconds = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._train_end = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if self._train_end is None:
                self._train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = time.perf_counter()
            self.seconds.append(end - self._start)
            self.rates.append(examples / ((self._train_end or end) - self._start))

    return Timer()


def _plain_fit(config: TrialConfig, dataset: data.Dataset) -> tuple[list[float], list[float]]:
    """Plain `model.fit` of the same network (same init, same batches): epoch rates, seconds."""
    import keras

    from reuse_nets import training

    keras.backend.clear_session()
    training.seed_everything(config.seed)
    model = training.build(config, dataset)
    model.compile(
        optimizer=keras.optimizers.get({"class_name": config.optimizer, "config": {"learning_rate": config.learning_rate}}),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = _timed_epochs(dataset.num_examples("train"))
    model.fit(
        _plain_pipeline(dataset, "train", config.batch_size, config.seed),
        validation_data=_plain_pipeline(dataset, "validation", config.batch_size, None),
        epochs=config.epochs,
        verbose=0,
        callbacks=[timer],
    )
    return timer.rates, timer.seconds


def _framework_fit(config: TrialConfig, dataset: data.Dataset, xla: bool) -> tuple[list[float], list[float]]:
    """This project's training of a trial: gradient norms on, every epoch logged to MLflow."""
    import mlflow

    from reuse_nets import tracking, training

    experiment_id = mlflow.set_experiment("benchmark").experiment_id
    previous = execution.current()
    execution.pin(dataclasses.replace(previous, xla=xla))
    try:
        with tracking.trial_run(config, dataset, experiment_id=experiment_id, log_model=False) as run:
            result = training.train(config, dataset, hooks=(run.log_epoch,), evaluate_test=False)
            run.record(result)
    finally:
        execution.pin(previous)
    return [h["throughput"] for h in result.history], [h["epoch_time"] for h in result.history]


def _summary(rates: list[float]) -> dict:
    return {"examples_per_s": round(statistics.median(rates), 1), "min": round(min(rates), 1), "max": round(max(rates), 1), "epochs": len(rates)}


def training_speed(size: Size, plan: Plan, source: data.DataSource, ceiling_gflops: float, say=print) -> dict:
    """Plain fit vs framework (and framework with XLA) on one size, interleaved.

    The first epoch of every fit traces (and with XLA compiles) the step: it is
    reported as `first_epoch_s`, never counted in examples/s.
    """
    from reuse_nets import training

    dataset = _dataset(size, source)
    config = _config(size, plan)
    variants = {"plain": lambda: _plain_fit(config, dataset), "framework": lambda: _framework_fit(config, dataset, xla=False)}
    if plan.xla:
        variants["framework_xla"] = lambda: _framework_fit(config, dataset, xla=True)
    rates = {name: [] for name in variants}
    first = {name: [] for name in variants}
    for repeat in range(plan.repeats):
        for name, fit in variants.items():
            epoch_rates, seconds = fit()
            rates[name].extend(epoch_rates[1:])
            first[name].append(seconds[0])
            say(f"  depth {size.depth} width {size.width} repeat {repeat + 1}/{plan.repeats} {name}: {statistics.median(epoch_rates[1:]):.0f} examples/s")
    flops = training_flops_per_example(training.build(config, dataset))
    entry = {"depth": size.depth, "width": size.width, "batch_size": plan.batch_size, "examples_per_epoch": size.examples, "training_gflop_per_example": round(flops / 1e9, 6)}
    for name in variants:
        summary = _summary(rates[name])
        summary["first_epoch_s"] = round(statistics.median(first[name]), 2)
        summary["gflops"] = round(summary["examples_per_s"] * flops / 1e9, 2)
        summary["ceiling_fraction"] = round(summary["gflops"] / ceiling_gflops, 3)
        entry[name] = summary
    entry["ratio"] = round(entry["framework"]["examples_per_s"] / entry["plain"]["examples_per_s"], 3)
    if plan.xla:
        entry["ratio_xla"] = round(entry["framework_xla"]["examples_per_s"] / entry["plain"]["examples_per_s"], 3)
    return entry


# --- sweeps --------------------------------------------------------------------


def _study(name: str, overrides: tuple[str, ...], tag: str):
    from reuse_nets import study_files

    spec = study_files.load_study(os.fspath(PROJECT_ROOT / "experiments" / f"{name}.yaml"), list(overrides))
    # Its own study name per measurement: separate Optuna studies and experiments.
    return spec.model_copy(update={"name": f"{spec.name}-{tag}"})


def _run(spec, scratch: Path, source: data.DataSource, workers: int = 1) -> float:
    """Runs `spec` through the real runner with stores under `scratch`; wall seconds."""
    from reuse_nets import runner

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

    from reuse_nets import training

    keras.backend.clear_session()
    training.seed_everything(config.seed)
    model = training.build(config, dataset)
    model.compile(optimizer=keras.optimizers.get({"class_name": config.optimizer, "config": {"learning_rate": config.learning_rate}}),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(_plain_pipeline(dataset, "train", config.batch_size, config.seed),
              validation_data=_plain_pipeline(dataset, "validation", config.batch_size, None), epochs=config.epochs, verbose=0)
    if "test" in dataset.splits:
        model.evaluate(_plain_pipeline(dataset, "test", config.batch_size, None), verbose=0)
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


def _command(*args: str) -> list[str]:
    return [sys.executable, os.fspath(PROJECT_ROOT / "sweeps" / "run.py"), *args]


def _data_args(source: data.DataSource) -> list[str]:
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

    scratch.mkdir(parents=True, exist_ok=True)
    dry = []
    for _ in range(plan.startup_repeats):
        start = time.time()
        subprocess.run(_command("--study", "smoke", "--dry-run"), cwd=scratch, check=True, capture_output=True)
        dry.append(time.time() - start)
    first_step = []
    for repeat in range(plan.startup_repeats):
        tracking_uri = f"sqlite:///{scratch}/mlflow-{repeat}.db"
        args = ["--study", "smoke", "--quiet", "--tracking-uri", tracking_uri, "--storage", f"sqlite:///{scratch}/optuna-{repeat}.db",
                "--set", "compare.strategy=[plain] compare.depth=[1] base.epochs=1", *_data_args(source)]
        start = time.time()
        subprocess.run(_command(*args), cwd=scratch, check=True, capture_output=True)
        client = mlflow.MlflowClient(tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], filter_string="tags.`reuse_nets.phase` = 'final'")
        [epoch_time] = client.get_metric_history(runs[0].info.run_id, "epoch_time")
        first_step.append(epoch_time.timestamp / 1000 - epoch_time.value - start)
    return {"dry_run_s": round(statistics.median(dry), 2), "first_step_s": round(statistics.median(first_step), 2), "repeats": plan.startup_repeats}


def _epochs_and_best(spec, scratch: Path) -> tuple[int, str]:
    """Epochs the tuning trials trained (from Optuna's per-epoch reports) and the best cell."""
    import mlflow

    from reuse_nets import optuna_store, phases, report, study_runs

    storage = optuna_store.make_storage(f"sqlite:///{scratch}/optuna.db", spec.execution)
    epochs = 0
    for cell in spec.cells():
        study = optuna_store.load_existing(storage, phases.tune_study_name(spec, cell))
        epochs += sum(len(trial.intermediate_values) for trial in study.get_trials(deepcopy=False))
    mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
    experiment = mlflow.MlflowClient().get_experiment_by_name(spec.name)
    runs = report.collect_final_runs(spec, study_runs.find_parent_run(spec, experiment.experiment_id), storage)
    by_cell: dict[str, list[float]] = {}
    for run in runs:
        by_cell.setdefault(run.cell, []).append(run.test)
    pick = max if spec.objective.direction == "maximize" else min
    best = pick(by_cell, key=lambda cell: statistics.mean(by_cell[cell]))
    return epochs, best


def pruning(plan: Plan, source: data.DataSource, scratch: Path) -> dict:
    """experiments/pruning_check.yaml run with its median pruner and with none (one worker)."""
    result = {"study": "pruning_check", "overrides": list(plan.study_overrides)}
    for label, pruner in (("pruned", ()), ("unpruned", ("tune.pruner.type=none",))):
        spec = _study("pruning_check", plan.study_overrides + pruner, label)
        folder = scratch / label
        seconds = _run(spec, folder, source)
        epochs, best = _epochs_and_best(spec, folder)
        trials = spec.tuning_trials + spec.final_runs
        result[label] = {"tuning_epochs": epochs, "wall_s": round(seconds, 1), "trials": trials, "best_cell": best}
    result["epochs_saved"] = round(1 - result["pruned"]["tuning_epochs"] / result["unpruned"]["tuning_epochs"], 3)
    result["time_saved"] = round(1 - result["pruned"]["wall_s"] / result["unpruned"]["wall_s"], 3)
    result["same_best_cell"] = result["pruned"]["best_cell"] == result["unpruned"]["best_cell"]
    return result


def workers(plan: Plan, source: data.DataSource, scratch: Path, one_worker: dict) -> dict:
    """The unpruned pruning_check study again with 2 worker processes, against its 1-worker run."""
    spec = _study("pruning_check", plan.study_overrides + ("tune.pruner.type=none",), "workers2")
    seconds = _run(spec, scratch, source, workers=2)
    trials = spec.tuning_trials + spec.final_runs
    result = {"study": "pruning_check", "overrides": list(plan.study_overrides) + ["tune.pruner.type=none"]}
    for count, (n, wall) in (("1", (one_worker["trials"], one_worker["wall_s"])), ("2", (trials, seconds))):
        result[count] = {"trials": n, "wall_s": round(wall, 1), "trials_per_minute": round(60 * n / wall, 2)}
    result["speedup"] = round(result["2"]["trials_per_minute"] / result["1"]["trials_per_minute"], 3)
    return result


# --- output --------------------------------------------------------------------


def markdown(result: dict) -> str:
    """The result as the README's tables."""
    m = result["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {result['execution']}; "
        f"commit {m['commit'][:10]}; `{m['command']}`" + (" (quick mode: tiny sizes, not for conclusions)" if result["quick"] else ""),
        "",
        f"Float32 matmul ceiling ({result['ceiling']['matmul_size']}^2): {result['ceiling']['gflops']} GFLOP/s.",
        "",
        "| depth | width | plain fit ex/s | framework ex/s | ratio | framework+XLA ex/s | ratio XLA | first epoch plain / fw / XLA (s) | GFLOP/s (share of ceiling) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for e in result["training"]:
        xla = e.get("framework_xla")
        best = max((e[k] for k in ("plain", "framework", "framework_xla") if k in e), key=lambda v: v["gflops"])
        cells = [
            e["depth"], e["width"], f"{e['plain']['examples_per_s']:.0f}", f"{e['framework']['examples_per_s']:.0f}", f"{e['ratio']:.2f}",
            f"{xla['examples_per_s']:.0f}" if xla else "-", f"{e['ratio_xla']:.2f}" if xla else "-",
            f"{e['plain']['first_epoch_s']} / {e['framework']['first_epoch_s']} / {xla['first_epoch_s'] if xla else '-'}",
            f"{best['gflops']} ({best['ceiling_fraction']:.0%})",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    s, st, p, w = result["sweep"], result["startup"], result["pruning"], result["workers"]
    lines += [
        "",
        "| measure | value |",
        "|---|---|",
        f"| sweep: {s['trials']} smoke trials through the runner vs bare fits | {s['sweep_s']} s vs {s['bare_fits_s']} s = {s['ratio']:.2f}x ({s['per_trial_overhead_s']} s per trial) |",
        f"| start-up: command to `--dry-run` output | {st['dry_run_s']} s |",
        f"| start-up: command to the first training step | {st['first_step_s']} s |",
        f"| pruning: tuning epochs with / without the median pruner | {p['pruned']['tuning_epochs']} / {p['unpruned']['tuning_epochs']} ({p['epochs_saved']:.0%} saved), "
        f"{p['pruned']['wall_s']} s / {p['unpruned']['wall_s']} s; same best cell: {'yes' if p['same_best_cell'] else 'NO'} ({p['pruned']['best_cell']}) |",
        f"| workers: trials per minute with 1 / 2 workers | {w['1']['trials_per_minute']} / {w['2']['trials_per_minute']} ({w['speedup']:.2f}x) |",
    ]
    return "\n".join(lines) + "\n"
