"""Study specs: YAML files in `experiments/`, validated into typed objects.

A study follows the design of Google's Deep Learning Tuning Playbook:

- `base`: a full trial config; every knob not named below is **fixed** there
  (its default declared once, in `config.TrialConfig`);
- `compare`: the **scientific** knobs, each a list of values; every combination
  is a *cell*, e.g. `{strategy: residual, depth: 64}`;
- `tune`: the **nuisance** knobs, searched separately in every cell with the
  same budget (`trials_per_cell`), the same sampler settings and a pruner that
  only ever sees that cell's trials; leave it out for a plain grid;
- `final`: the seeds with which each cell's best tuned config (chosen on the
  validation metric) is retrained; the report's numbers are these runs' test
  metrics, paired by seed across cells;
- `match` (optional): capacity matching, each non-baseline cell's width solved
  so that its parameters (or FLOPs) equal its baseline cell's (`matching.py`).

A study file is data: unknown keys are errors, and everything is checked when it
loads, before anything runs (see `StudySpec._consistent`).
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import typing
from typing import Annotated, Any, Literal

import pydantic

from reuse_nets.design import datasets, matching, search_space
from reuse_nets.design.search_space import (
    Choices,
    Param,
    PrunerSpec,
    Range,
    SamplerSpec,
    SamplerType,
    StrictModel,
    from_unit,
)
from reuse_nets.design.trial_config import ADDED_FIELDS, MAX_SEED, TrialConfig
from reuse_nets.names import EPOCH_METRICS, TEST_PREFIX
from reuse_nets.nn import capacity, models

# Knobs that are never compared or tuned: the data is the study's, seeds are
# repeats (`base.seed` for tuning, `final.seeds` for the final runs), and early
# stopping watches the objective's metric.
NOT_VARIED = ("dataset", "seed", "monitor")
# The budget (epochs, and early stopping's patience and minimum improvement) is what
# pruning and selection count in; it may be compared, not tuned.
NOT_TUNED = (*NOT_VARIED, "epochs", "patience", "min_delta")
# Tuning repeat r runs the study with every seed shifted by r * REPEAT_SEED_STRIDE.
REPEAT_SEED_STRIDE = 1000
MAX_REPEATS = 20


class TuneSpec(StrictModel):
    """Nuisance knobs, tuned in every cell with the same budget and settings."""

    trials_per_cell: int | None = pydantic.Field(None, ge=1)  # required, except for grid: the grid size
    search_space: dict[str, Param] = pydantic.Field(min_length=1)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    # Independent tune -> select -> retrain repeats: repeat r shifts every seed (tuning,
    # sampler, final) by r * REPEAT_SEED_STRIDE, so the report can measure how much the
    # result depends on the tuning run itself (between-tuning variance).
    repeats: int = pydantic.Field(1, ge=1, le=MAX_REPEATS)

    @pydantic.model_validator(mode="after")
    def _budget(self):
        ranges = [n for n, p in self.search_space.items() if isinstance(p, Range)]
        default = ""  # said when the study file names no sampler
        if self.sampler.type is None:  # reproducible by default: every slot's candidates fixed in advance
            object.__setattr__(self, "sampler", self.sampler.model_copy(update={"type": "sobol" if ranges else "grid"}))
            default = (
                ", the default sampler when a knob is searched over a range"
                if ranges
                else " (grid is the default sampler when every tuned knob is a list of choices; "
                "name tune.sampler.type to try fewer)"
            )
        if self.sampler.type == "grid":
            if ranges:
                raise ValueError(f"the grid sampler needs choices, not ranges, for: {', '.join(ranges)}")
            size = len(self.grid())
            if self.trials_per_cell is None:
                object.__setattr__(self, "trials_per_cell", size)
            elif self.trials_per_cell != size:
                raise ValueError(f"trials_per_cell is {self.trials_per_cell} but the grid has {size} points{default}")
        elif self.trials_per_cell is None:
            raise ValueError(f"trials_per_cell is required with sampler type {self.sampler.type!r}{default}")
        return self

    def points(self, repeat: int = 0) -> list[dict[str, Any]] | None:
        """The tuned values of every slot, when the sampler fixes them in advance (grid, sobol)."""
        if self.sampler.type == "grid":
            return self.grid()
        if self.sampler.type == "sobol":
            return self.sobol(repeat)
        return None

    def sampler_seed(self, repeat: int = 0) -> int:
        """The sampler's seed in tuning repeat `repeat`."""
        return self.sampler.seed + repeat * REPEAT_SEED_STRIDE

    def identity(self) -> dict:
        """The tuning settings as identities hold them (`repeats` only when not 1, as before it existed)."""
        return self.model_dump(mode="json", exclude={"repeats"} if self.repeats == 1 else set())

    def sobol(self, repeat: int = 0) -> list[dict[str, Any]]:
        """`trials_per_cell` points of a scrambled Sobol sequence seeded by `sampler_seed(repeat)`, in slot order."""
        import warnings

        from scipy.stats import qmc

        names = list(self.search_space)
        with warnings.catch_warnings():  # a count that is no power of 2 only loses balance, and says so
            warnings.simplefilter("ignore", UserWarning)
            unit = qmc.Sobol(d=len(names), scramble=True, seed=self.sampler_seed(repeat)).random(
                self.trials_per_cell or 0
            )
        return [{name: from_unit(self.search_space[name], u) for name, u in zip(names, row)} for row in unit]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the searched choices, in order (grid sampler)."""
        # A grid sampler's space holds only Choices (checked by the validator above).
        axes = {n: p.choices for n, p in self.search_space.items() if isinstance(p, Choices)}
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    @pydantic.field_validator("search_space", mode="before")
    @classmethod
    def _parse_params(cls, space):
        if not isinstance(space, dict):
            raise ValueError("must be a mapping of config field to a list of choices or a range")
        parsed = {}
        for name, value in space.items():
            if isinstance(value, list):
                value = {"choices": value}
            if not isinstance(value, dict):
                raise ValueError(f"{name}: a fixed value ({value!r}) belongs in base, not in the search space")
            try:
                parsed[name] = Choices(**value) if "choices" in value else Range(**value)
            except pydantic.ValidationError as error:
                raise ValueError(f"{name}: {first_error(error)}") from None
        return parsed

    @pydantic.field_serializer("search_space")
    def _dump_params(self, space):
        # Back to the file's own forms, so a dumped spec validates again.
        return {name: param.model_dump(exclude_none=True) for name, param in space.items()}


class FinalSpec(StrictModel):
    # Fresh seeds, never the tuning seed; NumPy and TF take seeds below 2**32.
    seeds: list[Annotated[int, pydantic.Field(ge=0, le=MAX_SEED)]] = pydantic.Field([0], min_length=1)


class ObjectiveSpec(StrictModel):
    metric: str = "val_accuracy"  # a validation metric; its final-epoch value selects configs
    direction: Literal["maximize", "minimize"] = "maximize"

    @property
    def test_metric(self) -> str:
        """The test-split metric the report gives for the selection metric."""
        return TEST_PREFIX + self.metric.removeprefix("val_")


class ContrastSpec(StrictModel):
    """A declared contrast beyond "each value vs the baseline", paired by seed.

    `of: [A]` is A's second compared value minus its first; `of: [A, B]` their interaction,
    the difference of differences (A2B2 − A1B2) − (A2B1 − A1B1); and so on. Each knob of
    `of` is compared with exactly two values (first: the reference level). Knobs in
    `average` are averaged over (a main effect); every other compared knob is held fixed,
    one contrast per combination of its values.
    """

    name: str = pydantic.Field(min_length=1, max_length=100)
    of: tuple[str, ...] = pydantic.Field(min_length=1)
    average: tuple[str, ...] = ()


class ReportSpec(StrictModel):
    """What the report compares and how it decides (`reuse_nets/statistics.py`)."""

    contrast: str | None = None  # the compared knob whose values are differenced; default: the first
    baseline: Any = None  # the value the others are compared with; default: its first value
    pairs: Literal["baseline", "all"] = "baseline"  # all: every pair of the contrast's values, in one family
    # Main effects and interactions, in the same family as the pairs (and adjusted with them).
    contrasts: tuple[ContrastSpec, ...] = ()
    alpha: float = pydantic.Field(0.05, gt=0.0, lt=0.5)  # family-wise error rate of the verdicts
    adjust: Literal["holm", "bonferroni"] = "holm"  # multiplicity adjustment across the family
    test: Literal["t", "sign_flip"] = "t"  # the paired test verdicts rest on; the other is shown beside
    # The smallest difference worth caring about, in the metric's units: enables "equivalent".
    min_effect: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    # Seed-to-seed SD of a paired difference, for --dry-run's power (e.g. from a pilot study).
    assumed_sd: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    # A finished pilot study (name in experiments/ or file): --dry-run measures that SD from
    # its final runs in the tracking store, and uses it instead of assumed_sd.
    pilot: str | None = pydantic.Field(None, min_length=1, max_length=1000)


class ExecutionSpec(StrictModel):
    heartbeat_interval: int = pydantic.Field(10, ge=1)  # seconds between trial heartbeats
    grace_period: int = pydantic.Field(40, ge=2)  # seconds without heartbeat: trial died
    max_retry: int = pydantic.Field(2, ge=0)  # retries of a trial whose process died
    # Compile training steps with XLA: faster steps at large widths, but each trial
    # compiles once per batch shape (seconds to tens of seconds on CPU), so it pays
    # only for long trials (see the benchmark). Logged on every run; reproduce applies it.
    xla: bool = False
    # Compiled trainers kept per process, one per architecture (everything but the
    # seed and optimizer values), so trials of one architecture trace their steps
    # once. Results are bit-identical either way; 0 compiles every trial afresh.
    compile_cache: int = pydantic.Field(4, ge=0, le=64)
    # Each trial checkpoints every epoch (checkpoints/, one per slot); a retried trial
    # resumes from it bit-exactly. Removed when the run ends, unless kept.
    keep_checkpoints: bool = False

    @pydantic.model_validator(mode="after")
    def _grace_exceeds_interval(self):
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError("grace_period must exceed heartbeat_interval")
        return self


class Cell(pydantic.BaseModel):
    """One combination of compared values."""

    model_config = pydantic.ConfigDict(frozen=True)

    values: dict[str, Any]

    @property
    def key(self) -> str:
        """`"strategy=residual,depth=64"`: the cell's name in stores and reports."""
        return ",".join(f"{name}={value}" for name, value in self.values.items())


class StudySpec(StrictModel):
    """A study: what it compares, what it tunes per cell, how it retrains."""

    # The study's folder under reports/ and its MLflow experiment: never a path.
    name: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    base: TrialConfig = TrialConfig()
    compare: dict[str, list[Any]] = pydantic.Field(min_length=1)
    tune: TuneSpec | None = None  # None: a plain grid, every cell runs `base`
    final: FinalSpec = FinalSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    report: ReportSpec = ReportSpec()
    timeout: float | None = pydantic.Field(None, gt=0)  # seconds for one invocation
    execution: ExecutionSpec = ExecutionSpec()
    match: matching.MatchSpec | None = None  # None: every cell keeps base's width (or its compared one)

    _solved: dict[str, int] = pydantic.PrivateAttr(default_factory=dict)  # matched widths by cell key

    @pydantic.field_validator("name")
    @classmethod
    def _not_a_path(cls, name: str) -> str:
        if set(name) == {"."}:
            raise ValueError(f"name {name!r} is a path, not a study name")
        return name

    @pydantic.field_validator("compare")
    @classmethod
    def _known_compared(cls, compare):
        for name, values in compare.items():
            _check_field(name, NOT_VARIED, "compared")
            if not values:
                raise ValueError(f"{name}: give at least one value")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"{name}: values must be distinct, got {values}")
        return compare

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        metric = self.objective.metric
        if metric not in EPOCH_METRICS:
            close = difflib.get_close_matches(metric, list(EPOCH_METRICS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"objective.metric: unknown metric {metric!r}; {hint}training logs {', '.join(EPOCH_METRICS)}"
            )
        if not metric.startswith("val_"):
            raise ValueError(f"objective.metric: configs are selected on validation; use val_{metric}, not {metric}")
        if self.objective.direction != EPOCH_METRICS[metric]:
            raise ValueError(
                f"objective.direction: {metric} is better when larger/smaller: use {EPOCH_METRICS[metric]!r}"
            )
        if self.base.dataset.test_split is None:
            raise ValueError("base.dataset.test_split: the report's numbers are test metrics; name a test split")
        if (self.base.patience is not None or "patience" in self.compare) and self.base.monitor != metric:
            # The run keeps its best epoch by `monitor`; selection ranks runs by `metric`: one metric for both.
            raise ValueError(
                f"base.monitor: early stopping keeps the best epoch by {metric!r}, the objective; got {self.base.monitor!r}"
            )
        seeds = self.final.seeds
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"final.seeds must be distinct, got {seeds}")
        if self.tune is not None:
            for name, param in self.tune.search_space.items():
                _check_field(name, NOT_TUNED, "tuned")
                if name in self.compare:
                    raise ValueError(
                        f"tune.search_space.{name}: {name!r} is compared; a knob is compared or tuned, not both"
                    )
                if isinstance(param, Range) and not param.is_int and TrialConfig.model_fields[name].annotation is int:
                    raise ValueError(f"tune.search_space.{name}: an integer field needs integer low, high and step")
            if self.base.seed in seeds:
                raise ValueError(f"final.seeds must be fresh: {self.base.seed} is base.seed, which tuning uses")
            self._check_repeat_seeds()
        contrast = self.contrast
        if contrast not in self.compare:
            raise ValueError(f"report.contrast: {contrast!r} is not compared; compared: {', '.join(self.compare)}")
        if self.baseline not in self.compare[contrast]:
            raise ValueError(f"report.baseline: {self.baseline!r} is not a compared value of {contrast}")
        self._check_contrasts()
        if self.match is not None:
            self._match_capacities()
        self._check_combinations()
        self._check_compared_knobs_matter()
        if self.tune is not None and self.tune.pruner.type == "hyperband":
            least = min(self.cell_config(cell).epochs for cell in self.cells())
            if self.tune.pruner.min_resource > least:
                raise ValueError(
                    f"tune.pruner.min_resource ({self.tune.pruner.min_resource}) exceeds the epochs ({least})"
                )
        return self

    def _check_contrasts(self) -> None:
        names = [c.name for c in self.report.contrasts]
        if len(set(names)) != len(names):
            raise ValueError(f"report.contrasts: names must be distinct, got {names}")
        for c in self.report.contrasts:
            where = f"report.contrasts.{c.name}"
            for knob in [*c.of, *c.average]:
                if knob not in self.compare:
                    raise ValueError(f"{where}: {knob!r} is not compared; compared: {', '.join(self.compare)}")
            if len(set(c.of) | set(c.average)) != len(c.of) + len(c.average):
                raise ValueError(f"{where}: a knob is named twice in `of` and `average`")
            for knob in c.of:
                if len(self.compare[knob]) != 2:
                    raise ValueError(
                        f"{where}: {knob!r} has {len(self.compare[knob])} compared values; a factor of a contrast has 2"
                    )

    def _check_repeat_seeds(self) -> None:
        """Every repeat's tuning and final seeds are valid and used once across all repeats."""
        if self.repeats == 1:
            return
        used: dict[int, str] = {}
        for r in range(self.repeats):
            for seed, role in [(self.tuning_seed(r), "tuning"), *((s, "retraining") for s in self.final_seeds(r))]:
                if seed > MAX_SEED:
                    raise ValueError(f"tune.repeats: repeat {r}'s {role} seed {seed} exceeds {MAX_SEED}")
                if seed in used:
                    raise ValueError(
                        f"tune.repeats: seed {seed} would be both {used[seed]} and repeat {r}'s {role} seed "
                        f"(repeat r shifts every seed by r x {REPEAT_SEED_STRIDE}); choose seeds closer together"
                    )
                used[seed] = f"repeat {r}'s {role} seed"

    def _tuned_points(self) -> dict[str, list]:
        """Per tuned knob: its choices, or its range's ends."""
        if self.tune is None:
            return {}
        return {n: p.choices if isinstance(p, Choices) else p.ends() for n, p in self.tune.search_space.items()}

    def _check_combinations(self) -> None:
        """Every compared cell with every tuned choice (and range end) makes a valid config."""
        tuned = self._tuned_points()
        base = self.base.model_dump()
        for cell in self.cells():
            for values in itertools.product(*tuned.values()):
                combination = {**cell.values, **dict(zip(tuned, values))}
                try:
                    TrialConfig.model_validate({**base, **combination, **self.matched(cell)})
                except pydantic.ValidationError as error:
                    where = ", ".join(f"{k}={v}" for k, v in combination.items())
                    raise ValueError(f"the combination {where} is not a valid trial: {first_error(error)}") from None

    def _check_compared_knobs_matter(self) -> None:
        """Refuses a compared knob with no effect: every two cells that differ only in it, with every tuned
        choice and range end, would train identical networks (e.g. kernel_size in an mlp study)."""
        tuned = self._tuned_points()
        points = [dict(zip(tuned, values)) for values in itertools.product(*tuned.values())]
        configs = {cell.key: [self.cell_config(cell, point) for point in points] for cell in self.cells()}

        def network(key: str) -> list[dict]:
            return [_effective(config) for config in configs[key]]

        for knob, values in self.compare.items():
            at_first = {cell.key: Cell(values={**cell.values, knob: values[0]}).key for cell in self.cells()}
            if len(values) < 2 or any(network(key) != network(first) for key, first in at_first.items()):
                continue
            why = [models.ignored_knobs(c.strategy, c.family).get(knob) for cs in configs.values() for c in cs]
            unread = " or ".join(sorted({reason for reason in why if reason}))
            effect = (
                f"{knob} has no effect on {unread} networks"
                if all(why)
                else f"its values {values} make no difference to the networks"
            )
            raise ValueError(f"compare.{knob}: {effect}; the cells would train identical networks")

    @property
    def match_reference(self) -> tuple[str, Any]:
        """`(knob, value)` whose cells keep their width under `match`: the first compared knob's first value.

        Fixed by `compare` alone, which is part of the study's identity: the report's
        contrast and baseline can change without changing what was trained.
        """
        knob = next(iter(self.compare))
        return knob, self.compare[knob][0]

    def _match_capacities(self) -> None:
        """Solves `match.solve` per cell against the reference cell of its group (`match_reference`)."""
        match = self.match
        assert match is not None
        knob, reference = self.match_reference
        if match.solve in self.compare:
            raise ValueError(f"match.solve: {match.solve!r} is compared; a solved knob cannot also be compared")
        if self.tune is not None and match.solve in self.tune.search_space:
            raise ValueError(f"match.solve: {match.solve!r} is tuned; a solved knob cannot also be tuned")
        try:
            shape, classes = datasets.features(self.base.dataset.name)
        except ValueError as error:
            raise ValueError(f"match: {error}") from None
        groups: dict[tuple, tuple[Any, list]] = {}
        for cell in self.cells():
            others = tuple((k, repr(v)) for k, v in cell.values.items() if k != knob)
            _, members = groups.setdefault(others, (None, []))
            config = self._unmatched_config(cell)
            if repr(cell.values[knob]) == repr(reference):
                groups[others] = (config, members)
            else:
                members.append((cell.key, config))
        self._solved = matching.solve(match, list(groups.values()), shape, classes)
        # A tuned knob that changes a count would undo the match trial by trial.
        for cell in self.cells():
            config = self.cell_config(cell)
            at_base = capacity.of_config(config, shape, classes).of(match.measure)
            for name, points in self._tuned_points().items():
                for point in points:
                    tuned = config.model_copy(update={name: point})
                    if capacity.of_config(tuned, shape, classes).of(match.measure) != at_base:
                        raise ValueError(
                            f"tune.search_space.{name}: it changes {match.measure} within a cell, which the match "
                            "cannot hold; fix it in base or compare it"
                        )

    def _unmatched_config(self, cell: Cell) -> TrialConfig:
        try:
            return TrialConfig.model_validate({**self.base.model_dump(), **cell.values})
        except pydantic.ValidationError as error:
            raise ValueError(f"the cell {cell.key} is not a valid trial: {first_error(error)}") from None

    def matched(self, cell: Cell) -> dict[str, int]:
        """The knob values capacity matching solved for `cell` (`{}` without `match`)."""
        width = self._solved.get(cell.key)
        return {} if width is None or self.match is None else {self.match.solve: width}

    @property
    def contrast(self) -> str:
        return self.report.contrast or next(iter(self.compare))

    @property
    def baseline(self) -> Any:
        return self.report.baseline if self.report.baseline is not None else self.compare[self.contrast][0]

    def contrast_pairs(self) -> list[tuple[Any, Any]]:
        """The `(value, reference)` pairs the report differences in every condition.

        `report.pairs: baseline`: every other value against the baseline; `all`: every
        pair of values, the later (in the study file's order) minus the earlier.
        """
        values = self.compare[self.contrast]
        if self.report.pairs == "all":
            return [(later, earlier) for i, earlier in enumerate(values) for later in values[i + 1 :]]
        return [(value, self.baseline) for value in values if value != self.baseline]

    @property
    def family_size(self) -> int:
        """How many comparisons the report makes: conditions x contrast pairs, plus each declared
        contrast in each of its conditions."""
        conditions = math.prod(len(v) for n, v in self.compare.items() if n != self.contrast)
        declared = sum(len(self.contrast_conditions(c)) for c in self.report.contrasts)
        return conditions * len(self.contrast_pairs()) + declared

    def contrast_conditions(self, contrast: ContrastSpec) -> list[dict[str, Any]]:
        """The combinations of the compared knobs a declared contrast holds fixed."""
        fixed = {n: v for n, v in self.compare.items() if n not in contrast.of and n not in contrast.average}
        return [dict(zip(fixed, values)) for values in itertools.product(*fixed.values())]

    def contrast_weights(self, contrast: ContrastSpec, condition: dict[str, Any]) -> dict[str, float]:
        """Cell key -> its coefficient in the contrast under `condition` (the coefficients sum to 0).

        A knob of `of` contributes -1 at its first value and +1 at its second (their product is
        the interaction's sign); a knob of `average` divides by its number of values.
        """
        weights = {}
        for cell in self.cells():
            if any(cell.values[n] != v for n, v in condition.items()):
                continue
            weight = 1.0
            for knob in contrast.of:
                weight *= 1.0 if cell.values[knob] == self.compare[knob][1] else -1.0
            for knob in contrast.average:
                weight /= len(self.compare[knob])
            weights[cell.key] = weight
        return weights

    def cells(self) -> list[Cell]:
        """Every combination of compared values, in a stable order."""
        return [Cell(values=dict(zip(self.compare, values))) for values in itertools.product(*self.compare.values())]

    def cell_config(self, cell: Cell, tuned: dict[str, Any] | None = None, seed: int | None = None) -> TrialConfig:
        """`base`, then the cell's compared values, the tuned values and the seed."""
        values = {**self.base.model_dump(), **cell.values, **self.matched(cell), **(tuned or {})}
        if seed is not None:
            values["seed"] = seed
        return TrialConfig.model_validate(values)

    @property
    def tuned(self) -> bool:
        return self.tune is not None

    @property
    def repeats(self) -> int:
        """Independent tuning repeats (`tune.repeats`; 1 without tuning)."""
        return self.tune.repeats if self.tune else 1

    def tuning_seed(self, repeat: int = 0) -> int:
        """The training seed of tuning repeat `repeat`'s trials."""
        return self.base.seed + repeat * REPEAT_SEED_STRIDE

    def final_seeds(self, repeat: int = 0) -> list[int]:
        """The final seeds of repeat `repeat`: fresh per repeat, so seeds nest within repeats."""
        return [seed + repeat * REPEAT_SEED_STRIDE for seed in self.final.seeds]

    def all_final_seeds(self) -> list[int]:
        return [seed for r in range(self.repeats) for seed in self.final_seeds(r)]

    @property
    def n_tuning_trials(self) -> int:
        """How many tuning trials the study plans (every cell, slot and repeat)."""
        return len(self.cells()) * (self.tune.trials_per_cell or 0) * self.repeats if self.tune else 0

    @property
    def n_final_runs(self) -> int:
        """How many final runs the study plans (every cell, final seed and repeat)."""
        return len(self.cells()) * len(self.final.seeds) * self.repeats

    def tune_identity(self, cell: Cell, repeat: int = 0) -> dict:
        """What makes one cell's tuning (in one repeat) the same tuning (budget included)."""
        identity: dict[str, Any] = {
            "base": _base_identity(self.base),
            "cell": cell.values,
            "tune": self.tune.identity() if self.tune else None,
            "objective": self.objective.model_dump(mode="json"),
        }
        if self.match is not None:  # absent without it, as before it existed
            identity["match"] = self.match.model_dump(mode="json")
        if self.repeats > 1:
            identity["repeat"] = repeat
        return identity

    def identity(self) -> dict:
        """What makes two runs of a study the same study (time and retry knobs excluded)."""
        identity = self.model_dump(mode="json", exclude={"timeout", "description", "execution", "report", "match"})
        identity["base"] = _base_identity(self.base)
        if self.tune is not None:
            identity["tune"] = self.tune.identity()
        if self.match is not None:
            identity["match"] = self.match.model_dump(mode="json")
        if self.execution.xla:  # changes every trial's rounding: no mixing on resume (absent when off, as before)
            identity["xla"] = True
        return identity


def sampler_to_resume(stored: str, identity: dict) -> str | None:
    """The sampler type a stored identity (its JSON) has where `identity` has another, when nothing else
    differs: naming it in the study file resumes the study. Studies whose file named no sampler ran with
    tpe until 2026-12-08, and their identities say so."""
    tune = identity.get("tune")
    if tune is None:
        return None
    for ran in typing.get_args(SamplerType):
        if ran != tune["sampler"]["type"]:
            ran_with = {**identity, "tune": {**tune, "sampler": {**tune["sampler"], "type": ran}}}
            if json.dumps(ran_with, sort_keys=True) == stored:
                return ran
    return None


def _effective(config: TrialConfig) -> dict:
    """A trial as its training sees it (`models.effective_knobs`), early stopping's knobs left out
    when it does not stop early: without `patience`, `min_delta` and `monitor` do nothing."""
    knobs = models.effective_knobs(config.model_dump())
    if config.patience is None:
        knobs = {k: v for k, v in knobs.items() if k not in ("min_delta", "monitor")}
    return knobs


def _base_identity(base: TrialConfig) -> dict:
    """`base` as identities hold it: fields added later are left out at their default,
    so that a study stored before they existed keeps its identity."""
    dumped = base.model_dump(mode="json")
    for name in ADDED_FIELDS:
        if dumped[name] == TrialConfig.model_fields[name].default:
            del dumped[name]
    if not dumped["dataset"]["allow_overlap"]:
        del dumped["dataset"]["allow_overlap"]
    return dumped


def _check_field(name: str, excluded: tuple[str, ...], verb: str) -> None:
    if name in excluded:
        raise ValueError(f"{name!r} cannot be {verb}" + (" (final.seeds holds the seeds)" if name == "seed" else ""))
    if name not in TrialConfig.model_fields:
        close = difflib.get_close_matches(name, list(TrialConfig.model_fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"{name!r} is not a trial config field; {hint}fields: {', '.join(TrialConfig.model_fields)}")


def first_error(error: pydantic.ValidationError) -> str:
    """The first problem of a validation error, as `where: what`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-after"))
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def suggest_tuned(spec: StudySpec, trial) -> dict[str, Any]:
    """The tuned values of an Optuna trial, from the study's search space."""
    return search_space.suggest(spec.tune.search_space if spec.tune else {}, trial)
