"""`reuse-nets register`: each cell's best final model in MLflow's model registry, with aliases.

On the shared tiny tuned study (SQLite stores): the command registers one version per
cell plus `best`; `models:/NAME@ALIAS` loads and predicts in a fresh process that
cannot import this project (pyfunc, and the Keras model inside it), and with
`mlflow.keras.load_model` where the project is installed. The PostgreSQL + `mlflow server` set-up is covered in
`tests/test_many_machines.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import tiny_study
from test_tracking import environment_without_this_project, load_with_the_keras_flavour

from reuse_nets.report import registry

ROOT = tiny_study.ROOT


def test_register_gives_each_cell_its_best_final_model_and_it_loads_without_the_project(tmp_path_factory, tmp_path):
    study = tiny_study.finished_study(tmp_path_factory)
    name = "tiny_tuned_models"
    command = [
        sys.executable,
        os.fspath(ROOT / "sweeps" / "register.py"),
        "--study",
        os.fspath(tiny_study.STUDY_FILE),
        "--storage",
        study.storage,
        "--tracking-uri",
        study.tracking_uri,
        "--name",
        name,
    ]
    done = subprocess.run(command, cwd=study.directory, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=study.tracking_uri)
    finals = {
        run.data.tags["reuse_nets.cell"]: run
        for run in client.search_runs(
            [client.get_experiment_by_name(study.spec.name).experiment_id],
            "tags.`reuse_nets.phase` = 'final' and tags.`optuna.trial_state` = 'COMPLETE'",
        )
    }
    aliases = {registry.cell_alias(cell.key): cell.key for cell in study.spec.cells()}
    for alias, cell in aliases.items():
        version = client.get_model_version_by_alias(name, alias)
        assert version.run_id == finals[cell].info.run_id  # one final seed: the cell's only run
        assert version.tags["reuse_nets.cell"] == cell and version.tags["reuse_nets.study"] == study.spec.name
        assert f"models:/{name}@{alias}" in done.stdout
    best = max(finals.values(), key=lambda run: run.data.metrics["val_accuracy"])
    assert client.get_model_version_by_alias(name, "best").run_id == best.info.run_id
    assert len(client.search_model_versions(f"name='{name}'")) == len(aliases)  # best reuses its cell's version

    # A fresh process without this project loads the best model by alias and predicts.
    python = environment_without_this_project(tmp_path / "env")
    work = tmp_path / "elsewhere"
    work.mkdir()
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    np.save(work / "inputs.npy", images)
    env = {**os.environ, "MLFLOW_TRACKING_URI": study.tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    probe = subprocess.run([python, "-c", "import reuse_nets"], cwd=work, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'reuse_nets'" in probe.stderr, probe.stderr[-2000:]
    script = textwrap.dedent(
        """
        import sys
        import mlflow
        import numpy as np
        model = mlflow.pyfunc.load_model(sys.argv[1])
        np.save("outputs.npy", np.asarray(model.predict(np.load("inputs.npy"))))
        keras_model = model.unwrap_python_model().model  # the documented way to the Keras model here
        np.save("keras_outputs.npy", np.asarray(keras_model(np.load("inputs.npy"), training=False)))
        print(sys.modules["reuse_nets"].__file__)
        """
    )
    loaded = subprocess.run(
        [python, "-c", script, f"models:/{name}@best"], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    assert str(ROOT) not in loaded.stdout.strip().splitlines()[-1]  # the copy shipped with the model
    mlflow.set_tracking_uri(study.tracking_uri)
    here = mlflow.pyfunc.load_model(f"models:/{name}@best").predict(images)
    np.testing.assert_allclose(np.load(work / "outputs.npy"), np.asarray(here), rtol=1e-6)
    np.testing.assert_array_equal(np.load(work / "keras_outputs.npy"), np.load(work / "outputs.npy"))

    # Where the project is installed, the Keras flavour of the registered version loads
    # with `mlflow.keras.load_model` alone, predicts as the pyfunc does and fine-tunes.
    installed = tmp_path / "installed"
    installed.mkdir()
    np.save(installed / "inputs.npy", images)
    files, from_keras, from_pyfunc = load_with_the_keras_flavour(sys.executable, f"models:/{name}@best", installed, env)
    assert files and all(f.startswith(str(ROOT / "reuse_nets")) for f in files)
    np.testing.assert_array_equal(from_keras, from_pyfunc)
    np.testing.assert_allclose(from_keras, np.asarray(here), rtol=1e-6)
