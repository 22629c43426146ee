"""Deterministic training of one trial, recording per-block gradient norms.

Gradient norms come from the real training gradients inside the training step
(`GradientNormModel.train_step`), averaged over each epoch's steps, so that
depth-wise gradient flow is visible per epoch at no extra forward/backward pass.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from typing import Callable

import numpy as np

from reuse_nets import models
from reuse_nets.config import TrialConfig
from reuse_nets.data import Dataset

# Called after each epoch with (epoch counted from 1, metrics). May raise to stop
# the trial, e.g. `optuna.TrialPruned` from the sweep's pruning hook.
EpochHook = Callable[[int, dict], None]

GRAD_NORM_PREFIX = "grad_norm/"


def configure_threads(threads: int | None) -> None:
    """Caps TensorFlow's thread pools; call before TensorFlow runs any op."""
    if not threads:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy, TF and Keras, and makes TF ops deterministic."""
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _gradient_norm_model_class():
    import keras
    import tensorflow as tf

    class GradientNormModel(keras.Model):
        """Trains `network`, tracking the global and per-block gradient norms.

        Only the trainer: the saved and logged model is `network` itself.
        """

        def __init__(self, network, **kwargs):
            super().__init__(name=f"{network.name}_trainer", **kwargs)
            self.network = network
            index = {id(v): i for i, v in enumerate(network.trainable_variables)}
            self.block_names = models.block_names(network)
            self._groups = [
                [index[id(v)] for v in network.get_layer(name).trainable_variables]
                for name in self.block_names
            ]
            # Trackers live here, not in the traced step; fit resets them each epoch.
            self.norm_trackers = [keras.metrics.Mean(name=f"{GRAD_NORM_PREFIX}global")] + [
                keras.metrics.Mean(name=f"{GRAD_NORM_PREFIX}{name}") for name in self.block_names
            ]

        def call(self, inputs, training=False):
            return self.network(inputs, training=training)

        def train_step(self, data):
            x, y = data
            variables = self.network.trainable_variables
            with tf.GradientTape() as tape:
                y_pred = self.network(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            gradients = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(gradients, variables))
            # Sums over stacked squares, not `tf.add_n`: graph rewrites may reorder
            # AddN's inputs, which changes float rounding between processes.
            squares = tf.stack([tf.reduce_sum(tf.square(g)) for g in gradients])
            self.norm_trackers[0].update_state(tf.sqrt(tf.reduce_sum(squares)))
            for tracker, group in zip(self.norm_trackers[1:], self._groups):
                tracker.update_state(tf.sqrt(tf.reduce_sum(tf.gather(squares, group))))
            return self.compute_metrics(x, y, y_pred)

        def test_step(self, data):
            # The norm trackers are model metrics too; keep them out of validation logs.
            logs = super().test_step(data)
            return {k: v for k, v in logs.items() if not k.startswith(GRAD_NORM_PREFIX)}

    return GradientNormModel


@dataclasses.dataclass
class TrainingResult:
    """What a training run produced.

    Attributes:
        model: The trained network (not the trainer wrapper).
        history: One metrics dict per epoch run, in order.
        status: "completed" or "diverged" (non-finite loss stopped training).
        reason: Why training stopped early, if it did.
        test_metrics: `test_loss`, `test_accuracy` where a test split is used.
    """

    model: object
    history: list[dict]
    status: str = "completed"
    reason: str | None = None
    test_metrics: dict = dataclasses.field(default_factory=dict)

    def final(self, metric: str) -> float:
        return self.history[-1][metric]


def _epoch_callback(num_train: int, history: list[dict], result: TrainingResult, hooks):
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Times epochs, stops on non-finite loss, runs the per-epoch hooks."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            self._train_end = None

        def on_test_begin(self, logs=None):
            if self._train_end is None:  # validation starts: training time ends
                self._train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = time.perf_counter()
            train_time = (self._train_end or end) - self._start
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            metrics["epoch_time"] = end - self._start
            metrics["throughput"] = num_train / train_time
            history.append(metrics)
            if not math.isfinite(metrics["loss"]):
                result.status = "diverged"
                result.reason = f"non-finite loss ({metrics['loss']}) at epoch {epoch + 1}"
                self.model.stop_training = True
            for hook in hooks:
                hook(epoch + 1, metrics)

    return EpochRecorder()


def build(config: TrialConfig, dataset: Dataset):
    """The network a config describes, for a dataset's input shape and classes."""
    return models.build_model(
        config.strategy,
        config.depth,
        config.width,
        dataset.input_shape,
        dataset.num_classes,
        family=config.family,
        activation=config.activation,
        kernel_size=config.kernel_size,
        reuse_source=config.reuse_source,
        keep_ratio=config.keep_ratio,
        learned_mask=config.learned_mask,
        mask_seed=config.seed,
    )


def compile_for_training(model, config: TrialConfig, track_gradients: bool = True):
    """The compiled trainer: the gradient-norm wrapper, or `model` itself."""
    import keras

    trainer = _gradient_norm_model_class()(model) if track_gradients else model
    optimizer = keras.optimizers.get({"class_name": config.optimizer, "config": {"learning_rate": config.learning_rate}})
    trainer.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    return trainer


def train(config: TrialConfig, dataset: Dataset, hooks: tuple[EpochHook, ...] = ()) -> TrainingResult:
    """Trains the network of `config` on `dataset`, deterministically.

    Two calls with the same config and data give identical metrics on CPU.
    Exceptions raised by `hooks` (pruning, interruption) propagate.
    """
    import keras

    keras.backend.clear_session()
    seed_everything(config.seed)
    model = build(config, dataset)
    trainer = compile_for_training(model, config)
    history: list[dict] = []
    result = TrainingResult(model=model, history=history)
    train_data = dataset.pipeline("train", config.batch_size, seed=config.seed)
    val_data = dataset.pipeline("validation", config.batch_size)
    trainer.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        verbose=0,
        shuffle=False,  # the pipeline shuffles, with the trial's seed
        callbacks=[_epoch_callback(dataset.num_examples("train"), history, result, hooks)],
    )
    if result.status == "completed" and "test" in dataset.splits:
        scores = trainer.evaluate(dataset.pipeline("test", config.batch_size), verbose=0, return_dict=True)
        result.test_metrics = {f"test_{k}": float(v) for k, v in scores.items()}
    return result


def measure_gradient_norm_overhead(config: TrialConfig, dataset: Dataset, epochs: int = 4, repeats: int = 3):
    """Median epoch time with gradient-norm tracking over that of plain `model.fit`.

    Same model, data and batches; the two are interleaved, first (tracing) epoch
    dropped, so machine noise hits both alike.

    Returns:
        `{"ratio": ..., "tracked_s": ..., "plain_s": ..., "throughput": ...}`.
    """
    import keras

    times = {True: [], False: []}
    for _ in range(repeats):
        for tracked in (False, True):
            keras.backend.clear_session()
            seed_everything(config.seed)
            trainer = compile_for_training(build(config, dataset), config, track_gradients=tracked)
            history: list[dict] = []
            recorder = _epoch_callback(dataset.num_examples("train"), history, TrainingResult(None, history), ())
            trainer.fit(
                dataset.pipeline("train", config.batch_size, seed=config.seed),
                epochs=epochs,
                verbose=0,
                shuffle=False,
                callbacks=[recorder],
            )
            times[tracked].extend(h["epoch_time"] for h in history[1:])
    tracked_s, plain_s = float(np.median(times[True])), float(np.median(times[False]))
    return {
        "ratio": tracked_s / plain_s,
        "tracked_s": tracked_s,
        "plain_s": plain_s,
        "throughput": dataset.num_examples("train") / tracked_s,
    }
