"""The seeded feature masks of masked reuse, in NumPy (no Keras): the layers and the
capacity counts draw the very same masks."""

from __future__ import annotations

import numpy as np


def feature_mask(shape, keep_ratio, seed):
    """Seeded 0/1 mask over `shape` keeping `max(1, round(keep_ratio * size))` entries."""
    size = int(np.prod(shape))
    keep = max(1, round(keep_ratio * size))
    kept = np.random.RandomState(seed).permutation(size)[:keep]
    mask = np.zeros(size, dtype="float32")
    mask[kept] = 1.0
    return mask.reshape(shape)
