"""What a model built by `models.build_model` holds and costs, counted without Keras.

Counts are exact: tests/test_capacity.py compares them with the built model's
weights for every strategy, reuse source, normalisation and family. Counting
without building is what lets a study match capacities (solve a width) while it
loads, and `--dry-run` show them, in milliseconds.

- **Trainable parameters**: what the optimizer updates (a learned mask included).
- **Total parameters**: trainable plus non-trainable (a fixed mask, batch
  normalisation's moving statistics).
- **Effective parameters**: trainable minus those that can never learn. A fixed
  mask zeroes the same features of every example, so the kernel rows of the next
  block (or the head) that read them always see 0: their gradient is exactly 0.
  With `keep_ratio` 0.5 they are about half of a deep masked network's trainable
  count (mlp). A convolution's tap is inert only if every pixel it could read is
  masked; so is a stem unit that no block's mask keeps.
- **FLOPs per example**: 2 x the multiply-accumulates of the dense and
  convolution kernels of one forward pass (stem, blocks, shortcuts, head), the
  convention of most papers. Biases, activations, normalisation, masks and
  pooling are left out: each costs O(features) per layer, not O(features^2).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from reuse_nets.nn import masks


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Parameter and compute counts of one model."""

    trainable: int
    total: int
    flops: int  # per example, forward pass
    inert: int = 0  # trainable parameters whose gradient is always 0 (see the module docstring)

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable

    @property
    def effective(self) -> int:
        return self.trainable - self.inert

    def of(self, measure: str) -> int:
        """The count a study matches on: one of `MEASURES`."""
        return {
            "trainable_params": self.trainable,
            "effective_params": self.effective,
            "total_params": self.total,
            "flops": self.flops,
        }[measure]


MEASURES = ("trainable_params", "effective_params", "total_params", "flops")


def _dead_taps(mask: np.ndarray, kernel_size: int) -> int:
    """Taps x input channels of a "same" convolution over `mask` (H, W, C) that only read 0."""
    kept = mask != 0
    height, width = kept.shape[:2]
    before = (kernel_size - 1) // 2  # Keras "same": the extra padding of an even kernel goes after
    dead = 0
    for dy in range(kernel_size):
        for dx in range(kernel_size):
            # Output pixel q reads input q - before + d; the tap is live if that is a kept pixel for some q.
            rows = slice(max(0, dy - before), min(height, height + dy - before))
            cols = slice(max(0, dx - before), min(width, width + dx - before))
            dead += int((~kept[rows, cols].any(axis=(0, 1))).sum())
    return dead


def count(
    strategy: str,
    depth: int,
    width: int,
    input_shape,
    num_classes: int,
    family: str = "mlp",
    *,
    activation: str = "relu",
    kernel_size: int = 3,
    reuse_source: str | None = None,
    kernel_initializer: str = "he_normal",
    normalization: str = "none",
    seed: int = 0,
    **options,
) -> Capacity:
    """The `Capacity` of `models.build_model` called with the same arguments.

    The activation, the initializer and a strategy's start (`branch_gain_init`,
    `start_as_identity`) change no count; masked's `keep_ratio` and `learned_mask`
    (default 0.5 and False, as the layer's) do.
    """
    from reuse_nets.nn import models

    unknown = sorted(set(options) - set(models.STRATEGIES[strategy].options))
    if unknown:
        raise ValueError(f"strategy {strategy!r} takes no option(s) {unknown}")
    keep_ratio, learned_mask = options.get("keep_ratio", 0.5), options.get("learned_mask", False)
    source = reuse_source or models.STRATEGIES[strategy].reuse_sources[0]
    input_shape = tuple(int(d) for d in input_shape)
    conv = family == "conv"
    # Per example: conv kernels slide over every pixel, dense ones apply once.
    positions = math.prod(input_shape[:-1]) if conv else 1
    features = input_shape[-1] if conv else math.prod(input_shape)
    window = kernel_size * kernel_size if conv else 1
    trainable = fixed = macs = inert = 0
    dead_inputs = 0  # features of the current tensor a fixed mask always zeroes
    fixed_masks = strategy == "masked" and not learned_mask
    reused_used = np.zeros(width if source == models.STEM else 0, dtype=bool)  # stem units a mask keeps

    reused = features
    if source == models.STEM:
        trainable += features * width + width
        macs += positions * features * width
        reused = width
    x = features
    for index in range(1, depth + 1):
        inert += dead_inputs * width  # kernel rows (taps) reading always-zero features
        trainable += window * x * width + width
        macs += positions * window * x * width
        if normalization == "layer":
            trainable += 2 * width
        elif normalization == "batch":
            trainable += 2 * width
            fixed += 2 * width  # moving mean and variance
        source_dim = x if source == "previous" else reused
        dead_inputs = 0
        if strategy == "residual":
            if source_dim != width:  # a learned shortcut projection (1x1 for conv)
                trainable += source_dim * width
                macs += positions * source_dim * width
            trainable += 1  # the branch gain
            x = width
        elif strategy in ("concat", "masked"):
            if strategy == "masked":
                shape = (*input_shape[:-1], source_dim) if conv else (source_dim,)
                if not fixed_masks:
                    trainable += math.prod(shape)
                else:
                    fixed += math.prod(shape)
                    # The block's own mask, as `models.build_model` seeds it: a feature
                    # (channel) it zeroes everywhere is always 0 for the next layer.
                    mask = masks.feature_mask(shape, keep_ratio, seed + index)
                    kept = mask.reshape(-1, source_dim).any(axis=0)
                    # The next block reads `width` live features, then the masked ones.
                    dead_inputs = _dead_taps(mask, kernel_size) if conv else int((~kept).sum())
                    if source == models.STEM:
                        reused_used |= kept
            x = width + source_dim
        else:
            x = width
    trainable += x * num_classes + num_classes
    if dead_inputs:  # the head reads each (pooled) feature once
        inert += (int((~kept).sum()) if conv else dead_inputs) * num_classes
    if fixed_masks and source == models.STEM and strategy == "masked":
        # A stem unit no block's mask ever keeps: its kernel column and bias never learn.
        inert += int((~reused_used).sum()) * (features + 1)
    macs += x * num_classes
    return Capacity(trainable=trainable, total=trainable + fixed, flops=2 * macs, inert=inert)


def of_config(config, input_shape, num_classes: int) -> Capacity:
    """The `Capacity` of the network a `TrialConfig` describes."""
    return count(input_shape=input_shape, num_classes=num_classes, **config.model_arguments())


def human(n: int) -> str:
    """`1_142_026` -> "1.14M": counts as tables show them."""
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
