"""The trial config: every knob of one training run, typed and validated.

A study (see `studies.py`) resolves into one `TrialConfig` per trial; data, model,
training and tracking read nothing else, and the config logged with a run is
enough to re-run it.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

import pydantic

from reuse_nets.nn import models

# Keras activations a block may apply, by name: one tensor in, the same shape out
# (`glu` halves the features; `threshold` needs arguments). Listed here so that a
# study is checked when it loads, without importing Keras; tests/test_models.py
# builds a block with every one.
ACTIVATIONS = (
    "celu",
    "elu",
    "exponential",
    "gelu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
)


# Bounds that catch typos (a width of 1e9 allocates until the machine falls over).
MAX_WIDTH = 65_536
MAX_BATCH = 1_048_576
MAX_EPOCHS = 100_000
# NumPy and TensorFlow take seeds below 2**32; masked blocks seed block i with seed + i.
MAX_SEED = 2**32 - 1 - models.MAX_DEPTH


# Fields added after studies were stored (2026-12-01, 2026-12-08): a study's identity leaves
# them out while at their default, so that studies stored before them still resume.
ADDED_FIELDS = (
    "kernel_initializer",
    "normalization",
    "branch_gain_init",
    "start_as_identity",
    "patience",
    "min_delta",
    "monitor",
    "warmup_epochs",
    "lr_schedule",
)


class DatasetConfig(pydantic.BaseModel):
    """Which TFDS dataset and which split expressions to use."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = "fashion_mnist"  # any TFDS image-classification dataset
    train_split: str = "train"  # TFDS slice syntax, e.g. "train[:2000]"
    validation_split: str | None = None  # None: the dataset's own, else 10% carved off "train"
    test_split: str | None = "test"  # None: no test evaluation
    # Splits that share examples are refused when the data loads (test data leaking into
    # training or selection); true allows it on purpose.
    allow_overlap: bool = False


class TrialConfig(pydantic.BaseModel):
    """One training run. Field comments give meaning and a typical value."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    strategy: str = "residual"  # plain | concat | residual | masked
    depth: int = pydantic.Field(4, ge=1, le=models.MAX_DEPTH)  # number of reuse blocks
    width: int = pydantic.Field(128, ge=1, le=MAX_WIDTH)  # units (mlp) or channels (conv) per block
    family: Literal["mlp", "conv"] = "mlp"
    activation: str = "relu"  # any of ACTIVATIONS
    kernel_size: int = pydantic.Field(3, ge=1)  # conv family only
    reuse_source: Literal["input", "previous", "stem"] | None = None  # None: the strategy's default
    kernel_initializer: str = "he_normal"  # of every block's transform: any of models.KERNEL_INITIALIZERS
    normalization: Literal["none", "layer", "batch"] = "none"  # of every block's pre-activations
    branch_gain_init: float = pydantic.Field(0.0, allow_inf_nan=False)  # residual: 0 = ReZero, 1 = classic
    # Whether each block starts as the identity map, one factor across strategies. plain: True
    # gives its width-to-width blocks identity kernels (zero biases; the first block, from the
    # input, and the head keep their initialisers). residual: True/False sets the branch gain's
    # start to 0/1. None: the strategy's own start (plain: its initializer; residual: branch_gain_init).
    start_as_identity: bool | None = None
    keep_ratio: float = pydantic.Field(0.5, gt=0.0, le=1.0, allow_inf_nan=False)  # masked: fraction of features kept
    learned_mask: bool = False  # masked: trainable gate instead of a fixed mask
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = pydantic.Field(1e-3, gt=0.0, allow_inf_nan=False)  # the peak, after any warm-up
    warmup_epochs: int = pydantic.Field(0, ge=0, le=MAX_EPOCHS)  # linear warm-up from 0 over these epochs
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after warm-up; cosine decays to 0 at `epochs`
    batch_size: int = pydantic.Field(128, ge=1, le=MAX_BATCH)
    epochs: int = pydantic.Field(5, ge=1, le=MAX_EPOCHS)  # the budget; with `patience`, the cap
    # Early stopping: stop once `monitor` has not improved by more than `min_delta` for `patience`
    # epochs, and keep the best epoch's weights (tested, logged, selected on). None: train `epochs`.
    patience: int | None = pydantic.Field(None, ge=1, le=MAX_EPOCHS)
    min_delta: float = pydantic.Field(0.0, ge=0.0, allow_inf_nan=False)
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    seed: int = pydantic.Field(0, ge=0, le=MAX_SEED)  # seeds Python, NumPy, TF, init, masks and shuffling
    dataset: DatasetConfig = DatasetConfig()

    @pydantic.field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value):
        if value not in models.STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; allowed: {', '.join(models.STRATEGIES)}")
        return value

    @pydantic.field_validator("activation")
    @classmethod
    def _known_activation(cls, value):
        if value not in ACTIVATIONS:
            close = difflib.get_close_matches(value, ACTIVATIONS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown activation {value!r}; {hint}allowed: {', '.join(ACTIVATIONS)}")
        return value

    @pydantic.field_validator("kernel_initializer")
    @classmethod
    def _known_initializer(cls, value):
        if value not in models.KERNEL_INITIALIZERS:
            raise ValueError(f"unknown kernel_initializer {value!r}; allowed: {', '.join(models.KERNEL_INITIALIZERS)}")
        return value

    @pydantic.model_validator(mode="after")
    def _compatible_reuse_source(self):
        allowed = models.STRATEGIES[self.strategy].reuse_sources
        if self.reuse_source is not None and self.reuse_source not in allowed:
            raise ValueError(
                f"reuse_source {self.reuse_source!r} is not allowed for strategy {self.strategy!r}; "
                f"allowed: {', '.join(allowed)}"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _identity_start_is_plain(self):
        if self.start_as_identity is not None and "start_as_identity" not in models.STRATEGIES[self.strategy].options:
            raise ValueError(f"start_as_identity is defined for strategies plain and residual, not {self.strategy!r}")
        if self.start_as_identity is not None and self.branch_gain_init != 0.0:
            raise ValueError(
                "set start_as_identity or branch_gain_init, not both: each sets the residual branch's start"
            )
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        return self

    def model_arguments(self) -> dict[str, Any]:
        """The arguments of `nn.models.build_model` and `nn.capacity.count` (all but the data's
        shape and classes), the strategy's own options included: the one place a config
        becomes a network's arguments, so a strategy's new option reaches both by its name."""
        return {
            "strategy": self.strategy,
            "depth": self.depth,
            "width": self.width,
            "family": self.family,
            "activation": self.activation,
            "kernel_size": self.kernel_size,
            "reuse_source": self.reuse_source,
            "kernel_initializer": self.kernel_initializer,
            "normalization": self.normalization,
            "seed": self.seed,
            **{option: getattr(self, option) for option in models.STRATEGIES[self.strategy].options},
        }

    def flat(self) -> dict[str, object]:
        """Every knob as a flat `{"dataset.name": ..., "depth": ...}` dict."""
        flat = {}
        for key, value in self.model_dump().items():
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        return flat
