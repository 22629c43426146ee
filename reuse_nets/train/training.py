"""Deterministic training of one trial, recording per-block gradient norms.

Gradient norms come from the real training gradients inside the training step
(`GradientNormModel.train_step`), averaged over each epoch's steps, so that
depth-wise gradient flow is visible per epoch at no extra forward/backward pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import random
import time
from collections.abc import Callable

import numpy as np

from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.names import GRAD_NORM_PREFIX, Outcome
from reuse_nets.nn import models
from reuse_nets.runtime import profile
from reuse_nets.train import checkpoints, early_stopping, execution, schedules, trainers
from reuse_nets.train.data import Dataset

# Called after each epoch with (epoch counted from 1, metrics). May raise to stop
# the trial: `StopTraining` for a decision (pruning), anything else for a failure.
EpochHook = Callable[[int, dict], None]


class StopTraining(Exception):
    """Raised by an epoch hook to end a run early on purpose (e.g. pruning).

    `outcome` names the decision ("pruned"); the message says why.
    """

    def __init__(self, outcome: str, reason: str):
        super().__init__(reason)
        self.outcome = outcome


def seed_everything(seed: int, keep_compiled: bool = False) -> None:
    """Seeds Python, NumPy, TF and Keras, and makes TF ops deterministic.

    `keep_compiled` keeps TensorFlow's kernel cache, which setting TF's global seed
    clears: the next call of every traced step would re-instantiate and re-optimise
    it (1.4 s of a depth-32 trial's first step here, more with depth). The clear
    exists to reset stateful random kernels; the steps traced here hold none (no
    dropout; Keras initialisers and tf.data shuffling take their seeds when built).
    """
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if keep_compiled and _set_seeds_keeping_kernels(seed):
        pass
    else:
        keras.utils.set_random_seed(seed)  # also sets TF's global seed, clearing the kernel cache
    tf.config.experimental.enable_op_determinism()


def _set_seeds_keeping_kernels(seed: int) -> bool:
    """`keras.utils.set_random_seed` minus the kernel-cache clear; False where this
    TensorFlow or Keras lacks the state it sets (the caller then clears as usual)."""
    # Neither library has a public way to set its global seed without the clear:
    # these are the attributes `tf.random.set_seed` and `set_random_seed` assign.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    from tensorflow.python.eager import context

    ctx = context.context()
    if not (
        hasattr(ctx, "_rng")
        and hasattr(ctx, "_seed")
        and hasattr(rng_utils, "GLOBAL_RANDOM_SEED")
        and hasattr(seed_generator, "GLOBAL_SEED_GENERATOR")
    ):
        return False
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    ctx._seed = seed
    ctx._rng = random.Random(seed)
    return True


@functools.cache
def _gradient_norm_model_class():
    """The trainer class, defined on first use so importing this module needs no TF."""
    import keras
    import tensorflow as tf

    class GradientNorms(keras.metrics.Metric):
        """Epoch means of the global and per-block gradient norms, as one vector.

        One accumulator for all norms: a `Mean` per block would add a handful of
        small ops per block to every training step.
        """

        def __init__(self, block_names, **kwargs):
            super().__init__(name="grad_norms", **kwargs)
            self.keys = [f"{GRAD_NORM_PREFIX}global"] + [f"{GRAD_NORM_PREFIX}{n}" for n in block_names]
            self.total = self.add_variable(shape=(len(self.keys),), initializer="zeros", name="total")
            self.count = self.add_variable(shape=(), initializer="zeros", name="count")

        def update_state(self, norms):
            self.total.assign_add(norms)
            self.count.assign_add(1.0)

        def result(self):
            means = self.total / keras.ops.maximum(self.count, 1.0)
            return {key: means[i] for i, key in enumerate(self.keys)}

    class GradientNormModel(keras.Model):
        """Trains `network`, tracking the global and per-block gradient norms.

        Only the trainer: the saved and logged model is `network` itself.
        """

        def __init__(self, network, **kwargs):
            super().__init__(name=f"{network.name}_trainer", **kwargs)
            self.network = network
            self.block_names = models.block_names(network)
            # Segment id of every trainable variable: its block's index, or one
            # past the last block for variables outside the blocks (the head).
            block_of = {
                id(v): i for i, name in enumerate(self.block_names) for v in network.get_layer(name).trainable_variables
            }
            self._segments = [block_of.get(id(v), len(self.block_names)) for v in network.trainable_variables]
            # The tracker lives here, not in the traced step; fit resets it each epoch.
            self.grad_norms = GradientNorms(self.block_names)

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
            # One fused op per gradient (l2_loss = sum(g^2) / 2), then one segment
            # sum: the norms cost a few ops per step whatever the depth. Sums run
            # over stacked values, not `tf.add_n`, whose inputs graph rewrites may
            # reorder, which would change float rounding between processes.
            squares = 2.0 * tf.stack([tf.nn.l2_loss(g) for g in gradients])
            per_block = tf.math.unsorted_segment_sum(squares, self._segments, len(self.block_names) + 1)
            total = tf.reduce_sum(squares, keepdims=True)
            self.grad_norms.update_state(tf.sqrt(tf.concat([total, per_block[:-1]], axis=0)))
            return self.compute_metrics(x, y, y_pred)

        def test_step(self, data):
            # The norms are a model metric too; keep them out of validation logs.
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
        reused_trainer: Whether the compile cache (`trainers`) supplied the trainer.
    """

    model: object
    history: list[dict]
    status: str = Outcome.COMPLETED
    reason: str | None = None
    test_metrics: dict = dataclasses.field(default_factory=dict)
    reused_trainer: bool = False  # trained on a compiled trainer an earlier trial traced
    resumed_epochs: int = 0  # epochs restored from a checkpoint instead of trained here
    # With early stopping (`patience`): the epoch (from 1) whose weights the model holds, and
    # whether training stopped on a plateau before the epoch cap. Without: the last epoch.
    best_epoch: int = 0
    plateaued: bool = False

    def final(self, metric: str) -> float:
        """`metric` of the weights the model holds: the best epoch's with early stopping, else the last's."""
        return self.history[(self.best_epoch or len(self.history)) - 1][metric]


def epoch_timer(examples: int, on_epoch=None):
    """A callback timing each epoch: `seconds` in all and training `rates` (examples/s, validation excluded).

    `on_epoch(epoch, logs, seconds, rate, model)` runs at every epoch's end (epoch from 0).
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rates: list[float] = []
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._train_end = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if self._train_end is None:  # validation starts: training time ends
                self._train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = time.perf_counter()
            self.seconds.append(end - self._start)
            self.rates.append(examples / ((self._train_end or end) - self._start))
            if on_epoch is not None:
                on_epoch(epoch, logs or {}, self.seconds[-1], self.rates[-1], self.model)

    return EpochTimer()


def _epoch_callback(num_train: int, history: list[dict], result: TrainingResult, hooks, checkpoint=None, plateau=None):
    """Records each epoch's metrics and timing, stops on non-finite loss, keeps the best
    epoch's weights and stops on a plateau (given an `early_stopping.Plateau`), runs the
    hooks, then checkpoints the epoch (when given a `checkpoints.Checkpoint`)."""

    def on_epoch(epoch: int, logs: dict, seconds: float, rate: float, model) -> None:
        metrics = {k: float(v) for k, v in logs.items()}
        metrics["epoch_time"] = seconds
        metrics["throughput"] = rate
        history.append(metrics)
        if not math.isfinite(metrics["loss"]):
            result.status = Outcome.DIVERGED
            result.reason = f"non-finite loss ({metrics['loss']}) at epoch {epoch + 1}"
            model.stop_training = True
        if plateau is not None and result.status == Outcome.COMPLETED:
            if plateau.update(epoch + 1, metrics):
                plateau.weights = [np.array(w.numpy()) for w in model.network.weights]
            model.stop_training = model.stop_training or plateau.stop
        for hook in hooks:
            hook(epoch + 1, metrics)
        if checkpoint is not None and result.status == Outcome.COMPLETED:
            with profile.section("checkpoint"):
                # False (not fatal) if it failed; a full disk raises DiskFull
                checkpoint.save(model, history, plateau.weights if plateau is not None else None)

    return epoch_timer(num_train, on_epoch)


# Profile sections holding a trial's tracing, when its trainer was compiled afresh:
# the first call of the traced train and validation steps.
FIRST_STEP = "first training step (traces unless reused)"
FIRST_VALIDATION = "first validation pass (traces unless reused)"


def _profile_callback():
    """Splits a fit's time into profile sections: the first step, validation passes."""
    import keras

    class ProfileSections(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.validations = 0

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0 and not self.validations:
                profile.begin(FIRST_STEP)

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0 and not self.validations:
                profile.end(FIRST_STEP)

        def on_test_begin(self, logs=None):
            profile.begin(FIRST_VALIDATION if not self.validations else "validation")

        def on_test_end(self, logs=None):
            profile.end(FIRST_VALIDATION if not self.validations else "validation")
            self.validations += 1

    return ProfileSections()


def build(config: TrialConfig, dataset: Dataset):
    """The network a config describes, for a dataset's input shape and classes."""
    return models.build_model(
        input_shape=dataset.input_shape, num_classes=dataset.num_classes, **config.model_arguments()
    )


def compile_for_training(
    model, config: TrialConfig, track_gradients: bool = True, xla: bool | None = None, steps_per_epoch: int = 0
):
    """The compiled trainer: the gradient-norm wrapper, or `model` itself.

    `xla` compiles its steps with XLA; None: as this process's execution settings say.
    `steps_per_epoch` sizes a learning-rate schedule (`schedules`); 0 for a trainer that
    only evaluates, whose optimizer never steps (it then gets the peak rate as a float).
    """
    import keras

    trainer = _gradient_norm_model_class()(model) if track_gradients else model
    # A schedule needs the steps per epoch; without one (the default) the rate is a float.
    rate = schedules.learning_rate(config, steps_per_epoch) if steps_per_epoch else config.learning_rate
    optimizer = keras.optimizers.get({"class_name": config.optimizer, "config": {"learning_rate": rate}})
    xla = execution.current().xla if xla is None else xla
    with _xla_allowed(xla):
        trainer.compile(
            optimizer=optimizer,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=xla,
        )
    if trainer.jit_compile != xla:  # Keras falls back silently (with a warning) for layers XLA cannot take
        raise ValueError(f"model {model.name!r} cannot be compiled with XLA; set execution.xla: false")
    return trainer


@contextlib.contextmanager
def _xla_allowed(xla: bool):
    """Lets Keras accept `jit_compile=True` under op determinism.

    Keras refuses XLA whenever op determinism is on, because some XLA ops are not
    deterministic on GPU. This project trains on CPU, where the compiled steps are
    deterministic: tests/test_training.py checks that two runs give identical bytes.
    """
    # Not in TensorFlow's public API; the module Keras's own check reads.
    from tensorflow.python.framework import config as tf_config

    deterministic = tf_config.is_op_determinism_enabled()
    if xla and deterministic:
        tf_config.disable_op_determinism()
    try:
        yield
    finally:
        if xla and deterministic:
            tf_config.enable_op_determinism()


def train(
    config: TrialConfig,
    dataset: Dataset,
    hooks: tuple[EpochHook, ...] = (),
    evaluate_test: bool = True,
    on_lease: Callable[[bool], None] | None = None,
    checkpoint: checkpoints.Checkpoint | None = None,
    on_resume: Callable[[checkpoints.Restored], None] | None = None,
) -> TrainingResult:
    """Trains the network of `config` on `dataset`, deterministically.

    The test split, if the dataset has one, is evaluated after the last epoch
    unless `evaluate_test` is False (tuning runs never see it).

    Two calls with the same config and data give identical metrics on CPU.
    Exceptions raised by `hooks` (pruning, interruption) propagate. `on_lease(reused)`
    hears, before training, whether the compile cache supplied the trainer.

    With a `checkpoint`, every epoch is checkpointed, and a checkpoint of this config
    left by an earlier attempt is resumed: its epochs' metrics are replayed through
    `hooks` (so the run logs every epoch), `on_resume` hears of it, and training goes
    on from the next epoch, ending bit-identical to an attempt never stopped.
    """
    import keras

    settings = execution.ensure_pinned()
    key = trainers.architecture(config, dataset.input_shape, dataset.num_classes, settings.xla)
    reuse = trainers.cached(key)
    if not reuse:
        # Resets Keras's layer-name counters and state (names here are all explicit,
        # so a reused trainer's trial builds the same names without it). Without a
        # forced gc.collect() (~0.5 s): the collector frees old models as it runs.
        keras.backend.clear_session(free_memory=False)
    seed_everything(config.seed, keep_compiled=reuse)
    steps = dataset.batches_per_epoch("train", config.batch_size)
    with profile.section("build and compile"):
        model = build(config, dataset)
        lease = trainers.lease(
            model,
            key,
            set_rate=lambda optimizer: schedules.apply(optimizer, config, steps),
            compile_fn=lambda network: compile_for_training(network, config, steps_per_epoch=steps),
            build_fn=lambda: build(config, dataset),
        )
    trainer = lease.trainer
    if on_lease is not None:
        on_lease(lease.reused)
    history: list[dict] = []
    result = TrainingResult(model=model, history=history, reused_trainer=lease.reused)
    train_data = dataset.pipeline("train", config.batch_size, seed=config.seed)
    val_data = dataset.pipeline("validation", config.batch_size)
    plateau = early_stopping.Plateau.of(config)
    callbacks = [_epoch_callback(dataset.num_examples("train"), history, result, hooks, checkpoint, plateau)]
    if profile.enabled():
        callbacks.append(_profile_callback())
    try:
        restored = checkpoint.restore(trainer) if checkpoint is not None else None
        if restored is not None:
            history.extend(restored.history)
            result.resumed_epochs = restored.epochs
            if on_resume is not None:
                on_resume(restored)
            for epoch, metrics in enumerate(restored.history, 1):
                if plateau is not None:
                    plateau.update(epoch, metrics)  # the state is the history's; the weights were stored
                for hook in hooks:
                    hook(epoch, metrics)
            if plateau is not None:
                plateau.weights = restored.best_weights
            if restored.epochs < config.epochs:
                train_data = dataset.resumed_pipeline(
                    "train", config.batch_size, config.seed, restored.epochs, config.epochs
                )
        # A checkpoint of the last epoch (killed while testing or logging the model), or of
        # the epoch a plateau stopped at, leaves none to train.
        if result.resumed_epochs < config.epochs and not (plateau is not None and plateau.stop):
            with profile.section("training steps"):
                trainer.fit(
                    train_data,
                    validation_data=val_data,
                    epochs=config.epochs,
                    initial_epoch=result.resumed_epochs,
                    # One pass over the remaining epochs' batches (`resumed_pipeline`); None: one per epoch.
                    steps_per_epoch=dataset.batches_per_epoch("train", config.batch_size) if restored else None,
                    verbose=0,
                    shuffle=False,  # the pipeline shuffles, with the trial's seed
                    callbacks=callbacks,
                )
        if plateau is not None and result.status == Outcome.COMPLETED:
            _keep_best(trainer.network, plateau, result)
        if evaluate_test and result.status == Outcome.COMPLETED and "test" in dataset.splits:
            with profile.section("test evaluation"):
                scores = trainer.evaluate(dataset.pipeline("test", config.batch_size), verbose=0, return_dict=True)
            result.test_metrics = {f"test_{k}": float(v) for k, v in scores.items()}
    except StopTraining:
        lease.give_back()  # a decision, not a fault: the trainer stays usable
        raise
    except BaseException:
        lease.discard()  # interrupted or failed inside a step: never reuse what it left
        raise
    lease.give_back()
    return result


def _keep_best(network, plateau: early_stopping.Plateau, result: TrainingResult) -> None:
    """Gives `network` back its best epoch's weights (those the run reports on) and records which."""
    result.best_epoch, result.plateaued = plateau.best_epoch, plateau.stop
    if plateau.best_epoch == len(result.history):
        return  # the last epoch was the best: the network holds its weights already
    if plateau.weights is None:  # a checkpoint of this config always stores them
        raise RuntimeError(f"the weights of best epoch {plateau.best_epoch} were not kept")
    for variable, value in zip(network.weights, plateau.weights, strict=True):
        variable.assign(value)
