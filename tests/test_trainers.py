"""The compile cache: trials reusing a traced trainer give the bytes a fresh build gives."""

import contextlib

import numpy as np
import pytest

from reuse_nets.design.study_spec import ExecutionSpec
from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.train import trainers, training

TIMING_METRICS = {"epoch_time", "throughput"}

# Each row is an architecture; each is trained twice more with other seeds and learning
# rates after its first trial, so the repeats run on the first one's traced steps.
ARCHITECTURES = [
    dict(strategy="residual", depth=3, optimizer="adam", normalization="layer", branch_gain_init=1.0),
    dict(strategy="masked", depth=2, learned_mask=True, keep_ratio=0.25, optimizer="adamw", reuse_source="stem"),
    dict(strategy="concat", depth=2, optimizer="sgd"),
    # Batch normalisation's moving statistics are non-trainable weights: a reused trainer must reset them too.
    dict(strategy="plain", depth=3, optimizer="rmsprop", normalization="batch", kernel_initializer="glorot_uniform"),
]
# (seed, learning rate); the last repeats the first seed, as a cell's tuning trials do.
REPEATS = [(0, 1e-3), (7, 3e-3), (11, 5e-4), (0, 2e-3)]


@contextlib.contextmanager
def capacity(value: int):
    previous = trainers.capacity()
    trainers.clear()
    trainers.set_capacity(value)
    try:
        yield
    finally:
        trainers.clear()
        trainers.set_capacity(previous)


def config_of(dataset_config, architecture, seed, learning_rate, epochs=2):
    return TrialConfig(
        width=24,
        batch_size=128,
        epochs=epochs,
        seed=seed,
        learning_rate=learning_rate,
        dataset=dataset_config,
        **architecture,
    )


def fingerprint(result):
    """Every logged number of a run, its final weights' bytes and its saved config."""
    history = [{k: v for k, v in epoch.items() if k not in TIMING_METRICS} for epoch in result.history]
    weights = [(w.path, np.asarray(w).tobytes()) for w in result.model.weights]
    return history, result.test_metrics, weights, result.model.get_config()


def run_all(dataset, dataset_config):
    """Interleaves architectures, as a study's cells do, and returns each run's fingerprint."""
    prints, reused = [], []
    for seed, learning_rate in REPEATS:
        for architecture in ARCHITECTURES:
            result = training.train(config_of(dataset_config, architecture, seed, learning_rate), dataset)
            prints.append(fingerprint(result))
            reused.append(result.reused_trainer)
    return prints, reused


@pytest.fixture(scope="module")
def fresh_runs(fashion_mnist, fashion_mnist_config):
    with capacity(0):
        return run_all(fashion_mnist, fashion_mnist_config)


def test_default_capacity_is_the_execution_spec_default():
    assert trainers.DEFAULT_CAPACITY == ExecutionSpec().compile_cache > 0


def test_reused_trainers_give_the_bytes_of_a_fresh_build(fresh_runs, fashion_mnist, fashion_mnist_config):
    fresh, fresh_reused = fresh_runs
    with capacity(len(ARCHITECTURES)):
        cached, reused = run_all(fashion_mnist, fashion_mnist_config)
    assert not any(fresh_reused)
    # The first trial of each architecture traces; every repeat reuses its trainer.
    assert reused == [False] * len(ARCHITECTURES) + [True] * (len(ARCHITECTURES) * (len(REPEATS) - 1))
    for index, (a, b) in enumerate(zip(fresh, cached, strict=True)):
        assert a == b, f"run {index} differs from its fresh build"


def test_a_bounded_cache_evicts_the_least_recently_used_and_stays_exact(
    fresh_runs, fashion_mnist, fashion_mnist_config
):
    fresh, _ = fresh_runs
    with capacity(2):  # four architectures in turn: every lookup misses
        cached, reused = run_all(fashion_mnist, fashion_mnist_config)
        assert len(trainers._CACHE) == 2
    assert not any(reused)
    assert cached == fresh


def test_the_least_recently_used_architecture_goes_first(fashion_mnist, fashion_mnist_config):
    a, b, c = (config_of(fashion_mnist_config, ARCHITECTURES[i], 0, 1e-3, epochs=1) for i in range(3))
    with capacity(2):
        used = [training.train(config, fashion_mnist).reused_trainer for config in (a, b, a, c, a, b)]
    # a is used again before c arrives, so c evicts b, not a; b then misses.
    assert used == [False, False, True, False, True, False]


def test_a_returned_model_is_not_changed_by_later_trials(fashion_mnist, fashion_mnist_config):
    architecture = ARCHITECTURES[0]
    with capacity(1):
        first = training.train(config_of(fashion_mnist_config, architecture, 0, 1e-3), fashion_mnist)
        before = fingerprint(first)
        second = training.train(config_of(fashion_mnist_config, architecture, 1, 1e-2), fashion_mnist)
    assert second.reused_trainer
    assert second.model is not first.model
    assert fingerprint(first) == before


def test_a_pruned_trial_leaves_the_trainer_usable_and_exact(fashion_mnist, fashion_mnist_config):
    architecture = ARCHITECTURES[0]
    later = config_of(fashion_mnist_config, architecture, 5, 2e-3, epochs=3)

    def prune(epoch, metrics):
        raise training.StopTraining("pruned", "test")

    with capacity(0):
        expected = fingerprint(training.train(later, fashion_mnist))
    with capacity(1):
        with pytest.raises(training.StopTraining):
            training.train(config_of(fashion_mnist_config, architecture, 4, 1e-3, epochs=3), fashion_mnist, (prune,))
        result = training.train(later, fashion_mnist)
    assert result.reused_trainer
    assert fingerprint(result) == expected


def test_a_failed_trial_drops_its_trainer(fashion_mnist, fashion_mnist_config):
    config = config_of(fashion_mnist_config, ARCHITECTURES[0], 0, 1e-3)

    def fail(epoch, metrics):
        raise RuntimeError("boom")

    with capacity(1):
        with pytest.raises(RuntimeError, match="boom"):
            training.train(config, fashion_mnist, (fail,))
        assert not training.train(config, fashion_mnist).reused_trainer


def test_architecture_ignores_only_the_seed_learning_rate_and_epochs(fashion_mnist_config):
    base = config_of(fashion_mnist_config, ARCHITECTURES[0], 0, 1e-3)

    def key(config, xla=False):
        return trainers.architecture(config, (28, 28, 1), 10, xla)

    same = [base.model_copy(update=u) for u in ({"seed": 9}, {"learning_rate": 0.5}, {"epochs": 7})]
    assert all(key(config) == key(base) for config in same)
    other = [
        base.model_copy(update=u)
        for u in ({"depth": 4}, {"width": 25}, {"optimizer": "sgd"}, {"batch_size": 64}, {"activation": "tanh"})
    ]
    assert all(key(config) != key(base) for config in other)
    assert key(base, xla=True) != key(base)
    assert trainers.architecture(base, (32, 32, 3), 10, False) != key(base)


def test_a_negative_capacity_is_refused():
    with pytest.raises(ValueError, match="capacity"):
        trainers.set_capacity(-1)
