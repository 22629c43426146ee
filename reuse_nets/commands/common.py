"""Shared command-line plumbing: a quiet process, one-line errors, common flags.

Every command (`reuse-nets X` and its `python sweeps/X.py` twin) runs through
`main_guard`, which first calls `prepare_process`. Nothing here imports
TensorFlow, MLflow or Optuna, so `--help` and bad command lines stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from reuse_nets.runtime import noise

# Under `mlflow run`, MLflow hands its project run to us through MLFLOW_RUN_ID, which
# every `mlflow.start_run()` would then resume. Our runs are our own: take the id
# out of the environment and only tag the project run with what we made.
PROJECT_RUN_ID: str | None = None
_prepared = False
# What usage and error lines call the program: `reuse-nets run` under the dispatcher,
# else argparse's default, the script's name (`run.py`).
PROG: str | None = None


def prepare_process() -> None:
    """Quiets third-party chatter (`reuse_nets.runtime.noise`) and takes MLFLOW_RUN_ID.

    Before TensorFlow is imported: every command calls it first, via `main_guard`.
    """
    global PROJECT_RUN_ID, _prepared
    if _prepared:
        return
    _prepared = True
    noise.quiet_environment()
    PROJECT_RUN_ID = os.environ.pop("MLFLOW_RUN_ID", None)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad command line reported like every other user error.

    One `error: ...` line on stderr and exit code 2, where argparse would print its
    usage block and `PROG: error: ...`; `--help` still prints the usage.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if PROG:
            kwargs.setdefault("prog", PROG)
        super().__init__(**kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_data_args(parser) -> None:
    parser.add_argument("--data-dir", help="TFDS data directory (default: TFDS's own)")
    parser.add_argument("--manual-dir", help="folder with the dataset's upstream archives, for offline preparation")
    parser.add_argument("--download", action="store_true", help="let TFDS download data that is not prepared yet")


# --set of the commands that act on a study once run (report, register): see `parent_run.ran_spec`.
RAN_SPEC_SET_HELP = (
    "optional: the spec the study ran with (its --set included) is read from its parent run; a --set here may "
    "change only what keeps the study the same, e.g. report.alpha=0.01"
)


def add_overrides_arg(parser, help: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_reports_arg(parser) -> None:
    parser.add_argument("--reports", help="folder to write reports/<study>/ into (default: ./reports)")


def add_tracking_args(parser) -> None:
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
    )


def data_source(args):
    from reuse_nets.train.data import DataSource

    # Empty strings mean "not set" (MLproject parameters cannot be omitted).
    def absolute(path):  # the benchmark runs studies in another working directory
        return os.fspath(Path(path).expanduser().resolve()) if path else None

    return DataSource(data_dir=absolute(args.data_dir), manual_dir=absolute(args.manual_dir), download=args.download)


def tag_project_run(tags: dict) -> None:
    """Tags the `mlflow run` project run that launched this command, if any."""
    if PROJECT_RUN_ID:
        import mlflow

        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_tag(PROJECT_RUN_ID, key, str(value))


SWEEP_INTERRUPTED = "interrupted: running trials were closed (MLflow runs KILLED); re-run the same command to resume"


def is_user_error(error: BaseException) -> bool:
    from reuse_nets.errors import UserError

    return isinstance(error, UserError)


def exit_with(code: int) -> NoReturn:
    """Ends a command's process with `code`, what `main_guard` returned.

    After an interruption, at once (`interrupts.exit_at_once`): its runs are closed and
    its message printed, and Python's teardown of TensorFlow and MLflow would hold the
    process seconds longer, past a scheduler's grace on a loaded machine.
    """
    from reuse_nets.runtime import interrupts

    if code == interrupts.INTERRUPTED_EXIT:
        interrupts.exit_at_once(code)
    sys.exit(code)


def main_guard(main, interrupted: str = SWEEP_INTERRUPTED) -> int:
    """Runs `main()`; user errors become one line on stderr and exit code 2."""
    from reuse_nets.runtime import disk, interrupts

    prepare_process()
    interrupts.stop_on_signals()
    disk.quiet_in_threads()  # a background thread's full disk is the main thread's to report
    try:
        return main() or 0
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return interrupts.INTERRUPTED_EXIT
    except Exception as error:
        if not is_user_error(error):
            raise
        from reuse_nets.errors import redact

        print(redact(f"error: {error}"), file=sys.stderr)  # URLs in errors may carry passwords
        return 2
