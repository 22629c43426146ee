"""Unit tests of study specs: shipped files, validation at load time, overrides,
the two phases (cells, tuning slots, selection, final runs) and the report's statistics.

Fast: no training and no tracking store; Optuna studies live in memory.
"""

import dataclasses
import hashlib
import json
import math
import re

import numpy as np
import optuna
import pytest
import yaml

from reuse_nets.design import plan, study_files
from reuse_nets.design.selection import Chosen
from reuse_nets.design.study_spec import Choices, Range, StudySpec, suggest_tuned
from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.errors import StudyError, SweepError
from reuse_nets.names import EPOCH_METRICS, RUN_ID_ATTR
from reuse_nets.report import analysis
from reuse_nets.report.analysis import FinalRun
from reuse_nets.store import optuna_store, parent_run
from reuse_nets.sweep import phases

SHIPPED = sorted(path.stem for path in study_files.EXPERIMENTS_DIR.glob("*.yaml"))
load = study_files.load_study


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def write_study(tmp_path, name: str, data) -> str:
    """Writes `data` (a mapping, or raw text) as `tmp_path/NAME.yaml`; returns its path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def study_data(name: str) -> dict:
    return yaml.safe_load((study_files.EXPERIMENTS_DIR / f"{name}.yaml").read_text())


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, f"StudyError must be one line, got {message!r}"
    return message


def load_error(name: str, overrides=()) -> str:
    with pytest.raises(StudyError) as excinfo:
        load(name, list(overrides))
    return one_line_error(excinfo)


# --- Shipped studies ----------------------------------------------------------------------


def test_the_studies_ship():
    assert {"smoke", "strategy_depth", "residual_depth", "masked_keep_ratio", "tuning_variance"} <= set(SHIPPED)
    assert {"conv_depth", "cifar10_conv_depth"} <= set(SHIPPED)
    assert [name for name, _ in study_files.list_studies()] == SHIPPED
    assert all(description for _, description in study_files.list_studies())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_study_validates_and_every_cell_builds(name):
    spec = load(name)
    assert isinstance(spec, StudySpec)
    assert spec.name == name  # defaults to the file's stem, and is the MLflow experiment
    for cell in spec.cells():
        config = spec.cell_config(cell)
        assert {k: getattr(config, k) for k in cell.values} == cell.values
        for seed in spec.final.seeds:
            assert spec.cell_config(cell, seed=seed).seed == seed


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_study_has_a_dry_run_plan(name):
    spec = load(name)
    text = plan.describe_plan(spec, "sqlite:///x.db", None, 1, 2)
    assert text.startswith(f"study {name}: {len(spec.cells())} cells")
    for index, cell in enumerate(spec.cells()):
        assert f"{index:3d}: {cell.key}  (" in text


@pytest.mark.parametrize("name, shape", [("conv_depth", (28, 28, 1)), ("cifar10_conv_depth", (32, 32, 3))])
def test_the_conv_studies_match_conv_nets_on_grey_and_colour_images(name, shape):
    from reuse_nets.design import datasets
    from reuse_nets.nn import capacity

    spec = load(name)
    assert spec.base.family == "conv" and spec.match is not None
    assert datasets.features(spec.base.dataset.name) == (shape, 10)
    for depth in spec.compare["depth"]:
        counts = {
            c.values["strategy"]: capacity.of_config(spec.cell_config(c), shape, 10).trainable
            for c in spec.cells()
            if c.values["depth"] == depth
        }
        assert max(abs(n - counts["plain"]) / counts["plain"] for n in counts.values()) <= spec.match.tolerance


@pytest.mark.parametrize("name", SHIPPED)
def test_spec_round_trips_through_json_and_yaml(name):
    spec = load(name)
    dumped = spec.model_dump(mode="json")
    assert StudySpec.model_validate(dumped) == spec
    # ... and through YAML text, which is how it travels as the `study.yaml` artifact.
    again = StudySpec.model_validate(yaml.safe_load(yaml.safe_dump(dumped, sort_keys=False)))
    assert again == spec
    assert again.identity() == spec.identity()
    assert again.cells() == spec.cells()


def test_residual_depth_is_the_designed_comparison():
    spec = load("residual_depth")
    assert spec.compare == {"strategy": ["plain", "residual"], "depth": [1, 2, 4, 8, 16, 32, 64]}
    assert max(spec.compare["depth"]) >= 64
    assert list(spec.tune.search_space) == ["learning_rate"]
    assert spec.tune.pruner.type == "median"
    assert (spec.contrast, spec.baseline) == ("strategy", "plain")
    assert spec.base.seed not in spec.final.seeds  # final seeds are fresh
    assert spec.n_tuning_trials == 14 * spec.tune.trials_per_cell
    assert spec.n_final_runs == 14 * len(spec.final.seeds)


def test_cells_cross_the_compared_values_in_a_stable_order():
    spec = load("strategy_depth")
    cells = spec.cells()
    assert len(cells) == 16
    assert cells[0].values == {"strategy": "plain", "depth": 1}
    assert cells[1].key == "strategy=plain,depth=4"
    assert cells[-1].key == "strategy=masked,depth=64"
    assert len({c.key for c in cells}) == 16
    assert load("strategy_depth").cells() == cells


def test_smoke_is_a_plain_grid():
    spec = load("smoke")
    assert spec.tune is None and spec.n_tuning_trials == 0
    assert [c.key for c in spec.cells()][:2] == ["strategy=plain,depth=1", "strategy=plain,depth=2"]
    assert plan.tune_jobs(spec) == []


# --- Load-time validation: one line, naming file and field ---------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        ("objective.metric=val_acc", "unknown metric 'val_acc'; did you mean 'val_accuracy'?"),
        ("objective.metric=grad_norm/global", "unknown metric 'grad_norm/global'"),
        ("objective.metric=val_loss", "objective.direction: val_loss is better when larger/smaller: use 'minimize'"),
        ("compare.depth=[0, 1]", "the combination strategy=plain, depth=0 is not a valid trial"),
        ("compare.depth=[1, 300]", "depth=300 is not a valid trial"),
        ("compare.strategy=[plain, teleport]", "strategy=teleport"),
        ("compare.depth=[]", "depth: give at least one value"),
        ("compare.depth=[1, 1]", "values must be distinct"),
        ("compare.seed=[1, 2]", "'seed' cannot be compared (final.seeds holds the seeds)"),
        ("compare.dataset=[a]", "'dataset' cannot be compared"),
        ("compare.widht=[8]", "'widht' is not a trial config field; did you mean 'width'?"),
        ("compare={}", "compare"),
        ("base.epochs=0", "base.epochs"),
        ("base.epoch=2", "base.epoch: Extra inputs are not permitted"),
        ("base.dataset.test_split=null", "base.dataset.test_split: the report's numbers are test metrics"),
        ("final.seeds=[1, 1]", "final.seeds must be distinct"),
        ("final.seeds=[]", "final.seeds"),
        ("report.contrast=width", "report.contrast: 'width' is not compared"),
        ("report.baseline=teleport", "report.baseline: 'teleport' is not a compared value of strategy"),
        ("execution.grace_period=1", "execution.grace_period"),
    ],
)
def test_bad_values_are_one_line_errors(override, expected):
    message = load_error("smoke", [override])
    assert expected in message, message
    assert "smoke.yaml" in message  # names the file too


@pytest.mark.parametrize(
    "overrides, expected",
    [
        # reuse_source "input" is fine for residual, not for plain: the combination is named.
        (
            ["tune={search_space: {reuse_source: [input]}, trials_per_cell: 1}"],
            "the combination strategy=plain, depth=1, reuse_source=input",
        ),
        (["tune.search_space.learning_rate={low: 0, high: 1, log: true}"], "log ranges need low > 0"),
        (["tune.search_space.learning_rate={low: 1, high: 0.1}"], "low (1) must not exceed high (0.1)"),
        (["tune.search_space.width={low: 32, high: 64, step: 0}"], "step must be positive, got 0"),
        (
            ["tune.pruner.type=hyperband", "tune.pruner.min_resource=9"],
            "tune.pruner.min_resource (9) exceeds the epochs (5)",
        ),
        (["tune.search_space.learning_rate=0.01"], "a fixed value (0.01) belongs in base"),
        (
            ["tune.search_space.width={low: 32.0, high: 256.0}"],
            "tune.search_space.width: an integer field needs integer",
        ),
        (["tune.search_space.depth=[1, 2]"], "'depth' is compared; a knob is compared or tuned, not both"),
        (["tune.search_space.epochs=[1, 2]"], "'epochs' cannot be tuned"),
        (["tune.search_space.learning_rate=[-1, 0.1]"], "learning_rate=-1 is not a valid trial"),
        (["tune.search_space={}"], "tune.search_space"),
        (["final.seeds=[0, 1]"], "final.seeds must be fresh: 0 is base.seed"),
        (["tune.trials_per_cell=null"], "trials_per_cell is required with sampler type 'sobol'"),
        (["tune.sampler.type=grid"], "the grid sampler needs choices, not ranges, for: learning_rate"),
        (["tune.sampler.type=annealing"], "tune.sampler.type"),
        (["tune.pruner.n_warmup_steps=-1"], "tune.pruner.n_warmup_steps"),
    ],
)
def test_bad_tuning_is_a_one_line_error(overrides, expected):
    message = load_error("residual_depth", overrides)
    assert expected in message, message


def test_a_grid_tuning_budget_is_its_size():
    spec = load(
        "residual_depth",
        ["tune.sampler.type=grid", "tune.search_space.learning_rate=[0.001, 0.003]", "tune.trials_per_cell=null"],
    )
    assert spec.tune.trials_per_cell == 2
    message = load_error("residual_depth", ["tune.sampler.type=grid", "tune.search_space.learning_rate=[0.001, 0.003]"])
    assert "trials_per_cell is 6 but the grid has 2 points" in message


def test_every_validation_metric_is_accepted_with_its_direction():
    for metric, direction in EPOCH_METRICS.items():
        overrides = [f"objective.metric={metric}", f"objective.direction={direction}"]
        if not metric.startswith("val_"):
            # Selecting on a training metric would not be selecting on validation.
            assert f"use val_{metric}, not {metric}" in load_error("smoke", overrides)
            continue
        spec = load("smoke", overrides)
        assert spec.objective.test_metric == "test_" + metric.removeprefix("val_")


def test_unknown_key_in_file_is_an_error(tmp_path):
    data = study_data("smoke")
    data["epoch"] = 3  # a typo must not silently do nothing
    path = write_study(tmp_path, "typo", data)
    with pytest.raises(StudyError) as excinfo:
        load(path)
    assert one_line_error(excinfo).startswith(f"{path}: epoch: Extra inputs are not permitted")


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write_study(tmp_path, "broken", "name: broken\ncompare: {depth: [1, 2\n")
    with pytest.raises(StudyError, match="invalid YAML") as excinfo:
        load(path)
    assert f"{path}: line" in one_line_error(excinfo)


def test_non_mapping_file_is_an_error(tmp_path):
    path = write_study(tmp_path, "list", "- plain\n- residual\n")
    with pytest.raises(StudyError, match="must be a mapping"):
        load(path)


def test_missing_study_lists_known_ones():
    message = load_error("no_such_study")
    assert "no study 'no_such_study'" in message and "smoke" in message


# --- Overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("base.dataset.train_split=train[:2000]", (["base", "dataset", "train_split"], "train[:2000]")),
        ("base.epochs=3", (["base", "epochs"], 3)),
        ("compare.depth=[1, 2, 4]", (["compare", "depth"], [1, 2, 4])),
        ("tune.search_space.width={low: 32, high: 64}", (["tune", "search_space", "width"], {"low": 32, "high": 64})),
        ("base.learned_mask=true", (["base", "learned_mask"], True)),
        ("base.dataset.validation_split=null", (["base", "dataset", "validation_split"], None)),
        ("name=smoke_v2", (["name"], "smoke_v2")),
    ],
)
def test_parse_override(text, expected):
    assert study_files.parse_override(text) == expected


@pytest.mark.parametrize("text", ["epochs", "=3", " =3"])
def test_parse_override_needs_key_and_equals(text):
    with pytest.raises(StudyError, match="key=value") as excinfo:
        study_files.parse_override(text)
    one_line_error(excinfo)


def test_overrides_change_the_spec_and_not_the_file():
    spec = load("smoke", ["base.dataset.train_split=train[:1000]", "base.epochs=3", "compare.depth=[1, 2, 4]"])
    assert spec.base.dataset.train_split == "train[:1000]"
    assert spec.base.dataset.validation_split == "train[50000:51000]"  # siblings are kept
    assert spec.base.epochs == 3
    assert len(spec.cells()) == 12
    assert load("smoke").base.epochs == 2


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(StudyError, match="'epochs' is not a mapping"):
        load("smoke", ["base.epochs.count=3"])


# --- Tuning: suggestions, slots, selection, final runs ------------------------------------


def test_suggest_tuned_draws_from_the_declared_distributions():
    spec = load(
        "residual_depth",
        ["tune.search_space.width={low: 32, high: 256, log: true}", "tune.search_space.activation=[relu, gelu]"],
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = suggest_tuned(spec, trial)
        assert set(values) == {"learning_rate", "width", "activation"}
        assert 1e-5 <= values["learning_rate"] <= 1e-2 and isinstance(values["width"], int)
        TrialConfig.model_validate({**spec.base.model_dump(), **values})
        study.tell(trial, 0.0)
    distributions = study.trials[0].distributions
    assert distributions["learning_rate"].log and distributions["width"].log


def _tuned_study(spec, cell, values, storage):
    """A finished tuning study of `cell` whose trials got `values` (None: pruned)."""
    study = optuna.create_study(study_name=plan.tune_study_name(spec, cell), storage=storage, direction="maximize")
    for number, value in enumerate(values):
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        trial.set_user_attr(RUN_ID_ATTR, f"run-{cell.key}-{number}")
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return study


def test_every_cell_gets_the_same_budget_and_its_own_study():
    spec = load("residual_depth")
    jobs = plan.tune_jobs(spec)
    assert [job.study_name for job in jobs] == [plan.tune_study_name(spec, c) for c in spec.cells()]
    assert len({job.study_name for job in jobs}) == len(spec.cells())
    assert {len(job.slots) for job in jobs} == {spec.tune.trials_per_cell}
    # Sobol: slot k of every cell holds the same k-th point of the sequence.
    points = spec.tune.points()
    for job, cell in zip(jobs, spec.cells()):
        assert [slot_cell for slot_cell, _ in job.slots] == [cell] * len(points)
        assert [params for _, params in job.slots] == points
    # TPE and random leave every slot to the sampler.
    tpe = load("residual_depth", ["tune.sampler.type=tpe"])
    assert all(params == {} for job in plan.tune_jobs(tpe) for _, params in job.slots)


def test_selection_takes_the_best_complete_trial_per_cell_on_validation():
    spec = load("residual_depth", ["compare.depth=[1, 4]"])
    storage = optuna.storages.InMemoryStorage()
    cells = spec.cells()
    values = {cells[0].key: [0.80, 0.85, None, 0.84], cells[1].key: [0.70, None], cells[2].key: [None, None]}
    studies = {c.key: _tuned_study(spec, c, values.get(c.key, [0.5]), storage) for c in cells}
    selection = phases.select_best(spec, storage)
    first = selection[cells[0].key]
    assert (first.trial, first.value) == (1, 0.85)
    assert first.params == studies[cells[0].key].trials[1].params
    assert first.run_id == f"run-{cells[0].key}-1"
    assert selection[cells[1].key].trial == 0
    assert selection[cells[2].key] is None  # every trial pruned: nothing to retrain
    job = plan.final_job(spec, selection)
    by_cell = {}
    for cell, params in job.slots:
        by_cell.setdefault(cell.key, []).append(params)
    assert cells[2].key not in by_cell
    for key, runs in by_cell.items():
        assert [p["seed"] for p in runs] == spec.final.seeds  # the declared seeds, each once
        for params in runs:
            # exactly the selected config: compared values + selected tuned values + seed
            cell = next(c for c in cells if c.key == key)
            assert params == {**cell.values, **selection[key].params, "seed": params["seed"]}


def test_selection_minimises_a_loss():
    spec = load(
        "residual_depth",
        ["compare.depth=[1]", "compare.strategy=[plain]", "objective.metric=val_loss", "objective.direction=minimize"],
    )
    storage = optuna.storages.InMemoryStorage()
    cell = spec.cells()[0]
    study = optuna.create_study(study_name=plan.tune_study_name(spec, cell), storage=storage, direction="minimize")
    for value in (0.5, 0.3, 0.3, 0.9):
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        study.tell(trial, value)
    assert phases.select_best(spec, storage)[cell.key].trial == 1  # ties: the lowest number


def test_plain_grid_final_runs_are_cells_times_seeds():
    spec = load("smoke", ["final.seeds=[3, 4]"])
    job = plan.final_job(spec, {})
    assert len(job.slots) == 16
    assert job.slots[0][1] == {"strategy": "plain", "depth": 1, "seed": 3}
    assert job.slots[1][1] == {"strategy": "plain", "depth": 1, "seed": 4}


def test_dry_run_plan_names_cells_budget_and_final_runs():
    spec = load("residual_depth")
    text = plan.describe_plan(spec, "sqlite:///x.db", None, 2, 1)
    assert "6 trials per cell (84 in all)" in text
    assert "pruner median within each cell" in text
    assert "x seeds [1, 2, 3, 4, 5] = 70 runs" in text
    for index, cell in enumerate(spec.cells()):
        assert f"{index:3d}: {cell.key}  (6 tuning trials + 5 final runs; width 128, " in text
    assert "total: 154 training runs" in text


# --- The report's statistics --------------------------------------------------------------


def final_runs(spec, tests: dict[str, list[float]]) -> list[FinalRun]:
    cells = {c.key: c for c in spec.cells()}
    return [
        FinalRun(f"{key}-{seed}", key, cells[key].values, seed, value, value, 1.0, 1.0)
        for key, values in tests.items()
        for seed, value in zip(spec.final.seeds, values)
    ]


def test_mean_interval_is_the_student_t_interval():
    from scipy import stats

    interval = analysis.mean_interval([0.1, 0.2, 0.4])
    low, high = stats.t.interval(0.95, 2, loc=0.7 / 3, scale=stats.sem([0.1, 0.2, 0.4]))
    assert interval.mean == pytest.approx(0.7 / 3)
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert analysis.mean_interval([0.5]).half == 0.0
    assert math.isnan(analysis.mean_interval([]).mean)


def test_paired_differences_pair_by_seed_per_condition():
    spec = load("residual_depth", ["compare.depth=[1, 64]", "final.seeds=[1, 2, 3]"])
    runs = final_runs(
        spec,
        {
            "strategy=plain,depth=1": [0.80, 0.82, 0.81],
            "strategy=residual,depth=1": [0.81, 0.83, 0.80],
            "strategy=plain,depth=64": [0.50, 0.60, 0.55],
            "strategy=residual,depth=64": [0.85, 0.86, 0.87],
        },
    )
    diffs = {d.condition["depth"]: d for d in analysis.paired_differences(spec, runs)}
    assert diffs[1].diffs == pytest.approx((0.01, 0.01, -0.01))
    assert diffs[1].wins == 2
    assert diffs[64].diffs == pytest.approx((0.35, 0.26, 0.32))
    assert diffs[64].interval.mean == pytest.approx(0.31)
    assessed = {a.difference.condition["depth"]: a for a in analysis.assess(spec, list(diffs.values()))}
    assert "depth 64: residual is better than plain" in analysis.verdict(spec, assessed[64], "test_accuracy")
    assert "depth 1: inconclusive between residual and plain" in analysis.verdict(spec, assessed[1], "test_accuracy")
    assert re.fullmatch(
        r"strategy=residual,depth=64 vs strategy=plain: better, \+0\.3100 test_accuracy "
        r"\(simultaneous 95% CI \+0\.\d{4} to \+0\.\d{4}\), Holm-adjusted p = 0\.0\d+",
        analysis.verdict_line(spec, assessed[64], "test_accuracy"),
    )


def test_unpaired_seeds_are_left_out():
    spec = load("residual_depth", ["compare.depth=[1]", "final.seeds=[1, 2, 3]"])
    runs = final_runs(spec, {"strategy=plain,depth=1": [0.8, 0.8, 0.8], "strategy=residual,depth=1": [0.9, 0.9]})
    (diff,) = analysis.paired_differences(spec, runs)
    assert diff.interval.n == 2 and diff.wins == 2


def test_a_range_edge_selection_is_warned_about():
    spec = load("residual_depth", ["tune.search_space.learning_rate={low: 1.0e-4, high: 1.0e-2, log: true}"])
    cells = spec.cells()
    selection = {
        cells[0].key: Chosen(
            trial=0, value=0.5, params={"learning_rate": 1.05e-4}
        ),  # low edge of [1e-4, 1e-2] in log space
        cells[1].key: Chosen(trial=0, value=0.5, params={"learning_rate": 1e-3}),  # the middle
        cells[2].key: Chosen(trial=0, value=0.5, params={"learning_rate": 9.5e-3}),
        cells[3].key: None,
    }
    warnings = analysis.edge_warnings(spec, selection)
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{cells[0].key}: selected learning_rate=0.000105 lies at the low edge")
    assert "high edge" in warnings[1]


def test_param_kinds():
    assert isinstance(load("residual_depth").tune.search_space["learning_rate"], Range)
    spec = load("residual_depth", ["tune.search_space.width=[64, 128, 256]"])
    assert isinstance(spec.tune.search_space["width"], Choices)
    assert analysis.edge_warnings(
        spec, {spec.cells()[0].key: Chosen(trial=0, value=0.5, params={"learning_rate": 1e-3, "width": 256})}
    ) == [
        "strategy=plain,depth=1: selected width=256 is the largest choice; the best value may lie outside the search space"
    ]


def test_a_verdict_on_a_cell_selected_at_an_edge_says_so_even_on_a_grid_of_2_points():
    spec = load(
        "smoke",
        ["compare.depth=[1]", "final.seeds=[1, 2, 3, 4]", "tune={search_space: {learning_rate: [0.001, 0.01]}}"],
    )
    plain, concat, residual, masked = (c.key for c in spec.cells())
    selection = {
        plain: Chosen(trial=1, value=0.8, params={"learning_rate": 0.01}),  # the largest of 2 choices
        concat: Chosen(trial=0, value=0.8, params={"learning_rate": 0.001}),  # the smallest
        residual: None,
        masked: None,
    }
    assert analysis.edge_notes(spec, selection) == {
        plain: ["learning_rate=0.01 is the largest choice"],
        concat: ["learning_rate=0.001 is the smallest choice"],
    }
    runs = final_runs(spec, {plain: [0.80, 0.81, 0.79, 0.80], concat: [0.85, 0.87, 0.86, 0.88]})
    (assessed, *_) = analysis.assess(spec, analysis.paired_differences(spec, runs))
    edges = analysis.edge_notes(spec, selection)
    sentence = analysis.verdict(spec, assessed, "test_accuracy", edges)
    assert sentence.startswith("depth 1: concat is better than plain")
    assert sentence.endswith(
        f"(selected at a search edge: {concat}: learning_rate=0.001 is the smallest choice; "
        f"{plain}: learning_rate=0.01 is the largest choice)."
    )
    line = analysis.verdict_line(spec, assessed, "test_accuracy", edges)
    assert line.endswith(f"{plain}: learning_rate=0.01 is the largest choice)")
    # Without edges nothing is added.
    assert "search edge" not in analysis.verdict(spec, assessed, "test_accuracy", {})


def test_samplers_draw_new_values_in_each_worker_and_after_a_resume():
    """Regression: every process restarted the seeded draws, so workers and resumed
    studies tried learning rates that had been tried already."""

    spec = load("residual_depth", ["tune.sampler.type=tpe"])

    def first_draws(stream, trials_before, n=3):
        study = optuna.create_study(sampler=phases.sampler(spec, "tune", stream, trials_before))
        return [suggest_tuned(spec, study.ask())["learning_rate"] for _ in range(n)]

    fresh = first_draws(0, 0)
    assert first_draws(0, 0) == fresh  # one uninterrupted process: reproducible
    assert not set(first_draws(1, 0)) & set(fresh)  # a second worker
    assert not set(first_draws(0, 2)) & set(fresh)  # a resume after two trials
    assert isinstance(phases.sampler(spec, "final"), optuna.samplers.RandomSampler)


def test_median_warm_up_counts_epochs():

    spec = load("residual_depth")  # n_warmup_steps: 2
    study = optuna.create_study(direction="maximize", pruner=phases.pruner(spec, 5, "tune"))
    for value in (0.9, 0.9, 0.9):  # three finished trials: past the startup trials
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(value, epoch)
        study.tell(trial, value)
    trial = study.ask()
    trial.report(0.1, 1)
    assert not trial.should_prune()  # epoch 1: warm-up
    trial.report(0.1, 2)
    assert not trial.should_prune()  # epoch 2: warm-up
    trial.report(0.1, 3)
    assert trial.should_prune()


def test_the_report_warns_about_failed_and_missing_final_runs():
    from reuse_nets.report import writer as report

    spec = load("residual_depth", ["compare.depth=[64]", "final.seeds=[1, 2, 3]"])
    runs = final_runs(spec, {"strategy=plain,depth=64": [0.5, 0.6], "strategy=residual,depth=64": [0.8, 0.85, 0.9]})
    status = {
        "strategy=plain,depth=64": {"complete": 2, "failed": 1, "pending": 0},
        "strategy=residual,depth=64": {"complete": 3, "failed": 0, "pending": 0},
    }
    markdown = report.build_markdown(spec, runs, [], {}, status, [])
    assert (
        "**Warning:** strategy=plain,depth=64: 1 of 3 final runs failed (diverged, error, or their process died past execution.max_retry)"
        in markdown
    )
    assert "| strategy=plain,depth=64 | 0.5500 ± " in markdown and "| 2 | 1 |" in markdown
    assert "| depth=64 | residual | +0.2750 |" in markdown  # paired over seeds 1 and 2 only
    assert "Incomplete" not in markdown
    status["strategy=residual,depth=64"] = {"complete": 2, "failed": 0, "pending": 1}
    assert "**Incomplete:** 1 final run(s) have not run yet" in report.build_markdown(spec, runs, [], {}, status, [])


def test_one_seed_shows_its_value_and_no_interval_in_the_report_and_the_console():
    from reuse_nets.report import writer as report

    spec = load("residual_depth", ["compare.depth=[64]", "final.seeds=[1]"])
    runs = final_runs(spec, {"strategy=plain,depth=64": [0.80], "strategy=residual,depth=64": [0.81]})
    status = {cell.key: {"complete": 1, "failed": 0, "pending": 0} for cell in spec.cells()}
    markdown = report.build_markdown(spec, runs, [], {}, status, [])
    assert "| strategy=residual,depth=64 | 0.8100 (1 seed, no interval) | 1 | 0 | 0.8100 |" in markdown
    assert "| depth=64 | residual | +0.0100 | 1 seed, no interval | n/a |" in markdown
    assert "depth 64: residual - plain = +0.0100 test_accuracy (1 seed, no interval); inconclusive." in markdown
    assert "[+0.0100, +0.0100]" not in markdown  # a zero-width interval is no interval
    assert report.findings(spec, runs, {}, status) == [
        "strategy=residual,depth=64 vs strategy=plain: inconclusive, +0.0100 test_accuracy (1 seed, no interval)"
    ]


def test_report_headers_name_each_metric_once():
    from reuse_nets.report import writer as report

    spec = load("residual_depth", ["compare.depth=[64]", "final.seeds=[1, 2]"])
    runs = final_runs(spec, {"strategy=plain,depth=64": [0.5, 0.6], "strategy=residual,depth=64": [0.8, 0.9]})
    runs = [dataclasses.replace(run, curve=(0.4, run.val), width=64) for run in runs]
    status = {cell.key: {"complete": 2, "failed": 0, "pending": 0} for cell in spec.cells()}
    budget = [{"cell": c.key, "complete": 2, "pruned": 0, "failed": 0, "died": 0, "stopped": []} for c in spec.cells()]
    markdown = report.build_markdown(spec, runs, budget, {}, status, [])
    headers = [line for line in markdown.splitlines() if line.startswith("| cell |")]
    assert len(headers) == 3  # tuning budget, final per cell, capacity and convergence
    assert all(line.count("val_accuracy") == 1 and "val val_" not in line for line in headers), headers


# --- Capacity matching ------------------------------------------------------------------------


def test_strategy_depth_matches_every_cell_to_plain_at_its_depth():
    from reuse_nets.design import datasets
    from reuse_nets.nn import capacity

    spec = load("strategy_depth")
    shape, classes = datasets.features(spec.base.dataset.name)
    assert spec.match is not None and spec.match.tolerance == 0.05
    for depth in spec.compare["depth"]:
        cells = {c.values["strategy"]: c for c in spec.cells() if c.values["depth"] == depth}
        plain = spec.cell_config(cells["plain"])
        assert plain.width == spec.base.width  # the baseline keeps its width
        target = capacity.of_config(plain, shape, classes).trainable
        for cell in cells.values():
            config = spec.cell_config(cell)
            counted = capacity.of_config(config, shape, classes).trainable
            assert abs(counted - target) / target <= 0.05, (cell.key, counted, target)
            # Nearest: one unit of width more or less is no closer.
            for other in (config.width - 1, config.width + 1):
                nearby = capacity.of_config(config.model_copy(update={"width": other}), shape, classes).trainable
                assert abs(nearby - target) >= abs(counted - target), (cell.key, other)
    # Without matching, concat at depth 64 would carry 6.5x plain's parameters.
    assert load("strategy_depth", ["match=null"]).cell_config(spec.cells()[7]).width == 128


def test_matched_widths_reach_tuning_and_final_configs():
    spec = load("strategy_depth")
    cell = spec.cells()[7]  # concat, depth 64
    width = spec.cell_config(cell).width
    assert width < 128
    assert spec.cell_config(cell, {"learning_rate": 1e-3}, seed=3).width == width
    assert spec.matched(cell) == {"width": width}
    job = plan.final_job(
        spec, {c.key: Chosen(trial=0, value=0.5, params={"learning_rate": 1e-3}) for c in spec.cells()}
    )
    configs = [spec.cell_config(c, {k: v for k, v in p.items() if k not in c.values}) for c, p in job.slots]
    assert {c.width for c in configs if c.strategy == "concat" and c.depth == 64} == {width}


def test_matching_on_flops_and_total_params():
    from reuse_nets.design import datasets
    from reuse_nets.nn import capacity

    shape, classes = datasets.features("fashion_mnist")
    for measure in ("flops", "total_params"):
        spec = load("strategy_depth", [f"match.measure={measure}"])
        for depth in spec.compare["depth"]:
            cells = [c for c in spec.cells() if c.values["depth"] == depth]
            counts = [capacity.of_config(spec.cell_config(c), shape, classes).of(measure) for c in cells]
            assert max(abs(c - counts[0]) / counts[0] for c in counts) <= 0.05, (measure, depth, counts)


def test_identity_holds_new_knobs_only_when_set():
    spec = load("residual_depth")
    assert not {"kernel_initializer", "normalization", "branch_gain_init"} & set(spec.identity()["base"])
    assert "match" not in spec.identity() and "match" not in spec.tune_identity(spec.cells()[0])
    changed = load("residual_depth", ["base.normalization=layer"])
    assert changed.identity()["base"]["normalization"] == "layer"
    matched = load("strategy_depth")
    assert matched.identity()["match"] == {"measure": "trainable_params", "solve": "width", "tolerance": 0.05}
    assert matched.tune_identity(matched.cells()[0])["match"] == matched.identity()["match"]


def test_sobol_points_cover_integer_and_stepped_ranges_evenly():
    spec = load(
        "residual_depth",
        [
            "tune.trials_per_cell=64",
            "tune.search_space.width={low: 1, high: 4}",
            "tune.search_space.batch_size={low: 32, high: 130, step: 32}",
        ],
    )
    points = spec.tune.points()
    widths = [p["width"] for p in points]
    assert {w: widths.count(w) for w in (1, 2, 3, 4)} == {1: 16, 2: 16, 3: 16, 4: 16}
    assert {p["batch_size"] for p in points} == {32, 64, 96, 128}  # on the step grid, never 130
    rates = [p["learning_rate"] for p in points]
    assert 1e-5 <= min(rates) and max(rates) <= 1e-2
    assert spec.tune.points() == points  # seeded


def test_the_width_solver_finds_the_nearest_width_where_counts_are_not_monotone():
    from reuse_nets.design import matching
    from reuse_nets.nn import capacity

    # A residual block reusing the input needs no shortcut at width 784: fewer parameters than at 783.
    config = TrialConfig(strategy="residual", depth=8, reuse_source="input")
    at = {w: capacity.of_config(config.model_copy(update={"width": w}), (28, 28, 1), 10).trainable for w in (783, 784)}
    assert at[784] < at[783]
    assert matching.solve_width(config, at[784], "trainable_params", (28, 28, 1), 10) == 784


def test_tuning_repeats_shift_every_seed_and_get_their_own_studies():
    spec = load("residual_depth", ["compare.depth=[1, 2]", "final.seeds=[1, 2]", "tune.repeats=3"])
    jobs = plan.tune_jobs(spec)
    assert len(jobs) == len(spec.cells()) * 3 and len({j.study_name for j in jobs}) == len(jobs)
    assert {(j.study_name, j.repeat) for j in jobs} == {
        (f"residual_depth:tune:{c.key}:repeat={r}", r) for c in spec.cells() for r in range(3)
    }
    assert [spec.tuning_seed(r) for r in range(3)] == [0, 1000, 2000]
    assert spec.all_final_seeds() == [1, 2, 1001, 1002, 2001, 2002]
    # Each repeat its own Sobol sequence, the same in every cell of that repeat.
    for job in jobs:
        assert [params for _, params in job.slots] == spec.tune.points(job.repeat)
    assert spec.tune.points(0) != spec.tune.points(1)
    assert spec.n_tuning_trials == 4 * 3 * spec.tune.trials_per_cell and spec.n_final_runs == 4 * 3 * 2
    # The final phase retrains each repeat's own selection with that repeat's seeds.
    selection = {
        plan.unit_key(spec, c, r): Chosen(trial=0, value=0.5, params={"learning_rate": 0.001 * (r + 1)})
        for c, r in plan.units(spec)
    }
    slots = plan.final_job(spec, selection).slots
    assert len(slots) == spec.n_final_runs
    for _, params in slots:
        r = params["repeat"]
        assert params["seed"] in spec.final_seeds(r) and params["learning_rate"] == 0.001 * (r + 1)
    text = plan.describe_plan(spec, "sqlite:///x.db", None, 1, 1)
    assert "repeats: 3 independent" in text and "= 24 runs" in text
    # One repeat is the study as before: same names, same identities.
    one = load("residual_depth", ["tune.repeats=1"])
    before = load("residual_depth")
    assert one.identity() == before.identity() and "repeats" not in str(before.identity())
    assert [j.identity for j in plan.tune_jobs(one)] == [j.identity for j in plan.tune_jobs(before)]
    assert plan.tune_study_name(one, one.cells()[0]) == f"residual_depth:tune:{one.cells()[0].key}"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["final.seeds=[1, 1000]", "tune.repeats=2"], "seed 1000 would be both"),
        (["tune.repeats=21"], "tune.repeats"),
        (["tune.repeats=0"], "tune.repeats"),
    ],
)
def test_bad_repeats_are_one_line_errors(overrides, expected):
    assert expected in load_error("residual_depth", overrides)


# --- Compared knobs must change the networks ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        (
            "smoke",
            ["compare.kernel_size=[3, 5]"],
            "compare.kernel_size: kernel_size has no effect on family 'mlp' networks; "
            "the cells would train identical networks",
        ),
        (  # a masked-only option, compared in cells of strategies that do not read it
            "smoke",
            ["compare.strategy=[plain, residual]", "compare.keep_ratio=[0.25, 0.5]"],
            "compare.keep_ratio: keep_ratio has no effect on strategy 'plain' or strategy 'residual' networks; "
            "the cells would train identical networks",
        ),
        (  # null is the strategy's default reuse source: the same network
            "smoke",
            ["compare.strategy=[plain, residual]", "compare.reuse_source=[null, previous]"],
            "compare.reuse_source: its values [None, 'previous'] make no difference to the networks; "
            "the cells would train identical networks",
        ),
    ],
)
def test_a_compared_knob_without_effect_is_refused(name, overrides, expected):
    message = load_error(name, overrides)
    assert message.endswith(f"{name}.yaml: {expected}"), message


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("conv_depth", ["compare.kernel_size=[3, 5]"]),  # conv networks read it
        # keep_ratio changes the masked cells; that the plain ones are alike is no reason to refuse.
        ("smoke", ["compare.strategy=[plain, masked]", "compare.keep_ratio=[0.25, 0.5]"]),
        # Tuned over strategies, some of each cell's trials are masked.
        (
            "smoke",
            [
                "compare={keep_ratio: [0.25, 0.5]}",
                "tune={search_space: {strategy: [plain, masked]}}",
                "final.seeds=[1]",
            ],
        ),
    ],
)
def test_a_compared_knob_that_changes_some_cells_is_allowed(name, overrides):
    spec = load(name, overrides)
    assert len(spec.cells()) >= 2


# --- The default sampler: reproducible ----------------------------------------------------

# Each shipped study's identity digest (`parent_run.spec_digest`) and the digest of its tune
# jobs' identities, computed before the default sampler changed (2026-12-08): the identities
# of studies stored before this change. A regression pin: they must never change.
STORED_IDENTITIES = {
    "cifar10_conv_depth": ("31a60e9399f27742", "4273b6bd4e77b721"),
    "conv_depth": ("d3f37573fbb85627", "8bb98f44ff27597c"),
    "masked_keep_ratio": ("7484d7c04858a22d", "b7c7ed0537a725cb"),
    "pruning_check": ("7edee0d4cb4d275a", "89c6c24e984ebf12"),
    "residual_depth": ("ff142006cfb4fbfe", "657181634357ae7d"),
    "reuse_init": ("36832441d9d919b5", "87d4f84e63697fd3"),
    "smoke": ("d73c4f5c7b30bf0f", "4f53cda18c2baa0c"),
    "strategy_depth": ("5bc17181432d835c", "4dabc1980f6d20e5"),
    "tuning_variance": ("b3996e4c9db8cbf0", "0e185a1b862eaf51"),
}
# residual_depth without a sampler, stored when the default was tpe (same pin).
IMPLICIT_TPE_IDENTITY = ("32317988a7f06d36", "a9955647d350e55e")


def identity_digests(spec: StudySpec) -> tuple[str, str]:
    tune = hashlib.sha256(json.dumps([j.identity for j in plan.tune_jobs(spec)], sort_keys=True).encode())
    return parent_run.spec_digest(spec), tune.hexdigest()[:16]


def test_shipped_studies_keep_their_stored_identities():
    assert set(STORED_IDENTITIES) <= set(SHIPPED)  # studies added later have no identity stored before
    assert {name: identity_digests(load(name)) for name in STORED_IDENTITIES} == STORED_IDENTITIES


def test_a_study_that_names_no_sampler_is_reproducible():
    ranged = load("residual_depth", ["tune.sampler={}"])
    assert ranged.tune.sampler.type == "sobol"
    assert ranged.identity() == load("residual_depth").identity()  # as if it named sobol
    choices = load("strategy_depth", ["tune.sampler={}"])
    assert choices.tune.sampler.type == "grid" and choices.tune.trials_per_cell == 6
    text = plan.describe_plan(ranged, "sqlite:///x.db", None, 1, 1)
    assert "sampler sobol (seed 0: slot k tries the k-th quasi-random point" in text
    assert "sampler grid (every point once" in plan.describe_plan(choices, "sqlite:///x.db", None, 1, 1)
    assert load("residual_depth", ["tune.sampler={type: tpe}"]).tune.sampler.type == "tpe"  # when named


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        (
            "residual_depth",
            ["tune.sampler={}", "tune.trials_per_cell=null"],
            "tune: trials_per_cell is required with sampler type 'sobol', "
            "the default sampler when a knob is searched over a range",
        ),
        (
            "strategy_depth",
            ["tune.sampler={}", "tune.trials_per_cell=3"],
            "tune: trials_per_cell is 3 but the grid has 6 points (grid is the default sampler",
        ),
    ],
)
def test_the_default_sampler_says_what_it_needs(name, overrides, expected):
    assert expected in load_error(name, overrides)


def test_a_study_stored_with_the_old_default_resumes_once_it_names_tpe():
    old = load("residual_depth", ["tune.sampler={type: tpe}"])  # what the file without a sampler was
    assert identity_digests(old) == IMPLICIT_TPE_IDENTITY
    storage = optuna.storages.InMemoryStorage()
    for job in [*plan.tune_jobs(old)[:1], plan.final_job(old, {})]:
        optuna_store.open_study(storage, job.study_name, job.identity, direction="maximize", sampler=None, pruner=None)
        optuna_store.check_identity(storage, job.study_name, job.identity)  # the file names tpe: it resumes
    now = load("residual_depth", ["tune.sampler={}"])  # the same file, read with the new default
    for job in [*plan.tune_jobs(now)[:1], plan.final_job(now, {})]:
        with pytest.raises(SweepError) as excinfo:
            optuna_store.check_identity(storage, job.study_name, job.identity)
        assert f"Optuna study {job.study_name!r} ran with sampler 'tpe', not 'sobol'; to resume it, name it in " in (
            message := one_line_error(excinfo)
        )
        assert message.endswith("(tune.sampler.type: tpe) or --set tune.sampler.type=tpe")
    other = load("residual_depth", ["tune.sampler={}", "base.epochs=2"])  # more than the sampler differs
    with pytest.raises(SweepError, match="with a different spec; rename the study"):
        optuna_store.check_identity(storage, plan.final_study_name(other), other.identity())


# --- Declared contrasts: main effects and interactions -------------------------------------------

FACTORIAL = [
    "compare={strategy: [plain, residual], start_as_identity: [false, true], depth: [2, 4]}",
    "report.contrasts=[{name: skip x identity, of: [strategy, start_as_identity]}, "
    "{name: identity start, of: [start_as_identity], average: [strategy]}]",
    "final.seeds=[1, 2, 3, 4]",
]


def test_an_interaction_is_a_difference_of_differences_paired_by_seed_in_the_holm_family():
    spec = load("smoke", FACTORIAL)
    key = {(s, i, d): f"strategy={s},start_as_identity={i},depth={d}" for s in ("plain", "residual")
           for i in (False, True) for d in (2, 4)}  # fmt: skip
    rng = np.random.default_rng(7)
    tests = {}
    for (strategy, identity, depth), cell in key.items():
        # A planted interaction of +0.04 at depth 4 only, on top of seed noise shared by a seed's cells.
        effect = 0.04 if (strategy, identity, depth) == ("residual", True, 4) else 0.0
        tests[cell] = [0.8 + effect + 0.01 * seed_noise for seed_noise in (0.3, -0.2, 0.5, -0.1)]
        tests[cell] = [t + rng.normal(0, 0.002) for t in tests[cell]]
    runs = final_runs(spec, tests)
    differences = analysis.paired_differences(spec, runs)
    declared = [d for d in differences if d.declared]
    assert spec.family_size == len(differences) == 2 * 2 + 2 * 2  # 2 pairs x 2 conditions, 2 contrasts x 2 depths
    interaction = {d.condition["depth"]: d for d in declared if d.value == "skip x identity"}
    for depth, d in interaction.items():
        expected = [
            (tests[key["residual", True, depth]][i] - tests[key["residual", False, depth]][i])
            - (tests[key["plain", True, depth]][i] - tests[key["plain", False, depth]][i])
            for i in range(4)
        ]
        assert d.diffs == pytest.approx(expected, abs=1e-12) and d.label == "skip x identity"
    main = next(d for d in declared if d.value == "identity start" and d.condition == {"depth": 4})
    assert main.interval.mean == pytest.approx(0.02, abs=0.005)  # half the planted +0.04: averaged over strategy
    assessed = analysis.assess(spec, differences)
    by_label = {(a.difference.label, a.difference.condition.get("depth")): a for a in assessed}
    deep, shallow = by_label[("skip x identity", 4)], by_label[("skip x identity", 2)]
    assert deep.verdict == "better" and shallow.verdict != "better"
    # The adjusted p is Holm's over the whole family: at least the raw p times the number not yet rejected.
    assert deep.p_adjusted >= deep.p_t and deep.p_adjusted < spec.report.alpha
    line = analysis.verdict_line(spec, deep, spec.objective.test_metric)
    assert line.startswith("contrast skip x identity at depth=4: better, +0.04")
    text = analysis.family_text(spec, assessed)
    assert text.startswith("8 comparisons (strategy: each value against plain, in each of 4 condition(s) and 4 of ")
    assert "declared contrasts (skip x identity, identity start)" in text


@pytest.mark.parametrize(
    "contrast, message",
    [
        ("{name: a, of: [width]}", "'width' is not compared"),
        ("{name: a, of: [depth]}", "'depth' has 3 compared values; a factor of a contrast has 2"),
        ("{name: a, of: [strategy], average: [strategy]}", "a knob is named twice"),
    ],
)
def test_a_contrast_of_unknown_or_many_valued_knobs_is_refused(contrast, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        load("smoke", ["compare={strategy: [plain, residual], depth: [1, 2, 4]}", f"report.contrasts=[{contrast}]"])


def test_the_tuning_table_lists_each_pruned_and_failed_trial():
    from reuse_nets.names import OUTCOME_ATTR, SLOT_ATTR
    from reuse_nets.report import writer

    spec = load("residual_depth", ["compare.depth=[1]"])
    storage = optuna.storages.InMemoryStorage()
    cell = spec.cells()[0]
    study = optuna.create_study(study_name=plan.tune_study_name(spec, cell), storage=storage, direction="maximize")
    for slot, end in enumerate(["complete", "pruned", "diverged"]):
        trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)})
        trial.set_user_attr(SLOT_ATTR, slot)
        trial.report(0.5, 1)
        trial.report(0.4, 2)
        if end == "complete":
            study.tell(trial, 0.6)
        elif end == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.set_user_attr(OUTCOME_ATTR, end)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (row, *_) = writer.budget_rows(spec, storage)
    assert (row["complete"], row["pruned"], row["failed"]) == (1, 1, 1)
    lrs = [t.params["learning_rate"] for t in study.trials]
    assert row["stopped"] == [
        f"trial 1 (learning_rate={lrs[1]:.4g}): pruned after epoch 2",
        f"trial 2 (learning_rate={lrs[2]:.4g}): diverged",
    ]


def test_early_stoppings_knobs_without_patience_would_train_identical_cells():
    compared = "compare={strategy: [plain, residual], min_delta: [0.0, 0.01]}"
    with pytest.raises(StudyError, match=r"compare\.min_delta: .* the cells would train identical networks"):
        load("smoke", [compared])
    assert len(load("smoke", [compared, "base.patience=2"]).cells()) == 4  # with early stopping it matters


def test_edge_notes_name_the_tuning_repeat():
    spec = load(
        "residual_depth", ["compare.depth=[1]", "tune.repeats=2", "tune.search_space.learning_rate=[0.001, 0.01]"]
    )
    plain = spec.cells()[0]
    selection = {
        plan.unit_key(spec, plain, 0): Chosen(trial=0, value=0.5, params={"learning_rate": 0.01}),
        plan.unit_key(spec, plain, 1): Chosen(trial=0, value=0.5, params={"learning_rate": 0.001}),
    }
    assert analysis.edge_notes(spec, selection) == {
        plain.key: [
            "learning_rate=0.01 is the largest choice (repeat 0)",
            "learning_rate=0.001 is the smallest choice (repeat 1)",
        ]
    }
