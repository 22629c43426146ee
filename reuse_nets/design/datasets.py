"""What a TFDS dataset's examples look like, read from its builder without its data.

A study that matches capacities needs each example's shape and the number of
classes while it loads, before any data is prepared (and offline): TFDS
builders declare their features in code, so this costs an import, not a download.
"""

from __future__ import annotations

import functools


@functools.cache
def features(name: str) -> tuple[tuple[int, ...], int]:
    """`(input_shape, num_classes)` of a TFDS image-classification dataset.

    Raises:
        ValueError: the dataset is unknown, or not image classification.
    """
    import tensorflow_datasets as tfds

    try:
        info = tfds.builder(name).info
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"unknown TFDS dataset {name!r}") from None
    except Exception as error:  # a builder that cannot describe itself offline
        raise ValueError(
            f"dataset {name!r}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None
    return of_info(info)


def of_info(info) -> tuple[tuple[int, ...], int]:
    """`(input_shape, num_classes)` from a TFDS `DatasetInfo`; ValueError if not image classification."""
    name = info.name
    if not info.supervised_keys:
        raise ValueError(f"dataset {name!r} has no (input, label) supervised keys; it is not classification")
    image_key, label_key = info.supervised_keys
    shape, label = info.features[image_key].shape, info.features[label_key]
    if not hasattr(label, "num_classes") or len(shape) != 3 or None in shape:
        raise ValueError(f"dataset {name!r} is not image classification (fixed-size images with class labels)")
    return tuple(int(d) for d in shape), int(label.num_classes)
