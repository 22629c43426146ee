"""Budgets that train to convergence: early stopping with the best epoch kept, learning-rate
warm-up and decay, and plain networks that start as the identity. On real fashion_mnist."""

import math

import keras
import numpy as np
import pydantic
import pytest

from reuse_nets.design import study_files
from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.errors import StudyError
from reuse_nets.nn import models
from reuse_nets.train import checkpoints, early_stopping, schedules, trainers, training


def config_of(dataset_config, **overrides):
    fields = dict(strategy="residual", depth=2, width=32, epochs=5, batch_size=128, seed=3, dataset=dataset_config)
    return TrialConfig(**{**fields, **overrides})


def weights(model) -> list[bytes]:
    return [w.numpy().tobytes() for w in model.weights]


def without_timing(history):
    return [{k: v for k, v in epoch.items() if k not in ("epoch_time", "throughput")} for epoch in history]


# --- The plateau rule ---------------------------------------------------------------------


def test_a_plateau_is_patience_epochs_without_an_improvement_beyond_min_delta():
    plateau = early_stopping.Plateau("val_accuracy", maximize=True, patience=2, min_delta=0.01)
    seen = [plateau.update(e, {"val_accuracy": v}) for e, v in enumerate([0.5, 0.6, 0.605, 0.7, 0.69, 0.7], 1)]
    assert seen == [True, True, False, True, False, False]  # +0.005 is within min_delta: no improvement
    assert (plateau.best, plateau.best_epoch, plateau.stop) == (0.7, 4, True)


def test_a_loss_improves_downwards_and_a_non_finite_value_never_improves():
    plateau = early_stopping.Plateau("val_loss", maximize=False, patience=1, min_delta=0.0)
    assert [plateau.update(e, {"val_loss": v}) for e, v in enumerate([1.0, math.nan, 0.9], 1)] == [True, False, True]
    assert plateau.best_epoch == 3 and not plateau.stop


def test_a_fixed_budget_has_no_plateau_state(fashion_mnist_config):
    assert early_stopping.Plateau.of(config_of(fashion_mnist_config)) is None
    state = early_stopping.Plateau.of(config_of(fashion_mnist_config, patience=2, monitor="val_loss"))
    assert state is not None and not state.maximize and state.patience == 2


# --- Training ------------------------------------------------------------------------------


def test_a_run_stops_on_a_plateau_before_the_cap_and_keeps_its_best_epochs_weights(fashion_mnist, fashion_mnist_config):
    # No epoch can gain 0.5 in accuracy after the first: epoch 1 is the best, patience 2 stops at 3 of 5.
    stopped = training.train(config_of(fashion_mnist_config, patience=2, min_delta=0.5), fashion_mnist)
    one_epoch = training.train(config_of(fashion_mnist_config, epochs=1), fashion_mnist)
    assert len(stopped.history) == 3 and (stopped.best_epoch, stopped.plateaued) == (1, True)
    # The kept model is the first epoch's, byte for byte: what a one-epoch run of the same seed ends with.
    assert weights(stopped.model) == weights(one_epoch.model)
    assert stopped.test_metrics == one_epoch.test_metrics
    assert stopped.final("val_accuracy") == stopped.history[0]["val_accuracy"] == one_epoch.final("val_accuracy")


def test_a_run_still_improving_at_the_cap_reports_the_cap(fashion_mnist, fashion_mnist_config):
    result = training.train(config_of(fashion_mnist_config, epochs=2, patience=5), fashion_mnist)
    assert len(result.history) == 2 and not result.plateaued
    assert result.best_epoch in (1, 2) and result.final("val_accuracy") == max(
        h["val_accuracy"] for h in result.history
    )


class Interrupted(BaseException):
    """Stands for a signal: not a decision of the trial's."""


@pytest.mark.parametrize("cache", [0, 4], ids=["compiled afresh", "compile cache"])
def test_an_interrupted_early_stopped_run_resumes_with_its_best_weights_bit_exactly(
    fashion_mnist, fashion_mnist_config, tmp_path, cache
):
    trainers.set_capacity(cache)
    config = config_of(fashion_mnist_config, epochs=6, patience=3, min_delta=0.5)  # best 1, stops at 4
    whole = training.train(config, fashion_mnist)
    checkpoint = checkpoints.Checkpoint(tmp_path / "slot", config.model_dump_json(), run_id="first")

    def interrupt(epoch, metrics):
        if epoch == 3:
            raise Interrupted  # after epoch 2's checkpoint, which holds epoch 1's weights as the best

    with pytest.raises(Interrupted):
        training.train(config, fashion_mnist, hooks=(interrupt,), checkpoint=checkpoint)
    resumed = training.train(config, fashion_mnist, checkpoint=checkpoint)
    trainers.set_capacity(trainers.DEFAULT_CAPACITY)
    assert resumed.resumed_epochs == 2 and len(resumed.history) == len(whole.history) == 4
    assert without_timing(resumed.history) == without_timing(whole.history)
    assert (resumed.best_epoch, resumed.plateaued) == (whole.best_epoch, whole.plateaued) == (1, True)
    assert weights(resumed.model) == weights(whole.model)
    assert resumed.test_metrics == whole.test_metrics


def test_a_checkpoint_of_the_stopping_epoch_trains_nothing_more(fashion_mnist, fashion_mnist_config, tmp_path):
    config = config_of(fashion_mnist_config, epochs=4, patience=1, min_delta=0.5)  # stops at 2
    checkpoint = checkpoints.Checkpoint(tmp_path / "slot", config.model_dump_json())
    first = training.train(config, fashion_mnist, checkpoint=checkpoint)  # leaves epoch 2's checkpoint
    again = training.train(config, fashion_mnist, checkpoint=checkpoint)
    assert again.resumed_epochs == len(again.history) == len(first.history) == 2
    assert weights(again.model) == weights(first.model) and again.test_metrics == first.test_metrics


# --- Learning-rate schedules -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_the_schedule_follows_its_reference_formula(fashion_mnist_config, kind):
    config = config_of(fashion_mnist_config, learning_rate=0.01, warmup_epochs=2, epochs=6, lr_schedule=kind)
    steps = 10
    schedule = schedules.learning_rate(config, steps)
    for step in (0, 5, 19, 20, 35, 59, 70):
        assert float(schedule(step)) == pytest.approx(schedules.rate_at(config, step, steps), rel=1e-6, abs=1e-9)
    assert schedules.rate_at(config, 0, steps) == pytest.approx(0.01 / 20)  # warm-up starts near 0
    assert schedules.rate_at(config, 19, steps) == pytest.approx(0.01)  # and reaches the peak
    # Cosine reaches 0 at the end of the budget (step 60 of 6 x 10); constant stays at the peak.
    assert schedules.rate_at(config, 60, steps) == (pytest.approx(0.0, abs=1e-12) if kind == "cosine" else 0.01)


def test_a_constant_rate_without_warmup_is_a_plain_float(fashion_mnist_config):
    assert schedules.learning_rate(config_of(fashion_mnist_config, learning_rate=0.003), 10) == 0.003


def test_a_scheduled_run_is_identical_with_the_compile_cache_and_without(fashion_mnist, fashion_mnist_config):
    config = config_of(fashion_mnist_config, epochs=3, warmup_epochs=1, lr_schedule="cosine", learning_rate=3e-3)
    runs = []
    for cache in (0, 4, 4):  # afresh, cached once, then reused with another rate set on the same schedule
        trainers.set_capacity(cache)
        if len(runs) == 2:
            training.train(config.model_copy(update={"learning_rate": 1e-4}), fashion_mnist)
        runs.append(training.train(config, fashion_mnist))
    trainers.set_capacity(trainers.DEFAULT_CAPACITY)
    assert runs[2].reused_trainer
    assert [without_timing(r.history) for r in runs[1:]] == [without_timing(runs[0].history)] * 2
    assert weights(runs[1].model) == weights(runs[0].model) == weights(runs[2].model)


def test_warmup_must_end_before_the_budget(fashion_mnist_config):
    with pytest.raises(pydantic.ValidationError, match="warmup_epochs"):
        config_of(fashion_mnist_config, epochs=2, warmup_epochs=2)


# --- Starting as the identity --------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, shape, kernel_size", [("mlp", (6, 6, 1), 3), ("conv", (6, 6, 3), 3), ("conv", (6, 6, 3), 4)]
)
def test_a_plain_network_that_starts_as_the_identity_passes_block_1_through_unchanged(family, shape, kernel_size):
    model = models.build_model(
        "plain", 4, 8, shape, 3, family=family, kernel_size=kernel_size, start_as_identity=True, seed=1
    )
    x = np.random.default_rng(0).random((5, *shape), dtype="float32")
    first = keras.Model(model.input, model.get_layer("block_01").output)(x)
    last = keras.Model(model.input, model.get_layer("block_04").output)(x)
    assert np.array_equal(first.numpy(), last.numpy())
    standard = models.build_model("plain", 4, 8, shape, 3, family=family, kernel_size=kernel_size, seed=1)
    assert not np.array_equal(keras.Model(standard.input, standard.get_layer("block_04").output)(x).numpy(), first)


@pytest.mark.parametrize("start, gain", [(True, 0.0), (False, 1.0)])
def test_start_as_identity_sets_the_residual_branch_gain(start, gain):
    model = models.build_model("residual", 2, 8, (6, 6, 1), 3, start_as_identity=start)
    (found,) = [v for v in model.get_layer("block_02").weights if "gain" in v.path]
    assert float(found.numpy()) == gain


def test_start_as_identity_is_refused_for_strategies_without_one(fashion_mnist_config):
    with pytest.raises(pydantic.ValidationError, match="plain and residual, not 'concat'"):
        config_of(fashion_mnist_config, strategy="concat", start_as_identity=True)
    with pytest.raises(pydantic.ValidationError, match="not both"):
        config_of(fashion_mnist_config, start_as_identity=True, branch_gain_init=0.5)


def test_a_study_stops_early_on_its_objective_only():
    with pytest.raises(StudyError, match=r"base\.monitor: early stopping keeps the best epoch by 'val_loss'"):
        study_files.load_study(
            "smoke", ["base.patience=2", "objective.metric=val_loss", "objective.direction=minimize"]
        )
    with pytest.raises(StudyError, match="'patience' cannot be tuned"):
        study_files.load_study("residual_depth", ["tune.search_space.patience=[1, 2]"])


def test_evaluate_only_compares_an_early_stopped_model_with_its_kept_epochs_metrics(
    fashion_mnist, fashion_mnist_config, monkeypatch
):
    """A tuning run has no test metrics: `reproduce --evaluate-only` re-scores validation, which the
    kept (best-epoch) weights give as `selected/val_*`, not as the last epoch's `val_*`."""
    import types

    from reuse_nets.names import MODEL_URI_TAG
    from reuse_nets.reproduce import runs as reproduce_runs
    from reuse_nets.store import tracking

    config = config_of(fashion_mnist_config, epochs=3, patience=1, min_delta=0.5)  # keeps epoch 1, stops at 2
    result = training.train(config, fashion_mnist, evaluate_test=False)
    assert result.best_epoch == 1 and len(result.history) == 2
    last = {k: result.history[-1][k] for k in ("val_loss", "val_accuracy")}
    selected = {k: v for k, v in tracking.selected_metrics(result).items() if k.startswith("selected/")}
    assert selected == {f"selected/{k}": result.history[0][k] for k in ("val_loss", "val_accuracy")}
    monkeypatch.setattr(tracking, "load_logged_model", lambda uri: result.model)

    def rescored(metrics):
        run = types.SimpleNamespace(
            info=types.SimpleNamespace(run_id="r"),
            data=types.SimpleNamespace(tags={MODEL_URI_TAG: "m"}, metrics=metrics),
        )
        return {row.name: row.final_diff for row in reproduce_runs._evaluate(run, config, fashion_mnist)}

    assert rescored({**last, **selected}) == {"val_loss": 0.0, "val_accuracy": 0.0}
    assert rescored(last)["val_loss"] > 0  # the last epoch's metric is not the kept weights'
