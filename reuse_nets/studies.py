"""Study specs: YAML files in `experiments/`, validated into typed objects.

A study file is data. Every field and its default is declared here, once; unknown
keys are errors, so a typo cannot silently do nothing. Command-line overrides
(`--set key=value`) are applied to the raw data and go through the same
validation. `suggest_config` is the one place that maps an Optuna trial to a
`TrialConfig`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from reuse_nets.config import DatasetConfig, TrialConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"
# Knobs a study may not search over: the data is the study's, seeds are repeats,
# and the epoch budget is what the pruner counts in.
NOT_SEARCHABLE = ("dataset", "seed", "epochs")
SEARCHABLE = tuple(name for name in TrialConfig.model_fields if name not in NOT_SEARCHABLE)


class StudyError(Exception):
    """A study file or override the user can fix; the message is one line."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Choices(_Strict):
    """A categorical dimension: `{choices: [1, 2, 4]}` (or a bare list)."""

    choices: list[Any] = pydantic.Field(min_length=1)


class Range(_Strict):
    """A numeric range: `{low: 1e-4, high: 1e-2, log: true}`; ints if both bounds are."""

    low: float | int
    high: float | int
    log: bool = False
    step: float | int | None = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)

    @pydantic.model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log ranges need low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("a range cannot have both log and step")
        return self


class Fixed(_Strict):
    value: Any


Param = Fixed | Choices | Range


class SamplerSpec(_Strict):
    type: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0  # sampler seed: the same study file proposes the same trials
    n_startup_trials: int = pydantic.Field(10, ge=0)  # tpe: random trials before modelling


class PrunerSpec(_Strict):
    type: Literal["none", "median", "hyperband"] = "median"
    n_startup_trials: int = pydantic.Field(5, ge=0)  # median: trials finished before pruning
    n_warmup_steps: int = pydantic.Field(1, ge=0)  # median: epochs before a trial can be pruned
    min_resource: int = pydantic.Field(1, ge=1)  # hyperband: fewest epochs a trial gets
    reduction_factor: int = pydantic.Field(3, ge=2)  # hyperband


class ObjectiveSpec(_Strict):
    metric: str = "val_accuracy"  # a per-epoch metric; its final-epoch value is the objective
    direction: Literal["maximize", "minimize"] = "maximize"


class ExecutionSpec(_Strict):
    heartbeat_interval: int = pydantic.Field(10, ge=1)  # seconds between trial heartbeats
    grace_period: int = pydantic.Field(40, ge=2)  # seconds without heartbeat: trial died
    max_retry: int = pydantic.Field(2, ge=0)  # retries of a trial whose process died

    @pydantic.model_validator(mode="after")
    def _grace_exceeds_interval(self):
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError("grace_period must exceed heartbeat_interval")
        return self


class StudySpec(_Strict):
    """A study: which trials to run, how to search, what to optimise."""

    name: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.-]+$")  # study, MLflow experiment
    description: str = ""
    dataset: DatasetConfig = DatasetConfig()
    family: Literal["mlp", "conv"] = "mlp"
    epochs: int = pydantic.Field(5, ge=1)
    batch_size: int = pydantic.Field(128, ge=1)
    seeds: list[int] = pydantic.Field([0], min_length=1)  # repeats; a grid axis under grid
    search_space: dict[str, Param] = {}
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    n_trials: int | None = pydantic.Field(None, ge=1)  # None: the grid size (grid only)
    timeout: float | None = pydantic.Field(None, gt=0)  # seconds for one invocation
    execution: ExecutionSpec = ExecutionSpec()

    @pydantic.field_validator("search_space", mode="before")
    @classmethod
    def _parse_params(cls, space):
        if not isinstance(space, dict):
            raise ValueError("must be a mapping of config field to value, list or range")
        parsed = {}
        for name, value in space.items():
            if name not in SEARCHABLE:
                raise ValueError(
                    f"{name!r} cannot be searched; allowed: {', '.join(SEARCHABLE)}"
                    + (" (set it at the top level)" if name in NOT_SEARCHABLE else "")
                )
            if isinstance(value, list):
                value = {"choices": value}
            kind = Fixed if not isinstance(value, dict) else Choices if "choices" in value else Range
            try:
                parsed[name] = kind(value=value) if kind is Fixed else kind(**value)
            except pydantic.ValidationError as error:
                raise ValueError(f"{name}: {_first_error(error)}") from None
        return parsed

    @pydantic.field_serializer("search_space")
    def _dump_params(self, space):
        # Back to the file's own forms, so a dumped spec validates again.
        return {
            name: param.value if isinstance(param, Fixed) else param.model_dump(exclude_none=True)
            for name, param in space.items()
        }

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.sampler.type == "grid":
            ranges = [n for n, p in self.search_space.items() if isinstance(p, Range)]
            if ranges:
                raise ValueError(f"grid sampler needs choices, not ranges, for: {', '.join(ranges)}")
        else:
            if len(self.seeds) > 1:
                raise ValueError("repeats over several seeds need sampler type 'grid' (seeds are a grid axis)")
            if self.n_trials is None:
                raise ValueError(f"n_trials is required with sampler type {self.sampler.type!r}")
        # Every value the search can produce must make a valid TrialConfig.
        for name, param in self.search_space.items():
            if isinstance(param, Range) and not param.is_int and TrialConfig.model_fields[name].annotation is int:
                raise ValueError(f"search_space.{name}: an integer field needs integer low, high and step")
            values = {Fixed: lambda p: [p.value], Choices: lambda p: p.choices, Range: lambda p: [p.low, p.high]}
            for value in values[type(param)](param):
                try:
                    TrialConfig.model_validate({**self.base_config().model_dump(), name: value})
                except pydantic.ValidationError as error:
                    raise ValueError(f"search_space.{name}: {_first_error(error)}") from None
        if self.objective.metric.startswith("grad_norm/"):
            raise ValueError("objective.metric must be a loss or accuracy metric, not a gradient norm")
        return self

    def base_config(self) -> TrialConfig:
        """The config every trial starts from, before its search-space values."""
        return TrialConfig(
            dataset=self.dataset,
            family=self.family,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seeds[0],
        )

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point (searched choices and seed), in a stable order."""
        axes = {n: p.choices for n, p in self.search_space.items() if isinstance(p, Choices)}
        axes["seed"] = self.seeds
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    @property
    def total_trials(self) -> int:
        return self.n_trials if self.n_trials is not None else len(self.grid())

    def identity(self) -> dict:
        """What makes two runs of a study the same study (budget knobs excluded)."""
        return self.model_dump(mode="json", exclude={"n_trials", "timeout", "description", "execution"})


def _first_error(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-after"))
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def suggest_config(spec: StudySpec, trial) -> TrialConfig:
    """Maps an Optuna trial to a `TrialConfig`: the only caller of `trial.suggest_*`."""
    values: dict[str, Any] = {}
    for name, param in spec.search_space.items():
        if isinstance(param, Fixed):
            values[name] = param.value
        elif isinstance(param, Choices):
            values[name] = trial.suggest_categorical(name, param.choices)
        elif param.is_int:
            values[name] = trial.suggest_int(name, low=param.low, high=param.high, step=param.step or 1, log=param.log)
        else:
            values[name] = trial.suggest_float(name, low=param.low, high=param.high, step=param.step, log=param.log)
    if len(spec.seeds) > 1:
        values["seed"] = trial.suggest_categorical("seed", spec.seeds)
    return TrialConfig.model_validate({**spec.base_config().model_dump(), **values})


def study_path(name_or_path: str) -> Path:
    """`experiments/NAME.yaml` for a bare name; the path itself otherwise."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return Path(name_or_path)
    return EXPERIMENTS_DIR / f"{name_or_path}.yaml"


def list_studies() -> list[tuple[str, str]]:
    """`(name, description)` of every study in `experiments/`."""
    found = []
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            raw = {}
        description = str(raw.get("description", "")).strip().splitlines()
        found.append((path.stem, description[0] if description else ""))
    return found


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"a.b=value"` -> `(["a", "b"], value)`, the value parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise StudyError(f"--set {text!r}: expected key=value, e.g. --set epochs=1")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value  # e.g. "train[:2000]" stays a string
    if isinstance(parsed, str):
        parsed = value  # verbatim: YAML would strip quotes or spaces
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Applies `--set key=value` overrides to raw study data (nested keys by dots)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise StudyError(f"--set {text!r}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
    return raw


def load_study(name_or_path: str, overrides: list[str] = ()) -> StudySpec:
    """Reads, overrides and validates a study file.

    Raises:
        StudyError: one line naming the file, the field and what is allowed.
    """
    path = study_path(name_or_path)
    if not path.is_file():
        known = ", ".join(name for name, _ in list_studies())
        raise StudyError(f"no study {name_or_path!r} (looked for {path}); known studies: {known}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise StudyError(f"{path}:{where} invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study file must be a mapping of fields")
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, list(overrides))
    try:
        return StudySpec.model_validate(raw)
    except pydantic.ValidationError as error:
        raise StudyError(f"{path}: {_first_error(error)}") from None

