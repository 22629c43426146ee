"""End-to-end: pruned and diverged tuning trials (`tests/studies/prune_fail.yaml`), how
they are mirrored in MLflow and reproduced, and pruning that stays inside a cell.

`prune_fail` runs once (a module fixture) and is shared by the tests that read it.
"""

import pytest
from sweep_helpers import (
    ROOT,
    Stores,
    explain,
    quiet_optuna,  # noqa: F401  (autouse: Optuna's log at WARNING in every test here)
    reproductions_of,
    run,
    run_reproduce,
    run_sweep,
    slots,
    sweep_command,
)

PRUNE_FAIL = ROOT / "tests" / "studies" / "prune_fail.yaml"

pytestmark = pytest.mark.slow


# --- pruned and failed tuning trials ---------------------------------------------------------


@pytest.fixture(scope="module")
def prune_fail(tmp_path_factory):
    """tests/studies/prune_fail.yaml: tuning trials 0 complete, 1 pruned, 2 diverged (by design)."""
    directory = tmp_path_factory.mktemp("prune_fail")
    result = run(sweep_command(directory, str(PRUNE_FAIL), small=False), cwd=directory)
    return result, Stores(directory, "prune_fail")


def trial_with_lr(study, learning_rate: float):
    found = [t for t in study.get_trials() if t.params["learning_rate"] == learning_rate]
    assert len(found) == 1, [(t.number, t.state.name, t.params) for t in study.get_trials()]
    return found[0]


def test_prune_fail_tunes_three_slots_then_retrains_the_complete_one(prune_fail):
    result, stores = prune_fail
    assert result.returncode == 0, explain(result)
    assert "study prune_fail: complete" in result.stdout
    tune = stores.tune("depth=2")
    assert [t.params["learning_rate"] for t in sorted(tune.get_trials(), key=lambda t: t.number)] == [0.003, 1e-6, 1e10]
    assert slots(tune.get_trials()) == [0, 1, 2]
    good = trial_with_lr(tune, 0.003)
    assert good.state.name == "COMPLETE"
    assert stores.child_of(good).info.status == "FINISHED"
    # Tuning never looks at the test split; the final run is scored on it.
    assert "test_accuracy" not in stores.child_of(good).data.metrics
    assert "test_accuracy" not in good.user_attrs
    (final,) = stores.final().get_trials()
    assert final.state.name == "COMPLETE"
    assert final.params == {"depth": 2, "learning_rate": 0.003, "seed": 1}
    run = stores.child_of(final)
    assert run.data.params["learning_rate"] == "0.003" and run.data.params["seed"] == "1"
    assert "test_accuracy" in run.data.metrics
    assert stores.parent().info.status == "FINISHED"
    assert len(stores.children()) == 4
    report = (stores.directory / "reports" / "prune_fail" / "report.md").read_text()
    assert "| depth=2 | 1 | 1 | 1 | 0 | learning_rate=0.003 |" in report  # the budget table


def test_pruned_trial_is_mirrored_as_killed_run(prune_fail):
    result, stores = prune_fail
    pruned = trial_with_lr(stores.tune("depth=2"), 1e-6)
    assert pruned.state.name == "PRUNED", explain(result)
    assert pruned.user_attrs["outcome"] == "pruned"
    assert list(pruned.intermediate_values) == [1]  # pruned after its first epoch
    run = stores.child_of(pruned)
    assert run.info.status == "KILLED"
    assert run.data.tags["optuna.trial_state"] == "PRUNED"
    assert run.data.tags["reuse_nets.outcome"] == "pruned"
    assert run.data.tags["reuse_nets.phase"] == "tune"
    assert "pruned at epoch 1" in run.data.tags["reuse_nets.failure_reason"]
    assert run.data.tags["reuse_nets.exec.trainer_reused"] in ("true", "false")  # tagged before training
    assert [step for step, _ in stores.history(run.info.run_id, "val_accuracy")] == [1]
    assert "test_accuracy" not in run.data.metrics


def test_diverged_trial_is_mirrored_as_failed_run(prune_fail):
    result, stores = prune_fail
    diverged = trial_with_lr(stores.tune("depth=2"), 1e10)
    run = stores.child_of(diverged)
    loss = stores.history(run.info.run_id, "loss")
    assert loss and loss[-1][1] != loss[-1][1], f"the loss did not become NaN: {loss}"  # NaN != NaN
    assert diverged.state.name == "FAIL"
    assert diverged.user_attrs["outcome"] == "diverged"
    assert run.info.status == "FAILED"
    assert run.data.tags["optuna.trial_state"] == "FAIL"
    assert run.data.tags["reuse_nets.outcome"] == "diverged"
    assert "non-finite loss" in run.data.tags["reuse_nets.failure_reason"]
    assert "FAILED (diverged" in result.stdout


def test_a_pruned_trial_reproduces_exactly_as_far_as_it_ran(prune_fail):
    _, stores = prune_fail
    original = stores.child_of(trial_with_lr(stores.tune("depth=2"), 1e-6))

    proc = run_reproduce(stores.directory, original.info.run_id)

    assert proc.returncode == 0, explain(proc)
    assert "the original ended pruned after epoch 1: re-training exactly that far" in proc.stdout
    assert "AGREE within tolerance 0" in proc.stdout, explain(proc)
    (copy,) = reproductions_of(stores, original.info.run_id)
    # Ended the way the original did, with the same epochs and nothing more.
    assert copy.info.status == "KILLED"
    assert copy.data.tags["reuse_nets.outcome"] == "pruned"
    assert copy.data.tags["optuna.trial_state"] == "PRUNED"
    # MLflow's system/* samples are the machine's, taken every few seconds: a run that
    # outlasts the interval on a loaded machine has them, a quick one not. Results only.
    results = {name for name in original.data.metrics if not name.startswith("system/")}
    assert {name for name in copy.data.metrics if not name.startswith("system/")} == results
    for name in results:
        if name not in ("epoch_time", "throughput"):
            assert stores.history(copy.info.run_id, name) == stores.history(original.info.run_id, name), name


def test_a_diverged_trial_reproduces_its_divergence(prune_fail):
    _, stores = prune_fail
    original = stores.child_of(trial_with_lr(stores.tune("depth=2"), 1e10))

    proc = run_reproduce(stores.directory, original.info.run_id)

    assert proc.returncode == 0, explain(proc)  # NaN equals NaN: the same divergence
    (copy,) = reproductions_of(stores, original.info.run_id)
    assert copy.data.tags["reuse_nets.outcome"] == "diverged"
    steps = [step for step, _ in stores.history(original.info.run_id, "loss")]
    assert [step for step, _ in stores.history(copy.info.run_id, "loss")] == steps


# --- pruning stays inside a cell ------------------------------------------------------------


def test_pruning_never_compares_trials_of_different_cells(tmp_path):
    """Cell lr=1e-6 learns nothing (0.14 after epoch 1) and lr=0.003 learns (0.43).

    With one pruner over both cells, the first would be pruned at epoch 1 against
    the second (median pruner, one finished trial, no warm-up). Each cell has its
    own Optuna study and pruner, so it completes.
    """
    extra = (
        "--set",
        "compare={learning_rate: [0.003, 0.000001]}",
        "--set",
        "tune={search_space: {width: [32]}, sampler: {type: grid}, "
        "pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}}",
        "--set",
        "final.seeds=[1]",
    )
    run_sweep(tmp_path, str(PRUNE_FAIL), *extra, small=False)
    stores = Stores(tmp_path, "prune_fail")
    good, slow = stores.tune("learning_rate=0.003"), stores.tune("learning_rate=1e-06")
    (good_trial,), (slow_trial,) = good.get_trials(), slow.get_trials()
    assert good_trial.state.name == slow_trial.state.name == "COMPLETE"
    assert list(slow_trial.intermediate_values) == [1, 2, 3]  # reported every epoch, to its own pruner
    assert slow_trial.intermediate_values[1] < good_trial.intermediate_values[1]
    for study in (good, slow):
        cells = {stores.child_of(t).data.tags["reuse_nets.cell"] for t in study.get_trials()}
        assert len(cells) == 1  # an Optuna study holds one cell's trials only
