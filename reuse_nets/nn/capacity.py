"""What a model built by `models.build_model` holds and costs, counted without Keras.

Counts are exact: tests/test_capacity.py compares them with the built model's
weights for every strategy, reuse source, normalisation and family. Counting
without building is what lets a study match capacities (solve a width) while it
loads, and `--dry-run` show them, in milliseconds.

- **Trainable parameters**: what the optimizer updates (a learned mask included).
- **Total parameters**: trainable plus non-trainable (a fixed mask, batch
  normalisation's moving statistics).
- **FLOPs per example**: 2 x the multiply-accumulates of the dense and
  convolution kernels of one forward pass (stem, blocks, shortcuts, head), the
  convention of most papers. Biases, activations, normalisation, masks and
  pooling are left out: each costs O(features) per layer, not O(features^2).
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Parameter and compute counts of one model."""

    trainable: int
    total: int
    flops: int  # per example, forward pass

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable

    def of(self, measure: str) -> int:
        """The count a study matches on: "trainable_params", "total_params" or "flops"."""
        return {"trainable_params": self.trainable, "total_params": self.total, "flops": self.flops}[measure]


MEASURES = ("trainable_params", "total_params", "flops")


def count(
    strategy: str,
    depth: int,
    width: int,
    input_shape,
    num_classes: int,
    family: str = "mlp",
    *,
    kernel_size: int = 3,
    reuse_source: str | None = None,
    normalization: str = "none",
    learned_mask: bool = False,
) -> Capacity:
    """The `Capacity` of `models.build_model` called with the same arguments."""
    from reuse_nets.nn import models

    source = reuse_source or models.STRATEGIES[strategy].reuse_sources[0]
    input_shape = tuple(int(d) for d in input_shape)
    conv = family == "conv"
    # Per example: conv kernels slide over every pixel, dense ones apply once.
    positions = math.prod(input_shape[:-1]) if conv else 1
    features = input_shape[-1] if conv else math.prod(input_shape)
    window = kernel_size * kernel_size if conv else 1
    trainable = fixed = macs = 0

    reused = features
    if source == models.STEM:
        trainable += features * width + width
        macs += positions * features * width
        reused = width
    x = features
    for _ in range(depth):
        trainable += window * x * width + width
        macs += positions * window * x * width
        if normalization == "layer":
            trainable += 2 * width
        elif normalization == "batch":
            trainable += 2 * width
            fixed += 2 * width  # moving mean and variance
        source_dim = x if source == "previous" else reused
        if strategy == "residual":
            if source_dim != width:  # a learned shortcut projection (1x1 for conv)
                trainable += source_dim * width
                macs += positions * source_dim * width
            trainable += 1  # the branch gain
            x = width
        elif strategy in ("concat", "masked"):
            if strategy == "masked":
                mask = positions * source_dim if conv else source_dim
                if learned_mask:
                    trainable += mask
                else:
                    fixed += mask
            x = width + source_dim
        else:
            x = width
    trainable += x * num_classes + num_classes
    macs += x * num_classes
    return Capacity(trainable=trainable, total=trainable + fixed, flops=2 * macs)


def of_config(config, input_shape, num_classes: int) -> Capacity:
    """The `Capacity` of the network a `TrialConfig` describes."""
    return count(
        config.strategy,
        config.depth,
        config.width,
        input_shape,
        num_classes,
        config.family,
        kernel_size=config.kernel_size,
        reuse_source=config.reuse_source,
        normalization=config.normalization,
        learned_mask=config.learned_mask,
    )


def human(n: int) -> str:
    """`1_142_026` -> "1.14M": counts as tables show them."""
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
