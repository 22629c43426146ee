"""End-to-end: what the runner prints without running a study: `--dry-run`, `--list`
and `--help`; none of them writes anything.
"""

import sys

import pytest
from sweep_helpers import (
    RUNNER,
    assert_wrote_nothing,
    explain,
    quiet_optuna,  # noqa: F401  (autouse: Optuna's log at WARNING in every test here)
    run,
    small_spec,
    sweep_command,
)

from reuse_nets.design import study_files

pytestmark = pytest.mark.slow


# --- dry run, listing, help --------------------------------------------------------------------


def test_dry_run_prints_cells_budget_and_final_runs_and_writes_nothing(tmp_path):
    result = run(sweep_command(tmp_path, "residual_depth", "--dry-run"), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    spec = small_spec("residual_depth")
    assert f"tune: {spec.tune.trials_per_cell} trials per cell" in result.stdout
    for index, cell in enumerate(spec.cells()):
        assert (
            f"{index:3d}: {cell.key}  ({spec.tune.trials_per_cell} tuning trials + {len(spec.final.seeds)} final runs; width "
            in result.stdout
        )
    assert f"= {spec.n_final_runs} runs" in result.stdout
    assert "train_split: train[:1000]" in result.stdout  # the resolved study, overrides applied
    assert_wrote_nothing(tmp_path)


@pytest.mark.parametrize(
    "overrides, sampler",
    [
        ((), "sampler sobol (seed 0: slot k tries the k-th quasi-random point, the same in every cell)"),
        (
            ("tune.search_space.learning_rate=[0.001, 0.01]", "tune.trials_per_cell=null"),
            "sampler grid (every point once, in order, the same in every cell)",
        ),
    ],
    ids=["range", "choices"],
)
def test_dry_run_of_a_study_that_names_no_sampler_shows_a_reproducible_one(tmp_path, overrides, sampler):
    sets = [a for o in ("tune.sampler={}", *overrides) for a in ("--set", o)]
    result = run(sweep_command(tmp_path, "residual_depth", "--dry-run", *sets), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert sampler in result.stdout
    assert_wrote_nothing(tmp_path)


def test_dry_run_splits_several_overrides_in_one_set(tmp_path):
    command = sweep_command(tmp_path, "smoke", "--dry-run", "--set", "base.epochs=1 compare.depth=[1, 2, 4]")
    result = run(command, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert "study smoke: 12 cells" in result.stdout
    assert "\n  epochs: 1\n" in result.stdout
    assert_wrote_nothing(tmp_path)


def test_list_shows_the_studies(tmp_path):
    result = run([sys.executable, str(RUNNER), "--list"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert {"smoke", "strategy_depth", "residual_depth", "masked_keep_ratio"} <= set(listed)
    assert listed == sorted(path.stem for path in study_files.EXPERIMENTS_DIR.glob("*.yaml"))
    assert_wrote_nothing(tmp_path)


def test_help_exits_zero(tmp_path):
    result = run([sys.executable, str(RUNNER), "--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, explain(result)
    assert result.stdout.startswith("usage:")
    for option in ("--study", "--set", "--workers", "--dry-run", "--storage", "--tracking-uri", "--manual-dir"):
        assert option in result.stdout
    assert_wrote_nothing(tmp_path)
