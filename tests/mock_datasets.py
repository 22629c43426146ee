"""TFDS image-classification datasets that cannot be downloaded here, mocked with their
real features and real split sizes, read through the real `tfds` builder path.

`tfds.testing.mock_data` makes every builder yield generated examples with the
dataset's own features (image shape, dtype, class count come from the builder's
code). Without metadata files it invents split sizes (any split name, `num_examples`
examples for every expression) and the builder reports itself unprepared, so the
project's split-overlap and size checks could not hold. `mocked(folder)` therefore
writes each dataset's `dataset_info.json` first: its features, plus its real splits
(sizes from the TFDS catalog, one shard each), so that TFDS resolves every slice
expression into shard offsets as for prepared data. A split expression then reads
exactly the examples it selects, each generated from its shard and index: `train[:10]`
and `train[5:15]` share five identical examples, as real data would.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

# name -> (input shape, classes, real split sizes); from the TFDS catalog, not from the builder.
DATASETS = {
    "mnist": ((28, 28, 1), 10, {"train": 60_000, "test": 10_000}),
    "kmnist": ((28, 28, 1), 10, {"train": 60_000, "test": 10_000}),
    "emnist/balanced": ((28, 28, 1), 47, {"train": 112_800, "test": 18_800}),
    "emnist/letters": ((28, 28, 1), 37, {"train": 88_800, "test": 14_800}),
    "cifar10": ((32, 32, 3), 10, {"train": 50_000, "test": 10_000}),
    "cifar100": ((32, 32, 3), 100, {"train": 50_000, "test": 10_000}),
    "svhn_cropped": ((32, 32, 3), 10, {"train": 73_257, "test": 26_032, "extra": 531_131}),
}


def write_metadata(folder: Path, name: str) -> None:
    """`dataset_info.json` of `name` under `folder`, as preparing it would write it."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(folder))
    if builder.is_prepared():
        return
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_path, dataset_name=builder.name, filetype_suffix="tfrecord"
    )
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(
                    name=split,
                    shard_lengths=[size],
                    num_bytes=0,
                    filename_template=template.replace(split=split),
                )
                for split, size in DATASETS[name][2].items()
            ]
        )
    )
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)


def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    """`FileReaderBuilder._as_dataset`: the examples `split` selects, generated per shard and index."""
    import tensorflow as tf
    from tensorflow_datasets.testing import mocking

    features = self.info.features
    specs = features.get_tensor_info()
    shards = [
        (mocking.RandomFakeGenerator(features, 0, seed=zlib.crc32(Path(fi.filename).name.encode())), fi)
        for fi in self.info.splits[split].file_instructions
    ]

    def examples():
        for generator, fi in shards:
            end = fi.examples_in_shard if fi.take in (-1, None) else fi.skip + fi.take
            for index in range(fi.skip, end):
                yield generator[index]

    signature = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), specs)
    return tf.data.Dataset.from_generator(examples, output_signature=signature)


@contextlib.contextmanager
def mocked(folder: Path, names=tuple(DATASETS)):
    """Inside: `tfds` (hence `reuse_nets.train.data`) loads `names` from generated examples."""
    import tensorflow_datasets as tfds

    for name in names:
        write_metadata(folder, name)
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(folder), as_dataset_fn=_as_dataset
    ):
        yield
