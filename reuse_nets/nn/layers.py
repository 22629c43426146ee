"""Keras layers that reuse network inputs: concatenation, residual and masked reuse.

Every reuse layer takes either one tensor, which it transforms and then reuses
itself (the usual tutorial form), or a pair `[x, reused]`: `x` is transformed and
`reused` is what gets reused, for example the original network input seen by a
block deep in the network. The feature axis is always the last axis, so the same
layers serve vectors `(batch, features)` and images `(batch, H, W, channels)`.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
from keras import ops

from reuse_nets.nn.masks import feature_mask

PACKAGE = "reuse_nets"


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _split_inputs(inputs):
    """Returns `(x, reused)`: a single tensor reuses itself."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 2:
            raise ValueError(f"A reuse layer takes one tensor or a pair `[x, reused]`. Received {len(inputs)} tensors.")
        return inputs[0], inputs[1]
    return inputs, inputs


def _split_shapes(input_shape):
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return tuple(input_shape[0]), tuple(input_shape[1])
    return tuple(input_shape), tuple(input_shape)


NORMALIZATIONS = (None, "layer", "batch")


def _normalization_layer(normalization, dtype_policy):
    """The sublayer that normalises a transform's pre-activations, or None."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {list(NORMALIZATIONS)}. Received: normalization={normalization!r}"
        )
    if normalization is None:
        return None
    layer = keras.layers.LayerNormalization if normalization == "layer" else keras.layers.BatchNormalization
    return layer(dtype=dtype_policy, name="norm")


class ReuseBlock(keras.layers.Layer):
    """Base of the reuse blocks: a dense (or convolutional) transform, then `combine`.

    `h = activation(norm(x @ kernel + bias))` (a `kernel_size` x `kernel_size`
    "same" convolution over channels when `kernel_size` is set; `norm` only when
    `normalization` is set), then the subclass combines `h` with the reused tensor.
    A new reuse strategy is one subclass that implements `combine` (and
    `combine_output_dim` if the width changes).

    Args:
        units: Width of the transform's output (features or channels).
        activation: Activation of the transform, by name. Default "relu".
        kernel_size: `None` for a dense transform; an int for a square "same"
            convolution over image inputs.
        use_bias: Whether the transform has a bias.
        kernel_initializer: Initializer of the transform kernel.
        bias_initializer: Initializer of the bias.
        normalization: `None`, "layer" or "batch": normalises the transform's
            pre-activations over the feature axis (learned scale and offset).

    Call arguments:
        inputs: A tensor `x`, reused by the block itself, or a pair `[x, reused]`
            whose leading (batch and spatial) dimensions agree.
        training: Whether batch normalisation uses batch statistics.

    Returns:
        A tensor with the leading dimensions of `x`.
    """

    def __init__(
        self,
        units,
        activation="relu",
        kernel_size=None,
        use_bias=True,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        normalization=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.normalization = normalization
        self.norm = _normalization_layer(normalization, self.dtype_policy)
        self.units = _positive_int("units", units)
        self.activation = keras.activations.get(activation)
        self.kernel_size = None if kernel_size is None else _positive_int("kernel_size", kernel_size)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        x_shape, reused_shape = _split_shapes(input_shape)
        if self.kernel_size is not None and len(x_shape) != 4:
            raise ValueError(f"`kernel_size` needs image inputs (batch, H, W, C). Received shape {x_shape}")
        in_dim = x_shape[-1]
        if in_dim is None:
            raise ValueError(f"The feature axis of the input must be defined. Received {x_shape}")
        kernel_shape: tuple[int, ...]
        if self.kernel_size is None:
            kernel_shape = (in_dim, self.units)
        else:
            kernel_shape = (self.kernel_size, self.kernel_size, in_dim, self.units)
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape, initializer=self.kernel_initializer)
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        if self.norm is not None:
            self.norm.build((*x_shape[:-1], self.units))
        self.build_combine(reused_shape)

    def build_combine(self, reused_shape):
        """Creates the weights `combine` needs, if any."""

    def transform(self, x, training=None):
        if self.kernel_size is None:
            h = ops.matmul(x, self.kernel)
        else:
            h = ops.conv(x, self.kernel, strides=1, padding="same")
        if self.bias is not None:
            h = ops.add(h, self.bias)
        if self.norm is not None:
            h = self.norm(h, training=training)
        return self.activation(h)

    def combine(self, h, reused):
        raise NotImplementedError

    def combine_output_dim(self, reused_dim):
        """Feature width of `combine`'s output."""
        return self.units

    def call(self, inputs, training=None):
        x, reused = _split_inputs(inputs)
        return self.combine(self.transform(x, training=training), reused)

    def compute_output_shape(self, input_shape):
        x_shape, reused_shape = _split_shapes(input_shape)
        return (*x_shape[:-1], self.combine_output_dim(reused_shape[-1]))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "kernel_size": self.kernel_size,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        if self.normalization is not None:  # absent when off: configs saved before it existed stay equal
            config["normalization"] = self.normalization
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class IdentityKernel(keras.initializers.Initializer):
    """A transform kernel that starts as the identity map: `eye` for a dense kernel,
    the centre tap's `eye` for a convolution (a Dirac kernel).

    With zero biases and an activation that is the identity on its inputs (relu on the
    non-negative outputs of the block before), a plain block then passes its input
    through unchanged at initialisation, as an IRNN's recurrent kernel does (Le et al.,
    2015), or a residual block whose branch gain starts at 0. Only for square kernels
    (input features = units). The tap is the one "same" padding aligns with each output
    position: the centre of an odd window, `(size - 1) // 2` of an even one.

    Example:
    >>> IdentityKernel()((3, 3)).numpy().tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """

    def __call__(self, shape, dtype=None):
        *window, in_dim, units = shape
        if in_dim != units:
            raise ValueError(f"an identity kernel needs as many inputs as units; got shape {shape}")
        kernel = np.zeros(shape, dtype="float32")
        centre = tuple((size - 1) // 2 for size in window)
        kernel[(*centre, slice(None), slice(None))] = np.eye(units, dtype="float32")
        return ops.convert_to_tensor(kernel, dtype=dtype or keras.config.floatx())


@keras.saving.register_keras_serializable(package=PACKAGE)
class PlainBlock(ReuseBlock):
    """Baseline block with no reuse: `activation(x @ kernel + bias)`.

    It accepts the same `[x, reused]` pair as the reuse blocks and ignores
    `reused`, so that ablations swap blocks without rewiring the model.

    Example:
    >>> PlainBlock(5)(np.zeros((2, 10))).shape
    (2, 5)
    """

    def combine(self, h, reused):
        return h


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureAugmentationLayer(ReuseBlock):
    """Concatenation reuse: `concat([f(x), reused], axis=-1)`.

    The output width is `units + reused_width`. Reusing a fixed tensor (such as
    the network input) at every depth keeps the width constant with depth.

    Example:
    >>> FeatureAugmentationLayer(5)(np.zeros((2, 10))).shape
    (2, 15)
    """

    def combine(self, h, reused):
        return ops.concatenate([h, ops.cast(reused, h.dtype)], axis=-1)

    def combine_output_dim(self, reused_dim):
        return self.units + reused_dim


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(ReuseBlock):
    """Residual reuse: `shortcut(reused) + gain * f(x)`, with a learned scalar `gain`.

    `gain` starts at `branch_gain_init`: 0 by default, as in SkipInit and ReZero;
    1 is the classic residual block. At 0, every block passes its input through
    unchanged at initialisation, so the
    activation scale is the same at any depth. A He-initialised `relu` branch
    has a positive mean that adds up over blocks (measured: the last block's
    output grew 5x over the first at depth 16 and 277x at depth 128), which would
    confound any comparison of residual and plain networks at depth.

    The shortcut is the identity when `reused` already has `units` features and a
    learned linear projection (a 1x1 convolution for images) otherwise, so
    `ResidualBlock(5)` works on a 10-feature input, where the tutorial version
    fails on the add.

    Args:
        units: Width of the transform's output.
        branch_gain_init: Initial value of the learned branch gain.
        **kwargs: The transform's arguments, as in `ReuseBlock`.

    Example:
    >>> ResidualBlock(5)(np.zeros((2, 10))).shape
    (2, 5)
    """

    def __init__(self, units, branch_gain_init=0.0, **kwargs):
        super().__init__(units, **kwargs)
        if (
            isinstance(branch_gain_init, bool)
            or not isinstance(branch_gain_init, numbers.Real)
            or not math.isfinite(branch_gain_init)
        ):
            raise ValueError(
                f"`branch_gain_init` must be a finite number. Received: branch_gain_init={branch_gain_init!r}"
            )
        self.branch_gain_init = float(branch_gain_init)

    def build_combine(self, reused_shape):
        reused_dim = reused_shape[-1]
        self.shortcut = (
            None
            if reused_dim == self.units
            else self.add_weight(
                name="shortcut",
                shape=(reused_dim, self.units),
                initializer="glorot_uniform",
            )
        )
        self.branch_gain = self.add_weight(
            name="branch_gain", shape=(), initializer=keras.initializers.Constant(self.branch_gain_init)
        )

    def combine(self, h, reused):
        reused = ops.cast(reused, h.dtype)
        if self.shortcut is not None:
            # A matmul over the last axis is a 1x1 convolution for image tensors.
            reused = ops.matmul(reused, self.shortcut)
        return ops.add(reused, ops.multiply(ops.cast(self.branch_gain, h.dtype), h))

    def get_config(self):
        config = super().get_config()
        config["branch_gain_init"] = self.branch_gain_init
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnitInterval(keras.constraints.Constraint):
    """Keeps a weight in [0, 1]: a learned mask stays a mask after every update."""

    def __call__(self, w):
        return ops.clip(w, 0.0, 1.0)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedInputLayer(keras.layers.Layer):
    """Masked (selective) reuse: keep a seeded subset of features.

    The mask multiplies the feature axis (the trailing `len(mask_shape)` axes), so
    examples are never dropped or reordered, unlike a `tf.boolean_mask` over a
    batched tensor. The mask is a layer weight, drawn from `seed` and saved with the
    model. With `learned=True` the weight is a trainable gate, kept in [0, 1]
    after every update, that starts exactly at the seeded mask: kept features
    pass fully and dropped ones not at all, so a learned mask differs from the
    fixed one only by what training does.

    Args:
        mask_shape: Shape of the mask, equal to the trailing axes of the masked
            tensor; `None` masks the last axis, whatever its size.
        keep_ratio: Fraction of mask entries kept, in (0, 1].
        learned: Whether the mask is a trainable gate.
        seed: Seed of the mask.

    Call arguments:
        inputs: A tensor to mask, or a pair `[x, reused]`: then the output is
            `concat([x, mask * reused], axis=-1)`, `x` augmented with the selected
            features of `reused`.

    Returns:
        The masked tensor, same shape as the input; or the concatenation.

    Example:
    >>> MaskedInputLayer(mask_shape=(10,), keep_ratio=0.5, seed=0)(np.ones((4, 10))).shape
    (4, 10)
    """

    def __init__(self, mask_shape=None, keep_ratio=0.5, learned=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        if mask_shape is not None:
            mask_shape = tuple(_positive_int("mask_shape", d) for d in mask_shape)
        self.mask_shape = mask_shape
        if not isinstance(keep_ratio, numbers.Real) or not 0.0 < float(keep_ratio) <= 1.0:
            raise ValueError(f"`keep_ratio` must be a number in (0, 1]. Received: keep_ratio={keep_ratio!r}")
        self.keep_ratio = float(keep_ratio)
        self.learned = bool(learned)
        self.seed = int(seed)

    def build(self, input_shape):
        _, reused_shape = _split_shapes(input_shape)
        shape = self.mask_shape or (reused_shape[-1],)
        if tuple(reused_shape[-len(shape) :]) != shape:
            raise ValueError(
                f"`mask_shape` {shape} must equal the trailing axes of the masked tensor, whose shape is {reused_shape}"
            )
        self.mask = self.add_weight(
            name="mask",
            shape=shape,
            initializer="zeros",
            trainable=self.learned,
            constraint=UnitInterval() if self.learned else None,
        )
        self.mask.assign(feature_mask(shape, self.keep_ratio, self.seed))

    def gate(self):
        """The multiplicative mask in [0, 1] that is applied to the features."""
        return ops.convert_to_tensor(self.mask)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            x, reused = _split_inputs(inputs)
            masked = ops.multiply(ops.cast(reused, x.dtype), ops.cast(self.gate(), x.dtype))
            return ops.concatenate([x, masked], axis=-1)
        return ops.multiply(inputs, ops.cast(self.gate(), inputs.dtype))

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            x_shape, reused_shape = _split_shapes(input_shape)
            return (*x_shape[:-1], x_shape[-1] + reused_shape[-1])
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mask_shape": None if self.mask_shape is None else list(self.mask_shape),
                "keep_ratio": self.keep_ratio,
                "learned": self.learned,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedReuseBlock(ReuseBlock):
    """Masked reuse as a block: `concat([f(x), mask * reused], axis=-1)`.

    The output width is `units + reused_width` (masked-out features stay as zeros,
    so the width never depends on the draw). The mask is a `MaskedInputLayer`.

    Args:
        units: Width of the transform's output.
        mask_shape, keep_ratio, learned, seed: As in `MaskedInputLayer`.
        **kwargs: The transform's arguments, as in `ReuseBlock`.
    """

    def __init__(
        self,
        units,
        mask_shape=None,
        keep_ratio=0.5,
        learned=False,
        seed=0,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        self.masking = MaskedInputLayer(
            mask_shape=mask_shape,
            keep_ratio=keep_ratio,
            learned=learned,
            seed=seed,
            dtype=self.dtype_policy,  # mixed precision reaches the mask too
            name="masking",
        )

    def build_combine(self, reused_shape):
        h_shape = (*reused_shape[:-1], self.units)
        self.masking.build([h_shape, reused_shape])

    def combine(self, h, reused):
        return self.masking([h, reused])

    def combine_output_dim(self, reused_dim):
        return self.units + reused_dim

    def get_config(self):
        config = super().get_config()
        masking = self.masking.get_config()
        config.update({k: masking[k] for k in ("mask_shape", "keep_ratio", "learned", "seed")})
        return config
