"""Models saved before the package moved into subpackages still load and predict the same.

`tests/fixtures/legacy_models/` was written by main at commit e9d25cf (flat
`reuse_nets/` modules): a `.keras` file per strategy, the predictions they gave
then, and a self-contained MLflow pyfunc model carrying that version's code.

The predictions were recorded on another machine, so they are compared within
`RECORDED_ATOL`, not bit for bit: oneDNN picks its matmul kernels from the CPU's
instruction set, and AVX2 and AVX-512 kernels sum in a different order. Measured
2026-12-07 on an AVX-512 + AMX Xeon: up to 5 ulp (1.2e-7) from the recording with
oneDNN's kernels as found, at any `ONEDNN_MAX_CPU_ISA` cap from AVX to AMX and with
oneDNN's graph rewrites on or off; identical bytes only with the cap at AVX2 and
the rewrites off, which is how the recording machine ran (docs/reproducing.md).
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from test_tracking import environment_without_this_project

import reuse_nets.nn.layers  # noqa: F401  registers the layers under their unchanged package name
from reuse_nets.runtime import instruction_set

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_models"
STRATEGIES = ["plain", "concat", "residual", "masked"]
# The outputs are softmax probabilities in [0, 1], where a float32 ulp is at most
# eps = 2**-23 (1.2e-7). Reordering a dot product of K terms moves its float32 sum by
# at most about K ulp of its largest partial sum; these models' sums have K <= 36, and
# the measured differences across instruction sets were at most 1 eps (5 ulp of the
# smaller outputs). 16 eps (1.9e-6) leaves 16x headroom over that and is still 8x below
# what a 1e-4 relative change of one layer's weights does (test below).
RECORDED_ATOL = 16 * float(np.finfo(np.float32).eps)


def assert_matches_recording(predicted, recorded):
    """Equal within float32 reordering: another CPU's kernels may sum in another order."""
    np.testing.assert_allclose(np.asarray(predicted), recorded, rtol=0, atol=RECORDED_ATOL)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_keras_file_saved_by_the_flat_layout_loads_safely_and_predicts_the_same(strategy):
    expected = np.load(FIXTURES / "expected.npz")
    model = keras.saving.load_model(FIXTURES / f"{strategy}.keras", safe_mode=True)
    assert_matches_recording(model(expected["x"], training=False), expected[strategy])


@pytest.mark.parametrize("scale", [1.001, 1.0001])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_tolerance_still_catches_a_layer_changed_in_its_4th_digit(strategy, scale):
    """The head's logits altered in their 4th (and 5th) significant digit fail the comparison."""
    expected = np.load(FIXTURES / "expected.npz")
    model = keras.saving.load_model(FIXTURES / f"{strategy}.keras", safe_mode=True)
    kernel = model.get_layer("head").kernel
    kernel.assign(kernel.numpy() * scale)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_matches_recording(model(expected["x"], training=False), expected[strategy])


# Predictions of all four files, as the largest distance from the recording.
PREDICT_UNDER_CAP = """
import json, sys
import keras, numpy as np
import reuse_nets.nn.layers
expected = np.load(sys.argv[1])
worst = 0.0
for strategy in sys.argv[3:]:
    model = keras.saving.load_model(f"{sys.argv[2]}/{strategy}.keras", safe_mode=True)
    worst = max(worst, float(np.abs(np.asarray(model(expected["x"], training=False)) - expected[strategy]).max()))
print(json.dumps(worst))
"""


def test_the_recording_holds_under_every_instruction_set_this_cpu_can_run():
    """oneDNN capped at AVX2 and at AVX-512 where the CPU has them (uncapped: the test above)."""
    features = instruction_set.this_cpu().features
    caps = [cap for cap in ("AVX2", "AVX512_CORE") if instruction_set.kernel_isa(features, cap) == cap]
    caps = [cap for cap in caps if cap != instruction_set.this_cpu().kernel_isa]
    if not caps:
        pytest.skip("no narrower x86 instruction set to cap at: the test above covers this CPU")
    procs = {}
    for cap in caps:
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": cap, "TF_CPP_MIN_LOG_LEVEL": "3"}
        args = [sys.executable, "-c", PREDICT_UNDER_CAP, str(FIXTURES / "expected.npz"), str(FIXTURES), *STRATEGIES]
        procs[cap] = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worst = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        worst[key] = json.loads(out.strip().splitlines()[-1])
    assert max(worst.values()) <= RECORDED_ATOL, worst


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
        "np.testing.assert_allclose(model.predict(data['x']), data['residual'], rtol=0, atol=float(sys.argv[3]))\n"
        "print(sys.modules['reuse_nets.layers'].__file__)\n"
    )
    result = subprocess.run(
        [python, "-c", script, str(FIXTURES / "expected.npz"), str(tmp_path / "model"), repr(RECORDED_ATOL)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The flat-layout copy shipped inside the model, not this checkout.
    assert str(tmp_path / "model") in result.stdout.strip().splitlines()[-1]
