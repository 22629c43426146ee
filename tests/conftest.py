"""Test setup: quiet TensorFlow, seed every test, free Keras state after it, and the
real fashion_mnist data (prepared offline from shared/tfds_manual) for learning tests."""

import contextlib
import os
from pathlib import Path

# Must be set before TensorFlow is imported (keras imports it), hence at module top.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import pytest

from reuse_nets import errors
from reuse_nets.design import trial_config
from reuse_nets.train import data, execution

# What a one-worker sweep pins: before any test runs a TensorFlow op, so that
# in-process sweeps (which pin the same) can run in this process.
execution.pin(execution.for_workers(1))

SEED = 1234


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy and the backend before every test; clears Keras after it."""
    keras.utils.set_random_seed(SEED)
    yield
    # Without a full gc.collect(), which costs ~0.4 s per test once many models exist.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def rng():
    """A NumPy generator seeded per test, for input data."""
    return np.random.default_rng(SEED)


# --- Real data: fashion_mnist prepared offline (data, training and tracking tests) ---

# Small slices keep every training run in these tests at a second or two.
FASHION_MNIST_SPLITS = data.Splits(train="train[:2000]", validation="train[50000:50500]", test="test[:500]")


def fashion_mnist_manual_dir() -> str:
    """The upstream archives: `REUSE_NETS_MANUAL_DIR`, else `shared/` beside the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "tfds_manual" / "fashion_mnist"
    return os.environ.get("REUSE_NETS_MANUAL_DIR") or os.fspath(default)


@pytest.fixture(scope="session")
def data_source():
    """TFDS's default data dir (or `TFDS_DATA_DIR`), so local runs prepare once."""
    return data.DataSource(data_dir=os.environ.get("TFDS_DATA_DIR") or None, manual_dir=fashion_mnist_manual_dir())


@pytest.fixture(scope="session")
def fashion_mnist_splits():
    return FASHION_MNIST_SPLITS


@pytest.fixture(scope="session")
def fashion_mnist(data_source, fashion_mnist_splits):
    """2000 train / 500 validation / 500 test fashion_mnist examples, loaded once."""
    return data.load_dataset("fashion_mnist", fashion_mnist_splits, data_source)


@pytest.fixture(scope="session")
def fashion_mnist_config(fashion_mnist_splits):
    """The `DatasetConfig` that names the `fashion_mnist` fixture's splits."""
    return trial_config.DatasetConfig(
        name="fashion_mnist",
        train_split=fashion_mnist_splits.train,
        validation_split=fashion_mnist_splits.validation,
        test_split=fashion_mnist_splits.test,
    )


# --- Parallel runs (pytest-xdist, `--dist loadgroup`) ---

# Tests sharing one expensive study that lives in a per-process temporary folder.
SHARED_GROUPS = {"test_report_html.py": "tiny_study", "test_results.py": "tiny_study"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook of the same name reads the marks
def pytest_collection_modifyitems(config, items):
    """Keeps tests that share a module- or session-scoped fixture of their own file
    (a study run once per file) on one xdist worker; every other test goes wherever
    a worker is free."""
    for item in items:
        group = SHARED_GROUPS.get(item.path.name)
        if group is None and any(
            definition.scope in ("module", "session")
            and getattr(definition.func, "__module__", None) == item.module.__name__
            for definitions in item._fixtureinfo.name2fixturedefs.values()
            for definition in definitions
        ):
            group = item.path.name
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            _suffix_node_id(item, group)


def _suffix_node_id(item, group: str) -> None:
    """What pytest-xdist's `--dist loadgroup` does with the mark: the scheduler groups
    tests by a `@group` suffix of their node id. xdist 3.8 sets `item._nodeid`, which
    pytest 9.2 no longer reads (node ids live in `item._id`), so without this every
    group was split and each worker built the shared fixture again."""
    if not getattr(item.config.option, "loadgroup", False) or "@" in item.nodeid:
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own suffix works there
        return
    if isinstance(getattr(item, "_id", None), NodeId):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


def pytest_configure(config):
    """Prepares fashion_mnist once, in the controlling process, before xdist workers
    start: two workers preparing it into one TFDS folder at once would collide."""
    if hasattr(config, "workerinput") or config.option.help or config.option.collectonly:
        return  # an xdist worker (the controller prepared it), or nothing will run
    # The tests that need the data fail with this error themselves.
    with contextlib.suppress(errors.DataError):
        data.load_dataset(
            "fashion_mnist",
            FASHION_MNIST_SPLITS,
            data.DataSource(data_dir=os.environ.get("TFDS_DATA_DIR") or None, manual_dir=fashion_mnist_manual_dir()),
        )
