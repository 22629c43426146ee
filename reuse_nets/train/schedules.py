"""The learning rate over training: constant, or linear warm-up then constant or cosine decay.

A constant rate without warm-up is a plain float, exactly as before schedules existed.
Otherwise the optimizer gets a `WarmupSchedule` whose peak, warm-up length and decay
length are variables, not traced constants: the compile cache (`trainers`) reuses one
traced step across trials that differ in learning rate and epoch count, and sets them
per trial (`apply`).
"""

from __future__ import annotations

import functools
import math

from reuse_nets.design.trial_config import TrialConfig


def uses_schedule(config: TrialConfig) -> bool:
    """Whether the rate changes during training (else it is `config.learning_rate` throughout)."""
    return config.warmup_epochs > 0 or config.lr_schedule != "constant"


def rate_at(config: TrialConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step `step` (from 0), in plain Python: the reference
    `WarmupSchedule` is tested against."""
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    if config.lr_schedule == "cosine":
        decay = max(config.epochs * steps_per_epoch - warmup, 1)
        return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, decay) / decay))
    return config.learning_rate


@functools.cache
def _schedule_class():
    import keras

    class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """`rate_at` as a schedule over the optimizer's step, with its numbers in variables."""

        def __init__(self, cosine: bool):
            self.cosine = cosine
            self.peak = keras.Variable(0.0, trainable=False, name="lr_peak")
            self.warmup_steps = keras.Variable(0.0, trainable=False, name="lr_warmup_steps")
            self.decay_steps = keras.Variable(1.0, trainable=False, name="lr_decay_steps")

        def __call__(self, step):
            from keras import ops

            step = ops.cast(step, "float32")
            warming = self.peak * (step + 1.0) / ops.maximum(self.warmup_steps, 1.0)
            after = self.peak
            if self.cosine:
                progress = ops.minimum(step - self.warmup_steps, self.decay_steps) / self.decay_steps
                after = self.peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
            return ops.where(step < self.warmup_steps, warming, after)

        def get_config(self):
            return {"cosine": self.cosine}

    return WarmupSchedule


def learning_rate(config: TrialConfig, steps_per_epoch: int):
    """What the optimizer is built with: a float, or a `WarmupSchedule` set for this config."""
    if not uses_schedule(config):
        return config.learning_rate
    schedule = _schedule_class()(cosine=config.lr_schedule == "cosine")
    _set(schedule, config, steps_per_epoch)
    return schedule


def apply(optimizer, config: TrialConfig, steps_per_epoch: int) -> None:
    """Sets a built optimizer's rate for `config` (a cached trainer's, before each trial)."""
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, _schedule_class()):
        _set(schedule, config, steps_per_epoch)
    else:
        optimizer.learning_rate = config.learning_rate


def _set(schedule, config: TrialConfig, steps_per_epoch: int) -> None:
    warmup = config.warmup_epochs * steps_per_epoch
    schedule.peak.assign(config.learning_rate)
    schedule.warmup_steps.assign(float(warmup))
    schedule.decay_steps.assign(float(max(config.epochs * steps_per_epoch - warmup, 1)))
