"""Early stopping: stop once the validation metric has stopped improving, keep the best epoch.

A budget of `epochs` is then a cap: a run stops after `patience` epochs without an
improvement of more than `min_delta` in `monitor`, and its model gets back the
weights of its best epoch, which is what its test metrics, its logged model and the
tuning objective describe. The state is a pure function of the epochs' metrics plus
the best weights, so a resumed run rebuilds it by replaying its checkpoint's history
and loading the best weights stored beside it.
"""

from __future__ import annotations

import dataclasses
import math

from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.names import EPOCH_METRICS


@dataclasses.dataclass
class Plateau:
    """The early-stopping state of one run."""

    monitor: str
    maximize: bool
    patience: int
    min_delta: float
    best: float | None = None
    best_epoch: int = 0  # from 1; 0 before the first epoch
    wait: int = 0  # epochs since the best one
    weights: list | None = None  # the network's weights (NumPy copies) at `best_epoch`

    @classmethod
    def of(cls, config: TrialConfig) -> Plateau | None:
        """The state for `config`, or None for a fixed budget (no `patience`)."""
        if config.patience is None:
            return None
        maximize = EPOCH_METRICS[config.monitor] == "maximize"
        return cls(config.monitor, maximize, config.patience, config.min_delta)

    def update(self, epoch: int, metrics: dict) -> bool:
        """Takes epoch `epoch`'s metrics; True if it is the new best (its weights are to be kept)."""
        value = metrics[self.monitor]
        better = math.isfinite(value) and (
            self.best is None
            or (value > self.best + self.min_delta if self.maximize else value < self.best - self.min_delta)
        )
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return better

    @property
    def stop(self) -> bool:
        """Whether `patience` epochs have passed without an improvement."""
        return self.wait >= self.patience
