"""A study's search space: the dimensions a tuned knob may take, and the sampler and pruner
that search them (`tune:` in a study file)."""

from __future__ import annotations

import math
from typing import Any, Literal

import pydantic


class StrictModel(pydantic.BaseModel):
    """Study-file objects: unknown keys are errors, and a parsed spec never changes."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Choices(StrictModel):
    """A categorical dimension: `{choices: [1, 2, 4]}` (or a bare list)."""

    choices: list[Any] = pydantic.Field(min_length=1)


class Range(StrictModel):
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
        if not all(math.isfinite(v) for v in (self.low, self.high, self.step or 0)):
            raise ValueError(f"range bounds must be finite numbers, got low={self.low} high={self.high}")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log ranges need low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("a range cannot have both log and step")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step}")
        return self

    def ends(self) -> list:
        return [self.low, self.high]


Param = Choices | Range


SamplerType = Literal["tpe", "random", "grid", "sobol"]


class SamplerSpec(StrictModel):
    # grid: every combination of choices, in order. sobol: slot k of every cell tries the
    # k-th point of one scrambled Sobol sequence (seeded): the same candidates in every
    # cell, whatever the workers or resume order. tpe and random draw as trials run, so
    # their candidates depend on the workers and the resume order. None (not named): grid
    # when every tuned knob is a list of choices, else sobol (`TuneSpec` resolves it);
    # until 2026-12-08 it was tpe, which studies stored then name to resume.
    type: SamplerType | None = None
    # The same seed in every cell: each cell's search is reproducible. Workers offset it
    # (`sweep.phases.sampler`), so it leaves room below 2**32.
    seed: int = pydantic.Field(0, ge=0, le=2**31)
    n_startup_trials: int = pydantic.Field(4, ge=0)  # tpe: random trials before modelling


class PrunerSpec(StrictModel):
    type: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = pydantic.Field(3, ge=0)  # median: the cell's trials finished before pruning
    n_warmup_steps: int = pydantic.Field(1, ge=0)  # median: epochs never pruned (2: not before epoch 3)
    min_resource: int = pydantic.Field(1, ge=1)  # hyperband: fewest epochs a trial gets (<= epochs)
    reduction_factor: int = pydantic.Field(3, ge=2)  # hyperband


def from_unit(param: Param, u: float) -> Any:
    """The value of a search dimension at `u` in [0, 1): uniform in its own (log) scale."""
    if isinstance(param, Choices):
        return param.choices[min(int(u * len(param.choices)), len(param.choices) - 1)]
    low, high = float(param.low), float(param.high)
    if param.step is not None or param.is_int:
        # Every point of the grid low, low + step, ... <= high gets the same share of [0, 1).
        step = float(param.step or 1)
        points = math.floor((high - low) / step + 1e-9) + 1
        value = low + min(int(u * points), points - 1) * step
        return round(value) if param.is_int else value
    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if param.log else low + u * (high - low)
    return min(max(value, low), high)  # rounding never leaves the range


def suggest(search_space: dict[str, Param], trial) -> dict[str, Any]:
    """The tuned values of an Optuna trial: the only caller of `trial.suggest_*` for them."""
    values: dict[str, Any] = {}
    for name, param in search_space.items():
        if isinstance(param, Choices):
            values[name] = trial.suggest_categorical(name, param.choices)
        elif param.is_int:
            values[name] = trial.suggest_int(name, low=param.low, high=param.high, step=param.step or 1, log=param.log)
        else:
            values[name] = trial.suggest_float(name, low=param.low, high=param.high, step=param.step, log=param.log)
    return values
