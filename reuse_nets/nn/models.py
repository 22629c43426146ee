"""Model builders: stack reuse blocks to any depth, for vectors and images.

A model is `input -> [flatten] -> block_01 ... block_NN -> [pool] -> head`. Every
block is one layer named `block_XX`, so gradient norms can be attributed to depth.

Which tensor a block reuses (`reuse_source`):
- "previous": the block's own input (classic residual networks);
- "input": the original network input (flattened for the `mlp` family), so that a
  block deep in the network sees what entered it;
- "stem": a learned linear projection of the network input to `width` features
  (a 1x1 convolution to `width` channels for `conv`), computed once in a layer
  named `stem` and reused by every block. It separates *what* is reused from
  *how*: a residual block then needs no shortcut projection, and concatenation
  adds `width` features instead of all the input's.

Width under concatenation is bounded: `concat` and `masked` blocks reuse a fixed
tensor (the input or the stem), so every block's output has `width + reused`
features at any depth. Concatenating the previous block's output instead would
grow the width by `width` per block (a DenseNet without transitions), which is why
those strategies refuse "previous"; `plain` reuses nothing, so "previous" is its
only source.

Every block's transform takes the same `kernel_initializer` and `normalization`
whatever the strategy, so that they can be compared (or held fixed) apart from
how a strategy reuses.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

FAMILIES = ("mlp", "conv")
MAX_DEPTH = 256
REUSE_SOURCES = ("previous", "input", "stem")
NORMALIZATIONS = ("none", "layer", "batch")
# Kernel initializers a block's transform may use, by Keras name (seeded by the Keras global seed).
KERNEL_INITIALIZERS = (
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
)
STEM = "stem"


def _masked_options(index, options):
    # A different seeded subset per block, so that depth sees more of the input.
    # Options not given keep the layer's own defaults.
    kwargs = {"seed": options["seed"] + index, "mask_shape": options["mask_shape"]}
    for option, argument in (("keep_ratio", "keep_ratio"), ("learned_mask", "learned")):
        if option in options:
            kwargs[argument] = options[option]
    return kwargs


def _plain_options(index, options):
    # Blocks after the first map width to width: they may start as the identity. The first
    # maps the input's features and keeps the study's initializer, as the head does.
    if options.get("start_as_identity") and index > 1:
        return {"kernel_initializer": "reuse_nets>IdentityKernel"}
    return {}


def _residual_options(index, options):
    # start_as_identity, when given, is the branch gain's start: 0 (the identity) or 1 (classic).
    start = options.get("start_as_identity")
    if start is not None:
        return {"branch_gain_init": 0.0 if start else 1.0}
    return {"branch_gain_init": options["branch_gain_init"]} if "branch_gain_init" in options else {}


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How a strategy builds its blocks.

    Attributes:
        block: Name of the block layer class in `reuse_nets.nn.layers` (resolved
            when a model is built, so that reading the registry needs no Keras).
        reuse_sources: Allowed `reuse_source` values; the first is the default.
        options: Names of the `TrialConfig` fields the strategy reads (its own
            knobs, e.g. `keep_ratio`); they reach `block_options` by name.
        block_options: `(index, options) -> kwargs` for strategy-specific
            block arguments (`index` counts from 1). `options` holds the fields
            named in `options`, plus `seed` and `mask_shape`.
    """

    block: str
    reuse_sources: tuple[str, ...]
    options: tuple[str, ...] = ()
    block_options: Callable[[int, dict], dict] = lambda index, options: {}


# A new strategy is one block class in `layers.py` and one line here (plus a
# `TrialConfig` field for each option of its own).
STRATEGIES: dict[str, Strategy] = {
    "plain": Strategy("PlainBlock", ("previous",), ("start_as_identity",), _plain_options),
    "concat": Strategy("FeatureAugmentationLayer", ("input", "stem")),
    "residual": Strategy(
        "ResidualBlock", ("previous", "input", "stem"), ("branch_gain_init", "start_as_identity"), _residual_options
    ),
    "masked": Strategy("MaskedReuseBlock", ("input", "stem"), ("keep_ratio", "learned_mask"), _masked_options),
}

# Knobs that only some families' networks read (`build_model` gives the others' blocks None); every
# other knob shapes every family's network. A strategy's own knobs are its `Strategy.options`.
FAMILY_KNOBS: dict[str, tuple[str, ...]] = {"kernel_size": ("conv",)}


def ignored_knobs(strategy: str, family: str) -> dict[str, str]:
    """The trial knobs a `strategy` network of `family` never reads, with why: `{"kernel_size": "family 'mlp'"}`."""
    ignored = {knob: f"family {family!r}" for knob, families in FAMILY_KNOBS.items() if family not in families}
    options = {option for other in STRATEGIES.values() for option in other.options} - set(STRATEGIES[strategy].options)
    return ignored | {option: f"strategy {strategy!r}" for option in sorted(options)}


def effective_knobs(knobs: dict) -> dict:
    """A trial's knobs (`TrialConfig` fields) as its training sees them: the ones its network never reads left
    out, `reuse_source` resolved, the strategy's own options as its blocks get them (`Strategy.block_options`).
    Two trials with equal effective knobs train identical networks."""
    strategy = STRATEGIES[knobs["strategy"]]
    left_out = {*ignored_knobs(knobs["strategy"], knobs["family"]), *strategy.options}
    seen = {knob: value for knob, value in knobs.items() if knob not in left_out}
    seen["reuse_source"] = knobs["reuse_source"] or strategy.reuse_sources[0]
    options = {**{option: knobs[option] for option in strategy.options}, "seed": knobs["seed"], "mask_shape": None}
    seen["blocks"] = [strategy.block_options(index, options) for index in range(1, knobs["depth"] + 1)]
    return seen


def block_name(index: int) -> str:
    """Stable name of the `index`-th block (from 1): `block_01`, `block_02`, ..."""
    return f"block_{index:02d}"


def block_names(model) -> list[str]:
    """Names of the reuse blocks of a model built here, in depth order."""
    names = [layer.name for layer in model.layers if layer.name.startswith("block_")]
    return sorted(names, key=lambda name: int(name.removeprefix("block_")))


def build_model(
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
    name: str | None = None,
    **options,
) -> keras.Model:
    """Builds an uncompiled classifier of `depth` reuse blocks.

    Args:
        strategy: One of `STRATEGIES`: "plain", "concat", "residual", "masked".
        depth: Number of blocks, 1 to `MAX_DEPTH`.
        width: Units (mlp) or channels (conv) of every block's transform.
        input_shape: Shape of one example, e.g. `(10,)`, `(28, 28, 1)`.
        num_classes: Number of classes; the head outputs softmax probabilities.
        family: "mlp" (inputs flattened) or "conv" ("same" convolutions over
            channels, resolution kept, global average pooling before the head).
        activation: Activation of every block.
        kernel_size: Convolution size of the `conv` family.
        reuse_source: "previous", "input" or "stem" (see the module docstring);
            `None` takes the strategy's default.
        kernel_initializer: Initializer of every block's transform kernel, one
            of `KERNEL_INITIALIZERS`.
        normalization: "none", "layer" or "batch": normalisation of every
            block's pre-activations.
        seed: Seed of what a strategy draws (masked: block `i` draws its mask
            with seed `seed + i`); weights are seeded by the Keras global seed.
        name: Model name; defaults to `"{strategy}_{family}_d{depth}"`.
        **options: The strategy's own options (`Strategy.options`), e.g.
            `keep_ratio=0.25, learned_mask=True` for "masked",
            `branch_gain_init=1.0` for "residual", `start_as_identity=True` for
            "plain" (blocks after the first start as the identity map) and
            "residual" (the branch gain starts at 0; False: at 1).

    Returns:
        A `keras.Model` mapping a batch of inputs to class probabilities.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {sorted(STRATEGIES)}. Received: strategy={strategy!r}")
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {list(FAMILIES)}. Received: family={family!r}")
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"`depth` must be an integer in [1, {MAX_DEPTH}]. Received: depth={depth!r}")
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(f"`width` must be a positive integer. Received: width={width!r}")
    depth, width = int(depth), int(width)
    spec = STRATEGIES[strategy]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"strategy {strategy!r} takes no option(s) {unknown}; its options: {list(spec.options)}")
    source = reuse_source or spec.reuse_sources[0]
    if source not in spec.reuse_sources:
        raise ValueError(
            f"`reuse_source` for strategy {strategy!r} must be one of {list(spec.reuse_sources)}. "
            f"Received: reuse_source={source!r}"
        )
    if kernel_initializer not in KERNEL_INITIALIZERS:
        raise ValueError(
            f"`kernel_initializer` must be one of {list(KERNEL_INITIALIZERS)}. Received: {kernel_initializer!r}"
        )
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {list(NORMALIZATIONS)}. Received: {normalization!r}")
    import keras

    from reuse_nets.nn import layers

    input_shape = tuple(input_shape)
    if family == "conv" and len(input_shape) != 3:
        raise ValueError(f"family='conv' needs image inputs (H, W, C). Received: input_shape={input_shape}")

    inputs = keras.Input(shape=input_shape, name="features")
    x = keras.layers.Flatten(name="flatten")(inputs) if family == "mlp" and len(input_shape) > 1 else inputs
    reused = x
    if source == STEM:
        # A Dense layer on the last axis of an image is a 1x1 convolution.
        reused = keras.layers.Dense(width, kernel_initializer="glorot_uniform", name=STEM)(x)
    options = {
        **options,
        "seed": seed,
        # Conv models mask pixels: a channel mask over 1 or 3 channels is degenerate.
        "mask_shape": (*input_shape[:-1], reused.shape[-1]) if family == "conv" else None,
    }
    for index in range(1, depth + 1):
        arguments = {
            "activation": activation,
            "kernel_size": kernel_size if family in FAMILY_KNOBS["kernel_size"] else None,
            "kernel_initializer": kernel_initializer,
            "normalization": None if normalization == "none" else normalization,
            "name": block_name(index),
            **spec.block_options(index, options),  # a strategy's own start may replace the initializer
        }
        block = getattr(layers, spec.block)(width, **arguments)
        x = block(x) if source == "previous" else block([x, reused])
    if family == "conv":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=name or f"{strategy}_{family}_d{depth}")
