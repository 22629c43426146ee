"""Conv nets are first-class: the shipped `conv_depth` study (strategy x depth, `family:
conv`, capacity-matched), shrunk to a tiny size, runs on real fashion_mnist in-process;
the tests read what it stored. Widths are solved and counts logged as for `mlp`, FLOPs
are those of the convolutions, every block's gradient norm is logged, and a conv run
reproduces bit for bit (`reproduce`, tolerance 0, in this same process and machine).
"""

import math
from pathlib import Path

import mlflow
import pytest

from reuse_nets import names
from reuse_nets.design import study_files
from reuse_nets.nn import capacity, models
from reuse_nets.reproduce import runs as reproduce_runs
from reuse_nets.sweep import runner

pytestmark = pytest.mark.slow

# 8 final runs: 4 strategies x depths 1-2, 24 channels (plain's; the others solved within
# 5%), 1 epoch on 500 images, no tuning.
OVERRIDES = [
    "base.dataset.train_split=train[:500]",
    "base.dataset.validation_split=train[50000:50200]",
    "base.dataset.test_split=test[:200]",
    "base.width=24",
    "base.epochs=1",
    "base.batch_size=64",
    "compare.depth=[1, 2]",
    "tune=null",
    "final.seeds=[1]",
    "execution.heartbeat_interval=2",
    "execution.grace_period=8",
]
SHAPE, CLASSES = (28, 28, 1), 10


@pytest.fixture(scope="module")
def conv_study(tmp_path_factory, data_source):
    """The finished tiny `conv_depth` study: spec, result, client, final runs by cell."""
    folder = tmp_path_factory.mktemp("conv_depth")
    spec = study_files.load_study("conv_depth", OVERRIDES)
    tracking_uri = f"sqlite:///{folder}/mlflow.db"
    options = runner.SweepOptions(
        storage=f"sqlite:///{folder}/optuna.db",
        tracking_uri=tracking_uri,
        data=data_source,
        reports=str(folder / "reports"),
        verbose=False,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(folder)
        try:
            result = runner.run_study(spec, options)
        finally:
            mlflow.set_tracking_uri(None)
    assert result.complete
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs(
        [result.experiment_id],
        filter_string=f"tags.`{names.KIND_TAG}` = '{names.Kind.TRIAL}' and tags.`{names.PHASE_TAG}` = '{names.Phase.FINAL}'",
    )
    by_cell = {run.data.tags[names.CELL_TAG]: run for run in runs}
    assert sorted(by_cell) == sorted(cell.key for cell in spec.cells())
    return spec, result, client, by_cell, tracking_uri


def config_of(spec, key: str):
    return spec.cell_config(next(cell for cell in spec.cells() if cell.key == key), seed=spec.final.seeds[0])


def test_conv_cells_are_matched_and_log_their_solved_widths_and_exact_counts(conv_study):
    spec, _, _, by_cell, _ = conv_study
    trainable = {}
    for key, run in by_cell.items():
        config = config_of(spec, key)
        assert run.data.params["family"] == "conv" and run.data.params["width"] == str(config.width)
        counted = capacity.of_config(config, SHAPE, CLASSES)
        metrics = run.data.metrics
        for measure, metric in names.CAPACITY_METRICS.items():
            assert metrics[metric] == counted.of(measure), (key, measure)
        # The counts are the built network's: its trainable weights, as Keras counts them.
        model = models.build_model(
            config.strategy, config.depth, config.width, SHAPE, CLASSES, "conv", seed=config.seed
        )
        assert sum(math.prod(w.shape) for w in model.trainable_weights) == counted.trainable, key
        trainable[key] = counted.trainable
    for depth in (1, 2):
        plain = trainable[f"strategy=plain,depth={depth}"]
        for strategy in ("concat", "residual", "masked"):
            assert abs(trainable[f"strategy={strategy},depth={depth}"] - plain) / plain <= 0.05
    assert config_of(spec, "strategy=concat,depth=1").width == 23  # solved, not base's 24
    # FLOPs: 2 x the multiply-accumulates of a 3x3 "same" convolution at every pixel, and the head.
    plain = by_cell["strategy=plain,depth=1"].data.metrics[names.CAPACITY_METRICS["flops"]]
    assert plain == 2 * (28 * 28 * 3 * 3 * 1 * 24 + 24 * CLASSES)


def test_conv_runs_log_a_gradient_norm_per_block(conv_study):
    spec, result, _, by_cell, _ = conv_study
    for key, run in by_cell.items():
        metrics = run.data.metrics
        depth = config_of(spec, key).depth
        blocks = [metrics[f"{names.GRAD_NORM_PREFIX}{models.block_name(i)}"] for i in range(1, depth + 1)]
        assert all(math.isfinite(norm) and norm > 0 for norm in blocks), (key, blocks)
        assert f"{names.GRAD_NORM_PREFIX}{models.block_name(depth + 1)}" not in metrics
        # Epoch means of per-step norms: the blocks' share of the global norm, step by
        # step, keeps their means below it.
        assert max(blocks) <= metrics[f"{names.GRAD_NORM_PREFIX}global"], key
    # The report plots the first and last block's norm against depth, for conv as for mlp.
    assert (Path(result.report_dir) / "grad_norm_vs_depth.png").is_file()


def test_a_conv_run_reproduces_bit_exactly(conv_study, data_source):
    _, _, client, by_cell, tracking_uri = conv_study
    original = by_cell["strategy=masked,depth=2"]
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(tracking_uri)
        try:
            outcome = reproduce_runs.reproduce(
                original.info.run_id, source=data_source, tolerance=0.0, say=lines.append
            )
        finally:
            mlflow.set_tracking_uri(None)
    assert outcome.agree, outcome.table()
    compared = {row.name for row in outcome.rows}
    assert {"test_accuracy", "val_accuracy", "loss", f"{names.GRAD_NORM_PREFIX}block_02"} <= compared
    assert all(row.final_diff == 0.0 and row.max_epoch_diff == 0.0 for row in outcome.rows)
    assert not [line for line in lines if "dataset" in line or "instruction set" in line], lines
    reproduction = client.get_run(outcome.new_run_id)
    assert reproduction.data.tags[names.REPRODUCES_TAG] == original.info.run_id
    assert reproduction.data.params["dataset_digest"] == original.data.params["dataset_digest"]
