"""Unit tests of the reuse layers: the shared contract, then each layer's semantics."""

import re

import keras
import numpy as np
import pytest
from keras import ops

from layer_testing import LayerCase, run_layer_test
from reuse_nets import layers
from reuse_nets.layers import (
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
    ResidualBlock: [
        LayerCase("dense_projection", {"units": 5}, (3, 10), (3, 5), 3, 3),
        LayerCase("dense_identity", {"units": 10}, (3, 10), (3, 10), 2, 2),
        LayerCase("dense_pair_identity", {"units": 6}, [(3, 8), (3, 6)], (3, 6), 2, 2),
        LayerCase("dense_pair_projection", {"units": 4}, [(3, 8), (3, 6)], (3, 4), 3, 3),
        LayerCase(
            "dense_initializer_object",
            {"units": 5, "kernel_initializer": keras.initializers.VarianceScaling(scale=0.5, seed=3)},
            (3, 10), (3, 5), 3, 3,
        ),
        LayerCase("conv_projection", {"units": 4, "kernel_size": 3}, (2, 6, 6, 3), (2, 6, 6, 4), 3, 3),
        LayerCase("conv_pair_identity", {"units": 4, "kernel_size": 3}, [(2, 6, 6, 5), (2, 6, 6, 4)], (2, 6, 6, 4), 2, 2),
    ],
    MaskedInputLayer: [
        LayerCase("fixed", {"mask_shape": (10,), "keep_ratio": 0.5, "seed": 3}, (3, 10), (3, 10), 1, 0),
        LayerCase("fixed_default_shape", {}, (3, 6), (3, 6), 1, 0),
        LayerCase("learned", {"learned": True, "seed": 1, "gate_init": 1.5}, (3, 8), (3, 8), 1, 1),
        LayerCase("fixed_pair", {"mask_shape": (10,), "keep_ratio": 0.3}, [(3, 4), (3, 10)], (3, 14), 1, 0),
        LayerCase("image", {"mask_shape": (6, 6, 3), "seed": 5}, (2, 6, 6, 3), (2, 6, 6, 3), 1, 0),
        LayerCase("image_pair_learned", {"mask_shape": (6, 6, 3), "learned": True}, [(2, 6, 6, 4), (2, 6, 6, 3)], (2, 6, 6, 7), 1, 1),
    ],
    MaskedReuseBlock: [
        LayerCase("dense", {"units": 5, "seed": 2}, (3, 10), (3, 15), 3, 2),
        LayerCase("dense_learned", {"units": 5, "learned": True, "keep_ratio": 0.8}, (3, 10), (3, 15), 3, 3),
        LayerCase("dense_pair", {"units": 4, "mask_shape": (6,)}, [(3, 8), (3, 6)], (3, 10), 3, 2),
        LayerCase("conv", {"units": 4, "kernel_size": 3, "mask_shape": (6, 6, 3)}, (2, 6, 6, 3), (2, 6, 6, 7), 3, 2),
        LayerCase(
            "conv_pair_learned",
            {"units": 4, "kernel_size": 3, "mask_shape": (6, 6, 3), "learned": True},
            [(2, 6, 6, 5), (2, 6, 6, 3)], (2, 6, 6, 7), 3, 3,
        ),
    ],
}

CONTRACT_PARAMS = [
    pytest.param(cls, case, id=f"{cls.__name__}-{case.id}")
    for cls, cases in CONTRACT_CASES.items()
    for case in cases
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
def test_masked_reuse_block_mixed_precision_reaches_its_mask_BUG(learned, rng):
    """The block's `masking` sublayer is built without the block's dtype policy.

    Under `mixed_float16` every other block returns float16, but `MaskedReuseBlock`
    returns float32: its float32-policy sublayer casts `f(x)` back up before the
    concatenation. Any other policy (e.g. "float64") is likewise ignored by the mask.
    """
    x = rng.normal(size=(3, 6)).astype("float32")
    layer = MaskedReuseBlock(4, learned=learned, dtype="mixed_float16")
    out = layer([x, x])
    assert layer.masking.dtype_policy.name == "mixed_float16"
    assert out.dtype == "float16"


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
    layer = ResidualBlock(5)
    out = np_(layer(x))
    assert out.shape == (4, 5)
    expected = x @ layer.shortcut.numpy() + dense_transform(layer, x)
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
    layer = ResidualBlock(8)
    out = np_(layer([x, r]))
    assert layer.shortcut is None
    assert [w.name for w in layer.weights] == ["kernel", "bias"]
    np.testing.assert_allclose(out - dense_transform(layer, x), r, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out - dense_transform(layer, x), x, atol=1e-3)


def test_residual_identity_shortcut_with_narrower_x(rng):
    x = rng.normal(size=(5, 3)).astype("float32")
    r = rng.normal(size=(5, 6)).astype("float32")
    layer = ResidualBlock(6)
    out = np_(layer([x, r]))
    assert out.shape == (5, 6)
    np.testing.assert_allclose(out - dense_transform(layer, x), r, rtol=1e-5, atol=1e-5)


def test_residual_projection_shortcut_projects_reused(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    r = rng.normal(size=(5, 6)).astype("float32")
    layer = ResidualBlock(4)
    out = np_(layer([x, r]))
    assert layer.shortcut.shape == (6, 4)
    expected = r @ layer.shortcut.numpy() + dense_transform(layer, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_residual_conv_projection_is_a_1x1_convolution_of_reused(rng):
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    r = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    layer = ResidualBlock(4, kernel_size=3)
    out = np_(layer([x, r]))
    assert out.shape == (2, 5, 5, 4)
    projected = np.einsum("bhwc,cu->bhwu", r, layer.shortcut.numpy())
    np.testing.assert_allclose(out, projected + np_(layer.transform(x)), rtol=1e-5, atol=1e-5)


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


def test_learned_mask_starts_from_seeded_mask_as_gate_logits():
    layer = MaskedInputLayer(keep_ratio=0.5, learned=True, seed=0, gate_init=2.0)
    layer.build((None, 10))
    assert [w.name for w in layer.trainable_weights] == ["mask_logits"]
    binary = layers.feature_mask((10,), 0.5, 0)
    np.testing.assert_allclose(layer.mask.numpy(), np.where(binary > 0, 2.0, -2.0))
    gate = np_(layer.gate())
    assert np.all((gate > 0) & (gate < 1))
    np.testing.assert_allclose(gate, 1 / (1 + np.exp(-layer.mask.numpy())), rtol=1e-6)


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
@pytest.mark.parametrize("layer_fn", [
    pytest.param(lambda k: MaskedInputLayer(keep_ratio=k), id="MaskedInputLayer"),
    pytest.param(lambda k: MaskedReuseBlock(4, keep_ratio=k), id="MaskedReuseBlock"),
])
def test_bad_keep_ratio_raises_naming_keep_ratio(layer_fn, keep_ratio):
    with pytest.raises(ValueError, match=re.escape(f"keep_ratio={keep_ratio!r}")) as info:
        layer_fn(keep_ratio)
    assert "`keep_ratio`" in str(info.value)


@pytest.mark.parametrize("gate_init", [0, -1.0])
def test_bad_gate_init_raises_naming_it(gate_init):
    with pytest.raises(ValueError, match=re.escape(f"gate_init={gate_init!r}")):
        MaskedInputLayer(learned=True, gate_init=gate_init)


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
