"""Parameter and FLOP counts (`nn.capacity`) against the built Keras models, and the knobs that
separate a strategy from its capacity, initialisation and reuse source."""

import math

import keras
import numpy as np
import pytest

from reuse_nets.nn import capacity, models

FAMILY_SHAPES = [("mlp", (28, 28, 1)), ("conv", (8, 8, 3))]
WIDTH, CLASSES = 6, 10

# Every strategy x reuse source it allows x normalisation x family, with a learned mask for masked.
CASES = [
    pytest.param(strategy, source, norm, family, shape, learned, id=f"{strategy}-{source}-{norm}-{family}-{learned}")
    for strategy, spec in models.STRATEGIES.items()
    for source in spec.reuse_sources
    for norm in models.NORMALIZATIONS
    for family, shape in FAMILY_SHAPES
    for learned in ((False, True) if strategy == "masked" else (False,))
]


def size(variables) -> int:
    return sum(math.prod(v.shape) for v in variables)


def kernels(model):
    """(layer name, kernel size) of every dense or convolution kernel: what FLOPs count."""
    found = []
    for weight in model.weights:
        layer, _, name = weight.path.rpartition("/")
        if name in ("kernel", "shortcut"):
            found.append((layer, math.prod(weight.shape)))
    return found


@pytest.mark.parametrize("strategy, source, norm, family, shape, learned", CASES)
def test_counts_equal_the_built_model(strategy, source, norm, family, shape, learned):
    options = {"learned_mask": True} if learned else {}
    model = models.build_model(
        strategy, 3, WIDTH, shape, CLASSES, family, reuse_source=source, normalization=norm, **options
    )
    counted = capacity.count(
        strategy, 3, WIDTH, shape, CLASSES, family, reuse_source=source, normalization=norm, **options
    )
    assert counted.trainable == size(model.trainable_weights)
    assert counted.total == size(model.weights)
    assert counted.non_trainable == size(model.non_trainable_weights)
    # FLOPs, counted independently from the model's kernels: every kernel before the
    # head applies once per example (mlp) or once per pixel (conv, "same" padding).
    positions = math.prod(shape[:-1]) if family == "conv" else 1
    macs = sum(n if layer.endswith("head") else positions * n for layer, n in kernels(model))
    assert counted.flops == 2 * macs


def test_counts_reproduce_the_review_table():
    # Issue 20's table (width 128, fashion_mnist input, from build_model).
    table = {
        "plain": [101_770, 151_306, 349_450, 1_142_026],
        "residual": [202_123, 251_662, 449_818, 1_242_442],
        "concat": [109_610, 460_202, 1_862_570, 7_472_042],
        "masked": [109_610, 460_202, 1_862_570, 7_472_042],
    }
    for strategy, counts in table.items():
        got = [capacity.count(strategy, d, 128, (28, 28, 1), 10).trainable for d in (1, 4, 16, 64)]
        assert got == counts, strategy
    masked = capacity.count("masked", 64, 128, (28, 28, 1), 10)
    assert masked.non_trainable == 64 * 784  # its fixed masks


def test_counts_grow_with_width():
    # Matching bisects on width: every count must be monotone in it.
    for strategy, spec in models.STRATEGIES.items():
        for source in spec.reuse_sources:
            counts = [capacity.count(strategy, 4, w, (28, 28, 1), 10, reuse_source=source) for w in range(1, 200)]
            for measure in capacity.MEASURES:
                if measure == "effective_params" and strategy == "masked":
                    continue  # which stem units a mask keeps depends on the draw at each width
                values = [c.of(measure) for c in counts]
                assert values == sorted(values) and len(set(values)) == len(values), (strategy, source, measure)


def test_human_counts():
    assert capacity.human(1_142_026) == "1.14M"
    assert capacity.human(2_267_648_000) == "2.27G"
    assert capacity.human(784) == "784"


@pytest.mark.parametrize("initializer", models.KERNEL_INITIALIZERS)
def test_every_kernel_initializer_builds_with_its_own_draws(initializer):
    keras.utils.set_random_seed(0)
    model = models.build_model("plain", 2, 64, (32,), 3, kernel_initializer=initializer)
    block = model.get_layer("block_02")
    kernel = block.kernel.numpy()
    assert np.all(np.isfinite(kernel)) and kernel.std() > 0
    assert block.kernel_initializer.get_config() == keras.initializers.get(initializer).get_config()


def test_he_and_glorot_kernels_differ_in_scale():
    keras.utils.set_random_seed(0)
    he = models.build_model("plain", 1, 256, (256,), 3, kernel_initializer="he_normal")
    keras.utils.set_random_seed(0)
    glorot = models.build_model("plain", 1, 256, (256,), 3, kernel_initializer="glorot_normal")
    ratio = he.get_layer("block_01").kernel.numpy().std() / glorot.get_layer("block_01").kernel.numpy().std()
    assert ratio == pytest.approx(math.sqrt(2), rel=0.05)  # He: 2/fan_in; Glorot: 2/(fan_in+fan_out)


@pytest.mark.parametrize("gain", [0.0, 1.0])
def test_residual_branch_gain_init_reaches_every_block(gain):
    model = models.build_model("residual", 3, 8, (8,), 3, branch_gain_init=gain)
    for name in models.block_names(model):
        assert float(model.get_layer(name).branch_gain.numpy()) == gain


def test_stem_is_reused_by_every_block_and_removes_residual_shortcuts():
    model = models.build_model("residual", 3, 8, (28, 28, 1), 3, reuse_source="stem")
    assert model.get_layer("stem").kernel.shape == (784, 8)
    assert all(model.get_layer(name).shortcut is None for name in models.block_names(model))
    # Every block consumes the stem's output (with the previous block's output).
    stem_output = model.get_layer("stem").output
    for name in models.block_names(model):
        inputs = model.get_layer(name)._inbound_nodes[0].input_tensors
        assert any(t is stem_output for t in inputs), name


@pytest.mark.parametrize("norm, layer", [("layer", "LayerNormalization"), ("batch", "BatchNormalization")])
def test_normalization_normalises_pre_activations(norm, layer):
    keras.utils.set_random_seed(0)
    model = models.build_model("plain", 2, 16, (32,), 3, normalization=norm, activation="linear")
    block = model.get_layer("block_02")
    assert type(block.norm).__name__ == layer
    x = np.random.default_rng(0).normal(3.0, 5.0, size=(64, 32)).astype("float32")
    h = keras.Model(model.input, block.output)(x, training=True).numpy()
    # Linear activation: the block's output is the normalised pre-activation (gamma 1, beta 0).
    axis = -1 if norm == "layer" else 0
    np.testing.assert_allclose(h.mean(axis=axis), 0.0, atol=1e-4)
    np.testing.assert_allclose(h.std(axis=axis), 1.0, atol=2e-2)


def test_unknown_knob_values_are_refused():
    with pytest.raises(ValueError, match="kernel_initializer"):
        models.build_model("plain", 1, 4, (4,), 2, kernel_initializer="zeros")
    with pytest.raises(ValueError, match="normalization"):
        models.build_model("plain", 1, 4, (4,), 2, normalization="group")
    with pytest.raises(ValueError, match="reuse_source"):
        models.build_model("plain", 1, 4, (4,), 2, reuse_source="stem")
    with pytest.raises(ValueError, match="branch_gain_init"):
        models.build_model("concat", 1, 4, (4,), 2, branch_gain_init=1.0)


@pytest.mark.parametrize(
    "source, keep, family, shape",
    [
        ("input", 0.5, "mlp", (28, 28, 1)),
        ("input", 0.25, "mlp", (28, 28, 1)),
        ("stem", 0.5, "mlp", (28, 28, 1)),  # a stem unit no mask keeps never learns either
        ("stem", 0.25, "mlp", (10,)),
        ("stem", 0.02, "conv", (4, 4, 3)),  # channels a mask zeroes at every pixel
    ],
)
def test_inert_parameters_are_exactly_those_whose_gradient_is_always_zero(source, keep, family, shape):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = models.build_model(
        "masked", 3, WIDTH, shape, CLASSES, family, reuse_source=source, keep_ratio=keep, activation="tanh", seed=4
    )
    x = np.random.default_rng(0).normal(size=(16, *shape)).astype("float32")
    y = np.arange(16) % CLASSES
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    # tanh never saturates to an exact 0 gradient here, and no input is exactly 0:
    # a zero gradient can only come from a feature a fixed mask always zeroes.
    zeros = sum(int(np.sum(g.numpy() == 0)) for g in grads)
    counted = capacity.count("masked", 3, WIDTH, shape, CLASSES, family, reuse_source=source, keep_ratio=keep, seed=4)
    assert counted.inert == zeros > 0
    assert counted.effective == counted.trainable - zeros
    learned = capacity.count("masked", 3, WIDTH, shape, CLASSES, family, reuse_source=source, learned_mask=True)
    assert learned.inert == 0  # a learned gate can open: nothing is inert
