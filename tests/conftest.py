"""Generic test setup: quiet TensorFlow, seed every test, free Keras state after it."""

import os

# Must be set before TensorFlow is imported (keras imports it), hence at module top.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

SEED = 1234


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy and the backend before every test; clears Keras after it."""
    keras.utils.set_random_seed(SEED)
    yield
    keras.backend.clear_session()


@pytest.fixture
def rng():
    """A NumPy generator seeded per test, for input data."""
    return np.random.default_rng(SEED)
