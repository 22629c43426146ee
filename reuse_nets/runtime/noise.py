"""Third-party chatter kept out of our output; errors still surface.

Hidden: TensorFlow's C++ start-up lines and retracing warnings, TFDS progress bars
and absl INFO/WARNING lines, alembic's "Creating initial MLflow database tables",
MLflow's "View run ... at" prints and git warnings, Optuna's "Trial N finished"
logs. Every logger keeps its ERROR level, and failures are Python exceptions.
`quiet_environment` must run before TensorFlow is imported; the command-line
entry points and `--workers` processes call these functions, library users none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

ENVIRONMENT = {
    # TF 2.21's tf.data logs a harmless op-attribute mismatch at error level; real
    # failures surface as Python exceptions.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",  # offline: no `pip install --dry-run` probe
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # per-file download bars in a sweep's output
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # MLflow 3's "View run NAME at: URL" on end_run
    "GIT_PYTHON_REFRESH": "quiet",  # no git binary: MLflow records no commit, without a warning
    "MLFLOW_LOGGING_LEVEL": "ERROR",  # MLflow sets its loggers up on import, from this
}
LOGGERS = ("tensorflow", "absl", "alembic", "mlflow", "optuna", "git")
# Loggers that print, traceback and all, an error their library then raises to us (MLflow's
# SQL store re-raises every database error as an MlflowException): we report it once, ourselves.
RERAISING_LOGGERS = ("mlflow.store.db.utils",)
# What TensorFlow's C++ libraries print on import whatever TF_CPP_MIN_LOG_LEVEL says.
TF_IMPORT_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


@contextlib.contextmanager
def environment(**values: str):
    """Sets environment defaults for the duration of a block (variables already set win)."""
    added = [key for key in values if key not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def quiet_environment() -> None:
    """Environment defaults and logger levels; before TensorFlow is imported."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # One process trains many models, so e.g. tf.function retracing warnings are expected.
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in RERAISING_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def quiet_libraries() -> None:
    """Quiets TFDS, absl and Optuna (which set their own levels when imported).

    TensorFlow is not imported here: its oneDNN setting is fixed at import, and a
    reproduction must choose it first (`execution.pin`).
    """
    import absl.logging
    import optuna
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    absl.logging.set_verbosity(absl.logging.ERROR)
    # Failed trials are reported by the objective itself; Optuna would add a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def import_tensorflow() -> None:
    """`import tensorflow`, with what its C++ side writes to stderr filtered, not lost.

    The two start-up lines come from C++ before logging is configured, so only the
    file descriptor can hold them back; every other line is written out afterwards.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if line.strip() and not any(noise in line for noise in TF_IMPORT_NOISE)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
