"""Shared command-line plumbing of the sweeps/ scripts: quiet TF, one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Before TensorFlow is imported anywhere: keep its C++ log chatter out of the output
# (TF 2.21's tf.data logs a harmless op-attribute mismatch at error level; real
# failures still surface as Python exceptions).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
# One process trains many models, so tf.function retracing warnings are expected noise.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Under `mlflow run`, MLflow hands its project run to us through MLFLOW_RUN_ID, which
# every `mlflow.start_run()` would then resume. Our runs are our own: take the id
# out of the environment and only tag the project run with what we made.
PROJECT_RUN_ID = os.environ.pop("MLFLOW_RUN_ID", None)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad command line reported like every other user error.

    One `error: ...` line on stderr and exit code 2, where argparse would print its
    usage block and `PROG: error: ...`; `--help` still prints the usage.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_data_args(parser) -> None:
    parser.add_argument("--data-dir", help="TFDS data directory (default: TFDS's own)")
    parser.add_argument("--manual-dir", help="folder with the dataset's upstream archives, for offline preparation")
    parser.add_argument("--download", action="store_true", help="let TFDS download data that is not prepared yet")


def add_tracking_args(parser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def data_source(args):
    from reuse_nets.data import DataSource

    # Empty strings mean "not set" (MLproject parameters cannot be omitted).
    return DataSource(data_dir=args.data_dir or None, manual_dir=args.manual_dir or None, download=args.download)


def tag_project_run(tags: dict) -> None:
    """Tags the `mlflow run` project run that launched this script, if any."""
    if PROJECT_RUN_ID:
        import mlflow

        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_tag(PROJECT_RUN_ID, key, str(value))


SWEEP_INTERRUPTED = "interrupted: running trials were closed (MLflow runs KILLED); re-run the same command to resume"


def main_guard(main, interrupted: str = SWEEP_INTERRUPTED) -> int:
    """Runs `main()`; user errors become one line on stderr and exit code 2."""
    from reuse_nets.data import DataError
    from reuse_nets.execution import ExecutionError
    from reuse_nets.reproduce import ReproduceError
    from reuse_nets.optuna_store import SweepError
    from reuse_nets.studies import StudyError

    from reuse_nets import interrupts

    interrupts.stop_on_signals()
    try:
        return main() or 0
    except (StudyError, DataError, SweepError, ReproduceError, ExecutionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
