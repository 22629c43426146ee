"""Models saved before the package moved into subpackages still load and predict the same.

`tests/fixtures/legacy_models/` was written by main at commit e9d25cf (flat
`reuse_nets/` modules): a `.keras` file per strategy, the predictions they gave
then, and a self-contained MLflow pyfunc model carrying that version's code.
"""

import os
import subprocess
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from test_tracking import environment_without_this_project

import reuse_nets.nn.layers  # noqa: F401  registers the layers under their unchanged package name

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_models"
STRATEGIES = ["plain", "concat", "residual", "masked"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_keras_file_saved_by_the_flat_layout_loads_safely_and_predicts_the_same(strategy):
    expected = np.load(FIXTURES / "expected.npz")
    model = keras.saving.load_model(FIXTURES / f"{strategy}.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(model(expected["x"], training=False)), expected[strategy])


def test_a_pyfunc_logged_by_the_flat_layout_loads_without_this_source_tree(tmp_path):
    with zipfile.ZipFile(FIXTURES / "residual_pyfunc.zip") as archive:
        archive.extractall(tmp_path / "model")
    python = environment_without_this_project(tmp_path / "env")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    script = (
        "import sys, numpy as np, mlflow.pyfunc\n"
        "data = np.load(sys.argv[1])\n"
        "model = mlflow.pyfunc.load_model(sys.argv[2])\n"
        "np.testing.assert_array_equal(model.predict(data['x']), data['residual'])\n"
        "print(sys.modules['reuse_nets.layers'].__file__)\n"
    )
    result = subprocess.run(
        [python, "-c", script, str(FIXTURES / "expected.npz"), str(tmp_path / "model")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The flat-layout copy shipped inside the model, not this checkout.
    assert str(tmp_path / "model") in result.stdout.strip().splitlines()[-1]
