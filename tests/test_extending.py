"""Adding a strategy with an option of its own touches three files, as the README says.

The test copies the project, applies the README's three edits (a block class in
nn/layers.py, a registry line in nn/models.py, a config field in design/trial_config.py), and runs a
real study with the new strategy through Optuna, MLflow and TFDS.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import fashion_mnist_manual_dir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# (file, anchor line, text inserted after it); None: appended at the end.
EDITS = {
    "reuse_nets/nn/layers.py": (
        None,
        '''

@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledSkipBlock(ReuseBlock):
    """Toy reuse: `f(x) + skip_scale * mean(reused)`, a scalar skip per example."""

    def __init__(self, units, skip_scale=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.skip_scale = float(skip_scale)

    def combine(self, h, reused):
        skip = ops.mean(ops.cast(reused, h.dtype), axis=-1, keepdims=True)
        return ops.add(h, ops.multiply(skip, self.skip_scale))

    def get_config(self):
        return {**super().get_config(), "skip_scale": self.skip_scale}
''',
    ),
    "reuse_nets/nn/models.py": (
        '    "masked": Strategy("MaskedReuseBlock", ("input", "stem"), ("keep_ratio", "learned_mask"), _masked_options),\n',
        '    "scaled": Strategy("ScaledSkipBlock", ("input", "previous"), ("skip_scale",),\n'
        '                       lambda index, options: {"skip_scale": options["skip_scale"]}),\n',
    ),
    "reuse_nets/design/trial_config.py": (
        "    learned_mask: bool = False  # masked: trainable gate instead of a fixed mask\n",
        "    skip_scale: float = 1.0  # scaled: weight of the reused input's mean\n",
    ),
}

TOY_STUDY = """
description: A toy strategy, compared with plain.
base:
  dataset: {name: fashion_mnist, train_split: "train[:1000]", validation_split: "train[50000:50500]", test_split: "test[:500]"}
  epochs: 1
  width: 16
  skip_scale: 0.25
compare:
  strategy: [plain, scaled]
  depth: [2]
"""


def test_a_new_strategy_with_its_own_option_runs_through_a_study(tmp_path):
    copy = tmp_path / "project"
    for part in ("reuse_nets", "sweeps", "experiments"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name, (anchor, text) in EDITS.items():
        path = copy / name
        source = path.read_text()
        if anchor is None:
            source += text
        else:
            assert source.count(anchor) == 1, f"the README's anchor line is gone from {name}: {anchor!r}"
            source = source.replace(anchor, anchor + text)
        path.write_text(source)
    (copy / "experiments" / "toy.yaml").write_text(TOY_STUDY)
    work = tmp_path / "work"
    work.mkdir()
    tracking = f"sqlite:///{work}/mlflow.db"
    command = [
        sys.executable,
        str(copy / "sweeps" / "run.py"),
        "--study",
        "toy",
        "--manual-dir",
        fashion_mnist_manual_dir(),
        "--storage",
        f"sqlite:///{work}/optuna.db",
        "--tracking-uri",
        tracking,
    ]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "study toy: complete" in result.stdout

    client = mlflow.MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("toy")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`reuse_nets.phase` = 'final'")
    by_strategy = {run.data.params["strategy"]: run for run in runs}
    assert set(by_strategy) == {"plain", "scaled"}
    scaled = by_strategy["scaled"]
    assert scaled.info.status == "FINISHED"
    assert scaled.data.params["skip_scale"] == "0.25"
    assert scaled.data.tags["reuse_nets.cell"] == "strategy=scaled,depth=2"
    # The option reached the blocks: the logged model's blocks are ScaledSkipBlocks with it.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import mlflow; from reuse_nets.store import tracking;"
        "mlflow.set_tracking_uri(sys.argv[2]); m = tracking.load_logged_model(sys.argv[3]);"
        "b = m.get_layer('block_02'); print(type(b).__name__, b.skip_scale)"
    )
    model_uri = scaled.data.tags["reuse_nets.model_uri"]
    loaded = subprocess.run(
        [sys.executable, "-c", probe, str(copy), tracking, model_uri],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "ScaledSkipBlock 0.25"
