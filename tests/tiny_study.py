"""One finished tiny tuned study, shared by the test files that only read it.

`tests/studies/tiny_tuned.yaml` (2 cells x 2 tuning trials, then 2 cells x 1 final
seed) is run through the real entry point (`sweeps/run.py`, in a subprocess) into
SQLite stores in a folder of pytest's session temporary directory. It runs once per
pytest session: the second test file that asks for it finds it finished.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import fashion_mnist_manual_dir

from reuse_nets.design import study_files
from reuse_nets.design.study_spec import StudySpec

ROOT = Path(__file__).resolve().parents[1]
STUDY_FILE = ROOT / "tests" / "studies" / "tiny_tuned.yaml"
FOLDER = "tiny_tuned_study"  # under pytest's session temporary directory
DONE_MARKER = "FINISHED"  # written once the runner exited cleanly
RUN_TIMEOUT = 300  # seconds; it takes 40-80 on a 2-core machine, more when busy


@dataclasses.dataclass(frozen=True)
class TinyStudy:
    directory: Path  # the runner's working directory: stores and reports/ are here
    spec: StudySpec

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.directory}/optuna.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.directory}/mlflow.db"

    @property
    def report_dir(self) -> Path:
        return self.directory / "reports" / self.spec.name


def finished_study(tmp_path_factory) -> TinyStudy:
    """The finished tiny study of this pytest session, run now if no test ran it yet."""
    directory = tmp_path_factory.getbasetemp() / FOLDER
    study = TinyStudy(directory, study_files.load_study(os.fspath(STUDY_FILE)))
    if (directory / DONE_MARKER).exists():
        return study
    shutil.rmtree(directory, ignore_errors=True)  # a run that failed earlier in this session
    directory.mkdir()
    command = [
        sys.executable,
        os.fspath(ROOT / "sweeps" / "run.py"),
        "--study",
        os.fspath(STUDY_FILE),
        "--manual-dir",
        fashion_mnist_manual_dir(),
        "--storage",
        study.storage,
        "--tracking-uri",
        study.tracking_uri,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # the command line says where
    proc = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (directory / DONE_MARKER).touch()
    return study
