"""Compiled trainers kept per architecture, so a process traces each architecture's steps once.

Tracing a deep network's train, validation and test steps costs more than several
of its epochs, and every trial used to repeat it. Trials that differ only in seed,
learning rate and epoch count share an architecture: they can run the same traced
steps on the same variables. A reused trainer starts each trial exactly as a fresh
build would: the trial's freshly built (seeded) weights are copied into its
network, its optimizer variables are restored to their values before the first
step, and the trial's learning rate is assigned to the learning-rate variable;
Keras resets the metrics every epoch. After training, the weights are copied back
into the trial's own freshly built model, which is what is returned, logged and
saved: nothing outside this module sees the cached network.

Results are bit-identical to a fresh build (tests/test_trainers.py compares every
logged metric's bytes with the cache on and off). The cache is bounded (the least
recently used architecture goes first) and is an execution setting
(`execution.compile_cache`, 0 turns it off), logged on every trial run.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from reuse_nets.design.study_spec import ExecutionSpec
from reuse_nets.design.trial_config import TrialConfig

DEFAULT_CAPACITY: int = ExecutionSpec.model_fields["compile_cache"].default

_capacity = DEFAULT_CAPACITY


def set_capacity(capacity: int) -> None:
    """How many compiled architectures this process keeps (0: compile every trial afresh)."""
    global _capacity
    if capacity < 0:
        raise ValueError(f"compile cache capacity must be >= 0, got {capacity}")
    _capacity = capacity
    while len(_CACHE) > capacity:
        _CACHE.popitem(last=False)


def capacity() -> int:
    return _capacity


def clear() -> None:
    """Forgets every compiled trainer (frees their graphs and variables)."""
    _CACHE.clear()


def architecture(config: TrialConfig, input_shape: tuple, num_classes: int, xla: bool) -> tuple:
    """What a traced step depends on: everything but the seed and the optimizer's values."""
    # The learning rate (and a schedule's numbers) are variables, the epoch count a loop bound
    # and early stopping a decision between epochs: none of them is traced.
    shape_only = config.model_copy(
        update={
            "seed": 0,
            "learning_rate": 1.0,
            "epochs": 1,
            "warmup_epochs": min(config.warmup_epochs, 1),  # whether there is one: a schedule or a float
            "patience": None,
            "min_delta": 0.0,
            "monitor": "val_accuracy",
        }
    )
    return (shape_only, tuple(input_shape), int(num_classes), bool(xla))


@dataclasses.dataclass
class _Entry:
    trainer: Any  # the compiled trainer (its `network` holds the cached variables)
    optimizer_start: list  # every optimizer variable's value before the first step


_CACHE: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()


@dataclasses.dataclass
class Lease:
    """A trainer lent to one trial: `trainer` trains; `give_back` leaves the weights in `model`."""

    trainer: Any
    model: Any
    reused: bool
    key: tuple | None = None

    def give_back(self) -> None:
        """Copies the trained weights into the trial's own model (no-op when it trained in place)."""
        network = self.trainer.network
        if network is not self.model:
            _copy(network.weights, self.model.weights)

    def discard(self) -> None:
        """Drops the cached trainer: its step failed in a way that may have left it unusable."""
        if self.key is not None:
            _CACHE.pop(self.key, None)


def _copy(sources, targets) -> None:
    for source, target in zip(sources, targets, strict=True):
        target.assign(source)


def cached(key: tuple) -> bool:
    """Whether a compiled trainer for architecture `key` is at hand."""
    return _capacity > 0 and key in _CACHE


def lease(model, key: tuple, set_rate, compile_fn, build_fn) -> Lease:
    """A compiled trainer for architecture `key`, set to start exactly as `model` does.

    `compile_fn(network)` compiles a new trainer; `build_fn()` builds another
    network of the same architecture (its weights are overwritten); `set_rate(optimizer)`
    sets the trial's learning rate (or schedule) on a reused trainer's optimizer. With the cache
    off, the trainer is compiled around `model` itself, as before the cache existed.
    """
    if _capacity == 0:
        return Lease(compile_fn(model), model, reused=False)
    entry = _CACHE.get(key)
    reused = entry is not None
    if entry is None:
        # A network of its own: the trial's model is returned to the caller and
        # must not change when a later trial trains on the cached variables.
        trainer = compile_fn(build_fn())
        optimizer = trainer.optimizer
        # Built here, as the first `apply_gradients` would build it, so that its
        # starting values can be restored for the next trial.
        optimizer.build(trainer.network.trainable_variables)
        entry = _Entry(trainer, [variable.numpy() for variable in optimizer.variables])
        _CACHE[key] = entry
        while len(_CACHE) > _capacity:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    trainer = entry.trainer
    _copy(model.weights, trainer.network.weights)
    for variable, value in zip(trainer.optimizer.variables, entry.optimizer_start, strict=True):
        variable.assign(value)
    set_rate(trainer.optimizer)
    return Lease(trainer, model, reused=reused, key=key)
