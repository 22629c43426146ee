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

from typing import Literal

import pydantic

from reuse_nets.nn import capacity
from reuse_nets.spec.config import MAX_WIDTH, TrialConfig


class MatchSpec(pydantic.BaseModel):
    """`match:` in a study file."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    measure: Literal["trainable_params", "total_params", "flops"] = "trainable_params"  # what must agree
    solve: Literal["width"] = "width"  # the knob solved per cell; neither compared nor tuned
    tolerance: float = pydantic.Field(0.05, gt=0.0, le=0.5)  # largest relative difference from the baseline cell


def solve_width(config: TrialConfig, target: int, on: str, input_shape, num_classes: int) -> int:
    """The width whose count is nearest `target` (the smaller one on a tie)."""

    def measured(width: int) -> int:
        return capacity.of_config(config.model_copy(update={"width": width}), input_shape, num_classes).of(on)

    # Every count grows with width: bisect for the first width reaching the target.
    low, high = 1, MAX_WIDTH
    while low < high:
        middle = (low + high) // 2
        if measured(middle) >= target:
            high = middle
        else:
            low = middle + 1
    if low > 1 and target - measured(low - 1) <= measured(low) - target:
        return low - 1
    return low


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
