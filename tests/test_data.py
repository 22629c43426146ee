"""Tests of TFDS loading, splits and pipelines on real fashion_mnist (prepared offline)."""

import dataclasses
import os
import time

import numpy as np
import pytest

from reuse_nets.design.trial_config import DatasetConfig
from reuse_nets.errors import DataError
from reuse_nets.train import data
from reuse_nets.train.data import Splits

# --- resolve_splits: pure unit tests -------------------------------------------------


def test_plain_train_carves_validation_from_train():
    resolved = data.resolve_splits(["train", "test"], Splits())
    assert resolved == {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}


def test_dataset_validation_split_is_used_when_present():
    resolved = data.resolve_splits(["train", "validation", "test"], Splits())
    assert resolved == {"train": "train", "validation": "validation", "test": "test"}


def test_explicit_validation_wins_over_the_datasets_own():
    splits = Splits(train="train[:50%]", validation="validation[:10]", test=None)
    resolved = data.resolve_splits(["train", "validation", "test"], splits)
    assert resolved == {"train": "train[:50%]", "validation": "validation[:10]"}


def test_sliced_train_without_validation_is_an_error():
    with pytest.raises(DataError, match="validation") as error:
        data.resolve_splits(["train", "test"], Splits(train="train[:2000]"))
    assert "\n" not in str(error.value)


# --- Loading real data ----------------------------------------------------------------


def test_shape_and_classes_come_from_dataset_info(fashion_mnist):
    assert fashion_mnist.name == "fashion_mnist"
    assert fashion_mnist.version == "3.0.1"
    assert fashion_mnist.input_shape == (28, 28, 1)
    assert fashion_mnist.num_classes == 10
    images, labels = fashion_mnist.arrays["train"]
    assert images.shape == (2000, 28, 28, 1) and images.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))


def test_requested_slices_are_loaded(fashion_mnist):
    assert fashion_mnist.splits == {"train": "train[:2000]", "validation": "train[50000:50500]", "test": "test[:500]"}
    counts = {role: fashion_mnist.num_examples(role) for role in ("train", "validation", "test")}
    assert counts == {"train": 2000, "validation": 500, "test": 500}


@pytest.mark.parametrize(
    "expression, count",
    [
        ("train[10:20]", 10),
        ("train[-300:]", 300),
        ("train[:1%]", 600),
        ("train[25%:26%]", 600),
        ("train[:10]+test[:10]", 20),
    ],
)
def test_any_slice_expression_works(data_source, expression, count):
    dataset = data.load_dataset(
        "fashion_mnist", Splits(train=expression, validation="train[59000:59100]", test=None), data_source
    )
    assert dataset.num_examples("train") == count
    assert dataset.arrays["train"][0].shape == (count, 28, 28, 1)
    assert "test" not in dataset.splits and "test" not in dataset.arrays


@pytest.mark.parametrize(
    "train, validation, test, shared",
    [
        ("train[:2000]", "train[1500:2500]", None, ("train", "validation", 500)),
        ("train[:50%]", "train[49%:51%]", None, ("train", "validation", 600)),
        ("train[:1000]", "train[50000:50500]", "train[50400:50410]+test[:10]", ("validation", "test", 10)),
        ("train[:1000]", "train[50000:50500]", "train[-1:]", None),
        ("train", None, "test", None),  # the carved validation is train's tail, disjoint from its head
    ],
)
def test_splits_that_share_examples_are_refused_unless_allowed(data_source, train, validation, test, shared):
    """The overlap is counted on TFDS's own resolution of the expressions (shard files and offsets)."""
    splits = Splits(train=train, validation=validation, test=test)
    if shared is None:
        data.load_dataset("fashion_mnist", splits, data_source)
        return
    a, b, count = shared
    with pytest.raises(DataError) as error:
        data.load_dataset("fashion_mnist", splits, data_source)
    assert f"the {a} split " in str(error.value) and f" and the {b} split " in str(error.value)
    assert f"share {count} example(s)" in str(error.value) and "allow_overlap" in str(error.value)
    allowed = data.load_dataset("fashion_mnist", dataclasses.replace(splits, allow_overlap=True), data_source)
    assert allowed.num_examples("train") > 0


def test_validation_is_carved_from_train_when_not_given(data_source):
    dataset = data.load_dataset("fashion_mnist", Splits(train="train", validation=None, test=None), data_source)
    assert dataset.splits == {"train": "train[:90%]", "validation": "train[90%:]"}
    assert dataset.num_examples("train") == 54000
    assert dataset.num_examples("validation") == 6000


def test_carved_splits_are_the_head_and_tail_of_train(data_source, fashion_mnist):
    carved = data.load_dataset("fashion_mnist", Splits(train="train", validation=None, test=None), data_source)
    # The fixture's slices train[:2000] and train[50000:50500] lie inside the first 90%.
    np.testing.assert_array_equal(carved.arrays["train"][0][:2000], fashion_mnist.arrays["train"][0])
    np.testing.assert_array_equal(carved.arrays["train"][0][50000:50500], fashion_mnist.arrays["validation"][0])


def test_dataset_is_loaded_once_per_process(fashion_mnist, data_source):
    # Equal (not identical) arguments hit the same in-memory dataset.
    again = data.load_dataset(
        "fashion_mnist",
        Splits(train="train[:2000]", validation="train[50000:50500]", test="test[:500]"),
        data.DataSource(data_dir=data_source.data_dir, manual_dir=data_source.manual_dir),
    )
    assert again is fashion_mnist


def test_unknown_dataset_is_a_one_line_data_error():
    with pytest.raises(DataError, match="no_such_dataset_xyz") as error:
        data.load_dataset("no_such_dataset_xyz")
    assert "\n" not in str(error.value)


def test_unprepared_dataset_offline_fails_fast_naming_manual_dir(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError, match="--manual-dir") as error:
        data.load_dataset("mnist", source=data.DataSource(data_dir=os.fspath(tmp_path)))
    assert time.perf_counter() - start < 10
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-made left behind


def test_missing_manual_dir_is_a_data_error(tmp_path):
    source = data.DataSource(data_dir=os.fspath(tmp_path / "tfds"), manual_dir=os.fspath(tmp_path / "absent"))
    with pytest.raises(DataError, match="does not exist"):
        data.load_dataset("mnist", source=source)


@pytest.mark.parametrize("expression", ["train[:abc]", "bogus", "train[70000:]", "train[:2000", "test[:0]"])
def test_bad_split_expression_is_a_data_error(data_source, expression):
    with pytest.raises(DataError, match="split") as error:
        data.load_dataset("fashion_mnist", Splits(train=expression, validation="train[:100]", test=None), data_source)
    assert "\n" not in str(error.value)


def test_reversed_slice_is_a_data_error(data_source):
    # Regression: TFDS accepts "train[5:3]" (take=-2) and as_dataset then failed
    # with a raw tf.errors.FailedPreconditionError instead of a DataError.
    with pytest.raises(DataError) as error:
        data.load_dataset("fashion_mnist", Splits(train="train[5:3]", validation="train[:100]", test=None), data_source)
    assert "\n" not in str(error.value)


# --- load: from a DatasetConfig -------------------------------------------------------


def test_load_from_a_dataset_config_is_the_memoised_dataset(fashion_mnist, fashion_mnist_config, data_source):
    loaded = data.load(fashion_mnist_config, data_source)
    assert loaded is fashion_mnist  # the same splits and source: the same in-memory dataset
    assert loaded.splits == {
        "train": fashion_mnist_config.train_split,
        "validation": fashion_mnist_config.validation_split,
        "test": fashion_mnist_config.test_split,
    }


def test_load_maps_every_config_field_to_its_split(data_source):
    config = DatasetConfig(
        name="fashion_mnist", train_split="train[:300]", validation_split="train[-200:]", test_split="test[:100]"
    )
    dataset = data.load(config, data_source)
    assert dataset.name == "fashion_mnist"
    assert dataset.splits == {"train": "train[:300]", "validation": "train[-200:]", "test": "test[:100]"}
    assert {role: dataset.num_examples(role) for role in dataset.splits} == {
        "train": 300,
        "validation": 200,
        "test": 100,
    }
    assert dataset is data.load_dataset(
        "fashion_mnist", Splits("train[:300]", "train[-200:]", "test[:100]"), data_source
    )


def test_load_without_test_or_validation_follows_the_config_defaults(data_source):
    # validation None carves it from a plain "train"; test None means no test split.
    dataset = data.load(DatasetConfig(train_split="train", validation_split=None, test_split=None), data_source)
    assert dataset.splits == {"train": "train[:90%]", "validation": "train[90%:]"}
    assert "test" not in dataset.arrays


def test_load_reports_a_bad_config_as_a_data_error(data_source):
    with pytest.raises(DataError, match="validation"):
        data.load(DatasetConfig(train_split="train[:2000]", validation_split=None), data_source)


# --- Pipelines ------------------------------------------------------------------------


def test_pipeline_is_batched_float32_in_unit_range(fashion_mnist):
    batches = list(fashion_mnist.pipeline("train", 128, seed=0).as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [128] * 15 + [2000 - 15 * 128]
    for images, labels in batches:
        assert images.dtype == np.float32 and images.shape[1:] == (28, 28, 1)
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert labels.min() >= 0 and labels.max() < 10
    assert max(images.max() for images, _ in batches) == 1.0  # scaled by 255, not more


def test_unshuffled_pipeline_matches_sample(fashion_mnist):
    images, labels = next(fashion_mnist.pipeline("test", 8).as_numpy_iterator())
    np.testing.assert_array_equal(images, fashion_mnist.sample("test", 8))
    np.testing.assert_array_equal(labels, fashion_mnist.arrays["test"][1][:8])


def first_batch(dataset, seed):
    return next(dataset.pipeline("train", 64, seed=seed).as_numpy_iterator())


def test_seeded_shuffle_is_reproducible(fashion_mnist):
    images_a, labels_a = first_batch(fashion_mnist, seed=7)
    images_b, labels_b = first_batch(fashion_mnist, seed=7)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)


def test_different_seeds_shuffle_differently(fashion_mnist):
    images_a, labels_a = first_batch(fashion_mnist, seed=7)
    images_b, labels_b = first_batch(fashion_mnist, seed=8)
    assert not np.array_equal(images_a, images_b)
    assert not np.array_equal(labels_a, labels_b)
    unshuffled = fashion_mnist.sample("train", 64)
    assert not np.array_equal(images_a, unshuffled)


# --- Digest ---------------------------------------------------------------------------


def test_digest_is_stable_across_loads(fashion_mnist, fashion_mnist_splits, data_source, monkeypatch):
    monkeypatch.setattr(data, "_CACHE", {})  # force a real second load
    reloaded = data.load_dataset("fashion_mnist", fashion_mnist_splits, data_source)
    assert reloaded is not fashion_mnist
    assert len(fashion_mnist.digest) == 16
    assert reloaded.digest == fashion_mnist.digest


@pytest.mark.parametrize(
    "splits",
    [
        Splits(train="train[:1000]", validation="train[50000:50500]", test="test[:500]"),
        Splits(train="train[:2000]", validation="train[50000:50600]", test="test[:500]"),
        Splits(train="train[:2000]", validation="train[50000:50500]", test="test[:400]"),
        Splits(train="train[:2000]", validation="train[50000:50500]", test=None),
    ],
    ids=["train", "validation", "test", "no-test"],
)
def test_digest_changes_with_the_splits(fashion_mnist, data_source, splits):
    assert data.load_dataset("fashion_mnist", splits, data_source).digest != fashion_mnist.digest


def test_digest_does_not_depend_on_where_data_lives(fashion_mnist, fashion_mnist_splits, tmp_path):
    # The same prepared files seen through another TFDS data_dir are the same data.
    # Regression: the digest hashed FileInstruction.filename, an absolute path.
    (tmp_path / "fashion_mnist").symlink_to(os.path.dirname(fashion_mnist.data_dir), target_is_directory=True)
    moved = data.load_dataset("fashion_mnist", fashion_mnist_splits, data.DataSource(data_dir=os.fspath(tmp_path)))
    assert moved.data_dir.startswith(os.fspath(tmp_path))
    np.testing.assert_array_equal(moved.arrays["train"][0], fashion_mnist.arrays["train"][0])
    assert moved.digest == fashion_mnist.digest
