"""Unit tests of the reuse layers: the shared contract, then each layer's semantics."""

import re

import keras
import numpy as np
import pytest
from keras import ops
from layer_testing import LayerCase, run_layer_test

from reuse_nets.nn import layers
from reuse_nets.nn.layers import (
    FeatureAugmentationLayer,
    MaskedInputLayer,
    MaskedReuseBlock,
    PlainBlock,
    ResidualBlock,
)


def np_(tensor):
    return keras.ops.convert_to_numpy(tensor)


def relu(a):
    return np.maximum(a, 0.0)


def dense_transform(layer, x):
    """`f(x)` of a dense reuse block, recomputed in NumPy from its weights."""
    return relu(x @ layer.kernel.numpy() + layer.bias.numpy())


# A nonzero residual branch gain, so that checks of `shortcut + gain * f(x)` see `f(x)`.
GAIN = 0.5


# ---------------------------------------------------------------------------
# The shared contract, one table per layer class.
# ---------------------------------------------------------------------------

CONTRACT_CASES = {
    PlainBlock: [
        LayerCase("dense", {"units": 5}, (3, 10), (3, 5), 2, 2),
        LayerCase("dense_no_bias_tanh", {"units": 4, "use_bias": False, "activation": "tanh"}, (3, 10), (3, 4), 1, 1),
        LayerCase("dense_pair_ignores_reused", {"units": 5}, [(3, 10), (3, 7)], (3, 5), 2, 2),
        LayerCase("conv", {"units": 4, "kernel_size": 3}, (2, 6, 6, 3), (2, 6, 6, 4), 2, 2),
    ],
    FeatureAugmentationLayer: [
        LayerCase("dense", {"units": 5}, (3, 10), (3, 15), 2, 2),
        LayerCase("dense_pair", {"units": 4}, [(3, 8), (3, 6)], (3, 10), 2, 2),
        LayerCase("conv", {"units": 4, "kernel_size": 3}, (2, 6, 6, 3), (2, 6, 6, 7), 2, 2),
        LayerCase("conv_pair", {"units": 4, "kernel_size": 1}, [(2, 6, 6, 5), (2, 6, 6, 3)], (2, 6, 6, 7), 2, 2),
    ],
    # kernel, bias, [shortcut,] branch_gain: the learned scalar gain is one more weight.
    ResidualBlock: [
        LayerCase("dense_projection", {"units": 5}, (3, 10), (3, 5), 4, 4),
        LayerCase("dense_identity", {"units": 10}, (3, 10), (3, 10), 3, 3),
        LayerCase("dense_pair_identity", {"units": 6}, [(3, 8), (3, 6)], (3, 6), 3, 3),
        LayerCase("dense_pair_projection", {"units": 4}, [(3, 8), (3, 6)], (3, 4), 4, 4),
        LayerCase(
            "dense_initializer_object",
            {"units": 5, "kernel_initializer": keras.initializers.VarianceScaling(scale=0.5, seed=3)},
            (3, 10),
            (3, 5),
            4,
            4,
        ),
        LayerCase("dense_branch_gain_init", {"units": 10, "branch_gain_init": 0.25}, (3, 10), (3, 10), 3, 3),
        LayerCase("dense_no_bias", {"units": 5, "use_bias": False}, (3, 10), (3, 5), 3, 3),
        LayerCase("conv_projection", {"units": 4, "kernel_size": 3}, (2, 6, 6, 3), (2, 6, 6, 4), 4, 4),
        LayerCase(
            "conv_pair_identity", {"units": 4, "kernel_size": 3}, [(2, 6, 6, 5), (2, 6, 6, 4)], (2, 6, 6, 4), 3, 3
        ),
        LayerCase(
            "conv_pair_projection_branch_gain_init",
            {"units": 4, "kernel_size": 3, "branch_gain_init": -0.5},
            [(2, 6, 6, 5), (2, 6, 6, 3)],
            (2, 6, 6, 4),
            4,
            4,
        ),
    ],
    MaskedInputLayer: [
        LayerCase("fixed", {"mask_shape": (10,), "keep_ratio": 0.5, "seed": 3}, (3, 10), (3, 10), 1, 0),
        LayerCase("fixed_default_shape", {}, (3, 6), (3, 6), 1, 0),
        LayerCase("learned", {"learned": True, "seed": 1}, (3, 8), (3, 8), 1, 1),
        LayerCase("learned_keep_all", {"mask_shape": (8,), "keep_ratio": 1.0, "learned": True}, (3, 8), (3, 8), 1, 1),
        LayerCase("fixed_pair", {"mask_shape": (10,), "keep_ratio": 0.3}, [(3, 4), (3, 10)], (3, 14), 1, 0),
        LayerCase("image", {"mask_shape": (6, 6, 3), "seed": 5}, (2, 6, 6, 3), (2, 6, 6, 3), 1, 0),
        LayerCase(
            "image_pair_learned",
            {"mask_shape": (6, 6, 3), "learned": True},
            [(2, 6, 6, 4), (2, 6, 6, 3)],
            (2, 6, 6, 7),
            1,
            1,
        ),
    ],
    MaskedReuseBlock: [
        LayerCase("dense", {"units": 5, "seed": 2}, (3, 10), (3, 15), 3, 2),
        LayerCase("dense_learned", {"units": 5, "learned": True, "keep_ratio": 0.8}, (3, 10), (3, 15), 3, 3),
        LayerCase("dense_pair", {"units": 4, "mask_shape": (6,)}, [(3, 8), (3, 6)], (3, 10), 3, 2),
        LayerCase("conv", {"units": 4, "kernel_size": 3, "mask_shape": (6, 6, 3)}, (2, 6, 6, 3), (2, 6, 6, 7), 3, 2),
        LayerCase(
            "conv_pair_learned",
            {"units": 4, "kernel_size": 3, "mask_shape": (6, 6, 3), "learned": True},
            [(2, 6, 6, 5), (2, 6, 6, 3)],
            (2, 6, 6, 7),
            3,
            3,
        ),
    ],
}

CONTRACT_PARAMS = [
    pytest.param(cls, case, id=f"{cls.__name__}-{case.id}") for cls, cases in CONTRACT_CASES.items() for case in cases
]


@pytest.mark.parametrize("layer_cls, case", CONTRACT_PARAMS)
def test_layer_contract(layer_cls, case, tmp_path):
    run_layer_test(layer_cls, case, tmp_path)


def test_layers_are_registered_for_safe_mode_loading():
    for cls in CONTRACT_CASES:
        name = keras.saving.get_registered_name(cls)
        assert name == f"reuse_nets>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls


MIXED_PRECISION_CASES = [
    pytest.param(PlainBlock, {"units": 4}, id="PlainBlock"),
    pytest.param(FeatureAugmentationLayer, {"units": 4}, id="FeatureAugmentationLayer"),
    pytest.param(ResidualBlock, {"units": 4}, id="ResidualBlock"),
    pytest.param(MaskedInputLayer, {"learned": True}, id="MaskedInputLayer"),
]


@pytest.mark.parametrize("layer_cls, kwargs", MIXED_PRECISION_CASES)
def test_mixed_float16_policy_computes_in_float16(layer_cls, kwargs, rng):
    x = rng.normal(size=(3, 6)).astype("float32")
    layer = layer_cls(dtype="mixed_float16", **kwargs)
    out = layer([x, x])
    assert out.dtype == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)


@pytest.mark.parametrize("learned", [False, True])
def test_masked_reuse_block_passes_its_dtype_policy_to_its_mask(learned, rng):
    """Regression: the block's `masking` sublayer gets the block's dtype policy.

    Built with the default float32 policy instead, the sublayer cast `f(x)` back up
    before the concatenation, so under `mixed_float16` this one block returned
    float32 where every other block returns float16.
    """
    x = rng.normal(size=(3, 6)).astype("float32")
    layer = MaskedReuseBlock(4, learned=learned, dtype="mixed_float16")
    out = layer([x, x])
    assert layer.masking.dtype_policy.name == "mixed_float16"
    assert out.dtype == "float16"
    assert layer.masking.mask.dtype == "float32"  # the variable itself stays float32
    # Any other policy reaches the mask too.
    wide = MaskedReuseBlock(4, learned=learned, dtype="float64")
    assert wide([x, x]).dtype == "float64"
    assert wide.masking.dtype_policy.name == "float64"


# ---------------------------------------------------------------------------
# The three tutorial usages.
# ---------------------------------------------------------------------------


def test_tutorial_feature_augmentation_units_5_on_10_features(rng):
    x = rng.normal(size=(4, 10)).astype("float32")
    layer = FeatureAugmentationLayer(units=5)
    out = np_(layer(x))
    assert out.shape == (4, 15)
    # The last 10 features are the input itself, the first 5 the transform.
    np.testing.assert_array_equal(out[:, 5:], x)
    np.testing.assert_allclose(out[:, :5], dense_transform(layer, x), rtol=1e-5, atol=1e-6)


def test_tutorial_residual_block_5_on_10_features(rng):
    x = rng.normal(size=(4, 10)).astype("float32")
    layer = ResidualBlock(5, branch_gain_init=GAIN)
    out = np_(layer(x))
    assert out.shape == (4, 5)
    expected = x @ layer.shortcut.numpy() + GAIN * dense_transform(layer, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_tutorial_masked_input_layer_on_10_features(rng):
    x = rng.normal(size=(4, 10)).astype("float32")
    layer = MaskedInputLayer(mask_shape=(10,), keep_ratio=0.5, seed=42)
    out = np_(layer(x))
    assert out.shape == (4, 10)
    mask = layer.mask.numpy()
    assert mask.sum() == 5
    np.testing.assert_array_equal(out, x * mask)


# ---------------------------------------------------------------------------
# Reusing a separate tensor: `layer([x, reused])`.
# ---------------------------------------------------------------------------


def test_feature_augmentation_concatenates_reused_not_x(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    r = rng.normal(size=(5, 8)).astype("float32")
    layer = FeatureAugmentationLayer(4)
    out = np_(layer([x, r]))
    assert out.shape == (5, 12)
    np.testing.assert_array_equal(out[:, 4:], r)
    assert not np.allclose(out[:, 4:], x)
    np.testing.assert_allclose(out[:, :4], dense_transform(layer, x), rtol=1e-5, atol=1e-6)


def test_feature_augmentation_conv_concatenates_reused_channels(rng):
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    r = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    layer = FeatureAugmentationLayer(4, kernel_size=3)
    out = np_(layer([x, r]))
    assert out.shape == (2, 5, 5, 6)
    np.testing.assert_array_equal(out[..., 4:], r)
    np.testing.assert_allclose(out[..., :4], np_(layer.transform(x)), rtol=1e-6)


def test_residual_identity_shortcut_adds_reused_not_x(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    r = rng.normal(size=(5, 8)).astype("float32")
    layer = ResidualBlock(8, branch_gain_init=GAIN)
    out = np_(layer([x, r]))
    assert layer.shortcut is None
    assert [w.name for w in layer.weights] == ["kernel", "bias", "branch_gain"]
    branch = GAIN * dense_transform(layer, x)
    assert np.abs(branch).max() > 0.1  # the branch contributes, so the checks below have teeth
    np.testing.assert_allclose(out - branch, r, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out - branch, x, atol=1e-3)


def test_residual_identity_shortcut_with_narrower_x(rng):
    x = rng.normal(size=(5, 3)).astype("float32")
    r = rng.normal(size=(5, 6)).astype("float32")
    layer = ResidualBlock(6, branch_gain_init=GAIN)
    out = np_(layer([x, r]))
    assert out.shape == (5, 6)
    np.testing.assert_allclose(out - GAIN * dense_transform(layer, x), r, rtol=1e-5, atol=1e-5)


def test_residual_projection_shortcut_projects_reused(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    r = rng.normal(size=(5, 6)).astype("float32")
    layer = ResidualBlock(4, branch_gain_init=GAIN)
    out = np_(layer([x, r]))
    assert layer.shortcut.shape == (6, 4)
    assert [w.name for w in layer.weights] == ["kernel", "bias", "shortcut", "branch_gain"]
    expected = r @ layer.shortcut.numpy() + GAIN * dense_transform(layer, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_residual_conv_projection_is_a_1x1_convolution_of_reused(rng):
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    r = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    layer = ResidualBlock(4, kernel_size=3, branch_gain_init=GAIN)
    out = np_(layer([x, r]))
    assert out.shape == (2, 5, 5, 4)
    projected = np.einsum("bhwc,cu->bhwu", r, layer.shortcut.numpy())
    np.testing.assert_allclose(out, projected + GAIN * np_(layer.transform(x)), rtol=1e-5, atol=1e-5)


def test_residual_gain_is_read_from_the_weight_not_the_init(rng):
    # A trained gain (the weight) is what scales the branch, not `branch_gain_init`.
    x = rng.normal(size=(5, 8)).astype("float32")
    layer = ResidualBlock(8)
    layer(x)
    layer.branch_gain.assign(-1.5)
    np.testing.assert_allclose(np_(layer(x)), x - 1.5 * dense_transform(layer, x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# The residual branch gain: SkipInit/ReZero, a block is the identity at init.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "units, x_shape, reused_shape, kwargs",
    [
        pytest.param(8, (5, 8), (5, 8), {}, id="dense_identity"),
        pytest.param(4, (5, 8), (5, 6), {}, id="dense_projection"),
        pytest.param(4, (2, 5, 5, 3), (2, 5, 5, 4), {"kernel_size": 3}, id="conv_identity"),
        pytest.param(4, (2, 5, 5, 3), (2, 5, 5, 2), {"kernel_size": 3}, id="conv_projection"),
    ],
)
def test_residual_block_at_init_outputs_exactly_the_shortcut_of_reused(rng, units, x_shape, reused_shape, kwargs):
    x = rng.normal(size=x_shape).astype("float32")
    r = rng.normal(size=reused_shape).astype("float32")
    layer = ResidualBlock(units, **kwargs)
    out = np_(layer([x, r]))
    assert layer.branch_gain_init == 0.0 and layer.branch_gain.numpy() == 0.0
    assert np.abs(np_(layer.transform(x))).max() > 0  # the branch is not zero itself
    if layer.shortcut is None:
        np.testing.assert_array_equal(out, r)
    else:
        np.testing.assert_array_equal(out, np_(ops.matmul(r, layer.shortcut)))


def test_residual_block_alone_is_the_identity_at_init(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    np.testing.assert_array_equal(np_(ResidualBlock(8)(x)), x)


def test_branch_gain_round_trips_through_config_and_saving(rng, tmp_path):
    x = rng.normal(size=(5, 8)).astype("float32")
    layer = ResidualBlock(8, branch_gain_init=0.3)
    assert layer.get_config()["branch_gain_init"] == 0.3
    clone = ResidualBlock.from_config(layer.get_config())
    assert clone.branch_gain_init == 0.3
    clone.build((None, 8))
    assert clone.branch_gain.numpy() == pytest.approx(0.3)

    inputs = keras.Input(shape=(8,))
    model = keras.Model(inputs, layer(inputs))
    np.testing.assert_allclose(layer.branch_gain.numpy(), 0.3)
    layer.branch_gain.assign(0.7)  # as if trained: the saved weight, not the init, must come back
    expected = np_(model(x))
    model.save(tmp_path / "residual.keras")
    loaded = keras.saving.load_model(tmp_path / "residual.keras", safe_mode=True)
    restored = loaded.layers[-1]
    assert type(restored) is ResidualBlock
    assert restored.get_config()["branch_gain_init"] == 0.3
    np.testing.assert_allclose(restored.branch_gain.numpy(), 0.7)
    np.testing.assert_array_equal(np_(loaded(x)), expected)


def test_branch_gain_is_trainable_and_gets_a_gradient(rng):
    import tensorflow as tf

    x = rng.normal(size=(5, 8)).astype("float32")
    layer = ResidualBlock(8)
    layer(x)
    assert layer.branch_gain.trainable
    assert any(w is layer.branch_gain for w in layer.trainable_weights)
    with tf.GradientTape() as tape:
        loss = ops.sum(layer(x))
    gain_grad, kernel_grad = tape.gradient(loss, [layer.branch_gain.value, layer.kernel.value])
    # d loss / d gain = sum f(x), positive for a relu branch; the kernel, scaled by
    # the zero gain, gets no gradient until the gain moves (as in SkipInit).
    assert float(gain_grad) == pytest.approx(float(np.sum(dense_transform(layer, x))), rel=1e-5)
    assert float(gain_grad) > 0
    np.testing.assert_array_equal(np_(kernel_grad), 0.0)


def test_branch_gain_moves_under_training(rng):
    x = rng.normal(size=(16, 8)).astype("float32")
    target = rng.normal(size=(16, 8)).astype("float32")
    inputs = keras.Input(shape=(8,))
    layer = ResidualBlock(8)
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=True)
    model.fit(x, target, batch_size=8, epochs=2, verbose=0)
    assert layer.branch_gain.numpy() != 0.0


def test_plain_block_ignores_reused(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    r = rng.normal(size=(5, 3)).astype("float32")
    layer = PlainBlock(4)
    out = np_(layer([x, r]))
    np.testing.assert_allclose(out, dense_transform(layer, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out, np_(layer(x)))


def test_masked_input_pair_concatenates_masked_reused(rng):
    x = rng.normal(size=(5, 4)).astype("float32")
    r = rng.normal(size=(5, 10)).astype("float32")
    layer = MaskedInputLayer(mask_shape=(10,), keep_ratio=0.5, seed=7)
    out = np_(layer([x, r]))
    assert out.shape == (5, 14)
    np.testing.assert_array_equal(out[:, :4], x)
    np.testing.assert_array_equal(out[:, 4:], r * layer.mask.numpy())


def test_masked_reuse_block_masks_reused_and_transforms_x(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    r = rng.normal(size=(5, 8)).astype("float32")
    layer = MaskedReuseBlock(4, keep_ratio=0.5, seed=11)
    out = np_(layer([x, r]))
    mask = layer.masking.mask.numpy()
    assert mask.shape == (8,) and mask.sum() == 4
    np.testing.assert_allclose(out[:, :4], dense_transform(layer, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[:, 4:], r * mask)


def test_reuse_layers_reject_more_than_two_tensors(rng):
    x = rng.normal(size=(2, 4)).astype("float32")
    with pytest.raises(ValueError, match="pair"):
        FeatureAugmentationLayer(3)([x, x, x])


# ---------------------------------------------------------------------------
# Masked reuse: batch, order, determinism, keep count, saving, learning.
# ---------------------------------------------------------------------------


def distinct_rows(batch, features):
    return (np.arange(batch * features, dtype="float32").reshape(batch, features) + 1.0) / 10.0


def test_masked_input_keeps_batch_and_row_order():
    x = distinct_rows(7, 10)
    layer = MaskedInputLayer(mask_shape=(10,), keep_ratio=0.5, seed=0)
    out = np_(layer(x))
    assert out.shape == (7, 10)
    mask = layer.mask.numpy()
    assert 0 < mask.sum() < 10  # a real selection, so the check below has teeth
    for i in range(7):
        np.testing.assert_array_equal(out[i], x[i] * mask)
    # Permuting the batch permutes the output the same way: no mixing across rows.
    perm = np.array([6, 2, 0, 5, 1, 4, 3])
    np.testing.assert_array_equal(np_(layer(x[perm])), out[perm])


def test_masked_input_keeps_batch_for_images():
    x = np.random.default_rng(0).normal(size=(7, 4, 4, 3)).astype("float32")
    layer = MaskedInputLayer(mask_shape=(4, 4, 3), keep_ratio=0.5, seed=0)
    out = np_(layer(x))
    assert out.shape == (7, 4, 4, 3)
    for i in range(7):
        np.testing.assert_array_equal(out[i], x[i] * layer.mask.numpy())


def test_masked_input_keeps_batch_with_unknown_batch_size():
    inputs = keras.Input(shape=(10,))
    model = keras.Model(inputs, MaskedInputLayer(keep_ratio=0.3, seed=2)(inputs))
    x = distinct_rows(7, 10)
    out = np_(model(x))
    assert out.shape == (7, 10)
    np.testing.assert_array_equal(out, x * model.layers[-1].mask.numpy())


def test_masked_reuse_block_keeps_batch_and_row_order():
    x = distinct_rows(7, 6)
    r = distinct_rows(7, 10)[::-1].copy()
    layer = MaskedReuseBlock(3, keep_ratio=0.5, seed=4)
    out = np_(layer([x, r]))
    assert out.shape == (7, 13)
    mask = layer.masking.mask.numpy()
    for i in range(7):
        np.testing.assert_array_equal(out[i, 3:], r[i] * mask)
        np.testing.assert_allclose(out[i, :3], dense_transform(layer, x[i : i + 1])[0], rtol=1e-5, atol=1e-6)


def test_mask_is_deterministic_from_seed():
    def mask(seed, shape=(20,)):
        layer = MaskedInputLayer(mask_shape=shape, keep_ratio=0.5, seed=seed)
        layer.build((None, *shape))
        return layer.mask.numpy()

    first = mask(3)
    keras.utils.set_random_seed(999)  # the global seed must not matter
    np.testing.assert_array_equal(mask(3), first)
    np.testing.assert_array_equal(first, layers.feature_mask((20,), 0.5, 3))
    assert not np.array_equal(mask(4), first)
    image = mask(3, shape=(4, 4, 2))
    np.testing.assert_array_equal(mask(3, shape=(4, 4, 2)), image)
    assert not np.array_equal(mask(8, shape=(4, 4, 2)), image)


@pytest.mark.parametrize(
    "shape, keep_ratio",
    [((10,), 0.5), ((10,), 0.3), ((20,), 0.25), ((7,), 1.0), ((784,), 0.5), ((6, 6, 3), 0.2)],
)
def test_mask_keeps_round_keep_ratio_times_n_features(shape, keep_ratio):
    layer = MaskedInputLayer(mask_shape=shape, keep_ratio=keep_ratio, seed=1)
    layer.build((None, *shape))
    mask = layer.mask.numpy()
    assert mask.shape == shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask.sum() == round(keep_ratio * np.prod(shape))


def test_fixed_mask_is_a_non_trainable_weight():
    layer = MaskedInputLayer(keep_ratio=0.5, seed=0)
    layer.build((None, 10))
    assert layer.trainable_weights == []
    assert [w.name for w in layer.non_trainable_weights] == ["mask"]
    np.testing.assert_array_equal(np_(layer.gate()), layer.mask.numpy())


def built_mask_layer(learned, keep_ratio=0.5, seed=0, shape=(10,)):
    layer = MaskedInputLayer(mask_shape=shape, keep_ratio=keep_ratio, learned=learned, seed=seed)
    layer.build((None, *shape))
    return layer


def test_learned_mask_is_a_trainable_weight_named_mask_kept_in_the_unit_interval():
    layer = built_mask_layer(learned=True)
    assert [w.name for w in layer.trainable_weights] == ["mask"]
    assert layer.non_trainable_weights == []
    assert isinstance(layer.mask.constraint, layers.UnitInterval)
    # The gate is the weight itself: no sigmoid, no logits.
    np.testing.assert_array_equal(np_(layer.gate()), layer.mask.numpy())
    layer.mask.assign(np.linspace(0.0, 1.0, 10).astype("float32"))
    np.testing.assert_array_equal(np_(layer.gate()), np.linspace(0.0, 1.0, 10).astype("float32"))


def test_fixed_mask_has_no_constraint():
    assert built_mask_layer(learned=False).mask.constraint is None


@pytest.mark.parametrize(
    "shape, keep_ratio, seed",
    [((10,), 0.5, 0), ((10,), 0.3, 7), ((784,), 0.25, 3), ((6, 6, 3), 0.2, 5), ((10,), 1.0, 0), ((784,), 1.0, 4)],
)
def test_learned_mask_starts_exactly_at_the_fixed_mask(shape, keep_ratio, seed):
    fixed = built_mask_layer(False, keep_ratio, seed, shape)
    learned = built_mask_layer(True, keep_ratio, seed, shape)
    gate = np_(learned.gate())
    np.testing.assert_array_equal(gate, np_(fixed.gate()))
    np.testing.assert_array_equal(gate, layers.feature_mask(shape, keep_ratio, seed))
    assert set(np.unique(gate)) <= {0.0, 1.0}  # exactly 0/1: kept features pass fully
    assert gate.sum() == max(1, round(keep_ratio * np.prod(shape)))
    if keep_ratio == 1.0:
        np.testing.assert_array_equal(gate, np.ones(shape, "float32"))
        np.testing.assert_array_equal(np_(fixed.gate()), np.ones(shape, "float32"))
    # Before training the two layers compute the same function, bit for bit.
    x = np.random.default_rng(seed).normal(size=(4, *shape)).astype("float32")
    np.testing.assert_array_equal(np_(learned(x)), np_(fixed(x)))
    r = np.random.default_rng(seed + 1).normal(size=(4, *shape[:-1], 3)).astype("float32")
    np.testing.assert_array_equal(np_(learned([r, x])), np_(fixed([r, x])))


def test_learned_and_fixed_masked_blocks_agree_before_training(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    r = rng.normal(size=(5, 12)).astype("float32")
    fixed = MaskedReuseBlock(4, keep_ratio=0.25, seed=9)
    learned = MaskedReuseBlock(4, keep_ratio=0.25, seed=9, learned=True)
    fixed([x, r])
    learned([x, r])
    learned.kernel.assign(fixed.kernel)  # the transforms draw their own kernels
    np.testing.assert_array_equal(learned.masking.mask.numpy(), fixed.masking.mask.numpy())
    np.testing.assert_array_equal(np_(learned([x, r])), np_(fixed([x, r])))


def fit_mask_with_sgd(layer, learning_rate, steps=4, features=6, seed=0):
    """A few large SGD steps of a one-layer model towards a random target; returns the model."""
    inputs = keras.Input(shape=(features,))
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse", run_eagerly=True)
    data = np.random.default_rng(seed)
    x = data.normal(size=(8 * steps, features)).astype("float32")
    target = data.normal(size=(8 * steps, *model.output_shape[1:])).astype("float32") * 3.0
    model.fit(x, target, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model


def test_learned_mask_stays_in_unit_interval_under_large_updates():
    layer = MaskedInputLayer(keep_ratio=0.5, learned=True, seed=0)
    fit_mask_with_sgd(layer, learning_rate=50.0)
    after = layer.mask.numpy()
    assert not np.array_equal(after, layers.feature_mask((6,), 0.5, 0))  # training moved it
    assert np.all((after >= 0.0) & (after <= 1.0)), after
    # Control: the same steps without the constraint leave [0, 1], so the check above has teeth.
    keras.utils.set_random_seed(0)
    free = MaskedInputLayer(keep_ratio=0.5, learned=True, seed=0)
    free.build((None, 6))
    free.mask.constraint = None
    fit_mask_with_sgd(free, learning_rate=50.0)
    assert np.any((free.mask.numpy() < 0.0) | (free.mask.numpy() > 1.0)), free.mask.numpy()


def test_fixed_mask_does_not_move_under_large_updates():
    # In a block, so that the training steps have trainable weights to update.
    layer = MaskedReuseBlock(4, keep_ratio=0.5, seed=0)
    layer.build((None, 6))
    assert not layer.masking.mask.trainable
    assert all(w is not layer.masking.mask for w in layer.trainable_weights)
    before, kernel_before = layer.masking.mask.numpy().copy(), layer.kernel.numpy().copy()
    fit_mask_with_sgd(layer, learning_rate=50.0)
    np.testing.assert_array_equal(layer.masking.mask.numpy(), before)
    assert not np.array_equal(layer.kernel.numpy(), kernel_before)  # the block did train


def test_unit_interval_clips_and_is_registered():
    constraint = layers.UnitInterval()
    values = np.array([-2.0, -0.0, 0.25, 1.0, 3.5], "float32")
    np.testing.assert_array_equal(np_(constraint(values)), [0.0, 0.0, 0.25, 1.0, 1.0])
    name = keras.saving.get_registered_name(layers.UnitInterval)
    assert name == "reuse_nets>UnitInterval"
    assert keras.saving.get_registered_object(name) is layers.UnitInterval
    assert constraint.get_config() == {}
    assert isinstance(keras.constraints.deserialize(keras.constraints.serialize(constraint)), layers.UnitInterval)


def test_learned_mask_keeps_its_constraint_after_loading(tmp_path):
    inputs = keras.Input(shape=(10,))
    layer = MaskedInputLayer(keep_ratio=0.5, learned=True, seed=0)
    model = keras.Model(inputs, layer(inputs))
    layer.mask.assign(np.linspace(0.0, 1.0, 10).astype("float32"))  # as if trained
    model.save(tmp_path / "learned.keras")
    restored = keras.saving.load_model(tmp_path / "learned.keras", safe_mode=True).layers[-1]
    assert restored.mask.trainable
    assert isinstance(restored.mask.constraint, layers.UnitInterval)
    np.testing.assert_array_equal(restored.mask.numpy(), np.linspace(0.0, 1.0, 10).astype("float32"))


def test_mask_is_saved_with_the_model_not_redrawn(tmp_path):
    inputs = keras.Input(shape=(10,))
    layer = MaskedInputLayer(mask_shape=(10,), keep_ratio=0.5, seed=0)
    model = keras.Model(inputs, layer(inputs))
    drawn = layer.mask.numpy()
    # Replace the drawn mask by its complement: a loader that re-drew the mask from
    # the seed would give `drawn` back instead.
    layer.mask.assign(1.0 - drawn)
    model.save(tmp_path / "masked.keras")
    loaded = keras.saving.load_model(tmp_path / "masked.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.layers[-1].mask.numpy(), 1.0 - drawn)
    x = distinct_rows(7, 10)
    np.testing.assert_array_equal(np_(loaded(x)), x * (1.0 - drawn))


def test_learned_mask_layer_changes_under_training():
    inputs = keras.Input(shape=(6,))
    layer = MaskedInputLayer(learned=True, seed=0)
    model = keras.Model(inputs, layer(inputs))
    before = layer.mask.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", run_eagerly=True)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    model.fit(x, x, batch_size=8, epochs=2, verbose=0)  # target: keep everything
    after = layer.mask.numpy()
    assert not np.array_equal(before, after)
    assert np.all(after >= before - 1e-6)  # every gate opened towards keeping its feature
    assert np.all(after[before == 0.0] > 0.0)  # dropped features started to pass
    np.testing.assert_array_equal(after[before == 1.0], 1.0)  # kept ones stay at the bound


# ---------------------------------------------------------------------------
# Argument validation: errors name the argument and echo the value.
# ---------------------------------------------------------------------------

BLOCKS = [PlainBlock, FeatureAugmentationLayer, ResidualBlock, MaskedReuseBlock]


@pytest.mark.parametrize("units", [0, -1, "a", True, 2.5])
@pytest.mark.parametrize("block_cls", BLOCKS, ids=lambda c: c.__name__)
def test_bad_units_raise_naming_units(block_cls, units):
    with pytest.raises(ValueError, match=re.escape(f"`units` must be a positive integer. Received: units={units!r}")):
        block_cls(units)


@pytest.mark.parametrize("kernel_size", [0, -3, "3"])
def test_bad_kernel_size_raises_naming_it(kernel_size):
    with pytest.raises(ValueError, match=re.escape(f"kernel_size={kernel_size!r}")):
        ResidualBlock(4, kernel_size=kernel_size)


@pytest.mark.parametrize("keep_ratio", [0, 0.0, 1.5, -0.5])
@pytest.mark.parametrize(
    "layer_fn",
    [
        pytest.param(lambda k: MaskedInputLayer(keep_ratio=k), id="MaskedInputLayer"),
        pytest.param(lambda k: MaskedReuseBlock(4, keep_ratio=k), id="MaskedReuseBlock"),
    ],
)
def test_bad_keep_ratio_raises_naming_keep_ratio(layer_fn, keep_ratio):
    with pytest.raises(ValueError, match=re.escape(f"keep_ratio={keep_ratio!r}")) as info:
        layer_fn(keep_ratio)
    assert "`keep_ratio`" in str(info.value)


@pytest.mark.parametrize(
    "layer_fn",
    [
        pytest.param(lambda: MaskedInputLayer(learned=True, gate_init=2.0), id="MaskedInputLayer"),
        pytest.param(lambda: MaskedReuseBlock(4, learned=True, gate_init=2.0), id="MaskedReuseBlock"),
    ],
)
def test_removed_gate_init_argument_is_refused(layer_fn):
    # A learned mask starts at the 0/1 mask itself: there is no gate magnitude to set.
    with pytest.raises(ValueError, match="gate_init"):
        layer_fn()


@pytest.mark.parametrize("branch_gain_init", ["0", None, [0.0]])
def test_bad_branch_gain_init_raises_naming_it(branch_gain_init):
    with pytest.raises(ValueError, match=re.escape(f"branch_gain_init={branch_gain_init!r}")) as info:
        ResidualBlock(4, branch_gain_init=branch_gain_init)
    assert "`branch_gain_init`" in str(info.value)


def test_bad_mask_shape_entries_raise_naming_mask_shape():
    with pytest.raises(ValueError, match="mask_shape"):
        MaskedInputLayer(mask_shape=(10, 0))


def test_mask_shape_must_match_trailing_axes():
    with pytest.raises(ValueError, match="mask_shape"):
        MaskedInputLayer(mask_shape=(8,))(np.zeros((2, 10), "float32"))
    with pytest.raises(ValueError, match="mask_shape"):
        MaskedReuseBlock(4, mask_shape=(5, 5, 3), kernel_size=3)(np.zeros((2, 6, 6, 3), "float32"))


def test_kernel_size_needs_image_inputs():
    with pytest.raises(ValueError, match="kernel_size"):
        FeatureAugmentationLayer(4, kernel_size=3)(np.zeros((2, 10), "float32"))


def test_feature_axis_must_be_known():
    with pytest.raises(ValueError, match="feature axis"):
        PlainBlock(4).build((None, None))


def test_reuse_block_base_has_no_combine():
    with pytest.raises(NotImplementedError):
        layers.ReuseBlock(4)(ops.zeros((2, 3)))
