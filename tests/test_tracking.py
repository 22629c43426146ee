"""Tests of MLflow tracking of one trial, against a temporary sqlite tracking store."""

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
from mlflow.entities import ViewType
from PIL import Image

from reuse_nets import names
from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.runtime import interrupts
from reuse_nets.store import dataset_inputs, provenance, tracking
from reuse_nets.train import training

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "grad_norm/global")


@contextlib.contextmanager
def use_tracking_store(directory: Path, template: Path | None = None):
    """Tracks into `directory/mlflow.db` with artifacts under `directory/mlruns`, then
    restores the tracking URI, its environment variable and the working directory.

    `template` is an empty, migrated `mlflow.db` to start from: creating the schema
    takes MLflow several seconds per store.
    """
    if template is not None:
        shutil.copyfile(template, directory / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored on exit
        patch.chdir(directory)
        uri = f"sqlite:///{directory}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            while mlflow.active_run():  # never leak a run into other tests
                mlflow.end_run(status="KILLED")
            mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An empty tracking database with MLflow's schema, copied by every store here."""
    directory = tmp_path_factory.mktemp("empty-store")
    with use_tracking_store(directory):
        assert [e.name for e in mlflow.MlflowClient().search_experiments()] == ["Default"]
    return directory / "mlflow.db"


@pytest.fixture
def tracking_store(tmp_path, empty_store):
    """A temporary tracking store of the test's own, active while it runs."""
    with use_tracking_store(tmp_path, template=empty_store) as uri:
        yield uri


def new_experiment(name="test") -> str:
    """A new MLflow experiment in the active store (tracking makes none itself)."""
    return mlflow.create_experiment(name)


def small_config(dataset_config, **overrides):
    fields = dict(strategy="residual", depth=3, width=32, epochs=2, batch_size=128, seed=0, dataset=dataset_config)
    return TrialConfig(**{**fields, **overrides})


@dataclasses.dataclass
class TrackedRun:
    directory: Path
    uri: str
    config: TrialConfig
    dataset: object
    run_id: str
    result: object


@pytest.fixture(scope="module")
def tracked_run_store(tmp_path_factory, empty_store, fashion_mnist, fashion_mnist_config):
    """One completed tracked run, in its own store, read by many tests."""
    directory = tmp_path_factory.mktemp("tracked")
    config = small_config(fashion_mnist_config)
    with use_tracking_store(directory, template=empty_store) as uri:
        with tracking.trial_run(config, fashion_mnist, experiment_id=new_experiment(), run_name="short") as run:
            result = training.train(config, fashion_mnist, hooks=(run.log_epoch,))
            run.record(result)
        assert run.outcome == "completed" and run.reason is None
    return TrackedRun(directory, uri, config, fashion_mnist, run.run_id, result)


@pytest.fixture
def tracked(tracked_run_store):
    """The completed run, with its store active for the duration of a test."""
    with use_tracking_store(tracked_run_store.directory):
        yield tracked_run_store


def get_run(run_id):
    return mlflow.MlflowClient().get_run(run_id)


# --- A completed run ------------------------------------------------------------------


def assert_closed_as(run, outcome, reason=None):
    """The run ended with `outcome`: status, outcome and state tags agree with OUTCOMES."""
    status, state = names.RUN_END[outcome]
    tags = run.data.tags
    assert (run.info.status, tags[names.OUTCOME_TAG], tags[names.STATE_TAG]) == (status, outcome, state)
    assert run.info.end_time is not None
    if reason is None:
        assert names.REASON_TAG not in tags
    else:
        assert tags[names.REASON_TAG] == reason


def test_completed_run_is_finished_in_the_temporary_store(tracked):
    run = get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "short"
    assert run.data.tags[names.OUTCOME_TAG] == "completed"
    assert run.data.tags[names.STATE_TAG] == "COMPLETE"
    assert run.data.tags[names.KIND_TAG] == "trial"
    assert names.REASON_TAG not in run.data.tags
    assert_closed_as(run, "completed")
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tracked.directory / "mlruns") and artifacts.is_dir()
    assert (tracked.directory / "mlflow.db").is_file()
    assert mlflow.active_run() is None


def test_params_hold_every_config_field_and_the_dataset(tracked):
    params = get_run(tracked.run_id).data.params
    for key in ("strategy", "depth", "width", "learning_rate", "batch_size", "epochs", "seed", "family"):
        assert params[key] == str(getattr(tracked.config, key)), key
    for key, value in tracked.config.flat().items():
        assert params["dataset" if key == "dataset.name" else key] == str(value), key
    assert params["dataset"] == "fashion_mnist"
    assert params["dataset_version"] == "3.0.1"
    assert params["dataset_digest"] == tracked.dataset.digest
    assert params["split.train"] == "train[:2000]"


def test_every_epoch_metric_is_logged_per_step(tracked):
    client = mlflow.MlflowClient()
    epochs = tracked.config.epochs
    blocks = [f"grad_norm/block_{i:02d}" for i in range(1, tracked.config.depth + 1)]
    for key in (*EPOCH_METRICS, *blocks):
        history = sorted(client.get_metric_history(tracked.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, epochs + 1)), key
        np.testing.assert_allclose([m.value for m in history], [h[key] for h in tracked.result.history], rtol=1e-6)
    logged = get_run(tracked.run_id).data.metrics
    assert sorted(k for k in logged if "grad_norm" in k) == sorted(["grad_norm/global", *blocks])


def test_test_accuracy_is_logged(tracked):
    metrics = get_run(tracked.run_id).data.metrics
    assert metrics["test_accuracy"] == pytest.approx(tracked.result.test_metrics["test_accuracy"])
    assert 0.5 < metrics["test_accuracy"] <= 1.0


def test_dataset_inputs_record_every_split_with_the_digest(tracked):
    inputs = get_run(tracked.run_id).inputs.dataset_inputs
    contexts = {}
    for dataset_input in inputs:
        tags = {tag.key: tag.value for tag in dataset_input.tags}
        contexts[tags["mlflow.data.context"]] = (dataset_input.dataset, tags)
    assert set(contexts) == {"training", "validation", "testing"}
    for context, role in (("training", "train"), ("validation", "validation"), ("testing", "test")):
        dataset, tags = contexts[context]
        assert dataset.digest == tracked.dataset.digest
        assert tags["tfds.split"] == tracked.dataset.splits[role]
        assert tracked.dataset.splits[role] in dataset.name


def test_tags_record_code_and_library_versions(tracked):
    tags = get_run(tracked.run_id).data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    assert tags["reuse_nets.git_dirty"] in {"true", "false"}
    for name in provenance.LIBRARIES:
        assert f"reuse_nets.version.{name}" in tags, name
    # The TensorFlow build installed here (the default group's CPU build), and no other.
    assert tags["reuse_nets.version.tensorflow-cpu"] == tf.__version__
    assert "reuse_nets.version.tensorflow" not in tags
    assert tags["reuse_nets.version.mlflow"] == mlflow.__version__
    assert tags["reuse_nets.version.keras"] == keras.__version__


def test_config_artifact_round_trips(tracked):
    assert TrialConfig(**tracking.read_config(tracked.run_id)) == tracked.config


@pytest.mark.parametrize("name", ["training_curves.png", "grad_norm_by_block.png"])
def test_plots_are_valid_pngs(tracked, name, tmp_path):
    path = mlflow.artifacts.download_artifacts(run_id=tracked.run_id, artifact_path=f"plots/{name}", dst_path=tmp_path)
    content = Path(path).read_bytes()
    assert content.startswith(PNG_SIGNATURE)
    Image.open(io.BytesIO(content)).verify()
    width, height = Image.open(io.BytesIO(content)).size
    assert width > 200 and height > 100


def test_logged_model_has_signature_and_input_example(tracked):
    model_uri = get_run(tracked.run_id).data.tags[names.MODEL_URI_TAG]
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None
    assert info.saved_input_example_info is not None
    (spec,) = info.signature.inputs.inputs
    assert tuple(spec.shape) == (-1, 28, 28, 1)
    assert info.run_id == tracked.run_id


def test_logged_model_reloads_in_a_fresh_process(tracked):
    model_uri = get_run(tracked.run_id).data.tags[names.MODEL_URI_TAG]
    inputs = tracked.dataset.sample("test", 8)
    np.save(tracked.directory / "inputs.npy", inputs)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from reuse_nets.store import tracking
        m = tracking.load_logged_model(sys.argv[1])
        np.save("outputs.npy", m.predict(np.load("inputs.npy"), verbose=0))
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracked.uri, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.run(
        [sys.executable, "-c", script, model_uri],
        cwd=tracked.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    reloaded = np.load(tracked.directory / "outputs.npy")
    expected = tracked.result.model.predict(inputs, verbose=0)
    assert reloaded.shape == (8, 10)
    np.testing.assert_allclose(reloaded, expected, rtol=1e-6)


# One step of fine-tuning on the loaded Keras model `model` (any batch `inputs`), then a line
# "<class> <loss finite> <weights changed>". Appended to the scripts below.
FINE_TUNE = """
import keras as _keras
_before = [w.copy() for w in model.get_weights()]
model.compile(optimizer=_keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
_loss = model.fit(inputs, np.arange(len(inputs)) % 10, batch_size=len(inputs), epochs=1, verbose=0).history["loss"][0]
_changed = any(not np.array_equal(a, b) for a, b in zip(_before, model.get_weights()))
print(type(model).__name__, bool(np.isfinite(_loss)), _changed)
"""

# `mlflow.keras.load_model` as a Keras user calls it: the script never imports this
# project (the installed package's start-up hook has Keras import the layers). It prints
# the modules named "reuse*" once Keras is imported, the files the custom layers came
# from, saves the Keras model's and the pyfunc's predictions, then fine-tunes.
KERAS_FLAVOUR_SCRIPT = (
    textwrap.dedent(
        """
        import json
        import sys
        import mlflow
        import numpy as np
        import keras
        inputs = np.load("inputs.npy")
        print(sorted(m for m in sys.modules if m.startswith("reuse")))  # Keras imported, no layers yet
        model = mlflow.keras.load_model(sys.argv[1])
        custom = {type(layer).__module__ for layer in model.layers} - {"keras"}
        print(json.dumps(sorted(sys.modules[m].__file__ for m in custom if not m.startswith("keras."))))
        np.save("keras_outputs.npy", np.asarray(model(inputs, training=False)))
        np.save("pyfunc_outputs.npy", np.asarray(mlflow.pyfunc.load_model(sys.argv[1]).predict(inputs)))
        """
    )
    + FINE_TUNE
)


def load_with_the_keras_flavour(python, model_uri: str, work: Path, env: dict):
    """Runs KERAS_FLAVOUR_SCRIPT in a fresh process; returns (layer files, Keras and pyfunc predictions)."""
    assert "reuse_nets" not in KERAS_FLAVOUR_SCRIPT
    loaded = subprocess.run(
        [python, "-c", KERAS_FLAVOUR_SCRIPT, model_uri], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    *_, before, files, tuned = loaded.stdout.strip().splitlines()
    assert before == "['reuse_nets_keras_layers']"  # the hook alone: the layers come with the lookup
    assert tuned == "Functional True True"  # a Keras model, one finite fit step that moved the weights
    return json.loads(files), np.load(work / "keras_outputs.npy"), np.load(work / "pyfunc_outputs.npy")


def test_logged_model_is_also_a_keras_model_where_the_project_is_installed(tracked):
    """One logged model, two flavours: `mlflow.keras.load_model` works with no import first."""
    model_uri = get_run(tracked.run_id).data.tags[names.MODEL_URI_TAG]
    flavors = mlflow.models.get_model_info(model_uri).flavors
    assert set(flavors) == {"python_function", "keras"}
    assert flavors["keras"]["data"] == tracking.KERAS_FLAVOR_DATA
    assert flavors["keras"]["keras_version"] == keras.__version__

    inputs = tracked.dataset.sample("test", 8)
    np.save(tracked.directory / "inputs.npy", inputs)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracked.uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    files, from_keras, from_pyfunc = load_with_the_keras_flavour(sys.executable, model_uri, tracked.directory, env)
    assert files and all(f.startswith(str(REPO_ROOT / "reuse_nets")) for f in files)  # the installed package
    np.testing.assert_array_equal(from_keras, from_pyfunc)
    np.testing.assert_allclose(from_keras, tracked.result.model.predict(inputs, verbose=0), rtol=1e-6)


def test_the_start_up_hook_is_installed_and_imports_only_itself():
    """`uv sync` installed the .pth into site-packages; at start-up it imports only its own
    module: not Keras, not even `reuse_nets` (so a pyfunc still imports the copy it ships).
    That a lookup imports the layers: KERAS_FLAVOUR_SCRIPT."""
    (site,) = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir() and sys.prefix in p]
    assert (Path(site) / "reuse_nets_keras_layers.pth").is_file()
    probe = "import sys; print([m for m in ('keras', 'tensorflow', 'reuse_nets', 'reuse_nets_keras_layers') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['reuse_nets_keras_layers']"


def environment_without_this_project(directory: Path) -> Path:
    """A fresh virtual environment with this one's libraries but not this project.

    Its site-packages are on the path as a plain folder, so the editable install's
    import hook (a .pth file) is never run: `import reuse_nets` fails there.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    (site,) = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir() and sys.prefix in p]
    (inner,) = (directory / "lib").glob("python3*/site-packages")
    (inner / "outer_libraries.pth").write_text(site + "\n")
    return directory / "bin" / "python"


def test_logged_model_loads_and_predicts_where_the_project_cannot_be_imported(tracked, tmp_path):
    """The logged model is self-contained: pyfunc load and `mlflow models predict`, no reuse_nets."""
    model_uri = get_run(tracked.run_id).data.tags[names.MODEL_URI_TAG]
    python = environment_without_this_project(tmp_path / "env")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracked.uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    probe = subprocess.run([python, "-c", "import reuse_nets"], cwd=work, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'reuse_nets'" in probe.stderr, probe.stderr[-2000:]

    inputs = tracked.dataset.sample("test", 8)
    np.save(work / "inputs.npy", inputs)
    script = (
        textwrap.dedent(
            """
            import sys
            import mlflow
            import numpy as np
            inputs = np.load("inputs.npy")
            try:  # the Keras flavour needs the layers registered: here nothing does
                mlflow.keras.load_model(sys.argv[1])
                print("keras flavour loaded")
            except TypeError as error:
                print("keras flavour:", "Could not locate class" in str(error))
            pyfunc = mlflow.pyfunc.load_model(sys.argv[1])
            np.save("outputs.npy", pyfunc.predict(inputs))
            print(type(pyfunc.unwrap_python_model()).__name__, sys.modules["reuse_nets"].__file__)
            model = pyfunc.unwrap_python_model().model  # the documented way to the Keras model here
            np.save("keras_outputs.npy", np.asarray(model(inputs, training=False)))
            """
        )
        + FINE_TUNE
    )
    loaded = subprocess.run(
        [python, "-c", script, model_uri], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    *_, flavour, pyfunc, tuned = loaded.stdout.strip().splitlines()
    assert flavour == "keras flavour: True"
    name, package = pyfunc.split()
    assert name == "KerasClassifier"
    assert str(REPO_ROOT) not in package  # the copy shipped with the model, not this checkout
    assert tuned == "Functional True True"  # the Keras model, fine-tuned one step
    expected = tracked.result.model.predict(inputs, verbose=0)
    np.testing.assert_allclose(np.load(work / "outputs.npy"), expected, rtol=1e-6)
    np.testing.assert_array_equal(np.load(work / "keras_outputs.npy"), np.load(work / "outputs.npy"))

    # The MLflow CLI, as a serving user would call it, on MLflow's own serving example.
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp_path / "model"))
    cli = subprocess.run(
        [
            python,
            "-m",
            "mlflow",
            "models",
            "predict",
            "-m",
            model_uri,
            "-i",
            str(local / "serving_input_example.json"),
            "-t",
            "json",
            "--env-manager",
            "local",
            "-o",
            str(work / "predictions.json"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-4000:]
    predictions = np.asarray(json.loads((work / "predictions.json").read_text())["predictions"])
    example = tracked.dataset.sample("validation", tracking.INPUT_EXAMPLE_SIZE)
    np.testing.assert_allclose(predictions, tracked.result.model.predict(example, verbose=0), rtol=1e-5)


# --- Runs that do not complete --------------------------------------------------------


def assert_no_run_left_running(experiment):
    runs = mlflow.MlflowClient().search_runs([experiment], run_view_type=ViewType.ALL)
    assert runs and all(run.info.status != "RUNNING" for run in runs)
    assert mlflow.active_run() is None


def test_diverged_run_fails_with_reason_and_no_model(tracking_store, fashion_mnist, fashion_mnist_config):
    config = small_config(fashion_mnist_config, strategy="plain", depth=4, optimizer="sgd", learning_rate=1e6)
    experiment = new_experiment()
    with tracking.trial_run(config, fashion_mnist, experiment_id=experiment) as tracked_run:
        result = training.train(config, fashion_mnist, hooks=(tracked_run.log_epoch,))
        tracked_run.record(result)  # a diverged result, not an error: nothing is raised
    assert result.status == "diverged"
    assert tracked_run.outcome == "diverged"
    run = get_run(tracked_run.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[names.OUTCOME_TAG] == "diverged"
    assert run.data.tags[names.REASON_TAG] == f"diverged: {result.reason}"
    assert "non-finite loss" in run.data.tags[names.REASON_TAG]
    assert_closed_as(run, "diverged", f"diverged: {result.reason}")
    assert names.MODEL_URI_TAG not in run.data.tags
    assert "test_accuracy" not in run.data.metrics and "test_loss" not in run.data.metrics
    models = mlflow.MlflowClient().search_logged_models(experiment_ids=[experiment])
    assert [m for m in models if m.source_run_id == tracked_run.run_id] == []
    assert math.isnan(run.data.metrics["loss"])  # the diverged epoch is still recorded
    assert_no_run_left_running(experiment)


def raise_at_first_epoch(error):
    def hook(epoch, metrics):
        raise error

    return hook


@pytest.mark.parametrize(
    "error, outcome, reason",
    [
        (KeyboardInterrupt(), "interrupted", "interrupted (Ctrl-C or SIGTERM)"),
        (training.StopTraining("pruned", "pruned at epoch 1"), "pruned", "pruned at epoch 1"),
        (RuntimeError("boom"), "error", "RuntimeError: boom"),
        # Regression: an outcome tracking does not know once left the run RUNNING.
        (training.StopTraining("stopped_early", "why"), "error", "stopped with unknown outcome 'stopped_early': why"),
    ],
    ids=["keyboard-interrupt", "stop-training-pruned", "other-error", "stop-training-unknown-outcome"],
)
def test_hook_exception_ends_run_and_propagates(
    tracking_store, fashion_mnist, fashion_mnist_config, error, outcome, reason
):
    config = small_config(fashion_mnist_config, depth=2, width=16)
    experiment = new_experiment()
    recorded = []
    with pytest.raises(type(error)) as raised:
        with tracking.trial_run(config, fashion_mnist, experiment_id=experiment, run_name="stopped") as tracked_run:
            result = training.train(config, fashion_mnist, hooks=(tracked_run.log_epoch, raise_at_first_epoch(error)))
            recorded.append(result)  # never reached
            tracked_run.record(result)
    assert raised.value is error  # re-raised as is
    assert recorded == []
    (run,) = mlflow.MlflowClient().search_runs([experiment], run_view_type=ViewType.ALL)
    assert run.info.run_id == tracked_run.run_id
    assert_closed_as(run, outcome, reason)
    expected_status = {"interrupted": "KILLED", "pruned": "KILLED", "error": "FAILED"}[outcome]
    assert run.info.status == expected_status
    if outcome == "pruned":
        assert run.data.tags[names.STATE_TAG] == "PRUNED"
    assert names.MODEL_URI_TAG not in run.data.tags
    assert "test_accuracy" not in run.data.metrics
    # The epoch that ran before the hook stopped training is recorded.
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")]
    assert steps == [1]
    assert_no_run_left_running(experiment)


def test_an_error_after_a_stop_signal_is_the_interruption_not_the_trials_result(
    tracking_store, fashion_mnist, fashion_mnist_config, monkeypatch
):
    # A SIGTERM whose handler ran inside a Python callback of TensorFlow's compiled train
    # step came out of `fit` as this SystemError (1 of 11 stopped two-worker sweeps, 1 of
    # 25 random stops of a trial measured): the trial ended "error", a result, so its slot
    # was never run again, and the worker, its signals now ignored, went on.
    monkeypatch.setattr(interrupts, "_stopped_by", signal.SIGTERM)  # the signal has arrived
    error = SystemError("Objects/listobject.c:338: bad argument to internal function")
    config = small_config(fashion_mnist_config, depth=2, width=16)
    experiment = new_experiment()
    with pytest.raises(KeyboardInterrupt) as raised:
        with tracking.trial_run(config, fashion_mnist, experiment_id=experiment, run_name="stopped") as tracked_run:
            training.train(config, fashion_mnist, hooks=(tracked_run.log_epoch, raise_at_first_epoch(error)))
    assert raised.value.__cause__ is error
    assert_closed_as(get_run(tracked_run.run_id), "interrupted", "interrupted (Ctrl-C or SIGTERM)")
    assert_no_run_left_running(experiment)


@contextlib.contextmanager
def stopped_by_signals(monkeypatch):
    """This process's SIGINT/SIGTERM stop it as a command's would; as before afterwards."""
    handlers = {each: signal.getsignal(each) for each in interrupts.SIGNALS}
    monkeypatch.setattr(interrupts, "_stopped_by", None)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    interrupts.stop_on_signals()
    try:
        yield
    finally:
        for each, handler in handlers.items():
            signal.signal(each, handler)
        if mlflow.active_run() is not None:  # what the stop may have left open, for the tests after
            mlflow.end_run()


def test_a_stop_while_the_run_starts_waits_until_the_run_can_be_closed(
    tracking_store, fashion_mnist, fashion_mnist_config, monkeypatch
):
    # Raised as MLflow finished starting the run, before the `try` that closes it, the stop
    # left the run RUNNING and active (1 of 35 random stops of a trial measured).
    start_run = mlflow.start_run

    def signalled(*args, **kwargs):
        active = start_run(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return active

    monkeypatch.setattr(mlflow, "start_run", signalled)
    experiment = new_experiment()
    with stopped_by_signals(monkeypatch), pytest.raises(KeyboardInterrupt):
        with tracking.trial_run(small_config(fashion_mnist_config), fashion_mnist, experiment_id=experiment):
            time.sleep(5)  # where the stop, held back, is raised
    (run,) = mlflow.MlflowClient().search_runs([experiment], run_view_type=ViewType.ALL)
    assert_closed_as(run, "interrupted", "interrupted (Ctrl-C or SIGTERM)")
    assert_no_run_left_running(experiment)


def test_an_exception_in_the_block_itself_fails_the_run_and_propagates(
    tracking_store, fashion_mnist, fashion_mnist_config
):
    experiment = new_experiment()
    with pytest.raises(ValueError, match="bad config"):
        with tracking.trial_run(
            small_config(fashion_mnist_config), fashion_mnist, experiment_id=experiment
        ) as tracked_run:
            raise ValueError("bad config")
    assert_closed_as(get_run(tracked_run.run_id), "error", "ValueError: bad config")
    assert_no_run_left_running(experiment)


def test_a_block_left_without_a_recorded_result_fails(tracking_store, fashion_mnist, fashion_mnist_config):
    experiment = new_experiment()
    with tracking.trial_run(small_config(fashion_mnist_config), fashion_mnist, experiment_id=experiment) as tracked_run:
        pass  # e.g. a caller that trained but forgot `record`: no result, no exception
    assert tracked_run.outcome is None
    run = get_run(tracked_run.run_id)
    assert run.info.status == "FAILED"
    assert_closed_as(run, "error", "no training result was recorded")
    assert_no_run_left_running(experiment)


def test_run_is_open_and_running_inside_the_block(tracking_store, fashion_mnist, fashion_mnist_config):
    config = small_config(fashion_mnist_config)
    experiment = new_experiment()
    with tracking.trial_run(config, fashion_mnist, experiment_id=experiment, run_name="open") as tracked_run:
        assert mlflow.active_run().info.run_id == tracked_run.run_id
        run = get_run(tracked_run.run_id)
        assert run.info.status == "RUNNING"
        assert run.data.tags[names.STATE_TAG] == "RUNNING"
        assert names.OUTCOME_TAG not in run.data.tags
        # Params, config and inputs are logged on entering, before any training.
        assert run.data.params["strategy"] == config.strategy
        assert run.data.params["dataset_digest"] == fashion_mnist.digest
        assert TrialConfig(**tracking.read_config(tracked_run.run_id)) == config
        assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {fashion_mnist.digest}
    assert mlflow.active_run() is None


def test_tags_parent_and_no_model(tracking_store, fashion_mnist, fashion_mnist_config):
    config = small_config(fashion_mnist_config, depth=1, width=8, epochs=1)
    experiment = new_experiment()
    client = mlflow.MlflowClient()
    parent = client.create_run(experiment, run_name="parent").info.run_id
    tags = {names.KIND_TAG: "reproduction", "custom": "value", names.STUDY_TAG: "a_study"}
    with tracking.trial_run(
        config, fashion_mnist, experiment_id=experiment, parent_run_id=parent, tags=tags, log_model=False
    ) as tracked_run:
        tracked_run.record(training.train(config, fashion_mnist, hooks=(tracked_run.log_epoch,)))
    run = get_run(tracked_run.run_id)
    assert_closed_as(run, "completed")
    assert run.data.tags[names.PARENT_TAG] == parent
    assert run.data.tags[names.KIND_TAG] == "reproduction"  # given tags win over the defaults
    assert run.data.tags["custom"] == "value" and run.data.tags[names.STUDY_TAG] == "a_study"
    assert names.MODEL_URI_TAG not in run.data.tags  # log_model=False
    assert "test_accuracy" in run.data.metrics  # ...but the results are still logged
    assert [
        m for m in client.search_logged_models(experiment_ids=[experiment]) if m.source_run_id == run.info.run_id
    ] == []


# --- close_run: the one place a run's end is written -------------------------------------


def test_outcomes_map_to_status_and_optuna_state():
    assert names.RUN_END == {
        "completed": ("FINISHED", "COMPLETE"),
        "pruned": ("KILLED", "PRUNED"),
        "diverged": ("FAILED", "FAIL"),
        "error": ("FAILED", "FAIL"),
        "interrupted": ("KILLED", "FAIL"),
        "disk_full": ("KILLED", "FAIL"),  # stopped like an interrupt: run again on resume
        "died": ("FAILED", "FAIL"),
        "transient": ("FAILED", "FAIL"),  # a storage error cut it short: lost, retried
    }


@pytest.mark.parametrize("outcome", list(names.RUN_END))
def test_close_run_writes_status_and_tags_from_the_outcome(tracking_store, outcome):
    client = mlflow.MlflowClient()
    run_id = client.create_run(new_experiment()).info.run_id
    tracking.close_run(client, run_id, outcome, f"why {outcome}")
    assert_closed_as(client.get_run(run_id), outcome, f"why {outcome}")


def test_close_run_without_reason_writes_no_reason_tag_and_truncates_long_ones(tracking_store):
    client = mlflow.MlflowClient()
    experiment = new_experiment()
    quiet = client.create_run(experiment).info.run_id
    tracking.close_run(client, quiet, "completed")
    assert_closed_as(client.get_run(quiet), "completed")
    long = client.create_run(experiment).info.run_id
    tracking.close_run(client, long, "error", "x" * (tracking.REASON_LIMIT + 100))
    assert client.get_run(long).data.tags[names.REASON_TAG] == "x" * tracking.REASON_LIMIT


def test_tag_names_are_defined_once_in_names():
    for name in ("KIND_TAG", "OUTCOME_TAG", "REASON_TAG", "STATE_TAG", "PARENT_TAG", "MODEL_URI_TAG"):
        assert getattr(tracking, name) is getattr(names, name), name
    assert names.STATE_TAG == "optuna.trial_state"
    assert names.OUTCOME_TAG == "reuse_nets.outcome"


def test_a_dataset_logged_by_two_runs_at_once_is_retried_not_failed(tracking_store, fashion_mnist, monkeypatch):
    # Regression (two runners on PostgreSQL): both inserted the same new dataset, the
    # second insert hit "duplicate key ... dataset_pk", and a grid point was lost.
    real, calls = mlflow.MlflowClient.log_inputs, {"n": 0}

    def racing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise mlflow.exceptions.MlflowException(
                '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_inputs", racing)
    with mlflow.start_run(experiment_id=new_experiment()) as run:
        dataset_inputs.log_dataset_inputs(run.info.run_id, fashion_mnist)
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert calls["n"] == len(fashion_mnist.splits) + 1
    assert len(inputs) == len(fashion_mnist.splits)


def test_a_real_mlflow_error_while_logging_inputs_is_not_retried(tracking_store, fashion_mnist, monkeypatch):
    calls = {"n": 0}

    def refusing(*args, **kwargs):
        calls["n"] += 1
        raise mlflow.exceptions.MlflowException("Invalid dataset name")

    monkeypatch.setattr(mlflow.MlflowClient, "log_inputs", refusing)
    with mlflow.start_run(experiment_id=new_experiment()) as run:
        with pytest.raises(mlflow.exceptions.MlflowException, match="Invalid dataset name"):
            dataset_inputs.log_dataset_inputs(run.info.run_id, fashion_mnist)
    assert calls["n"] == 1


RACE_SCRIPT = """
import sys
from reuse_nets.design import study_files
from reuse_nets.store import parent_run, tracking
tracking.set_tracking_uri(sys.argv[1])
parent_run.check_experiment(study_files.load_study("smoke", []))
print("opened")
"""


def test_runners_starting_together_on_a_fresh_sqlite_store_all_open_it(tmp_path):
    """MLflow creates a new SQLite store's schema without a lock; without `schema_lock`,
    three processes opening one fresh store failed in every round tried (2026-12-01)."""
    for round_ in range(3):
        uri = f"sqlite:///{tmp_path / f'round{round_}' / 'mlflow.db'}"
        (tmp_path / f"round{round_}").mkdir()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE_SCRIPT, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(3)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0 and out.strip() == "opened", err[-2000:]
        assert sorted(p.name for p in (tmp_path / f"round{round_}").iterdir()) == ["mlflow.db"]  # no lock file left
