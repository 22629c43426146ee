"""TFDS image-classification data: offline preparation, splits, input pipelines.

A process loads and prepares each dataset once (`load_dataset` is memoised) and
keeps its splits in memory as uint8 arrays; every trial then builds a cheap
shuffled/batched/normalised `tf.data` pipeline on top of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from reuse_nets.design import datasets
from reuse_nets.errors import DataError, first_line


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where TFDS data lives and how it may be prepared.

    Attributes:
        data_dir: TFDS data directory; `None` is TFDS's default (`TFDS_DATA_DIR`
            or `~/tensorflow_datasets`).
        manual_dir: Directory holding the dataset's upstream archives, for
            preparing it without internet.
        download: Whether TFDS may download a dataset that is not prepared yet.
            Off by default: offline, a download only fails after minutes of retries.
    """

    data_dir: str | None = None
    manual_dir: str | None = None
    download: bool = False


@dataclasses.dataclass(frozen=True)
class Splits:
    """TFDS split expressions; `None` for validation carves 10% off `train`."""

    train: str = "train"
    validation: str | None = None
    test: str | None = "test"
    allow_overlap: bool = False  # True: splits may share examples (refused otherwise)


ITERATORS_PER_EPOCH = 2  # iterators Keras's fit makes of a training dataset per epoch (see resumed_pipeline)


@dataclasses.dataclass
class Dataset:
    """A prepared dataset: metadata plus in-memory splits of `(images, labels)`."""

    name: str
    version: str
    input_shape: tuple[int, ...]
    num_classes: int
    splits: dict[str, str]  # role ("train", "validation", "test") -> split expression
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    digest: str
    data_dir: str
    _tensor_cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def num_examples(self, role: str) -> int:
        return len(self.arrays[role][1])

    def pipeline(self, role: str, batch_size: int, seed: int | None = None):
        """A `tf.data` pipeline over one split: shuffled with `seed` if given, batched,
        scaled to [0, 1] float32, prefetched.

        The split stays in memory as one tensor; the pipeline shuffles and batches
        indices and gathers each batch in one op. It yields the same batches as
        shuffling the examples themselves (`shuffle` permutes by position, whatever
        the elements), without copying every image through the shuffle buffer.
        """
        import tensorflow as tf

        images, labels = self._tensors(role)
        ds = tf.data.Dataset.range(len(self.arrays[role][1]))
        if seed is not None:
            ds = ds.shuffle(len(self.arrays[role][1]), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)

        def gather_and_scale(indices):
            # Scale after batching: one vectorised op per batch instead of per image.
            return tf.cast(tf.gather(images, indices), tf.float32) / 255.0, tf.gather(labels, indices)

        ds = ds.map(gather_and_scale, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def resumed_pipeline(self, role: str, batch_size: int, seed: int, skip: int, epochs: int):
        """`pipeline(role, batch_size, seed)`'s batches from epoch `skip + 1` to `epochs`, in one pass.

        A fresh shuffle restarts its per-iteration orders from the first, so a resumed
        run's pipeline cannot simply be told to skip epochs. The orders are drawn here as
        Keras's fit draws them from `pipeline` (a new order per iterator it makes), and
        the skipped epochs' dropped.
        Train with `steps_per_epoch = batches_per_epoch(role, batch_size)`.
        """
        import tensorflow as tf

        images, labels = self._tensors(role)
        count = len(self.arrays[role][1])
        shuffled = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
        whole = shuffled.batch(count)
        # Keras's fit makes two iterators per epoch (Keras 3.15: epoch i trains on the
        # pipeline's order 2i - 1); tests/test_sweep_stops.py's resume test checks it bit-exactly.
        drawn = [next(iter(whole)) for _ in range(ITERATORS_PER_EPOCH * epochs)]
        orders = drawn[ITERATORS_PER_EPOCH * skip :: ITERATORS_PER_EPOCH]
        ds = tf.data.Dataset.from_tensor_slices(tf.stack(orders)).flat_map(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        )

        def gather_and_scale(indices):
            return tf.cast(tf.gather(images, indices), tf.float32) / 255.0, tf.gather(labels, indices)

        ds = ds.map(gather_and_scale, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def batches_per_epoch(self, role: str, batch_size: int) -> int:
        return -(-len(self.arrays[role][1]) // batch_size)

    def _tensors(self, role: str):
        """One split as TensorFlow tensors, made once per process."""
        import tensorflow as tf

        if role not in self._tensor_cache:
            images, labels = self.arrays[role]
            self._tensor_cache[role] = (tf.constant(images), tf.constant(labels))
        return self._tensor_cache[role]

    def sample(self, role: str, count: int) -> np.ndarray:
        """The first `count` inputs of a split, scaled as the pipeline scales them."""
        return self.arrays[role][0][:count].astype("float32") / 255.0


def resolve_splits(available: list[str], splits: Splits) -> dict[str, str]:
    """Split expressions by role, carving validation from train when not given."""
    resolved = {"train": splits.train}
    if splits.validation is not None:
        resolved["validation"] = splits.validation
    elif "validation" in available:
        resolved["validation"] = "validation"
    elif splits.train == "train":
        resolved = {"train": "train[:90%]", "validation": "train[90%:]"}
    else:
        raise DataError(
            f"no validation split given and train split {splits.train!r} is not plain 'train' "
            "to carve one from; set dataset.validation_split (e.g. 'train[90%:]')"
        )
    if splits.test is not None:
        resolved["test"] = splits.test
    return resolved


_CACHE: dict[tuple, Dataset] = {}


def load_dataset(name: str, splits: Splits = Splits(), source: DataSource = DataSource()) -> Dataset:
    """Loads (preparing once if needed) a TFDS image-classification dataset.

    Raises:
        DataError: unknown dataset, data missing offline, bad split, or a dataset
            that is not image classification.
    """
    key = (name, splits, source)
    if key not in _CACHE:
        _CACHE[key] = _load(name, splits, source)
    return _CACHE[key]


def load(config, source: DataSource = DataSource()) -> Dataset:
    """The dataset a `config.DatasetConfig` names: the one way from a config to data."""
    splits = Splits(
        train=config.train_split,
        validation=config.validation_split,
        test=config.test_split,
        allow_overlap=config.allow_overlap,
    )
    return load_dataset(config.name, splits, source)


def _builder(name: str, source: DataSource):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=source.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"unknown TFDS dataset {name!r}; see https://www.tensorflow.org/datasets/catalog "
            "for names (e.g. fashion_mnist, mnist, cifar10)"
        ) from None


def _prepare(builder, source: DataSource) -> None:
    import tensorflow_datasets as tfds

    name, data_dir = builder.info.name, builder.data_dir
    if source.manual_dir is None and not source.download:
        raise DataError(
            f"dataset {name!r} is not prepared under {Path(data_dir).parent.parent} and "
            "downloads are off; pass --manual-dir DIR with its upstream archives "
            "(or --download on a machine with internet)"
        )
    if source.manual_dir is not None:
        manual = Path(source.manual_dir).expanduser()
        if not manual.is_dir():
            raise DataError(f"manual dir {str(manual)!r} for dataset {name!r} does not exist")
        missing = sorted(
            info.filename
            for info in (builder.url_infos or {}).values()
            if info.filename and not (manual / info.filename).exists()
        )
        if missing and not source.download:
            raise DataError(f"manual dir {str(manual)!r} lacks {', '.join(missing)} for dataset {name!r}")
    config = tfds.download.DownloadConfig(manual_dir=source.manual_dir)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as error:  # TFDS raises many types; all mean "could not prepare".
        # Leave no half-made dataset folders behind (TFDS writes into temp dirs first).
        for folder in (Path(data_dir), Path(data_dir).parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise DataError(f"could not prepare dataset {name!r}: {first_line(error)}") from error


def _examples(info, expr: str) -> dict[str, range]:
    """The examples a split expression reads, per shard file, as TFDS itself resolves it."""
    found: dict[str, range] = {}
    for fi in info.splits[expr].file_instructions:
        end = fi.examples_in_shard if fi.take in (-1, None) else fi.skip + fi.take
        found[Path(fi.filename).name] = range(fi.skip, end)
    return found


def _check_disjoint(name: str, info, roles: dict[str, str]) -> None:
    """Refuses splits that share examples: test data leaking into training or selection.

    Raises:
        DataError: two roles read the same examples (name both and how many);
            `dataset.allow_overlap: true` in the study file allows it on purpose.
    """
    try:
        resolved = {role: _examples(info, expr) for role, expr in roles.items()}
    except (ValueError, KeyError, AssertionError):
        return  # a bad expression: reported, with its role, when the split is read
    pairs = [(a, b) for i, a in enumerate(resolved) for b in list(resolved)[i + 1 :]]
    for a, b in pairs:
        shared = sum(
            max(0, min(ra.stop, rb.stop) - max(ra.start, rb.start))
            for shard, ra in resolved[a].items()
            if (rb := resolved[b].get(shard)) is not None
        )
        if shared:
            raise DataError(
                f"the {a} split {roles[a]!r} and the {b} split {roles[b]!r} of dataset {name!r} share "
                f"{shared} example(s); use disjoint slices, or set base.dataset.allow_overlap: true on purpose"
            )


def _metadata_digest(builder, splits: dict[str, str]) -> str:
    """sha256 of TFDS metadata: name, version, per-split file instructions and the
    upstream archive checksums. Identifies the data without reading it."""
    info = builder.info
    record = {
        "name": info.full_name,
        "splits": {
            role: [
                # File names only: the digest must not depend on where data_dir is.
                (Path(fi.filename).name, fi.skip, fi.take, fi.examples_in_shard)
                for fi in info.splits[expr].file_instructions
            ]
            for role, expr in sorted(splits.items())
        },
        "archives": sorted(
            (url_info.filename or "", url_info.checksum) for url_info in (builder.url_infos or {}).values()
        ),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def _load(name: str, splits: Splits, source: DataSource) -> Dataset:
    import tensorflow_datasets as tfds

    builder = _builder(name, source)
    try:
        # Builders declare their features in code: a dataset that is not image
        # classification is refused before anything is downloaded or prepared.
        input_shape, num_classes = datasets.of_info(builder.info)
    except ValueError as error:
        raise DataError(str(error)) from None
    if not builder.is_prepared():
        _prepare(builder, source)
    info = builder.info
    roles = resolve_splits(list(info.splits.keys()), splits)
    if not splits.allow_overlap:
        _check_disjoint(name, info, roles)
    arrays = {}
    for role, expr in roles.items():
        try:
            if info.splits[expr].num_examples <= 0:  # e.g. a reversed slice "train[5:3]"
                raise ValueError("it selects no examples")
            images, labels = tfds.as_numpy(builder.as_dataset(split=expr, as_supervised=True, batch_size=-1))
        except (ValueError, KeyError, AssertionError) as error:
            raise DataError(
                f"bad {role} split {expr!r} for dataset {name!r} (splits: {', '.join(info.splits.keys())}): "
                f"{first_line(error, '')}"
            ) from None
        arrays[role] = (images, labels)
    return Dataset(
        name=name,
        version=str(info.version),
        input_shape=input_shape,
        num_classes=num_classes,
        splits=roles,
        arrays=arrays,
        digest=_metadata_digest(builder, roles),
        data_dir=os.fspath(builder.data_dir),
    )
