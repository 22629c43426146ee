"""A run's datasets as MLflow dataset inputs: the Dataset column of `mlflow ui`.

Every trial run and a study's parent run log the study's train, validation and
test splits (name, TFDS version and split, digest), so the runs table says what a
study trained on before anyone opens a run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reuse_nets.train.data import Dataset

ATTEMPTS = 3
UNIQUE_RACE = ("duplicate key value violates unique constraint", "unique constraint failed")  # PostgreSQL, SQLite
CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}  # MLflow's input contexts
CATALOG_URL = "https://www.tensorflow.org/datasets/catalog/{name}"


def log_dataset_inputs(run_id: str, dataset: Dataset) -> None:
    """Logs each split of `dataset` as an input of run `run_id`, with its context and TFDS split."""
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client = mlflow.MlflowClient()
    for role, expr in dataset.splits.items():
        source = HTTPDatasetSource(url=CATALOG_URL.format(name=dataset.name))
        meta = MetaDataset(  # type: ignore[abstract]  # MLflow's stubs mark `profile` abstract; it is optional
            source=source, name=f"{dataset.name}:{dataset.version}:{expr}", digest=dataset.digest
        )
        tags = {"tfds.split": expr, "tfds.version": dataset.version, MLFLOW_DATASET_CONTEXT: CONTEXTS[role]}
        entry = DatasetInput(meta._to_mlflow_entity(), [InputTag(key, value) for key, value in tags.items()])
        for attempt in range(1, ATTEMPTS + 1):
            try:
                client.log_inputs(run_id, datasets=[entry])
                break
            except mlflow.exceptions.MlflowException as error:
                # Two runs (other workers or machines) logging the same new dataset at once:
                # MLflow inserts it from both, the database refuses the second, and the
                # next attempt finds it there. Anything else is a real error.
                if attempt == ATTEMPTS or not any(p in str(error).lower() for p in UNIQUE_RACE):
                    raise
                time.sleep(0.2 * attempt)
