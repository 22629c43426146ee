"""Keras layers that reuse a network's inputs (concat, residual, masked, plain) and the models built from them.

The public names, importable from here (docs/layers-and-models.md, "Public imports"):

    from reuse_nets.nn import ResidualBlock, build_model, count_capacity

They load on first use: `design/` reads `reuse_nets.nn.models`' tables without
importing TensorFlow, and the command line stays quick to start.
"""

from __future__ import annotations

import importlib

# Public name -> (module in this package, its name there).
PUBLIC = {
    "PlainBlock": ("layers", "PlainBlock"),
    "FeatureAugmentationLayer": ("layers", "FeatureAugmentationLayer"),
    "ResidualBlock": ("layers", "ResidualBlock"),
    "MaskedInputLayer": ("layers", "MaskedInputLayer"),
    "MaskedReuseBlock": ("layers", "MaskedReuseBlock"),
    "UnitInterval": ("layers", "UnitInterval"),
    "build_model": ("models", "build_model"),
    "block_names": ("models", "block_names"),
    "STRATEGIES": ("models", "STRATEGIES"),
    "count_capacity": ("capacity", "count"),
    "Capacity": ("capacity", "Capacity"),
}
__all__ = sorted(PUBLIC)


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = PUBLIC[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PUBLIC))
