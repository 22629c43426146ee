"""End-to-end: bad inputs to the sweep scripts (the `BAD_INPUTS` table, unusable
experiments, missing offline data) are one `error:` line, exit 2, and nothing written.
"""

import sqlite3
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.entities import ViewType
from sweep_helpers import (
    RUNNER,
    assert_wrote_nothing,
    error_line,
    explain,
    quiet_optuna,  # noqa: F401  (autouse: Optuna's log at WARNING in every test here)
    run,
    sweep_command,
    tracking_url,
)

from reuse_nets.design import study_files

pytestmark = pytest.mark.slow


# --- user errors: one line, exit 2, nothing written --------------------------------------------


def study_file_data(name: str) -> dict:
    return yaml.safe_load((study_files.EXPERIMENTS_DIR / f"{name}.yaml").read_text())


def with_unknown_key(data):
    data["epoch"] = 3
    return data


def with_depth_zero(data):
    data["compare"]["depth"] = [0, 1]
    return data


def with_range_under_grid(data):
    data["tune"]["sampler"] = {"type": "grid"}
    return data


def with_float_range_for_width(data):
    # Every width between 32.0 and 256.0 but the integral ones is invalid.
    data["tune"]["search_space"]["width"] = {"low": 32.0, "high": 256.0}
    return data


def with_misspelt_metric(data):
    # Regression: this once loaded, then crashed after the first trial.
    data["objective"]["metric"] = "val_acc"
    return data


def with_invalid_combination(data):
    # Regression: `plain` refuses reuse_source=input; this once failed inside a trial.
    data["tune"]["search_space"]["reuse_source"] = ["input", "previous"]
    return data


def without_sampler_or_budget(data):
    # No sampler named: the search space has a range, so sobol, which needs trials_per_cell.
    del data["tune"]["sampler"], data["tune"]["trials_per_cell"]
    return data


def with_value(*keys_and_value):
    """Sets one field, e.g. `with_value("tune", "sampler", "type", "cmaes")`."""
    *keys, value = keys_and_value

    def breaks(data):
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        return data

    return breaks


BROKEN_STUDY = "broken_study.yaml"  # the file a study-file case writes, in the runner's working directory
ERROR_TIMEOUT = 120  # seconds: every bad input fails before any training; no server is retried for minutes


def study_file(content: str, breaks=None):
    """A study file: raw text, or a study of experiments/ and what breaks it."""

    def make(directory: Path) -> list[str]:
        path = directory / BROKEN_STUDY
        text = content if breaks is None else yaml.safe_dump(breaks(study_file_data(content)), sort_keys=False)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))  # "\udce9": a stray byte 0xe9
        return sweep_command(directory, str(path))

    return make


def command(study: str, *extra: str):
    """A runner command line (both stores in the test's directory, small data), plus `extra`."""
    return lambda directory: sweep_command(directory, study, *extra)


def bare_command(*args: str):
    """A runner command line of exactly `args`."""
    return lambda directory: [sys.executable, str(RUNNER), *args]


def reports_at_a_file(directory: Path) -> list[str]:
    """A runner command whose --reports names an existing file: refused before training."""
    (directory / REPORTS_FILE).write_text("")
    return sweep_command(directory, "smoke", "--reports", str(directory / REPORTS_FILE))


REPORTS_FILE = "reports_file"
READ_ONLY_DB = "read_only.db"


def read_only_storage(directory: Path) -> list[str]:
    """A runner command whose Optuna storage opens read-only: refused before MLflow or data are touched."""
    sqlite3.connect(directory / READ_ONLY_DB).execute("CREATE TABLE t (x)").connection.close()
    command = sweep_command(directory, "smoke")
    command[command.index("--storage") + 1] = f"sqlite:///file:{directory / READ_ONLY_DB}?mode=ro&uri=true"
    return command


def bare_script(script: str, *args: str):
    """Another script of sweeps/ with exactly `args`."""
    return lambda directory: [sys.executable, str(RUNNER.parent / script), *args]


# id, how to make the input, what the one error line says ({file}: the study file's path).
BAD_INPUTS = [
    # --- study files: checked when they load, before any data, storage or tracking
    pytest.param(
        study_file("name: invalid_yaml\ncompare: {depth: [1, 2\n"), "{file}: line 3 invalid YAML", id="invalid_yaml"
    ),
    pytest.param(study_file("- plain\n- residual\n"), "{file}: a study file must be a mapping", id="not_a_mapping"),
    pytest.param(
        study_file("smoke", with_unknown_key), "{file}: epoch: Extra inputs are not permitted", id="unknown_key"
    ),
    pytest.param(
        study_file("smoke", with_value("base", "epochs", "five")),
        "{file}: base.epochs: Input should be a valid integer",
        id="wrong_type",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "search_space", {})),
        "{file}: tune.search_space: Dictionary should have at least 1 item",
        id="empty_search_space",
    ),
    pytest.param(
        study_file("smoke", with_depth_zero),
        "{file}: the combination strategy=plain, depth=0 is not a valid trial",
        id="depth_zero",
    ),
    pytest.param(
        study_file("smoke", with_value("compare", "depth", [1, 10**6])),
        "{file}: the combination strategy=plain, depth=1000000 is not a valid trial: depth: Input should be less than or equal to 256",
        id="depth_million",
    ),
    pytest.param(
        study_file("smoke", with_value("compare", "strategy", ["plain", "resnet"])),
        "{file}: the combination strategy=resnet, depth=1 is not a valid trial: strategy: unknown strategy 'resnet'",
        id="unknown_strategy",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "sampler", "type", "cmaes")),
        "{file}: tune.sampler.type: Input should be 'tpe', 'random', 'grid' or 'sobol'",
        id="unknown_sampler",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "pruner", "type", "percentile")),
        "{file}: tune.pruner.type: Input should be 'none', 'median' or 'hyperband'",
        id="unknown_pruner",
    ),
    pytest.param(
        study_file("smoke", with_value("objective", "metric", "f1_score")),
        "{file}: objective.metric: unknown metric 'f1_score'; training logs",
        id="unknown_metric",
    ),
    pytest.param(
        study_file("residual_depth", with_misspelt_metric),
        "{file}: objective.metric: unknown metric 'val_acc'; did you mean 'val_accuracy'?",
        id="misspelt_metric",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "search_space", "learning_rate", {"low": 1e-2, "high": 1e-4})),
        "{file}: tune.search_space: learning_rate: low (0.01) must not exceed high (0.0001)",
        id="low_above_high",
    ),
    pytest.param(
        study_file(
            "residual_depth", with_value("tune", "search_space", "learning_rate", {"low": 0, "high": 1e-2, "log": True})
        ),
        "{file}: tune.search_space: learning_rate: log ranges need low > 0, got 0",
        id="log_range_from_zero",
    ),
    pytest.param(
        study_file("residual_depth", with_range_under_grid),
        "{file}: tune: the grid sampler needs choices, not ranges, for: learning_rate",
        id="range_under_grid",
    ),
    pytest.param(
        study_file("residual_depth", with_float_range_for_width),
        "{file}: tune.search_space.width: an integer field needs integer low, high and step",
        id="float_range_for_width",
    ),
    pytest.param(
        study_file("residual_depth", with_invalid_combination),
        "{file}: the combination strategy=plain, depth=1, learning_rate=1e-05, reuse_source=input is not a valid trial",
        id="invalid_combination",
    ),
    pytest.param(  # Regression: every trial of this study once failed to build, and the sweep exited 0.
        study_file("smoke", with_value("base", "activation", "relux")),
        "{file}: base.activation: unknown activation 'relux'; did you mean 'relu'?",
        id="unknown_activation",
    ),
    pytest.param(
        study_file("residual_depth", with_value("tune", "search_space", "activation", ["relu", "swiss"])),
        "{file}: the combination strategy=plain, depth=1, learning_rate=1e-05, activation=swiss is not a valid trial: "
        "activation: unknown activation 'swiss'; did you mean 'swish'?",
        id="tuned_activation_typo",
    ),
    pytest.param(  # Found when the data loads: before either store is opened.
        study_file("smoke", with_value("base", "dataset", "name", "not_a_dataset")),
        "unknown TFDS dataset 'not_a_dataset'",
        id="unknown_dataset_in_file",
    ),
    # --- command lines: the study, its overrides, the stores, the options
    pytest.param(command("no_such_study"), "no study 'no_such_study'", id="unknown_study"),
    pytest.param(bare_command(), "--study is required (or --list)", id="no_study"),
    pytest.param(
        command("smoke", "--set", "base.epochs=zero"), "base.epochs: Input should be a valid integer", id="epochs_zero"
    ),
    pytest.param(command("smoke", "--set", "compare.depth=[0]"), "depth=0 is not a valid trial", id="depth_0"),
    pytest.param(command("smoke", "--set", "base.epochs.count=1"), "'epochs' is not a mapping", id="set_into_scalar"),
    pytest.param(command("smoke", "--set", "epochs"), "expected key=value", id="set_without_value"),
    pytest.param(command("smoke", "--set", "=3"), "--set '=3': expected key=value", id="set_without_key"),
    pytest.param(
        command("smoke", "--set", "base..epochs=3"),
        "--set 'base..epochs=3': empty part in key 'base..epochs'",
        id="set_empty_key_part",
    ),
    pytest.param(
        command("smoke", "--set", "objective.metric=val_acc"), "did you mean 'val_accuracy'?", id="metric_typo"
    ),
    pytest.param(
        command("residual_depth", "--set", "tune.search_space.reuse_source=[input]"),
        "the combination strategy=plain, depth=1, learning_rate=1e-05, reuse_source=input",
        id="bad_combination",
    ),
    pytest.param(
        command("smoke", "--set", "base.dataset.name=not_a_dataset"),
        "unknown TFDS dataset 'not_a_dataset'",
        id="unknown_dataset",
    ),
    pytest.param(  # a real TFDS builder, of text: refused from its declared features, before any data
        command("smoke", "--set", "base.dataset.name=imdb_reviews"),
        "dataset 'imdb_reviews' is not image classification (fixed-size images with class labels)",
        id="not_image_classification",
    ),
    # The last --storage/--tracking-uri wins over the test directory's.
    pytest.param(
        command("smoke", "--storage", "notaurl"), "cannot open Optuna storage 'notaurl'", id="storage_not_a_url"
    ),
    pytest.param(
        command("smoke", "--storage", "postgresql://nobody@127.0.0.1:1/x"),
        "cannot open Optuna storage 'postgresql://nobody@127.0.0.1:1/x'",
        id="storage_unreachable",
    ),
    pytest.param(
        command("smoke", "--tracking-uri", "http://127.0.0.1:1"),
        "MLflow tracking server http://127.0.0.1:1 is unreachable: [Errno 111] Connection refused",
        id="tracking_server_unreachable",
    ),
    pytest.param(
        command("smoke", "--tracking-uri", "notaurl"),
        "MLflow tracking store notaurl is unusable",
        id="tracking_not_a_uri",
    ),
    # --- capacity matching and the knobs that separate reuse from initialisation
    pytest.param(
        command("strategy_depth", "--set", "match.tolerance=0.001"),
        "match: cell strategy=concat,depth=1 cannot be matched on trainable_params",
        id="match_infeasible",
    ),
    pytest.param(
        command("strategy_depth", "--set", "compare.width=[64, 128]"),
        "match.solve: 'width' is compared",
        id="match_solves_a_compared_knob",
    ),
    pytest.param(
        command("strategy_depth", "--set", "tune.search_space.normalization=[none, layer]"),
        "tune.search_space.normalization: it changes trainable_params within a cell",
        id="match_undone_by_tuning",
    ),
    pytest.param(
        command("strategy_depth", "--set", "base.dataset.name=not_a_dataset"),
        "match: unknown TFDS dataset 'not_a_dataset'",
        id="match_unknown_dataset",
    ),
    pytest.param(
        command("smoke", "--set", "base.kernel_initializer=zeros"),
        "unknown kernel_initializer 'zeros'",
        id="unknown_initializer",
    ),
    pytest.param(
        command("smoke", "--set", "compare.reuse_source=[stem]"),
        "reuse_source 'stem' is not allowed for strategy 'plain'",
        id="stem_for_plain",
    ),
    pytest.param(  # kernel_size is read by conv networks only: the cells would be the same network
        study_file("smoke", with_value("compare", "kernel_size", [3, 5])),
        "{file}: compare.kernel_size: kernel_size has no effect on family 'mlp' networks; "
        "the cells would train identical networks",
        id="identical_networks",
    ),
    pytest.param(
        study_file("residual_depth", without_sampler_or_budget),
        "{file}: tune: trials_per_cell is required with sampler type 'sobol', "
        "the default sampler when a knob is searched over a range",
        id="default_sampler_without_budget",
    ),
    pytest.param(command("smoke", "--workers", "0"), "--workers must be between 1 and 64, got 0", id="workers_0"),
    pytest.param(
        command("smoke", "--workers", "two"), "argument --workers: invalid int value: 'two'", id="workers_not_a_number"
    ),
    pytest.param(
        command("smoke", "--timeout", "-5"),
        "--timeout must be a non-negative number of seconds, got -5.0",
        id="negative_timeout",
    ),
    # --- hostile or absurd inputs (issue 22): one line, exit 2, nothing written
    pytest.param(
        study_file("smoke", with_value("name", "..")),
        "{file}: name: name '..' is a path, not a study name",
        id="name_dotdot",
    ),
    pytest.param(
        study_file("smoke", with_value("final", "seeds", [-1, 2])),
        "{file}: final.seeds.0: Input should be greater than or equal to 0",
        id="negative_seed",
    ),
    pytest.param(
        study_file("smoke", with_value("final", "seeds", [2**32])),
        "{file}: final.seeds.0: Input should be less than or equal to 4294967039",
        id="seed_too_large",
    ),
    pytest.param(
        study_file("smoke", with_value("base", "learning_rate", float("inf"))),
        "{file}: base.learning_rate: Input should be a finite number",
        id="infinite_learning_rate",
    ),
    pytest.param(
        study_file("smoke", with_value("base", "width", 10**9)),
        "{file}: base.width: Input should be less than or equal to 65536",
        id="width_billion",
    ),
    pytest.param(
        study_file(
            'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\n'
        ),
        "{file}: line 2 invalid YAML: anchors and aliases (&, *) are not allowed in a study file",
        id="alias_bomb",
    ),
    pytest.param(study_file("name: caf\udce9\n"), "{file}: not UTF-8 text", id="not_utf8"),
    pytest.param(bare_command("--study", "x" * 5000, "--dry-run"), "--study is 5000 characters long", id="long_study"),
    pytest.param(
        command("smoke", "--timeout", "nan"),
        "--timeout must be a non-negative number of seconds, got nan",
        id="nan_timeout",
    ),
    pytest.param(reports_at_a_file, "is a file, not a folder", id="reports_is_a_file"),
    pytest.param(
        command("smoke", "--workers", "100000"), "--workers must be between 1 and 64, got 100000", id="workers"
    ),
    pytest.param(command("smoke", "--frobnicate"), "unrecognized arguments: --frobnicate", id="unknown_flag"),
    pytest.param(
        command("smoke", "--set", "base.dataset.validation_split=train[900:1100]"),
        "the train split 'train[:1000]' and the validation split 'train[900:1100]' of dataset 'fashion_mnist' "
        "share 100 example(s)",
        id="overlapping_splits",
    ),
    pytest.param(read_only_storage, "attempt to write a readonly database", id="read_only_storage"),
    pytest.param(
        command("smoke", "--tracking-uri", "http://reuser:hunter2@127.0.0.1:1"),
        "MLflow tracking server http://reuser:***@127.0.0.1:1 is unreachable",
        id="tracking_password_masked",
    ),
    pytest.param(
        command("smoke", "--storage", "postgresql+psycopg://reuser:hunter2@127.0.0.1:1/db"),
        "cannot open Optuna storage 'postgresql+psycopg://reuser:***@127.0.0.1:1/db'",
        id="storage_password_masked",
    ),
    pytest.param(
        bare_script("report.py", "--study", "smoke"), "no Optuna storage at sqlite:///optuna.db", id="report_unrun"
    ),
    pytest.param(
        bare_script("register.py", "--study", "smoke"), "no Optuna storage at sqlite:///optuna.db", id="register_unrun"
    ),
    pytest.param(
        bare_script("reproduce.py", "0" * 32, "--tracking-uri", "http://127.0.0.1:1"),
        "MLflow tracking server http://127.0.0.1:1 is unreachable",
        id="reproduce_unreachable",
    ),
]


@pytest.mark.parametrize("make_input, message", BAD_INPUTS)
def test_a_bad_input_is_a_one_line_error(tmp_path, make_input, message):
    """Exit 2, one `error:` line naming the problem, no traceback, and neither store touched."""
    result = run(make_input(tmp_path), cwd=tmp_path, timeout=ERROR_TIMEOUT)
    assert result.returncode == 2, explain(result)
    line = error_line(result)
    assert message.replace("{file}", str(tmp_path / BROKEN_STUDY)) in line, line
    assert_wrote_nothing(tmp_path, keep={BROKEN_STUDY, REPORTS_FILE, READ_ONLY_DB})
    assert "hunter2" not in result.stdout + result.stderr  # passwords never printed


@pytest.mark.parametrize(
    "state, message",
    [("deleted", "MLflow experiment 'smoke' was deleted"), ("foreign", "holds runs that are not this study's")],
)
def test_an_unusable_experiment_of_the_study_name_is_a_one_line_error(tmp_path, state, message):
    client = mlflow.MlflowClient(tracking_uri=tracking_url(tmp_path))
    experiment_id = client.create_experiment("smoke")
    if state == "deleted":
        client.delete_experiment(experiment_id)
    else:
        client.create_run(experiment_id, run_name="someone else's run")
    before = {r.info.run_id for r in client.search_runs([experiment_id], run_view_type=ViewType.ALL)}

    result = run(sweep_command(tmp_path, "smoke"), cwd=tmp_path)

    assert result.returncode == 2, explain(result)
    assert message in error_line(result)
    assert_wrote_nothing(tmp_path, keep={"mlflow.db", "mlruns"})  # no Optuna storage either
    assert {r.info.run_id for r in client.search_runs([experiment_id], run_view_type=ViewType.ALL)} == before


def test_missing_offline_data_is_a_one_line_error(tmp_path):
    data_dir = tmp_path / "tfds"
    command = sweep_command(
        tmp_path, "smoke", "--set", "base.dataset.name=mnist", "--data-dir", str(data_dir), manual_dir=False
    )
    result = run(command, cwd=tmp_path)
    assert result.returncode == 2, explain(result)
    line = error_line(result)
    assert "'mnist' is not prepared" in line and "--manual-dir" in line, line
    assert_wrote_nothing(tmp_path)
