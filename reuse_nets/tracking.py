"""MLflow tracking of one trial: params, per-epoch metrics, lineage, model, plots.

Tracking goes to MLflow's default store (`sqlite:///mlflow.db` in the working
directory, artifacts under `./mlruns`) unless `MLFLOW_TRACKING_URI` or an explicit
URI says otherwise, so a bare `mlflow ui` in the project root shows every run.
"""

from __future__ import annotations

import functools
import logging
import importlib.metadata
import os
import subprocess
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from reuse_nets import models, training
from reuse_nets.config import TrialConfig
from reuse_nets.data import Dataset

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TAG_PREFIX = "reuse_nets."
KIND_TAG = TAG_PREFIX + "kind"  # "trial" or "study": marks runs this project made
OUTCOME_TAG = TAG_PREFIX + "outcome"  # completed | diverged | pruned | interrupted | error
REASON_TAG = TAG_PREFIX + "failure_reason"
PARENT_TAG = "mlflow.parentRunId"
MODEL_URI_TAG = TAG_PREFIX + "model_uri"
LIBRARIES = ("tensorflow-cpu", "keras", "tensorflow-datasets", "mlflow", "optuna", "numpy")
MODEL_ARTIFACT = "model"
INPUT_EXAMPLE_SIZE = 4

# Offline machines: MLflow would otherwise probe pip when saving a model.
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")


def set_tracking_uri(uri: str | None) -> None:
    """Uses `uri` if given; otherwise MLflow's own resolution (env var, then default)."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, str]:
    """Commit of the project checkout and whether its tracked files differ from it."""

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": commit, "dirty": str(dirty).lower()}


def provenance_tags() -> dict[str, str]:
    """Tags that say which code and libraries produced a run."""
    git = git_state()
    tags = {
        "mlflow.source.git.commit": git["commit"],
        TAG_PREFIX + "git_commit": git["commit"],
        TAG_PREFIX + "git_dirty": git["dirty"],
    }
    tags.update({f"{TAG_PREFIX}version.{name}": version for name, version in library_versions().items()})
    return tags


def trial_params(config: TrialConfig, dataset: Dataset) -> dict[str, Any]:
    """Every knob of the config, plus what the dataset resolved to."""
    params = config.flat()
    params["dataset"] = params.pop("dataset.name")
    params.update(
        {
            "dataset_version": dataset.version,
            "dataset_digest": dataset.digest,
            "input_shape": "x".join(map(str, dataset.input_shape)),
            "num_classes": dataset.num_classes,
        }
    )
    params.update({f"split.{role}": expr for role, expr in dataset.splits.items()})
    params.update({f"num_examples.{role}": dataset.num_examples(role) for role in dataset.splits})
    return params


def _log_dataset_inputs(dataset: Dataset) -> None:
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    contexts = {"train": "training", "validation": "validation", "test": "testing"}
    for role, expr in dataset.splits.items():
        source = HTTPDatasetSource(url=f"https://www.tensorflow.org/datasets/catalog/{dataset.name}")
        meta = MetaDataset(source=source, name=f"{dataset.name}:{dataset.version}:{expr}", digest=dataset.digest)
        mlflow.log_input(meta, context=contexts[role], tags={"tfds.split": expr, "tfds.version": dataset.version})


def _save_keras_model(path, **kwargs):
    # MLflow 3.17's Keras flavor writes the input example before it creates the
    # model folder (FileNotFoundError); creating the folder first is all it needs.
    import mlflow

    os.makedirs(path, exist_ok=True)
    return mlflow.keras.save_model(path=path, **kwargs)


def _log_model(model, dataset: Dataset) -> str:
    """Logs `model` through MLflow's Keras flavor; returns its model URI."""
    import keras
    from mlflow.models import Model, infer_signature

    # MLflow predicts on the input example with Keras's progress bar; no bars in logs.
    keras.utils.disable_interactive_logging()
    # MLflow's environment probing (no pip in uv-made environments, "detected uv
    # project") is noise in a sweep's output; requirements are pinned below.
    for logger in ("mlflow.utils.environment", "mlflow.utils.uv_utils"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    example = dataset.sample("validation", INPUT_EXAMPLE_SIZE)
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    versions = library_versions()
    info = Model.log(
        artifact_path=None,
        name=MODEL_ARTIFACT,
        flavor=types.SimpleNamespace(save_model=_save_keras_model),
        flavor_name="keras",
        model=model,
        signature=signature,
        input_example=example,
        # Pinned explicitly: MLflow's inference would run pip, which fails offline.
        pip_requirements=[f"{name}=={v}" for name, v in versions.items() if v != "absent"],
    )
    return info.model_uri


def load_logged_model(model_uri: str):
    """Loads a logged reuse-nets model; importing the package registers its layers."""
    import mlflow

    import reuse_nets.layers  # noqa: F401

    return mlflow.keras.load_model(model_uri)


def _log_plots(history: list[dict], block_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    epochs = range(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            ax.plot(epochs, [h.get(key, float("nan")) for h in history], style, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/training_curves.png")
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(block_names):
        left.plot(epochs, [h[f"grad_norm/{name}"] for h in history], color=cmap(i / max(1, len(block_names) - 1)), label=name)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_title("gradient norm per block (epoch mean)")
    if len(block_names) <= 12:
        left.legend(fontsize="small")
    for epoch_index in sorted({0, len(history) - 1}):
        right.plot(
            range(1, len(block_names) + 1),
            [history[epoch_index][f"grad_norm/{name}"] for name in block_names],
            marker="o",
            label=f"epoch {epoch_index + 1}",
        )
    right.set_yscale("log")
    right.set_xlabel("block (depth)")
    right.set_title("gradient norm by depth")
    right.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/grad_norm_by_block.png")
    plt.close(fig)


def track_training(
    config: TrialConfig,
    dataset: Dataset,
    *,
    experiment_id: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    hooks: tuple[training.EpochHook, ...] = (),
    killed_on: tuple[type[BaseException], ...] = (),
    log_model: bool = True,
    on_start: Callable[[str], None] | None = None,
) -> tuple[str, training.TrainingResult]:
    """Trains `config` inside an MLflow run and logs everything about it.

    The run ends FINISHED when training completes, FAILED when it diverges (the
    result is still returned, with `status == "diverged"`) or raises (re-raised),
    KILLED on `KeyboardInterrupt` or an exception in `killed_on` (re-raised; e.g.
    pruning). The reason is in the `reuse_nets.outcome` and `failure_reason` tags.
    `on_start(run_id)` is called once the run exists, before training.

    Returns:
        `(run_id, result)`.
    """
    import mlflow

    run_tags = {KIND_TAG: "trial", **provenance_tags(), **(tags or {})}
    if parent_run_id:
        run_tags[PARENT_TAG] = parent_run_id
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    client = mlflow.MlflowClient()

    def log_epoch(epoch: int, metrics: dict) -> None:
        mlflow.log_metrics(metrics, step=epoch, synchronous=True)

    try:
        if on_start is not None:
            on_start(run_id)
        mlflow.log_params(trial_params(config, dataset))
        mlflow.log_text(yaml.safe_dump(config.model_dump(), sort_keys=False), "config.yaml")
        _log_dataset_inputs(dataset)
        result = training.train(config, dataset, hooks=(log_epoch, *hooks))
        if result.history:
            _log_plots(result.history, models.block_names(result.model))
        if result.status == "diverged":
            mlflow.set_tags({OUTCOME_TAG: "diverged", REASON_TAG: f"diverged: {result.reason}"})
            mlflow.end_run(status="FAILED")
            return run_id, result
        mlflow.log_metrics(result.test_metrics, step=len(result.history))
        if log_model:
            mlflow.set_tag(MODEL_URI_TAG, _log_model(result.model, dataset))
        mlflow.set_tag(OUTCOME_TAG, "completed")
        mlflow.end_run(status="FINISHED")
        return run_id, result
    except killed_on as stop:
        _end(client, run_id, "KILLED", "pruned", f"{type(stop).__name__}: {stop}")
        raise
    except KeyboardInterrupt:
        _end(client, run_id, "KILLED", "interrupted", "interrupted")
        raise
    except BaseException as error:
        _end(client, run_id, "FAILED", "error", f"{type(error).__name__}: {error}")
        raise


def _end(client, run_id: str, status: str, outcome: str, reason: str) -> None:
    import mlflow

    client.set_tag(run_id, OUTCOME_TAG, outcome)
    client.set_tag(run_id, REASON_TAG, reason[:4000])
    mlflow.end_run(status=status)


def experiment_id(name: str) -> str:
    """Id of the MLflow experiment `name`, created if absent."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else mlflow.create_experiment(name)


def read_config(run_id: str) -> dict:
    """The resolved config a run logged (`config.yaml`)."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml")
    return yaml.safe_load(Path(path).read_text())

