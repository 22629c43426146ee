"""Capacity matching: solve each cell's width so that compared cells have equal capacity.

A study that compares strategies at several depths would otherwise compare
capacities too: at width 128 and depth 64, `concat` has 6.5x `plain`'s
parameters. With `match`, within every combination of the other compared knobs
(e.g. at each depth), the cell holding the report's baseline (e.g. `plain`) keeps
its width, and every other cell's width is the one whose count (trainable
parameters by default, or total parameters, or FLOPs) is nearest the baseline
cell's; a cell that cannot come within `tolerance` is an error naming it.
"""

from __future__ import annotations

import math
from typing import Literal

import pydantic

from reuse_nets.design.trial_config import MAX_WIDTH, TrialConfig
from reuse_nets.nn import capacity


class MatchSpec(pydantic.BaseModel):
    """`match:` in a study file."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    # What must agree: effective_params leaves out weights that never learn (behind a fixed mask).
    measure: Literal["trainable_params", "effective_params", "total_params", "flops"] = "trainable_params"
    solve: Literal["width"] = "width"  # the knob solved per cell; neither compared nor tuned
    tolerance: float = pydantic.Field(0.05, gt=0.0, le=0.5)  # largest relative difference from the baseline cell


def solve_width(config: TrialConfig, target: int, on: str, input_shape, num_classes: int) -> int:
    """The width whose count is nearest `target` (the smaller one on a tie)."""

    def measured(width: int) -> int:
        return capacity.of_config(config.model_copy(update={"width": width}), input_shape, num_classes).of(on)

    # Counts grow with width, except where a residual block's shortcut projection
    # vanishes (width equal to what it reuses): bisect, then compare the neighbours
    # and those widths directly.
    low, high = 1, MAX_WIDTH
    while low < high:
        middle = (low + high) // 2
        if measured(middle) >= target:
            high = middle
        else:
            low = middle + 1
    candidates = {w for w in range(low - 2, low + 3) if 1 <= w <= MAX_WIDTH}
    candidates |= {d for d in (math.prod(input_shape), input_shape[-1]) if 1 <= d <= MAX_WIDTH}
    return min(sorted(candidates), key=lambda w: abs(measured(w) - target))


def relative_gap(count: int, target: int) -> float:
    """`|count - target| / target`: how far a cell is from its baseline."""
    return abs(count - target) / target


def solve(
    match: MatchSpec,
    groups: list[tuple[TrialConfig, list[tuple[str, TrialConfig]]]],
    input_shape,
    num_classes: int,
) -> dict[str, int]:
    """Solved widths by cell key, for `(baseline config, [(cell key, config), ...])` groups.

    Raises:
        ValueError: a cell cannot come within `match.tolerance` of its baseline.
    """
    solved = {}
    for reference, cells in groups:
        target = capacity.of_config(reference, input_shape, num_classes).of(match.measure)
        for key, config in cells:
            width = solve_width(config, target, match.measure, input_shape, num_classes)
            got = capacity.of_config(config.model_copy(update={"width": width}), input_shape, num_classes).of(
                match.measure
            )
            if relative_gap(got, target) > match.tolerance:
                raise ValueError(
                    f"match: cell {key} cannot be matched on {match.measure}: its nearest width {width} gives "
                    f"{got:,}, {relative_gap(got, target):.1%} from the baseline's {target:,} "
                    f"(tolerance {match.tolerance:.0%})"
                )
            solved[key] = width
    return solved
