"""End-to-end: a capacity-matched study: solved widths and parameter counts on every
run, and learning curves in the report.
"""

import pytest
from sweep_helpers import (
    Stores,
    quiet_optuna,  # noqa: F401  (autouse: Optuna's log at WARNING in every test here)
    run_sweep,
    small_spec,
)

pytestmark = pytest.mark.slow


# --- capacity: matched cells, counts on every run, learning curves in the report ----------


MATCHED = (
    "compare.strategy=[plain, concat, residual]",
    "compare.depth=[4]",
    "base.epochs=3",
    "tune.search_space.learning_rate=[0.001, 0.003]",
    "tune.pruner.type=none",
    "final.seeds=[1, 2]",
    "execution.heartbeat_interval=2",
    "execution.grace_period=8",
)


def test_a_matched_study_logs_capacity_and_reports_learning_curves(tmp_path):
    from reuse_nets.design import datasets
    from reuse_nets.nn import capacity

    run_sweep(tmp_path, "strategy_depth", *(arg for o in MATCHED for arg in ("--set", o)))
    spec = small_spec("strategy_depth", *MATCHED)
    stores = Stores(tmp_path, spec.name)
    shape, classes = datasets.features("fashion_mnist")
    children = stores.children()
    assert len(children) == 3 * 2 + 3 * 2
    trainable = {}
    for child in children:
        cell = next(c for c in spec.cells() if c.key == child.data.tags["reuse_nets.cell"])
        config = spec.cell_config(cell)
        # The solved width is what the run trained, and its counts are on record.
        assert int(child.data.params["width"]) == config.width
        counted = capacity.of_config(config, shape, classes)
        metrics = child.data.metrics
        assert metrics["model/trainable_params"] == counted.trainable
        assert metrics["model/total_params"] == counted.total
        assert metrics["model/effective_params"] == counted.effective
        assert metrics["model/flops_per_example"] == counted.flops
        trainable[cell.key] = counted.trainable
    plain = trainable["strategy=plain,depth=4"]
    assert spec.cell_config(spec.cells()[0]).width == 128  # the baseline keeps base's width
    for key, count in trainable.items():
        assert abs(count - plain) / plain <= 0.05, (key, count, plain)
    assert spec.cell_config(spec.cells()[1]).width != 128  # concat was resized

    # The report: capacity per cell, and learning curves that are the final runs' own.
    report = (tmp_path / "reports" / spec.name / "report.md").read_text()
    section = report.split("## Capacity and convergence per cell")[1].split("\n## ")[0]
    for cell in spec.cells():
        row = next(line for line in section.splitlines() if line.startswith(f"| {cell.key} | "))
        assert f"| {spec.cell_config(cell).width} | {trainable[cell.key]:,} | {trainable[cell.key]:,} |" in row
    assert "![learning_curves.png](learning_curves.png)" in report
    assert {"report/learning_curves.png", "report/learning_curves.csv"} <= stores.artifacts(
        stores.parent().info.run_id, "report"
    )
    rows = (tmp_path / "reports" / spec.name / "learning_curves.csv").read_text().splitlines()[1:]
    finals = [c for c in children if c.data.tags["reuse_nets.phase"] == "final"]
    for cell in spec.cells():
        histories = [
            stores.history(c.info.run_id, "val_accuracy") for c in finals if c.data.tags["reuse_nets.cell"] == cell.key
        ]
        assert len(histories) == 2 and all(len(h) == 3 for h in histories)
        cell_rows = [r.split('",')[1].split(",") for r in rows if r.startswith(f'"{cell.key}"')]
        assert [int(r[0]) for r in cell_rows] == [1, 2, 3]
        for epoch, mean, _, n in cell_rows:
            expected = sum(h[int(epoch) - 1][1] for h in histories) / 2
            assert float(mean) == pytest.approx(expected, abs=1e-6) and int(n) == 2
