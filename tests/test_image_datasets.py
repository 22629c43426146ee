"""Every TFDS image-classification dataset a study is likely to name goes through the
real loading path (`reuse_nets.train.data`, `reuse_nets.design.datasets`) and through a
real study, on generated examples with the datasets' real features and split sizes
(`tests/mock_datasets.py`: TFDS's own `tfds.testing.mock_data`; only fashion_mnist's
archives exist offline). A dataset that is not image classification is refused
before anything is prepared.
"""

import math
import re

import mlflow
import mock_datasets
import numpy as np
import pytest

from reuse_nets import errors, names
from reuse_nets.design import datasets, study_files
from reuse_nets.design.trial_config import DatasetConfig, TrialConfig
from reuse_nets.nn import capacity
from reuse_nets.store import tracking
from reuse_nets.sweep import runner
from reuse_nets.train import data

SLICES = {"train": "train[:48]", "validation": "train[-16:]", "test": "test[:16]"}
COUNTS = {"train": 48, "validation": 16, "test": 16}


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory):
    """Where the mocked datasets' `dataset_info.json` files are written, once per module."""
    return tmp_path_factory.mktemp("tfds_metadata")


@pytest.fixture
def mocked(metadata_dir, monkeypatch):
    # A fresh memo: mocked data must never be what a later real load of the same name finds.
    monkeypatch.setattr(data, "_CACHE", {})
    with mock_datasets.mocked(metadata_dir):
        yield


def config_of(name: str, **slices) -> DatasetConfig:
    chosen = {**SLICES, **slices}
    return DatasetConfig(
        name=name, train_split=chosen["train"], validation_split=chosen["validation"], test_split=chosen["test"]
    )


@pytest.mark.parametrize("name", list(mock_datasets.DATASETS))
def test_an_image_dataset_loads_with_its_shape_classes_splits_and_digest(mocked, name):
    shape, classes, _ = mock_datasets.DATASETS[name]
    dataset = data.load(config_of(name))

    # Shape and classes are read from the builder's info (and agree with the TFDS catalog).
    assert (dataset.input_shape, dataset.num_classes) == (shape, classes)
    assert datasets.features(name) == (shape, classes)  # what capacity matching reads, without data
    assert dataset.splits == SLICES
    for role, count in COUNTS.items():
        images, labels = dataset.arrays[role]
        assert images.shape == (count, *shape) and images.dtype == np.uint8
        assert labels.shape == (count,) and 0 <= labels.min() and labels.max() < classes
    # Normalised as every trial sees it: float32 in [0, 1], batched.
    images, labels = next(dataset.pipeline("train", 32, seed=0).as_numpy_iterator())
    assert images.dtype == np.float32 and images.shape == (32, *shape)
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.9
    np.testing.assert_array_equal(dataset.sample("test", 4) * 255.0, dataset.arrays["test"][0][:4])

    # The digest names the data (TFDS version, the slices' shard offsets, the upstream
    # archives' checksums) and is what a run logs with its input shape and classes.
    assert re.fullmatch("[0-9a-f]{16}", dataset.digest)
    params = tracking.trial_params(TrialConfig(dataset=config_of(name)), dataset)
    assert params["dataset"] == name and params["dataset_digest"] == dataset.digest
    assert params["input_shape"] == "x".join(map(str, shape)) and params["num_classes"] == classes
    assert data.load(config_of(name, test="test[:17]")).digest != dataset.digest


def test_mocked_splits_are_the_real_ones_and_are_checked_like_real_data(mocked):
    # Real split sizes: train[-16:] is the end of cifar10's 50,000 training images, and an
    # overlap is counted on TFDS's resolution of the expressions, as for prepared data.
    with pytest.raises(errors.DataError, match=r"'train\[:48\]' and the validation split 'train\[40:60\]'.*share 8"):
        data.load(config_of("cifar10", validation="train[40:60]"))
    with pytest.raises(errors.DataError, match=r"bad validation split 'validation'.*\(splits: train, test\)"):
        data.load(config_of("cifar10", validation="validation"))
    # An example is the same whichever slice reads it; svhn_cropped's `extra` split is usable.
    first, shifted = (
        data.load(config_of("mnist", train="train[:20]")),
        data.load(config_of("mnist", train="train[10:30]")),
    )
    np.testing.assert_array_equal(first.arrays["train"][0][10:], shifted.arrays["train"][0][:10])
    assert not np.array_equal(first.arrays["train"][0][:10], shifted.arrays["train"][0][:10])
    svhn = data.load(config_of("svhn_cropped", train="train[:16]+extra[:16]"))
    assert svhn.num_examples("train") == 32


@pytest.mark.parametrize("name", ["imdb_reviews", "caltech101"], ids=["text", "variable_size_images"])
def test_a_dataset_that_is_not_image_classification_is_refused_before_anything_is_written(tmp_path, monkeypatch, name):
    """Builders declare their features in code: refused before a download, a preparation or a store."""
    expected = f"dataset {name!r} is not image classification (fixed-size images with class labels)"
    with pytest.raises(ValueError) as error:
        datasets.features(name)
    assert str(error.value) == expected
    tfds_dir = tmp_path / "tfds"
    with pytest.raises(errors.DataError) as error:  # downloads allowed: refused first all the same
        data.load_dataset(name, source=data.DataSource(data_dir=str(tfds_dir), download=True))
    assert str(error.value) == expected
    # A study names it: one line from the runner, nothing written to either store or the folder.
    monkeypatch.chdir(tmp_path)
    spec = study_files.load_study("smoke", [f"base.dataset.name={name}"])
    options = runner.SweepOptions(
        storage=f"sqlite:///{tmp_path}/optuna.db",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        data=data.DataSource(data_dir=str(tfds_dir)),
        verbose=False,
    )
    try:
        with pytest.raises(errors.DataError) as error:
            runner.run_study(spec, options)
    finally:
        mlflow.set_tracking_uri(None)
    assert str(error.value) == expected and isinstance(error.value, errors.UserError)
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    # A matched study needs the shape when its file loads: refused there, naming the field.
    with pytest.raises(errors.StudyError, match=f"match: {re.escape(expected)}"):
        study_files.load_study("strategy_depth", [f"base.dataset.name={name}"])


# --- A tiny study of both families, on a greyscale and on a colour dataset ----------------

FAMILY_STUDY = study_files.EXPERIMENTS_DIR.parent / "tests" / "studies" / "tiny_families.yaml"
FAMILY_DATASETS = ("mnist", "cifar10")


@pytest.fixture(scope="module")
def family_studies(tmp_path_factory, metadata_dir):
    """`tiny_families` run in-process (so the mock reaches the runner) on mocked mnist and cifar10."""
    folder = tmp_path_factory.mktemp("families")
    studies = {}
    with pytest.MonkeyPatch.context() as patch, mock_datasets.mocked(metadata_dir, FAMILY_DATASETS):
        patch.setattr(data, "_CACHE", {})
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(folder)
        try:
            for name in FAMILY_DATASETS:
                spec = study_files.load_study(
                    str(FAMILY_STUDY), [f"base.dataset.name={name}", f"name=tiny_families_{name}"]
                )
                options = runner.SweepOptions(
                    storage=f"sqlite:///{folder}/optuna.db",
                    tracking_uri=f"sqlite:///{folder}/mlflow.db",
                    data=data.DataSource(),
                    verbose=False,
                )
                result = runner.run_study(spec, options)
                # The memoised dataset the runner trained on.
                studies[name] = (spec, result, data.load(spec.base.dataset))
        finally:
            mlflow.set_tracking_uri(None)
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db"), studies


@pytest.mark.parametrize("name", FAMILY_DATASETS)
def test_both_families_train_on_the_dataset_and_log_its_shape_classes_and_digest(family_studies, name):
    client, studies = family_studies
    spec, result, dataset = studies[name]
    shape, classes, _ = mock_datasets.DATASETS[name]
    assert result.complete
    runs = client.search_runs(
        [result.experiment_id],
        filter_string=f"tags.`{names.KIND_TAG}` = '{names.Kind.TRIAL}' and tags.`{names.PHASE_TAG}` = '{names.Phase.FINAL}'",
    )
    assert sorted(run.data.params["family"] for run in runs) == ["conv", "mlp"]
    flops = {}
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        assert run.info.status == "FINISHED" and run.data.tags[names.OUTCOME_TAG] == names.Outcome.COMPLETED
        assert params["dataset"] == name and params["dataset_version"] == dataset.version
        assert params["input_shape"] == "x".join(map(str, shape)) and params["num_classes"] == str(classes)
        assert params["dataset_digest"] == dataset.digest
        assert {role: params[f"num_examples.{role}"] for role in COUNTS} == {
            "train": "64",
            "validation": "32",
            "test": "32",
        }
        # The MLflow dataset inputs carry the same digest.
        assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {dataset.digest}
        assert 0.0 <= metrics["test_accuracy"] <= 1.0 and 0.0 <= metrics["val_accuracy"] <= 1.0
        assert math.isfinite(metrics["loss"]) and metrics[f"{names.GRAD_NORM_PREFIX}global"] > 0
        config = spec.cell_config(next(c for c in spec.cells() if c.key == run.data.tags[names.CELL_TAG]), seed=1)
        assert params["family"] == config.family and params["width"] == str(config.width)
        counted = capacity.of_config(config, shape, classes)
        assert metrics[names.CAPACITY_METRICS["trainable_params"]] == counted.trainable
        flops[params["family"]] = metrics[names.CAPACITY_METRICS["flops"]]
    assert flops["conv"] != flops["mlp"]
