"""Benchmark sections about the training step: the matmul ceiling, plain fit vs this project.

Part of the benchmark (`reuse_nets.bench.benchmark`; its plans are in `bench.plans`); see its docstring.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from reuse_nets.bench.plans import Plan, Size
from reuse_nets.design.trial_config import DatasetConfig, TrialConfig
from reuse_nets.train import data, execution

VALIDATION_SPLIT = "train[50000:51000]"  # disjoint from every benchmarked train slice


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
    return {
        "matmul_size": n,
        "gflops": round(2 * n**3 / min(times) / 1e9, 2),
        "median_gflops": round(2 * n**3 / statistics.median(times) / 1e9, 2),
    }


def training_flops_per_example(model) -> int:
    """Forward + backward FLOPs of one example through the dense kernels.

    Counts the matmuls (2 * fan_in * fan_out per example each), which dominate
    an MLP's step; elementwise ops are left out, so the rate is a lower bound.
    """
    matmuls = [2 * int(w.shape[0]) * int(w.shape[1]) for w in model.trainable_weights if len(w.shape) == 2]
    # Forward, weight gradients, input gradients; the first layer needs no input gradient.
    return 3 * sum(matmuls) - (matmuls[0] if matmuls else 0)


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
        dataset=DatasetConfig(
            train_split=f"train[:{size.examples}]", validation_split=VALIDATION_SPLIT, test_split=None
        ),
    )


def plain_pipeline(dataset: data.Dataset, role: str, batch_size: int, seed: int | None):
    """What a plain Keras user writes for in-memory data: the same batches as ours."""
    import tensorflow as tf

    images, labels = dataset.arrays[role]
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if seed is not None:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _plain_fit(config: TrialConfig, dataset: data.Dataset) -> tuple[list[float], list[float]]:
    """Plain `model.fit` of the same network (same init, same batches): epoch rates, seconds."""
    import keras

    from reuse_nets.train import training

    keras.backend.clear_session()
    training.seed_everything(config.seed)
    model = training.build(config, dataset)
    model = training.compile_for_training(model, config, track_gradients=False, xla=False)
    timer = training.epoch_timer(dataset.num_examples("train"))
    model.fit(
        plain_pipeline(dataset, "train", config.batch_size, config.seed),
        validation_data=plain_pipeline(dataset, "validation", config.batch_size, None),
        epochs=config.epochs,
        verbose=0,
        shuffle=False,  # the pipeline shuffles (Keras warns that it ignores shuffle=True on a dataset)
        callbacks=[timer],
    )
    return timer.rates, timer.seconds


def _framework_fit(config: TrialConfig, dataset: data.Dataset, xla: bool) -> tuple[list[float], list[float]]:
    """This project's training of a trial: gradient norms on, every epoch logged to MLflow."""
    import mlflow

    from reuse_nets.store import tracking
    from reuse_nets.train import training

    # Not mlflow.set_experiment: it also sets MLFLOW_EXPERIMENT_ID for child processes.
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("benchmark")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("benchmark")
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
    return {
        "examples_per_s": round(statistics.median(rates), 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "epochs": len(rates),
    }


def training_speed(size: Size, plan: Plan, source: data.DataSource, ceiling_gflops: float, say=print) -> dict:
    """Plain fit vs framework (and framework with XLA) on one size, interleaved.

    The first epoch of a fit may trace (and with XLA compile) the step: it is
    reported as `first_epoch_s`, never counted in examples/s. Plain fit traces in
    every repeat; the framework only in its first, as the compile cache reuses the
    trainer in later repeats, as it does for a study's trials.
    """
    from reuse_nets.train import training

    dataset = _dataset(size, source)
    config = _config(size, plan)
    variants = {
        "plain": lambda: _plain_fit(config, dataset),
        "framework": lambda: _framework_fit(config, dataset, xla=False),
    }
    if plan.xla:
        variants["framework_xla"] = lambda: _framework_fit(config, dataset, xla=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    first: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(plan.repeats):
        for name, fit in variants.items():
            epoch_rates, seconds = fit()
            rates[name].extend(epoch_rates[1:])
            first[name].append(seconds[0])
            say(
                f"  depth {size.depth} width {size.width} repeat {repeat + 1}/{plan.repeats} {name}: {statistics.median(epoch_rates[1:]):.0f} examples/s"
            )
    flops = training_flops_per_example(training.build(config, dataset))
    entry: dict[str, Any] = {
        "depth": size.depth,
        "width": size.width,
        "batch_size": plan.batch_size,
        "examples_per_epoch": size.examples,
        "training_gflop_per_example": round(flops / 1e9, 6),
    }
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
