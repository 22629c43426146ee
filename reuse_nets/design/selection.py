"""The selection: per unit, the tuning trial whose config the final phase retrains.

Stored as JSON on the final phase's Optuna study (`names.SELECTION_ATTR`) when that
phase begins; every reader goes through `from_json`, every writer through `to_json`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class Chosen:
    """A unit's selected tuning trial: its number, validation value, tuned params and MLflow run."""

    trial: int
    value: float
    params: dict[str, Any]
    run_id: str | None = None


# Per unit key (`plan.unit_key`: the cell, and its tuning repeat when there are several):
# the chosen trial, or None when no tuning trial of the unit completed.
Selection = dict[str, Chosen | None]


def to_json(selection: Selection) -> str:
    """The stored form: {unit key: {"trial", "value", "params", "run_id"} or null}, keys sorted."""
    return json.dumps(
        {key: None if chosen is None else dataclasses.asdict(chosen) for key, chosen in selection.items()},
        sort_keys=True,
    )


def from_json(raw: str) -> Selection:
    """A stored selection back; fields a stored selection lacks take their defaults."""
    return {key: None if chosen is None else Chosen(**chosen) for key, chosen in json.loads(raw).items()}
