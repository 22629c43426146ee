"""MLflow tracking of one trial: params, per-epoch metrics, lineage, model, plots.

    with tracking.trial_run(config, dataset, experiment_id=...) as run:
        result = training.train(config, dataset, hooks=(run.log_epoch, ...))
        run.record(result)

The run receives training's results; it never drives training. How a run ends
(status, outcome and state tags) is decided and written in one place,
`close_run`, whether the run finished, was stopped, raised, or died unseen.

Tracking goes to MLflow's default store (`sqlite:///mlflow.db` in the working
directory, artifacts under `./mlruns`) unless `MLFLOW_TRACKING_URI` or an explicit
URI says otherwise, so a bare `mlflow ui` in the project root shows every run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.names import (
    BEST_EPOCH_METRIC,
    CAPACITY_METRICS,
    COMPILE_CACHE_TAG,
    EPOCH_METRICS,
    EPOCHS_TRAINED_METRIC,
    GRAD_NORM_PREFIX,
    KIND_TAG,
    MODEL_URI_TAG,
    OUTCOME_TAG,
    PARENT_TAG,
    PLATEAU_METRIC,
    REASON_TAG,
    RUN_END,
    SELECTED_PREFIX,
    STATE_TAG,
    TRAINER_REUSED_TAG,
    Kind,
    Outcome,
    TrialState,
)
from reuse_nets.nn import capacity, models
from reuse_nets.runtime import disk, faults, interrupts, noise, profile
from reuse_nets.runtime.paths import PACKAGE_DIR
from reuse_nets.store import dataset_inputs, provenance, storage_errors
from reuse_nets.train import execution, trainers, training
from reuse_nets.train.data import Dataset

PYFUNC_FILE = Path(__file__).resolve().parent / "pyfunc_model.py"
REASON_LIMIT = 4000  # characters of a failure reason kept in its tag
MODEL_ARTIFACT = "model"
KERAS_FILE = "model.keras"
KERAS_ARTIFACT = "keras_model"  # as in pyfunc_model.KERAS_ARTIFACT (that file is not importable)
KERAS_FLAVOR_DATA = "artifacts"  # the pyfunc's artifacts folder, which holds KERAS_FILE
INPUT_EXAMPLE_SIZE = 4


def set_tracking_uri(uri: str | None) -> None:
    """Uses `uri` if given; otherwise MLflow's own resolution (env var, then default)."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)


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


def capacity_metrics(config: TrialConfig, dataset: Dataset) -> dict[str, float]:
    """The network's parameter and FLOP counts, as metrics `mlflow ui` can chart and sort."""
    counted = capacity.of_config(config, dataset.input_shape, dataset.num_classes)
    return {key: float(counted.of(measure)) for measure, key in CAPACITY_METRICS.items()}


def _log_model(model, dataset: Dataset, context: str = "") -> str:
    """Logs `model` as one MLflow model with two flavours; returns its model URI.

    `python_function`: a self-contained pyfunc, defined from code (`pyfunc_model.py`,
    no pickles), that ships this package (`code_paths`), so it loads and predicts
    where this project is not installed: `mlflow.pyfunc.load_model(uri)`,
    `mlflow models predict`. `keras`: MLflow's Keras flavour on the same `.keras`
    file, so `mlflow.keras.load_model(uri)` gives the Keras model wherever this
    package is installed (its start-up hook, `reuse_nets_keras_layers.py`, lets
    Keras find the layers).
    """
    import keras
    import mlflow
    from mlflow.models import infer_signature

    # MLflow predicts on the input example with Keras's progress bar; no bars in logs.
    keras.utils.disable_interactive_logging()
    # MLflow's environment probing (no pip in uv-made environments, "detected uv
    # project") is noise in a sweep's output; requirements are pinned below.
    for logger in ("mlflow.utils.environment", "mlflow.utils.uv_utils", "mlflow.pyfunc"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    example = dataset.sample("validation", INPUT_EXAMPLE_SIZE)
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    # Offline machines: MLflow would otherwise probe pip while saving the model.
    with tempfile.TemporaryDirectory() as folder, noise.environment(MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK="true"):
        keras_path = os.path.join(folder, KERAS_FILE)
        with disk.guard(f"the temporary folder {folder}", folder):
            model.save(keras_path)
        faults.disk_full("model", context, folder)
        info = mlflow.models.Model.log(
            artifact_path=None,
            name=MODEL_ARTIFACT,
            flavor=_PyfuncAndKeras,
            flavor_name="pyfunc.ModelFromCode",  # what `mlflow.pyfunc.log_model` would record
            python_model=os.fspath(PYFUNC_FILE),
            artifacts={KERAS_ARTIFACT: keras_path},
            code_paths=[os.fspath(PACKAGE_DIR)],
            signature=signature,
            input_example=example,
            # Pinned explicitly: MLflow's inference would run pip, which fails offline.
            pip_requirements=[f"{n}=={v}" for n, v in provenance.library_versions().items() if v != "absent"],
        )
    return info.model_uri


class _PyfuncAndKeras:
    """The flavour module `Model.log` saves with: MLflow's pyfunc, plus a `keras` flavour
    that names the `.keras` file the pyfunc holds (one file, two flavours)."""

    @staticmethod
    def save_model(path, mlflow_model, **kwargs):
        import keras
        import mlflow

        # `mlflow.keras.load_model` reads `<data>/model.keras` when `data` is a folder:
        # KERAS_FILE, in the folder where the pyfunc keeps its artifacts.
        mlflow_model.add_flavor(
            "keras",
            data=KERAS_FLAVOR_DATA,
            keras_version=keras.__version__,
            keras_backend=keras.backend.backend(),
            save_exported_model=False,
        )
        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **kwargs)


def load_logged_model(model_uri: str):
    """The Keras model inside a logged reuse-nets model, with or without its `keras` flavour
    (models logged before it had one are pyfunc-only); layers from this checkout."""
    import keras
    import mlflow

    import reuse_nets.nn.layers  # noqa: F401  (registers the custom layers)

    folder = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    return keras.saving.load_model(os.path.join(folder, "artifacts", KERAS_FILE), safe_mode=True)


PLOT_MARGINS = {"left": 0.07, "right": 0.98, "bottom": 0.13, "top": 0.91, "wspace": 0.22}  # figure fractions


def _log_plots(history: list[dict], block_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    epochs = range(1, len(history) + 1)
    # Fixed margins: a layout engine (tight or constrained) doubles the ~0.12 s a
    # figure takes to save, measured per trial.
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw=PLOT_MARGINS)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            ax.plot(epochs, [h.get(key, float("nan")) for h in history], style, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    mlflow.log_figure(fig, "plots/training_curves.png")
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=PLOT_MARGINS)
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(block_names):
        left.plot(
            epochs,
            [h[f"{GRAD_NORM_PREFIX}{name}"] for h in history],
            color=cmap(i / max(1, len(block_names) - 1)),
            label=name,
        )
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_title("gradient norm per block (epoch mean)")
    if len(block_names) <= 12:
        left.legend(fontsize="small")
    for epoch_index in sorted({0, len(history) - 1}):
        right.plot(
            range(1, len(block_names) + 1),
            [history[epoch_index][f"{GRAD_NORM_PREFIX}{name}"] for name in block_names],
            marker="o",
            label=f"epoch {epoch_index + 1}",
        )
    right.set_yscale("log")
    right.set_xlabel("block (depth)")
    right.set_title("gradient norm by depth")
    right.legend()
    mlflow.log_figure(fig, "plots/grad_norm_by_block.png")
    plt.close(fig)


def close_run(client, run_id: str, outcome: Outcome, reason: str | None = None) -> None:
    """Ends a trial run: the one place that writes its status and state tags.

    The status and the mirrored Optuna state follow from `outcome` (see
    `names.RUN_END`), so the two can never disagree.
    """
    from mlflow.entities import RunTag

    status, state = RUN_END[outcome]
    tags = [RunTag(OUTCOME_TAG, outcome), RunTag(STATE_TAG, state)]
    if reason:
        tags.append(RunTag(REASON_TAG, reason[:REASON_LIMIT]))
    # One batch: runners on several machines may close the same dead run at once, and
    # MLflow's SQL store retries such a conflict on a new tag only in log_batch.
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)


def selected_metrics(result: training.TrainingResult) -> dict[str, float]:
    """Which epoch's weights the run ends with, how many epochs it trained, whether a plateau
    stopped it, and the validation metrics of those weights (`SELECTED_PREFIX`)."""
    best = result.best_epoch or len(result.history)
    chosen = result.history[best - 1]
    return {
        BEST_EPOCH_METRIC: best,
        EPOCHS_TRAINED_METRIC: len(result.history),
        PLATEAU_METRIC: float(result.plateaued),
        **{
            SELECTED_PREFIX + name: chosen[name] for name in EPOCH_METRICS if name.startswith("val_") and name in chosen
        },
    }


class TrialRun:
    """The MLflow run of one training run, open inside `trial_run`."""

    def __init__(self, run_id: str, dataset: Dataset, log_model: bool, name: str = ""):
        self.run_id, self.dataset, self.log_model, self.name = run_id, dataset, log_model, name
        self.outcome: Outcome | None = None  # set by `record`
        self.reason: str | None = None

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """An epoch hook: logs one epoch's metrics at `step=epoch`."""
        import mlflow

        with profile.section("mlflow: epoch metrics"):
            mlflow.log_metrics(metrics, step=epoch, synchronous=True)

    def note_trainer(self, reused: bool) -> None:
        """A `training.train` `on_lease` hook: whether the trial reused a compiled trainer."""
        import mlflow

        mlflow.set_tag(TRAINER_REUSED_TAG, str(reused).lower())

    def record(self, result: training.TrainingResult) -> None:
        """Logs what training produced: plots, test metrics and the model."""
        import mlflow

        if result.history:
            with profile.section("mlflow: plots"), self.writing_artifacts():
                _log_plots(result.history, models.block_names(result.model))
        if result.status == Outcome.DIVERGED:
            self.outcome, self.reason = Outcome.DIVERGED, f"diverged: {result.reason}"
            return
        mlflow.log_metrics({**result.test_metrics, **selected_metrics(result)}, step=len(result.history))
        if self.log_model:
            with profile.section("mlflow: model"), self.writing_artifacts():
                mlflow.set_tag(MODEL_URI_TAG, _log_model(result.model, self.dataset, self.name))
        self.outcome = Outcome.COMPLETED

    def writing_artifacts(self):
        """A block that writes this run's artifacts: a full disk there names their folder."""
        import mlflow

        uri = mlflow.get_artifact_uri()
        return disk.guard(f"the artifacts of MLflow run {self.run_id} at {uri}", disk.local_path(uri))


SYSTEM_METRICS_STOP = 2.0  # seconds a run's end waits for MLflow's system-metrics thread


def _stop_system_metrics(run_id: str) -> None:
    """Stops MLflow's system-metrics thread of a run, waiting for it at most SYSTEM_METRICS_STOP s.

    `mlflow.end_run` would join it without a limit; an interrupted worker has only
    `interrupts.SHUTDOWN_GRACE` seconds to close its runs, and the thread may be
    waiting on a busy store. A thread left behind is a daemon: it dies with the process.
    """
    from mlflow.tracking import fluent

    monitor = getattr(fluent, "run_id_to_system_metrics_monitor", {}).pop(run_id, None)
    if monitor is None:
        return
    event, thread = getattr(monitor, "_shutdown_event", None), getattr(monitor, "_process", None)
    if event is None or thread is None:  # another MLflow than the one this was written for
        monitor.finish()
        return
    event.set()
    thread.join(SYSTEM_METRICS_STOP)
    if not thread.is_alive():
        with contextlib.suppress(Exception):  # samples still buffered; their loss loses no result
            if getattr(monitor, "_logging_step", 1) == 0:
                # A run shorter than one interval: one sample at its end, so every
                # run's system-metrics page shows something.
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()


# Seconds between system-metric samples of a trial run: each sample is a few psutil reads
# and one MLflow request (milliseconds), under 1% of the trial; a trial shorter than
# this logs one sample, at its end.
SYSTEM_METRICS_INTERVAL = 2.0


@contextlib.contextmanager
def trial_run(
    config: TrialConfig,
    dataset: Dataset,
    *,
    experiment_id: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    log_model: bool = True,
) -> Iterator[TrialRun]:
    """An MLflow run holding a config's params, inputs and, once recorded, results.

    On leaving the block the run ends by what happened: what `record` saw
    (completed or diverged); `training.StopTraining` -> its outcome (e.g.
    pruned, KILLED); `KeyboardInterrupt` -> interrupted (KILLED); any other
    exception, or nothing recorded -> error (FAILED). Exceptions propagate.
    """
    import mlflow

    # Thread counts and oneDNN change rounding: pinned before any op, and logged.
    settings = execution.ensure_pinned()
    run_tags = {
        KIND_TAG: Kind.TRIAL,
        **provenance.provenance_tags(),
        **settings.tags(),
        COMPILE_CACHE_TAG: str(trainers.capacity()),
        STATE_TAG: TrialState.RUNNING,
        **(tags or {}),
    }
    if parent_run_id:
        run_tags[PARENT_TAG] = parent_run_id
    outcome: Outcome = Outcome.ERROR
    reason: str | None = "no training result was recorded"
    # A stop while the run starts would leave it RUNNING, before the `try` that closes it:
    # it is held back until the run is in hand, and raised a moment later, inside the `try`.
    with interrupts.held(), profile.section("mlflow: run start and end"):
        # MLflow's own system metrics (system/cpu_utilization_percentage, system/system_memory_usage_megabytes,
        # GPU where present): one sample logged every SYSTEM_METRICS_INTERVAL s, a thread of its own.
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL)
        mlflow.set_system_metrics_samples_before_logging(1)
        active = mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name, tags=run_tags, log_system_metrics=True
        )
        run = TrialRun(active.info.run_id, dataset, log_model, name=active.info.run_name or "")
    try:
        with profile.section("mlflow: run start and end"):
            mlflow.log_params(trial_params(config, dataset))
            with run.writing_artifacts():
                faults.disk_full("config", run.name)
                mlflow.log_text(yaml.safe_dump(config.model_dump(), sort_keys=False), "config.yaml")
            mlflow.log_metrics(capacity_metrics(config, dataset), step=0)
            dataset_inputs.log_dataset_inputs(run.run_id, dataset)
        yield run
        if run.outcome is not None:
            outcome, reason = run.outcome, run.reason
    except training.StopTraining as stop:
        known = stop.outcome in RUN_END
        outcome = Outcome(stop.outcome) if known else Outcome.ERROR
        reason = str(stop) if known else f"stopped with unknown outcome {stop.outcome!r}: {stop}"
        raise
    except KeyboardInterrupt:
        outcome, reason = Outcome.INTERRUPTED, "interrupted (Ctrl-C or SIGTERM)"
        raise
    except BaseException as error:
        if interrupts.stopping():
            # The stop surfaced as another error: raised by the signal handler inside a Python
            # callback of TensorFlow's compiled train step, it made that C++ code fail
            # ("SystemError: ... bad argument to internal function"). Not the trial's result.
            outcome, reason = Outcome.INTERRUPTED, "interrupted (Ctrl-C or SIGTERM)"
            raise KeyboardInterrupt(f"stopped, surfacing as {type(error).__name__}: {error}") from error
        outcome = _outcome_of(error)
        reason = f"{type(error).__name__}: {error}"
        raise
    finally:
        # On a full disk these writes may fail too: the run is then left RUNNING, and the
        # next start closes it, as it closes a dead process's run (`reconcile.reconcile`).
        closing = contextlib.suppress(Exception) if outcome == Outcome.DISK_FULL else contextlib.nullcontext()
        with profile.section("mlflow: run start and end"):
            _stop_system_metrics(run.run_id)
            with closing:
                close_run(mlflow.MlflowClient(), run.run_id, outcome, reason)
            with closing:  # ends the run in this process even if its status could not be written
                mlflow.end_run(status=RUN_END[outcome][0])


def _outcome_of(error: BaseException) -> Outcome:
    """How a trial run that raised `error` ended: a full disk and a passing storage error
    are not the trial's result (it is run again); anything else is its error."""
    if disk.is_disk_full(error):
        return Outcome.DISK_FULL
    return Outcome.TRANSIENT if storage_errors.is_transient(error) else Outcome.ERROR


def read_config(run_id: str) -> dict:
    """The resolved config a run logged (`config.yaml`)."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml")
    return yaml.safe_load(Path(path).read_text())
