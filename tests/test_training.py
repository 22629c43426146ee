"""Tests of deterministic training with per-block gradient norms, on real fashion_mnist."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from reuse_nets import names
from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.names import GRAD_NORM_PREFIX
from reuse_nets.nn import layers, models
from reuse_nets.train import execution, training

TIMING_METRICS = {"epoch_time", "throughput"}


def small_config(dataset_config, **overrides):
    fields = dict(strategy="residual", depth=3, width=32, epochs=2, batch_size=128, seed=0, dataset=dataset_config)
    return TrialConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def short_run(fashion_mnist, fashion_mnist_config):
    """One short training run, shared by the tests that only read its result."""
    config = small_config(fashion_mnist_config)
    return config, training.train(config, fashion_mnist)


def without_timing(history):
    return [{k: v for k, v in epoch.items() if k not in TIMING_METRICS} for epoch in history]


def test_every_epoch_records_metrics_and_one_norm_per_block(short_run):
    config, result = short_run
    assert result.status == "completed" and result.reason is None
    assert len(result.history) == config.epochs
    blocks = {f"{GRAD_NORM_PREFIX}block_{i:02d}" for i in range(1, config.depth + 1)}
    expected = {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time", "throughput", f"{GRAD_NORM_PREFIX}global"}
    for epoch in result.history:
        assert set(epoch) == expected | blocks  # no val_grad_norm/..., nothing else
        assert all(math.isfinite(value) for value in epoch.values())
        assert epoch["epoch_time"] > 0 and epoch["throughput"] > 0


def test_gradient_norms_are_positive_and_bounded_by_the_global_norm(short_run):
    _, result = short_run
    for epoch in result.history:
        norms = {k: v for k, v in epoch.items() if k.startswith("grad_norm/block_")}
        assert all(0 < value < math.inf for value in norms.values())
        # Per step, the global norm covers every block; the epoch means inherit it.
        assert all(epoch["grad_norm/global"] >= value for value in norms.values())


def test_training_learns_and_evaluates_on_test(short_run):
    _, result = short_run
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["val_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert set(result.test_metrics) == {"test_loss", "test_accuracy"}
    assert 0.5 < result.test_metrics["test_accuracy"] <= 1.0
    assert result.final("val_accuracy") == result.history[-1]["val_accuracy"]


def test_same_seed_gives_identical_metrics(short_run, fashion_mnist):
    config, first = short_run
    second = training.train(config, fashion_mnist)
    assert without_timing(second.history) == without_timing(first.history)  # exact, not approximate
    assert second.test_metrics == first.test_metrics


def test_different_seed_gives_different_metrics(short_run, fashion_mnist):
    config, first = short_run
    other = training.train(config.model_copy(update={"seed": 1}), fashion_mnist)
    for key in ("loss", "val_loss", "grad_norm/global", "grad_norm/block_01"):
        assert [h[key] for h in other.history] != [h[key] for h in first.history], key


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_nan_learning_rate_ends_diverged_without_raising(fashion_mnist, fashion_mnist_config, optimizer):
    config = small_config(
        fashion_mnist_config, strategy="plain", depth=4, optimizer=optimizer, learning_rate=1e6, epochs=3
    )
    result = training.train(config, fashion_mnist)
    assert result.status == "diverged"
    assert "non-finite loss" in result.reason
    assert len(result.history) < config.epochs  # stopped early
    assert not math.isfinite(result.history[-1]["loss"])
    assert result.test_metrics == {}


def test_hooks_see_every_epoch(fashion_mnist, fashion_mnist_config):
    config = small_config(fashion_mnist_config, depth=1, width=8)
    seen = []
    result = training.train(config, fashion_mnist, hooks=(lambda epoch, metrics: seen.append((epoch, metrics)),))
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert [metrics for _, metrics in seen] == result.history


def test_hook_exception_propagates(fashion_mnist, fashion_mnist_config):
    class Stop(Exception):
        pass

    def stop_at_first_epoch(epoch, metrics):
        raise Stop(f"stop at {epoch}")

    config = small_config(fashion_mnist_config, depth=1, width=8)
    with pytest.raises(Stop, match="stop at 1"):
        training.train(config, fashion_mnist, hooks=(stop_at_first_epoch,))


def test_stop_training_from_a_hook_propagates_with_its_outcome(fashion_mnist, fashion_mnist_config):
    seen = []

    def prune_at_second_epoch(epoch, metrics):
        seen.append(epoch)
        if epoch == 2:
            raise training.StopTraining("pruned", f"pruned at epoch {epoch}")

    config = small_config(fashion_mnist_config, depth=1, width=8, epochs=4)
    with pytest.raises(training.StopTraining, match="pruned at epoch 2") as info:
        training.train(config, fashion_mnist, hooks=(prune_at_second_epoch,))
    assert info.value.outcome == "pruned"
    assert str(info.value) == "pruned at epoch 2"
    assert seen == [1, 2]  # no epoch ran after the decision


def test_stop_training_is_an_ordinary_exception():
    # Not a BaseException like KeyboardInterrupt: callers tell a decision from a Ctrl-C.
    stop = training.StopTraining("pruned", "why")
    assert isinstance(stop, Exception)
    assert (stop.outcome, stop.args) == ("pruned", ("why",))


def test_grad_norm_prefix_is_defined_once_in_names():
    assert names.GRAD_NORM_PREFIX == "grad_norm/"
    assert training.GRAD_NORM_PREFIX is names.GRAD_NORM_PREFIX


# --- What `build` makes of a config --------------------------------------------------


def test_build_passes_the_masked_options_of_the_config(fashion_mnist, fashion_mnist_config):
    config = small_config(fashion_mnist_config, strategy="masked", keep_ratio=0.25, learned_mask=True, seed=7)
    model = training.build(config, fashion_mnist)
    for index, name in enumerate(models.block_names(model), start=1):
        masking = model.get_layer(name).masking
        assert (masking.keep_ratio, masking.learned, masking.seed) == (0.25, True, 7 + index), name
        np.testing.assert_array_equal(masking.mask.numpy(), layers.feature_mask((784,), 0.25, 7 + index))


@pytest.mark.parametrize("strategy", ["plain", "concat", "residual"])
def test_build_ignores_options_of_other_strategies(fashion_mnist, fashion_mnist_config, strategy):
    # A config always holds keep_ratio and learned_mask; only "masked" reads them.
    config = small_config(fashion_mnist_config, strategy=strategy, keep_ratio=0.25, learned_mask=True)
    model = training.build(config, fashion_mnist)
    assert len(models.block_names(model)) == config.depth


def test_residual_branch_gains_leave_zero_in_training(short_run):
    config, result = short_run
    assert config.strategy == "residual"
    gains = [float(result.model.get_layer(name).branch_gain.numpy()) for name in models.block_names(result.model)]
    assert len(gains) == config.depth
    assert all(gain != 0.0 and math.isfinite(gain) for gain in gains), gains


def test_learned_masks_train_and_stay_in_the_unit_interval(fashion_mnist, fashion_mnist_config):
    config = small_config(
        fashion_mnist_config,
        strategy="masked",
        depth=2,
        width=16,
        keep_ratio=0.5,
        learned_mask=True,
        learning_rate=0.05,
    )
    result = training.train(config, fashion_mnist)
    assert result.status == "completed"
    for index, name in enumerate(models.block_names(result.model), start=1):
        gate = result.model.get_layer(name).masking.mask.numpy()
        start = layers.feature_mask((784,), 0.5, config.seed + index)
        assert not np.array_equal(gate, start), name
        assert gate.min() >= 0.0 and gate.max() <= 1.0, (name, gate.min(), gate.max())


def norms_by_hand(model, batches, optimizer):
    """Global and per-block gradient norms of each step, applying `optimizer` in between."""
    blocks = {name: {id(v) for v in model.get_layer(name).trainable_variables} for name in ("block_01", "block_02")}
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    steps = []
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        squares = {id(v): float(tf.reduce_sum(tf.square(g))) for v, g in zip(variables, gradients)}
        norms = {"grad_norm/global": math.sqrt(sum(squares.values()))}
        norms.update({f"grad_norm/{name}": math.sqrt(sum(squares[i] for i in ids)) for name, ids in blocks.items()})
        steps.append(norms)
        optimizer.apply_gradients(zip(gradients, variables))
    return steps


@pytest.mark.parametrize("steps", [1, 2])
def test_gradient_norms_are_the_training_gradients(fashion_mnist, fashion_mnist_config, steps):
    train_size = fashion_mnist.num_examples("train")
    config = small_config(fashion_mnist_config, depth=2, width=16, epochs=1, batch_size=train_size // steps, seed=3)
    result = training.train(config, fashion_mnist)

    # Same initial weights, same optimizer, same shuffled batches as inside `train`.
    keras.backend.clear_session()
    training.seed_everything(config.seed)
    model = training.build(config, fashion_mnist)
    training.compile_for_training(model, config, track_gradients=False)
    batches = list(fashion_mnist.pipeline("train", config.batch_size, seed=config.seed))
    assert len(batches) == steps
    by_hand = norms_by_hand(model, batches, model.optimizer)

    for key in ("grad_norm/global", "grad_norm/block_01", "grad_norm/block_02"):
        expected = np.mean([step[key] for step in by_hand])  # the epoch mean over steps
        np.testing.assert_allclose(result.history[0][key], expected, rtol=1e-4, err_msg=key)
    if steps == 2:  # the steps differ, so a last-step value would not match the mean
        assert by_hand[0]["grad_norm/global"] != pytest.approx(by_hand[1]["grad_norm/global"], rel=1e-3)


@pytest.mark.parametrize("strategy", ["plain", "concat", "residual", "masked"])
def test_xla_training_is_compiled_and_deterministic(fashion_mnist, fashion_mnist_config, strategy):
    # XLA rounds differently from TensorFlow's kernels but must repeat itself
    # exactly: reproduce relies on it (and re-applies the logged setting).
    config = small_config(fashion_mnist_config, strategy=strategy, depth=2, width=16, learned_mask=True)
    previous = execution.current()
    try:
        execution.pin(dataclasses.replace(previous, xla=True))
        trainer = training.compile_for_training(training.build(config, fashion_mnist), config)
        assert trainer.jit_compile is True
        first, second = (training.train(config, fashion_mnist) for _ in range(2))
    finally:
        execution.pin(previous)
    assert without_timing(first.history) == without_timing(second.history)
    assert first.test_metrics == second.test_metrics
    without_xla = training.train(config, fashion_mnist)
    assert training.compile_for_training(training.build(config, fashion_mnist), config).jit_compile is False
    # Same model and data: close, though XLA's kernels round differently.
    assert without_xla.history[-1]["loss"] == pytest.approx(first.history[-1]["loss"], rel=1e-3)


def test_pipeline_batches_are_the_examples_shuffled_by_the_seed(fashion_mnist):
    # The index-gather pipeline yields what shuffling the examples themselves
    # yields, so runs logged before it still reproduce bit-exactly.
    import tensorflow as tf

    images, labels = fashion_mnist.arrays["train"]
    reference = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(labels), seed=5, reshuffle_each_iteration=True)
        .batch(300)
        .map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    )
    ours = fashion_mnist.pipeline("train", 300, seed=5)
    for _ in range(2):  # two epochs: reshuffled alike
        for (x, y), (rx, ry) in zip(ours, reference, strict=True):
            np.testing.assert_array_equal(x.numpy(), rx.numpy())
            np.testing.assert_array_equal(y.numpy(), ry.numpy())


def test_xla_training_repeats_bit_exactly_in_a_fresh_process(
    fashion_mnist, fashion_mnist_config, data_source, fashion_mnist_splits
):
    # What `reproduce` of an `execution.xla: true` run relies on: another process,
    # the same pinned settings, the same bytes.
    import json
    import subprocess
    import sys

    config = small_config(fashion_mnist_config, depth=2, width=16)
    settings = dataclasses.replace(execution.current(), xla=True)
    previous = execution.current()
    try:
        execution.pin(settings)
        here = training.train(config, fashion_mnist)
    finally:
        execution.pin(previous)
    script = (
        "import dataclasses, json, sys\n"
        "from reuse_nets.design import trial_config as config\nfrom reuse_nets.train import data, execution, training\n"
        "args = json.loads(sys.argv[1])\n"
        "execution.pin(execution.Settings(**args['settings']))\n"
        "dataset = data.load_dataset('fashion_mnist', data.Splits(**args['splits']), data.DataSource(**args['source']))\n"
        "result = training.train(config.TrialConfig.model_validate(args['config']), dataset)\n"
        "print(json.dumps([{k: v for k, v in h.items() if k not in ('epoch_time', 'throughput')} for h in result.history]))\n"
    )
    args = {
        "settings": dataclasses.asdict(settings),
        "splits": dataclasses.asdict(fashion_mnist_splits),
        "source": dataclasses.asdict(data_source),
        "config": config.model_dump(),
    }
    done = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there == without_timing(here.history)  # exact: JSON keeps every float64 digit


# --- Checkpoints: an interrupted trial resumes bit-exactly -----------------------------


class Interrupted(BaseException):
    """Stands for a signal or a storage loss: not a decision of the trial's."""


@pytest.mark.parametrize("cache", [0, 4], ids=["compiled afresh", "compile cache"])
def test_an_interrupted_trial_resumes_from_its_checkpoint_bit_exactly(
    fashion_mnist, fashion_mnist_config, tmp_path, cache
):
    from reuse_nets.train import checkpoints, trainers

    trainers.set_capacity(cache)
    request_cleanup = trainers.DEFAULT_CAPACITY
    config = small_config(fashion_mnist_config, epochs=4, depth=3, strategy="masked", normalization="batch")
    whole = training.train(config, fashion_mnist)
    checkpoint = checkpoints.Checkpoint(tmp_path / "slot", config.model_dump_json(), run_id="first")

    def interrupt(epoch, metrics):
        if epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        training.train(config, fashion_mnist, hooks=(interrupt,), checkpoint=checkpoint)
    replayed, heard = [], []
    resumed = training.train(
        config,
        fashion_mnist,
        hooks=(lambda epoch, metrics: replayed.append(epoch),),
        checkpoint=checkpoint,
        on_resume=heard.append,
    )
    assert resumed.resumed_epochs == 2 and [r.run_id for r in heard] == ["first"]
    assert replayed == [1, 2, 3, 4]  # the restored epochs are replayed to the hooks, then trained ones follow
    assert without_timing(resumed.history) == without_timing(whole.history)
    assert resumed.test_metrics == whole.test_metrics
    assert [w.numpy().tobytes() for w in resumed.model.weights] == [w.numpy().tobytes() for w in whole.model.weights]
    trainers.set_capacity(request_cleanup)


def test_a_checkpoint_of_another_config_or_a_torn_one_is_ignored(fashion_mnist, fashion_mnist_config, tmp_path):
    from reuse_nets.train import checkpoints

    config = small_config(fashion_mnist_config, epochs=2)
    other = small_config(fashion_mnist_config, epochs=2, learning_rate=0.01)
    folder = tmp_path / "slot"

    def resumed(trial_config) -> int:
        checkpoint = checkpoints.Checkpoint(folder, trial_config.model_dump_json())
        return training.train(trial_config, fashion_mnist, checkpoint=checkpoint).resumed_epochs

    assert resumed(config) == 0  # nothing to resume: trains, and leaves a checkpoint of 2 epochs
    assert len(json.loads((folder / "meta.json").read_text())["history"]) == 2
    assert resumed(config) == 2  # all epochs restored: only the test evaluation runs
    # Arrays of another epoch than the metadata says (a kill between the two writes): never mixed.
    (folder / "state.npz").write_bytes(b"torn")
    assert resumed(config) == 0
    assert resumed(other) == 0  # another config's checkpoint
    checkpoints.Checkpoint(folder, "").remove()
    assert not folder.exists() and not tmp_path.exists()  # the empty root goes too
