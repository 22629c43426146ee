"""The shared layer contract, in the spirit of Keras's `TestCase.run_layer_test`.

Every layer test builds a table of `LayerCase`s and calls `run_layer_test` on each,
so all layers are held to the same checks:

1. build + call on concrete data, output shape as expected;
2. `compute_output_shape` agrees with the real output, and a symbolic call
   (functional API) gives the same shape with an unknown batch size;
3. number of weights and of trainable weights;
4. `get_config` -> `from_config` round trip: equal configs, and equal outputs once
   the weights are copied over;
5. a one-layer model saved to `.keras` reloads with `safe_mode=True`, as the same
   class with the same config, weights and weight constraints, and predicts
   identically;
6. one training step changes at least one trainable weight and no non-trainable one,
   and leaves every constrained weight satisfying its constraint (as it did at init).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One row of a layer's contract table.

    Attributes:
        id: Readable test id.
        init_kwargs: Constructor arguments.
        input_shape: Full input shape including the batch, e.g. `(3, 10)`; a list of
            two shapes for the `[x, reused]` form.
        expected_output_shape: Full output shape including the batch.
        expected_num_weights: Number of weights once built.
        expected_num_trainable_weights: Number of trainable weights once built.
    """

    id: str
    init_kwargs: dict
    input_shape: tuple | list
    expected_output_shape: tuple
    expected_num_weights: int
    expected_num_trainable_weights: int


def is_pair(input_shape) -> bool:
    return isinstance(input_shape, list)


def make_inputs(input_shape, seed=0):
    """Random float32 data of `input_shape` (a list of arrays for a pair)."""
    rng = np.random.default_rng(seed)
    if is_pair(input_shape):
        return [rng.normal(size=s).astype("float32") for s in input_shape]
    return rng.normal(size=input_shape).astype("float32")


def symbolic_inputs(input_shape):
    """`keras.Input`s with an unknown batch size."""
    if is_pair(input_shape):
        return [keras.Input(shape=s[1:], name=f"input_{i}") for i, s in enumerate(input_shape)]
    return keras.Input(shape=input_shape[1:], name="input")


def _numpy_weights(weights):
    return [np.array(w.numpy()) for w in weights]


def assert_constraints_hold(weights, where):
    """Every weight with a constraint is a fixed point of it (constraints are projections)."""
    for w in weights:
        if w.constraint is not None:
            value = w.numpy()
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(w.constraint(keras.ops.convert_to_tensor(value))),
                value,
                err_msg=f"{where}: {w.path} violates its constraint {type(w.constraint).__name__}",
            )


def run_layer_test(layer_cls, case: LayerCase, tmp_path, *, run_training_check=True):
    """Runs the full layer contract for one case; returns the built layer."""
    data = make_inputs(case.input_shape)

    # 1. Build + call.
    layer = layer_cls(**case.init_kwargs)
    output = layer(data)
    assert layer.built
    assert tuple(output.shape) == tuple(case.expected_output_shape), (
        f"{case.id}: output shape {tuple(output.shape)} != expected {case.expected_output_shape}"
    )
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))

    # 2. Output shape inference: compute_output_shape and a symbolic call.
    shapes = [tuple(s) for s in case.input_shape] if is_pair(case.input_shape) else tuple(case.input_shape)
    assert tuple(layer.compute_output_shape(shapes)) == tuple(output.shape), case.id
    if is_pair(case.input_shape):
        none_batch = [(None, *s[1:]) for s in shapes]
    else:
        none_batch = (None, *shapes[1:])
    assert tuple(layer.compute_output_shape(none_batch)) == (None, *case.expected_output_shape[1:])
    sym_in = symbolic_inputs(case.input_shape)
    sym_out = layer_cls(**case.init_kwargs)(sym_in)
    assert tuple(sym_out.shape) == (None, *case.expected_output_shape[1:]), case.id

    # 3. Weight counts.
    assert len(layer.weights) == case.expected_num_weights, f"{case.id}: {[w.path for w in layer.weights]}"
    assert len(layer.trainable_weights) == case.expected_num_trainable_weights, (
        f"{case.id}: trainable {[w.path for w in layer.trainable_weights]}"
    )
    assert len(layer.non_trainable_weights) == (case.expected_num_weights - case.expected_num_trainable_weights)
    assert_constraints_hold(layer.weights, f"{case.id} at init")

    # 4. Config round trip.
    config = layer.get_config()
    for key in case.init_kwargs:
        assert key in config, f"{case.id}: get_config misses constructor argument {key!r}"
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config, case.id
    clone(data)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(data)), keras.ops.convert_to_numpy(output))

    # 5. Save / load of a one-layer model with safe_mode=True.
    model = keras.Model(sym_in, layer(sym_in))
    expected = keras.ops.convert_to_numpy(model(data))
    np.testing.assert_array_equal(expected, keras.ops.convert_to_numpy(output))
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    loaded_layer = loaded.layers[-1]
    assert type(loaded_layer) is layer_cls
    assert loaded_layer.get_config() == config
    for original, restored in zip(layer.weights, loaded_layer.weights, strict=True):
        assert original.path == restored.path
        assert original.trainable == restored.trainable, original.path
        assert type(original.constraint) is type(restored.constraint), original.path
        np.testing.assert_array_equal(original.numpy(), restored.numpy())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(data)), expected)

    # 6. One training step.
    if run_training_check and case.expected_num_trainable_weights:
        trainable_before = _numpy_weights(model.trainable_weights)
        frozen_before = _numpy_weights(model.non_trainable_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=True)
        target = np.random.default_rng(1).normal(size=expected.shape).astype("float32")
        loss = model.train_on_batch(data, target)
        assert np.isfinite(loss)
        changed = [
            not np.array_equal(before, after)
            for before, after in zip(trainable_before, _numpy_weights(model.trainable_weights))
        ]
        assert any(changed), f"{case.id}: a training step changed no trainable weight"
        for before, after in zip(frozen_before, _numpy_weights(model.non_trainable_weights)):
            np.testing.assert_array_equal(before, after)
        assert_constraints_hold(model.weights, f"{case.id} after a training step")
    return layer
