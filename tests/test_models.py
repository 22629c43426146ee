"""Unit tests of the model builders: every strategy x depth x family, names, width, saving."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from reuse_nets.nn import layers, models
from reuse_nets.nn.models import block_name, block_names, build_model

STRATEGIES = ["plain", "concat", "residual", "masked"]
DEPTHS = [1, 2, 8, 32]
FAMILY_SHAPES = [
    ("mlp", (10,)),
    ("mlp", (28, 28, 1)),
    ("mlp", (32, 32, 3)),
    ("conv", (28, 28, 1)),
    ("conv", (32, 32, 3)),
]
BLOCK_CLASSES = {
    "plain": layers.PlainBlock,
    "concat": layers.FeatureAugmentationLayer,
    "residual": layers.ResidualBlock,
    "masked": layers.MaskedReuseBlock,
}
# Tiny sizes keep the ~80 build/train/predict cases fast on 2 CPU cores.
WIDTH = 8
BATCH = 4
NUM_CLASSES = 3
REPO_ROOT = Path(__file__).resolve().parents[1]


def shape_id(shape):
    return "x".join(str(d) for d in shape)


def make_batch(input_shape, batch=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, *input_shape)).astype("float32")
    y = np.arange(batch) % NUM_CLASSES
    return x, y


def compile_eager(model, learning_rate=0.05):
    # Eager steps avoid one tf.function trace per model, which dominates at this size.
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    return model


def weights_of(variables):
    return [np.array(v.numpy()) for v in variables]


def np_(tensor):
    return keras.ops.convert_to_numpy(tensor)


# ---------------------------------------------------------------------------
# Every strategy x depth x family x input shape builds, trains and predicts.
# ---------------------------------------------------------------------------

GRID = [
    pytest.param(strategy, depth, family, shape, id=f"{strategy}-d{depth}-{family}-{shape_id(shape)}")
    for strategy in STRATEGIES
    for depth in DEPTHS
    for family, shape in FAMILY_SHAPES
]


def check_build_train_predict(model, depth, input_shape):
    assert block_names(model) == [block_name(i) for i in range(1, depth + 1)]
    assert model.output_shape == (None, NUM_CLASSES)
    x, y = make_batch(input_shape)
    compile_eager(model)
    before = weights_of(model.trainable_weights)
    frozen_before = weights_of(model.non_trainable_weights)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    changed = [not np.array_equal(b, a) for b, a in zip(before, weights_of(model.trainable_weights))]
    assert any(changed), "one training step changed no weight"
    for b, a in zip(frozen_before, weights_of(model.non_trainable_weights)):
        np.testing.assert_array_equal(b, a)
    probs = np_(model(x, training=False))
    assert probs.shape == (BATCH, NUM_CLASSES)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("strategy, depth, family, input_shape", GRID)
def test_build_train_predict(strategy, depth, family, input_shape):
    model = build_model(strategy, depth, WIDTH, input_shape, NUM_CLASSES, family)
    assert model.name == f"{strategy}_{family}_d{depth}"
    check_build_train_predict(model, depth, input_shape)


@pytest.mark.parametrize("family, input_shape", FAMILY_SHAPES, ids=lambda v: v if isinstance(v, str) else shape_id(v))
def test_residual_reusing_the_network_input(family, input_shape):
    model = build_model("residual", 8, WIDTH, input_shape, NUM_CLASSES, family, reuse_source="input")
    check_build_train_predict(model, 8, input_shape)
    # Every block after the first gets [previous output, network input].
    block = model.get_layer("block_05")
    x_in, reused_in = block.input
    assert x_in is model.get_layer("block_04").output
    features = input_shape[-1] if family == "conv" else math.prod(input_shape)
    assert reused_in.shape[-1] == features


def test_masked_with_learned_masks_trains():
    model = build_model("masked", 8, WIDTH, (28, 28, 1), NUM_CLASSES, "conv", learned_mask=True)
    check_build_train_predict(model, 8, (28, 28, 1))


def test_depth_64_builds_and_predicts():
    model = build_model("residual", 64, WIDTH, (10,), NUM_CLASSES)
    assert block_names(model) == [block_name(i) for i in range(1, 65)]
    x, _ = make_batch((10,))
    assert np_(model(x)).shape == (BATCH, NUM_CLASSES)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_conv_on_vector_input_raises(strategy):
    with pytest.raises(ValueError, match=re.escape("input_shape=(10,)")):
        build_model(strategy, 2, WIDTH, (10,), NUM_CLASSES, "conv")


@pytest.mark.parametrize("depth", [0, -1, 257, True, False, 2.0, "8"])
def test_invalid_depth_raises(depth):
    with pytest.raises(ValueError, match=re.escape(f"depth={depth!r}")) as info:
        build_model("plain", depth, WIDTH, (10,), NUM_CLASSES)
    assert "`depth`" in str(info.value)


def test_max_depth_is_256():
    assert models.MAX_DEPTH == 256


# ---------------------------------------------------------------------------
# Block names and width.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 8, 32])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_block_names_are_stable_and_in_depth_order(strategy, depth):
    model = build_model(strategy, depth, WIDTH, (10,), NUM_CLASSES)
    expected = [f"block_{i:02d}" for i in range(1, depth + 1)]
    assert block_names(model) == expected
    # The order is the graph order, not just sorted names.
    assert [l.name for l in model.layers if l.name.startswith("block_")] == expected
    for name in expected:
        assert type(model.get_layer(name)) is BLOCK_CLASSES[strategy]
    # Stable: a rebuild gives the same names.
    keras.backend.clear_session()
    assert block_names(build_model(strategy, depth, WIDTH, (10,), NUM_CLASSES)) == expected


def test_block_names_stay_in_depth_order_beyond_99_blocks():
    """Regression: `block_names` sorted names as strings, so "block_100" landed
    between 10 and 11 and per-depth gradient norms of models deeper than 99 blocks
    (MAX_DEPTH is 256) were attributed to the wrong depth."""
    model = build_model("plain", 101, 4, (10,), NUM_CLASSES)
    expected = [block_name(i) for i in range(1, 102)]
    assert [l.name for l in model.layers if l.name.startswith("block_")] == expected
    assert block_names(model) == expected


def test_block_name_format():
    assert [block_name(i) for i in (1, 9, 10, 99)] == ["block_01", "block_09", "block_10", "block_99"]


WIDTH_GRID = [
    pytest.param(strategy, depth, family, shape, id=f"{strategy}-d{depth}-{family}-{shape_id(shape)}")
    for strategy in ("concat", "masked")
    for depth in (8, 32)
    for family, shape in FAMILY_SHAPES
]


@pytest.mark.parametrize("strategy, depth, family, input_shape", WIDTH_GRID)
def test_width_does_not_grow_with_depth(strategy, depth, family, input_shape):
    model = build_model(strategy, depth, WIDTH, input_shape, NUM_CLASSES, family)
    if family == "mlp":
        expected = (None, WIDTH + math.prod(input_shape))
    else:
        expected = (None, *input_shape[:-1], WIDTH + input_shape[-1])
    shapes = {name: tuple(model.get_layer(name).output.shape) for name in block_names(model)}
    assert len(shapes) == depth
    assert set(shapes.values()) == {expected}, shapes
    assert model.get_layer("head").kernel.shape == (expected[-1], NUM_CLASSES)


@pytest.mark.parametrize("strategy", ["plain", "residual"])
@pytest.mark.parametrize("family, input_shape", [("mlp", (28, 28, 1)), ("conv", (32, 32, 3))])
def test_width_of_plain_and_residual_blocks_is_width(strategy, family, input_shape):
    model = build_model(strategy, 8, WIDTH, input_shape, NUM_CLASSES, family)
    for name in block_names(model):
        assert model.get_layer(name).output.shape[-1] == WIDTH


# ---------------------------------------------------------------------------
# Masked models: batch, per-block masks, learned vs fixed masks.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family, input_shape", [("mlp", (10,)), ("conv", (28, 28, 1))])
def test_masked_model_keeps_batch_of_7(family, input_shape):
    model = build_model("masked", 3, WIDTH, input_shape, NUM_CLASSES, family)
    x, _ = make_batch(input_shape, batch=7)
    probs = np_(model(x))
    assert probs.shape == (7, NUM_CLASSES)
    # Row i of the output depends only on row i of the input.
    perm = np.array([3, 6, 0, 2, 5, 1, 4])
    np.testing.assert_allclose(np_(model(x[perm])), probs[perm], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np_(model(x[:1])), probs[:1], rtol=1e-5, atol=1e-7)


def test_masked_blocks_draw_masks_from_seed_plus_index():
    model = build_model("masked", 4, WIDTH, (10,), NUM_CLASSES, seed=10, keep_ratio=0.3)
    masks = [model.get_layer(name).masking.mask.numpy() for name in block_names(model)]
    for index, mask in enumerate(masks, start=1):
        np.testing.assert_array_equal(mask, layers.feature_mask((10,), 0.3, 10 + index))
        assert mask.sum() == 3
    assert len({m.tobytes() for m in masks}) > 1  # blocks see different subsets
    # Same seed -> same masks; different seed -> different masks.
    again = build_model("masked", 4, WIDTH, (10,), NUM_CLASSES, seed=10, keep_ratio=0.3)
    for name, mask in zip(block_names(again), masks):
        np.testing.assert_array_equal(again.get_layer(name).masking.mask.numpy(), mask)
    other = build_model("masked", 4, WIDTH, (10,), NUM_CLASSES, seed=11, keep_ratio=0.3)
    assert not np.array_equal(other.get_layer("block_01").masking.mask.numpy(), masks[0])


def test_conv_masked_model_masks_input_pixels():
    model = build_model("masked", 2, WIDTH, (28, 28, 1), NUM_CLASSES, "conv", keep_ratio=0.25)
    mask = model.get_layer("block_01").masking.mask.numpy()
    assert mask.shape == (28, 28, 1)
    assert mask.sum() == round(0.25 * 28 * 28)


def fit_a_few_steps(model, input_shape):
    x, y = make_batch(input_shape, batch=16, seed=1)
    compile_eager(model, learning_rate=0.5)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)


@pytest.mark.parametrize("family, input_shape", [("mlp", (10,)), ("conv", (8, 8, 1))])
def test_learned_mask_changes_under_training(family, input_shape):
    model = build_model("masked", 2, WIDTH, input_shape, NUM_CLASSES, family, learned_mask=True)
    gates = [model.get_layer(n).masking.mask for n in block_names(model)]
    assert all(v.name == "mask" and v.trainable for v in gates)
    assert all(isinstance(v.constraint, layers.UnitInterval) for v in gates)
    trainable_paths = {v.path for v in model.trainable_weights}
    assert all(v.path in trainable_paths for v in gates)
    before = weights_of(gates)
    fit_a_few_steps(model, input_shape)
    for name, b, a in zip(block_names(model), before, weights_of(gates)):
        assert not np.array_equal(b, a), f"{name}: learned mask did not change"
        assert np.all((a >= 0.0) & (a <= 1.0)), f"{name}: learned mask left [0, 1]"


@pytest.mark.parametrize("family, input_shape", [("mlp", (10,)), ("conv", (8, 8, 1))])
def test_fixed_mask_is_non_trainable_and_does_not_change(family, input_shape):
    model = build_model("masked", 2, WIDTH, input_shape, NUM_CLASSES, family)
    masks = [model.get_layer(n).masking.mask for n in block_names(model)]
    assert all(v.name == "mask" and not v.trainable for v in masks)
    trainable_paths = {v.path for v in model.trainable_weights}
    frozen_paths = {v.path for v in model.non_trainable_weights}
    assert all(v.path not in trainable_paths and v.path in frozen_paths for v in masks)
    before = weights_of(masks)
    kernel_before = model.get_layer("block_01").kernel.numpy().copy()
    fit_a_few_steps(model, input_shape)
    for b, a in zip(before, weights_of(masks)):
        np.testing.assert_array_equal(b, a)
    # ...while the rest of the block did train.
    assert not np.array_equal(kernel_before, model.get_layer("block_01").kernel.numpy())


# ---------------------------------------------------------------------------
# Strategy options: named after TrialConfig fields, refused where not taken.
# ---------------------------------------------------------------------------


def test_strategy_options_are_trial_config_fields():
    from reuse_nets.design.trial_config import TrialConfig

    assert models.STRATEGIES["masked"].options == ("keep_ratio", "learned_mask")
    assert models.STRATEGIES["residual"].options == ("branch_gain_init", "start_as_identity")
    assert models.STRATEGIES["plain"].options == ("start_as_identity",)
    assert models.STRATEGIES["concat"].options == ()
    for name, spec in models.STRATEGIES.items():
        for option in spec.options:
            assert option in TrialConfig.model_fields, f"{name}: option {option!r} is no TrialConfig field"


def test_every_activation_a_config_allows_builds_and_predicts():
    # The config checks activations by name without Keras; each one it allows must
    # build (residual: shapes must match for the add) and give finite probabilities.
    from reuse_nets.design.trial_config import ACTIVATIONS

    x = np.random.default_rng(0).normal(size=(BATCH, 10)).astype("float32")
    for activation in ACTIVATIONS:
        for strategy in ("residual", "concat"):
            model = build_model(strategy, 2, WIDTH, (10,), NUM_CLASSES, activation=activation)
            probabilities = np.asarray(model(x))
            assert probabilities.shape == (BATCH, NUM_CLASSES), (activation, strategy)
            assert np.all(np.isfinite(probabilities)), (activation, strategy)


@pytest.mark.parametrize(
    "strategy, options",
    [
        ("residual", {"keep_ratio": 0.25}),
        ("plain", {"learned_mask": True}),
        ("concat", {"keep_ratio": 0.5, "learned_mask": False}),
        ("masked", {"mask_seed": 3}),  # renamed `seed`
        ("masked", {"gate_init": 2.0}),  # removed
        ("masked", {"keep_ratio": 0.25, "branch_gain_init": 0.0}),
    ],
)
def test_build_model_refuses_an_option_the_strategy_does_not_take(strategy, options):
    taken = set(models.STRATEGIES[strategy].options)
    unknown = sorted(set(options) - taken)
    with pytest.raises(ValueError, match=re.escape(str(unknown))) as info:
        build_model(strategy, 2, WIDTH, (10,), NUM_CLASSES, **options)
    assert repr(strategy) in str(info.value)
    assert str(list(models.STRATEGIES[strategy].options)) in str(info.value)  # says what it does take


@pytest.mark.parametrize("family, input_shape", [("mlp", (10,)), ("conv", (8, 8, 1))])
def test_masked_options_reach_every_block(family, input_shape):
    model = build_model(
        "masked", 3, WIDTH, input_shape, NUM_CLASSES, family, seed=20, keep_ratio=0.25, learned_mask=True
    )
    mask_shape = (10,) if family == "mlp" else input_shape
    for index, name in enumerate(block_names(model), start=1):
        masking = model.get_layer(name).masking
        assert masking.keep_ratio == 0.25 and masking.learned is True, name
        assert masking.seed == 20 + index, name
        assert masking.mask.trainable, name
        np.testing.assert_array_equal(masking.mask.numpy(), layers.feature_mask(mask_shape, 0.25, 20 + index))
        config = model.get_layer(name).get_config()
        assert config["keep_ratio"] == 0.25 and config["learned"] is True, name


def test_masked_options_not_given_keep_the_layer_defaults():
    model = build_model("masked", 2, WIDTH, (10,), NUM_CLASSES)
    defaults = layers.MaskedInputLayer()
    for name in block_names(model):
        masking = model.get_layer(name).masking
        assert (masking.keep_ratio, masking.learned) == (defaults.keep_ratio, defaults.learned) == (0.5, False)


def test_residual_blocks_of_a_model_start_with_zero_branch_gain():
    model = build_model("residual", 4, WIDTH, (10,), NUM_CLASSES)
    for name in block_names(model):
        block = model.get_layer(name)
        assert block.branch_gain_init == 0.0 and block.branch_gain.numpy() == 0.0, name
        # No depth-scaled kernel init any more: the blocks keep He init.
        assert block.get_config()["kernel_initializer"]["class_name"] == "HeNormal", name
    # At init every block after the first (an identity shortcut) passes its input through.
    x, _ = make_batch((10,))
    outputs = keras.Model(model.inputs, [model.get_layer(n).output for n in block_names(model)])([x])
    for out in outputs[1:]:
        np.testing.assert_array_equal(np_(out), np_(outputs[0]))


# ---------------------------------------------------------------------------
# Activation scale vs depth at initialisation, on real images.
# ---------------------------------------------------------------------------

SCALE_DEPTHS = [1, 2, 4, 8, 16, 32, 64, 128]
SCALE_WIDTH = 128
# Reuse strategies must keep the scale at any depth; plain (He init, no reuse) is the
# baseline being studied: its ratio is recorded but not bounded.
BOUNDED = ("concat", "residual", "masked")
SCALE_BOUNDS = (0.5, 2.0)


def rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(np_(values).astype("float64")))))


def activation_scale_ratio(strategy, depth, images) -> float:
    """RMS of the last block's output over that of block_01, at initialisation."""
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(depth)  # each cell reproducible on its own
    model = build_model(strategy, depth, SCALE_WIDTH, images.shape[1:], 10, "mlp")
    first, last = model.get_layer(block_name(1)), model.get_layer(block_name(depth))
    probe = keras.Model(model.inputs, [first.output, last.output])
    first_out, last_out = probe([images], training=False)
    return rms(last_out) / rms(first_out)


def test_activation_scale_is_bounded_at_any_depth(fashion_mnist):
    images = fashion_mnist.sample("train", 512)
    ratios = {
        strategy: [activation_scale_ratio(strategy, depth, images) for depth in SCALE_DEPTHS] for strategy in STRATEGIES
    }
    header = "RMS(last block) / RMS(block_01) at init, mlp width 128, 512 fashion_mnist images"
    lines = [header, f"{'depth':>9s} " + " ".join(f"{d:>6d}" for d in SCALE_DEPTHS)]
    lines += [f"{strategy:>9s} " + " ".join(f"{r:6.2f}" for r in ratios[strategy]) for strategy in STRATEGIES]
    print("\n" + "\n".join(lines))

    for strategy in STRATEGIES:
        assert all(np.isfinite(r) and r > 0 for r in ratios[strategy]), strategy
        assert ratios[strategy][0] == 1.0, strategy  # depth 1: the first block is the last
    low, high = SCALE_BOUNDS
    out_of_bounds = [
        f"{strategy} depth {depth}: {ratio:.3f}"
        for strategy in BOUNDED
        for depth, ratio in zip(SCALE_DEPTHS, ratios[strategy])
        if not low <= ratio <= high
    ]
    assert not out_of_bounds, f"activation scale outside [{low}, {high}]: {out_of_bounds}\n" + "\n".join(lines)


# ---------------------------------------------------------------------------
# Every reuse source x normalisation of every strategy builds, trains and predicts.
# ---------------------------------------------------------------------------

KNOB_GRID = [
    pytest.param(strategy, source, norm, family, shape, id=f"{strategy}-{source}-{norm}-{family}")
    for strategy, spec in models.STRATEGIES.items()
    for source in spec.reuse_sources
    for norm in models.NORMALIZATIONS
    for family, shape in (("mlp", (10,)), ("conv", (8, 8, 3)))
]


@pytest.mark.parametrize("strategy, source, norm, family, input_shape", KNOB_GRID)
def test_every_reuse_source_and_normalization_trains(strategy, source, norm, family, input_shape):
    options = {"branch_gain_init": 1.0} if strategy == "residual" else {}
    model = build_model(
        strategy, 2, WIDTH, input_shape, NUM_CLASSES, family, reuse_source=source, normalization=norm, **options
    )
    assert ("stem" in [layer.name for layer in model.layers]) == (source == "stem")
    x, y = make_batch(input_shape)
    compile_eager(model)
    before = weights_of(model.trainable_weights)
    assert np.isfinite(model.train_on_batch(x, y))
    assert any(not np.array_equal(b, a) for b, a in zip(before, weights_of(model.trainable_weights)))
    moving = [v for v in model.non_trainable_weights if "moving" in v.path]
    assert bool(moving) == (norm == "batch")
    # Batch statistics in training, moving averages in inference: the two must differ.
    if norm == "batch":
        assert not np.allclose(np_(model(x, training=True)), np_(model(x, training=False)))
    probs = np_(model(x, training=False))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------
# Saved models reload with safe_mode=True in a fresh process.
# ---------------------------------------------------------------------------

RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import reuse_nets.nn.layers  # noqa: F401  the documented way to register the layers
    import keras

    manifest = json.loads(open(sys.argv[1]).read())
    report = {}
    for entry in manifest:
        model = keras.saving.load_model(entry["model"], safe_mode=True)
        x = np.load(entry["input"])
        np.save(entry["output"], keras.ops.convert_to_numpy(model(x, training=False)))
    open(sys.argv[2], "w").write(json.dumps(report))
    """
)

SAVE_CASES = [
    (strategy, family, shape, {})
    for strategy in STRATEGIES
    for family, shape in (("mlp", (28, 28, 1)), ("conv", (8, 8, 3)))
] + [
    ("masked", "mlp", (10,), {"learned_mask": True}),
    ("masked", "conv", (8, 8, 3), {"learned_mask": True}),
    ("residual", "mlp", (10,), {"reuse_source": "input"}),
    ("residual", "conv", (8, 8, 3), {"reuse_source": "input"}),
    # The knobs that separate reuse from initialisation, normalisation and reuse source.
    ("residual", "mlp", (28, 28, 1), {"reuse_source": "stem", "normalization": "batch", "branch_gain_init": 1.0}),
    ("residual", "conv", (8, 8, 3), {"reuse_source": "stem", "normalization": "layer"}),
    ("concat", "mlp", (10,), {"reuse_source": "stem", "normalization": "layer", "kernel_initializer": "orthogonal"}),
    ("masked", "conv", (8, 8, 3), {"reuse_source": "stem", "normalization": "batch", "learned_mask": True}),
    ("plain", "mlp", (10,), {"normalization": "batch", "kernel_initializer": "glorot_uniform"}),
]


@pytest.fixture(scope="module")
def reloaded_in_fresh_process(tmp_path_factory):
    """Saves one model per case, reloads them all in ONE fresh Python process.

    Returns `(entries, expected, report)`: the file paths per case, the predictions
    of the in-memory models, and what the fresh process reported.
    """
    tmp_path = tmp_path_factory.mktemp("fresh_process")
    keras.utils.set_random_seed(7)
    entries, expected = [], {}
    for i, (strategy, family, shape, extra) in enumerate(SAVE_CASES):
        model = build_model(strategy, 3, WIDTH, shape, NUM_CLASSES, family, seed=5, **extra)
        x, y = make_batch(shape, batch=5, seed=i)
        # Train a step first, so the saved weights are not what a rebuild would give.
        compile_eager(model).train_on_batch(x, y)
        tag = f"{i:02d}_{strategy}_{family}"
        entry = {
            "model": str(tmp_path / f"{tag}.keras"),
            "input": str(tmp_path / f"{tag}_x.npy"),
            "output": str(tmp_path / f"{tag}_pred.npy"),
        }
        model.save(entry["model"])
        np.save(entry["input"], x)
        expected[tag] = np_(model(x, training=False))
        entries.append((tag, entry))
    keras.backend.clear_session()

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([e for _, e in entries]))
    report_path = tmp_path / "report.json"
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(script), str(manifest), str(report_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return entries, expected, json.loads(report_path.read_text())


def test_saved_models_of_every_strategy_reload_in_a_fresh_process(reloaded_in_fresh_process):
    entries, expected, _ = reloaded_in_fresh_process
    assert {s for s, *_ in SAVE_CASES} == set(STRATEGIES)
    assert {f for _, f, *_ in SAVE_CASES} == {"mlp", "conv"}
    for tag, entry in entries:
        predictions = np.load(entry["output"])
        assert predictions.shape == (5, NUM_CLASSES)
        np.testing.assert_array_equal(predictions, expected[tag], err_msg=tag)


def test_package_root_does_not_import_tensorflow():
    """`import reuse_nets` stays light (CLI errors and --list are fast); importing
    `reuse_nets.nn.layers` is what registers the layers for loading."""
    script = "import sys, reuse_nets, reuse_nets.design.study_spec; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------
# Argument validation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["dense", "Concat", "", None])
def test_unknown_strategy_raises(strategy):
    with pytest.raises(ValueError, match=re.escape(f"strategy={strategy!r}")) as info:
        build_model(strategy, 2, WIDTH, (10,), NUM_CLASSES)
    assert "`strategy`" in str(info.value)


def test_unknown_family_raises():
    with pytest.raises(ValueError, match=re.escape("family='rnn'")):
        build_model("plain", 2, WIDTH, (10,), NUM_CLASSES, "rnn")


@pytest.mark.parametrize("strategy", ["concat", "masked"])
def test_concatenating_strategies_refuse_previous_reuse_source(strategy):
    with pytest.raises(ValueError, match=re.escape("reuse_source='previous'")) as info:
        build_model(strategy, 2, WIDTH, (10,), NUM_CLASSES, reuse_source="previous")
    assert "`reuse_source`" in str(info.value)


def test_plain_refuses_input_reuse_source():
    with pytest.raises(ValueError, match=re.escape("reuse_source='input'")):
        build_model("plain", 2, WIDTH, (10,), NUM_CLASSES, reuse_source="input")


def test_unknown_reuse_source_raises():
    with pytest.raises(ValueError, match=re.escape("reuse_source='skip'")):
        build_model("residual", 2, WIDTH, (10,), NUM_CLASSES, reuse_source="skip")


@pytest.mark.parametrize("width", [0, -1, "a"])
def test_bad_width_raises(width):
    with pytest.raises(ValueError, match=re.escape(f"={width!r}")):
        build_model("plain", 2, width, (10,), NUM_CLASSES)


@pytest.mark.parametrize("keep_ratio", [0, 1.5])
def test_masked_model_bad_keep_ratio_raises(keep_ratio):
    with pytest.raises(ValueError, match=re.escape(f"keep_ratio={keep_ratio!r}")):
        build_model("masked", 2, WIDTH, (10,), NUM_CLASSES, keep_ratio=keep_ratio)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_family_ignores_exactly_the_knobs_family_knobs_says(strategy):
    """`models.FAMILY_KNOBS` is what a study refuses to compare where it has no effect: it must be true."""
    values = {"kernel_size": (3, 5)}  # two values of each family-specific knob
    assert set(values) == set(models.FAMILY_KNOBS)
    for family in models.FAMILIES:
        for knob, families in models.FAMILY_KNOBS.items():
            built = [
                build_model(strategy, 2, WIDTH, (6, 6, 1), NUM_CLASSES, family, **{knob: value}).get_config()
                for value in values[knob]
            ]
            assert (built[0] == built[1]) == (family not in families), (strategy, family, knob)
