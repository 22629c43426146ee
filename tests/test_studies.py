"""Unit tests of study specs: shipped files, validation, overrides, trial -> config.

Fast: no training and no tracking store; Optuna studies live in memory.
"""

import math

import optuna
import pytest
import yaml

from reuse_nets import studies
from reuse_nets.config import TrialConfig
from reuse_nets.studies import StudyError, StudySpec

SHIPPED = sorted(path.stem for path in studies.EXPERIMENTS_DIR.glob("*.yaml"))
SMOKE_TEXT = (studies.EXPERIMENTS_DIR / "smoke.yaml").read_text()


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def write_study(tmp_path, name: str, data) -> str:
    """Writes `data` (a mapping, or raw text) as `tmp_path/NAME.yaml`; returns its path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def smoke_data() -> dict:
    return yaml.safe_load(SMOKE_TEXT)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, f"StudyError must be one line, got {message!r}"
    return message


# --- Shipped studies ----------------------------------------------------------------------


def test_the_four_studies_ship():
    assert {"smoke", "strategy_depth", "residual_depth", "masked_keep_ratio"} <= set(SHIPPED)
    assert [name for name, _ in studies.list_studies()] == SHIPPED
    assert all(description for _, description in studies.list_studies())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_study_validates(name):
    spec = studies.load_study(name)
    assert isinstance(spec, StudySpec)
    assert spec.name == name  # defaults to the file's stem, and is the MLflow experiment
    assert spec.total_trials >= 1
    # The base config and every grid point make valid trial configs.
    base = spec.base_config()
    for point in spec.grid():
        TrialConfig.model_validate({**base.model_dump(), **point})


@pytest.mark.parametrize("name", SHIPPED)
def test_spec_round_trips_through_json_dump(name):
    spec = studies.load_study(name)
    dumped = spec.model_dump(mode="json")
    assert StudySpec.model_validate(dumped) == spec
    # ... and through YAML text, which is how it travels as the `study.yaml` artifact.
    text = yaml.safe_dump(dumped, sort_keys=False)
    again = StudySpec.model_validate(yaml.safe_load(text))
    assert again == spec
    assert again.identity() == spec.identity()
    assert again.grid() == spec.grid()


@pytest.mark.parametrize(
    "name, size",
    [
        ("smoke", 8),  # 4 strategies x depths 1, 2
        ("strategy_depth", 72),  # 4 strategies x 6 depths x 3 seeds
        ("masked_keep_ratio", 48),  # 4 keep ratios x 3 depths x 2 mask kinds x 2 seeds
    ],
)
def test_grid_sizes(name, size):
    spec = studies.load_study(name)
    grid = spec.grid()
    assert len(grid) == size
    assert spec.total_trials == size  # n_trials defaults to the grid size
    assert len({tuple(sorted(point.items())) for point in grid}) == size  # no duplicates
    assert spec.grid() == grid  # a stable order: grid_point indices mean the same thing twice


def test_strategy_depth_grid_crosses_strategies_depths_and_seeds():
    grid = studies.load_study("strategy_depth").grid()
    assert {p["strategy"] for p in grid} == {"plain", "concat", "residual", "masked"}
    assert {p["depth"] for p in grid} == {1, 2, 4, 8, 16, 32}
    assert {p["seed"] for p in grid} == {0, 1, 2}
    assert grid[0] == {"strategy": "plain", "depth": 1, "seed": 0}


def test_smoke_grid_order():
    grid = studies.load_study("smoke").grid()
    assert grid[:2] == [{"strategy": "plain", "depth": 1, "seed": 0}, {"strategy": "plain", "depth": 2, "seed": 0}]
    assert grid[-1] == {"strategy": "masked", "depth": 2, "seed": 0}


def test_tpe_study_needs_and_uses_n_trials():
    spec = studies.load_study("residual_depth")
    assert spec.sampler.type == "tpe"
    assert spec.total_trials == spec.n_trials == 48


# --- Overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dataset.train_split=train[:2000]", (["dataset", "train_split"], "train[:2000]")),
        ("dataset.validation_split=train[90%:]", (["dataset", "validation_split"], "train[90%:]")),
        ("epochs=3", (["epochs"], 3)),
        ("search_space.learning_rate=0.01", (["search_space", "learning_rate"], 0.01)),
        ("search_space.depth=[1, 2, 4]", (["search_space", "depth"], [1, 2, 4])),
        ("search_space.strategy=[plain, residual]", (["search_space", "strategy"], ["plain", "residual"])),
        ("search_space.width={low: 32, high: 64}", (["search_space", "width"], {"low": 32, "high": 64})),
        ("search_space.learned_mask=true", (["search_space", "learned_mask"], True)),
        ("dataset.test_split=", (["dataset", "test_split"], None)),
        ("name=smoke_v2", (["name"], "smoke_v2")),
        ("seeds=[0, 1, 2]", (["seeds"], [0, 1, 2])),
    ],
)
def test_parse_override(text, expected):
    assert studies.parse_override(text) == expected


@pytest.mark.parametrize("text", ["n_trials=null", "timeout=~", "dataset.validation_split=null"])
def test_parse_override_yaml_null_is_none(text):
    """`--set key=null` must reset a field to None, as `key: null` does in the file.

    Exposes a bug: `parse_override` turns YAML null into the literal string "null",
    so `--set n_trials=null` fails with "unable to parse string as an integer" and
    `--set dataset.validation_split=null` asks TFDS for a split named "null".
    """
    path, value = studies.parse_override(text)
    assert value is None, f"{text!r} parsed to {value!r}"
    studies.load_study("residual_depth" if path[0] != "n_trials" else "smoke", [text])


@pytest.mark.parametrize("text", ["epochs", "=3", " =3"])
def test_parse_override_needs_key_and_equals(text):
    with pytest.raises(StudyError, match="key=value") as excinfo:
        studies.parse_override(text)
    one_line_error(excinfo)


def test_overrides_change_the_spec():
    spec = studies.load_study(
        "smoke",
        [
            "dataset.train_split=train[:1000]",
            "epochs=3",
            "search_space.depth=[1, 2, 4]",
            "execution.grace_period=20",
        ],
    )
    assert spec.dataset.train_split == "train[:1000]"
    assert spec.dataset.validation_split == "train[50000:51000]"  # siblings are kept
    assert spec.epochs == 3
    assert spec.search_space["depth"].choices == [1, 2, 4]
    assert spec.execution.grace_period == 20
    assert len(spec.grid()) == 12
    assert studies.load_study("smoke").epochs == 2  # the file itself is untouched


def test_override_can_add_a_nested_section():
    spec = studies.load_study("residual_depth", ["timeout=60", "objective.direction=minimize", "objective.metric=val_loss"])
    assert spec.timeout == 60
    assert (spec.objective.direction, spec.objective.metric) == ("minimize", "val_loss")


@pytest.mark.parametrize(
    "override, named",
    [
        ("search_space.depth=[0]", "search_space.depth"),
        ("search_space.depth=[1, 300]", "search_space.depth"),
        ("search_space.strategy=[plain, teleport]", "search_space.strategy"),
        ("search_space.learning_rate=-1", "search_space.learning_rate"),
        ("epochs=zero", "epochs"),
        ("epochs=0", "epochs"),
        ("sampler.type=annealing", "sampler.type"),
        ("execution.grace_period=1", "execution.grace_period"),
        ("pruner.n_warmup_steps=-1", "pruner.n_warmup_steps"),
    ],
)
def test_overrides_go_through_validation(override, named):
    with pytest.raises(StudyError) as excinfo:
        studies.load_study("smoke", [override])
    message = one_line_error(excinfo)
    assert named in message
    assert "smoke.yaml" in message  # names the file too


@pytest.mark.parametrize("override, named", [("epoch=3", "epoch"), ("datset.name=mnist", "datset"), ("sampler.typ=tpe", "typ")])
def test_unknown_override_key_is_an_error(override, named):
    with pytest.raises(StudyError, match="Extra inputs are not permitted") as excinfo:
        studies.load_study("smoke", [override])
    assert named in one_line_error(excinfo)


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(StudyError, match="'epochs' is not a mapping") as excinfo:
        studies.load_study("smoke", ["epochs.count=3"])
    one_line_error(excinfo)


def test_seed_epochs_and_dataset_cannot_be_searched():
    for name in studies.NOT_SEARCHABLE:
        with pytest.raises(StudyError, match=f"'{name}' cannot be searched") as excinfo:
            studies.load_study("smoke", [f"search_space.{name}=[1, 2]"])
        assert "top level" in one_line_error(excinfo)


# --- Study files --------------------------------------------------------------------------


def test_unknown_key_in_file_is_an_error(tmp_path):
    data = smoke_data()
    data["epoch"] = 3  # a typo of `epochs` must not silently do nothing
    path = write_study(tmp_path, "typo", data)
    with pytest.raises(StudyError) as excinfo:
        studies.load_study(path)
    message = one_line_error(excinfo)
    assert message.startswith(f"{path}: epoch:")
    assert "Extra inputs are not permitted" in message


def test_unknown_nested_key_in_file_is_named(tmp_path):
    data = smoke_data()
    data["pruner"]["n_warmup"] = 1
    path = write_study(tmp_path, "nested_typo", data)
    with pytest.raises(StudyError, match="pruner.n_warmup") as excinfo:
        studies.load_study(path)
    one_line_error(excinfo)


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write_study(tmp_path, "broken", "name: broken\nepochs: 2\nsearch_space: {depth: [1, 2\n")
    with pytest.raises(StudyError, match="invalid YAML") as excinfo:
        studies.load_study(path)
    message = one_line_error(excinfo)
    assert message.startswith(path) and " line " in message


def test_non_mapping_file_is_an_error(tmp_path):
    path = write_study(tmp_path, "listy", "- 1\n- 2\n")
    with pytest.raises(StudyError, match="must be a mapping") as excinfo:
        studies.load_study(path)
    one_line_error(excinfo)


def test_missing_study_lists_known_ones():
    with pytest.raises(StudyError, match="no study 'no_such_study'") as excinfo:
        studies.load_study("no_such_study")
    assert "smoke" in one_line_error(excinfo)


def test_ranges_need_a_non_grid_sampler(tmp_path):
    data = smoke_data()
    data["search_space"]["learning_rate"] = {"low": 1.0e-4, "high": 1.0e-2, "log": True}
    path = write_study(tmp_path, "grid_range", data)
    with pytest.raises(StudyError, match="grid sampler needs choices, not ranges, for: learning_rate") as excinfo:
        studies.load_study(path)
    one_line_error(excinfo)


@pytest.mark.parametrize(
    "bad_range, reason",
    [
        ({"low": 10, "high": 1}, "must not exceed"),
        ({"low": 0.0, "high": 1.0, "log": True}, "low > 0"),
        ({"low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "both log and step"),
    ],
)
def test_bad_ranges_are_errors(bad_range, reason):
    with pytest.raises(StudyError, match=reason) as excinfo:
        studies.load_study("residual_depth", [f"search_space.learning_rate={yaml.safe_dump(bad_range, default_flow_style=True).strip()}"])
    assert "learning_rate" in one_line_error(excinfo)


def test_multiple_seeds_need_the_grid_sampler():
    with pytest.raises(StudyError, match="sampler type 'grid'") as excinfo:
        studies.load_study("residual_depth", ["seeds=[0, 1]"])
    assert "seeds" in one_line_error(excinfo)


def test_repeated_seeds_are_an_error():
    with pytest.raises(StudyError, match="seeds must be distinct"):
        studies.load_study("strategy_depth", ["seeds=[0, 0]"])


def test_tpe_without_n_trials_is_an_error(tmp_path):
    data = yaml.safe_load((studies.EXPERIMENTS_DIR / "residual_depth.yaml").read_text())
    del data["n_trials"]
    with pytest.raises(StudyError, match="n_trials is required with sampler type 'tpe'"):
        studies.load_study(write_study(tmp_path, "tpe_unbounded", data))


def test_objective_cannot_be_a_gradient_norm():
    with pytest.raises(StudyError, match="objective.metric"):
        studies.load_study("smoke", ["objective.metric=grad_norm/global"])


@pytest.mark.parametrize(
    "override",
    [
        "search_space.width={low: 32.0, high: 256.0}",  # float bounds on an integer field
        "search_space.width={low: 32.0, high: 256.0, log: true}",
        "search_space.depth={low: 1, high: 8, step: 0.5}",  # a float step on an integer field
    ],
)
def test_a_spec_that_validates_only_suggests_valid_configs(override):
    """`StudySpec` promises that every value its search can produce makes a valid
    `TrialConfig`; a study that breaks that must be rejected when it is loaded.

    Exposes a bug: only a range's bounds are checked, and 32.0 and 256.0 are valid
    widths, so this loads, then every trial gets a fractional width (e.g. 62.84)
    and `suggest_config` raises pydantic's ValidationError inside the runner.
    """
    try:
        spec = studies.load_study("residual_depth", [override])
    except StudyError as error:  # rejected up front, naming the field: the fix
        message = str(error)
        assert "\n" not in message and override.split("=")[0] in message, message
        return
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        studies.suggest_config(spec, study.ask())


# --- suggest_config -----------------------------------------------------------------------


def configs_from(spec: StudySpec, sampler, count: int) -> list[TrialConfig]:
    """`count` configs proposed by an in-memory study, told a made-up objective."""
    study = optuna.create_study(sampler=sampler, direction=spec.objective.direction)
    configs = []
    for _ in range(count):
        trial = study.ask()
        config = studies.suggest_config(spec, trial)
        configs.append(config)
        study.tell(trial, config.learning_rate * config.depth)
    return configs


def test_suggest_config_maps_a_trial_to_a_valid_config():
    spec = studies.load_study("residual_depth")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    config = studies.suggest_config(spec, trial)
    assert isinstance(config, TrialConfig)
    assert config.strategy in ("plain", "residual")
    assert config.depth in (1, 2, 4, 8, 16, 32)
    assert 32 <= config.width <= 256 and isinstance(config.width, int)
    assert 1e-4 <= config.learning_rate <= 1e-2
    # What the trial recorded is what the config says; the rest is the study's base.
    assert trial.params == {k: getattr(config, k) for k in ("strategy", "depth", "width", "learning_rate")}
    base = spec.base_config()
    assert (config.epochs, config.batch_size, config.seed, config.dataset) == (
        base.epochs,
        base.batch_size,
        base.seed,
        base.dataset,
    )
    assert config.dataset.train_split == "train[:90%]"


def test_suggest_config_distributions():
    spec = studies.load_study("residual_depth")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    studies.suggest_config(spec, trial)
    width, lr = trial.distributions["width"], trial.distributions["learning_rate"]
    assert isinstance(width, optuna.distributions.IntDistribution) and width.log
    assert (width.low, width.high) == (32, 256)
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
    assert math.isclose(lr.low, 1e-4) and math.isclose(lr.high, 1e-2)
    assert trial.distributions["depth"].choices == (1, 2, 4, 8, 16, 32)


@pytest.mark.parametrize(
    "make_sampler",
    [lambda: optuna.samplers.TPESampler(seed=3, n_startup_trials=2), lambda: optuna.samplers.RandomSampler(seed=3)],
    ids=["tpe", "random"],
)
def test_suggest_config_is_deterministic_for_a_seeded_sampler(make_sampler):
    spec = studies.load_study("residual_depth")
    first = configs_from(spec, make_sampler(), 6)
    second = configs_from(spec, make_sampler(), 6)
    assert first == second
    assert len({c.model_dump_json() for c in first}) > 1  # it does explore


def test_fixed_values_are_not_suggested():
    spec = studies.load_study("smoke")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    config = studies.suggest_config(spec, trial)
    assert set(trial.params) == {"strategy", "depth"}
    assert (config.width, config.learning_rate) == (32, 0.002)


@pytest.mark.parametrize("name", ["smoke", "strategy_depth", "masked_keep_ratio"])
def test_enqueued_grid_points_become_their_configs(name):
    """How the runner drives grids: each point is enqueued, then asked for."""
    spec = studies.load_study(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    grid = spec.grid()
    for point in grid:
        study.enqueue_trial({k: v for k, v in point.items() if k != "seed" or len(spec.seeds) > 1})
    seen = set()
    for point in grid:
        config = studies.suggest_config(spec, study.ask())
        assert {k: getattr(config, k) for k in point} == point
        seen.add(config.model_dump_json())
    assert len(seen) == len(grid)
