"""The `reuse-nets` command: `reuse-nets COMMAND [ARGS]`, one module per command.

`reuse-nets run ...` and `python sweeps/run.py ...` run the same code
(`reuse_nets.commands.run.main`). This package is the top layer: it imports the
library, and nothing in the library imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from reuse_nets.commands import common

# name: what it does, for `reuse-nets --help`; the module reuse_nets.commands.<name>
# unless MODULES names another (list: list_studies, since a submodule named `list`
# would shadow the builtin here; benchmark: the bench package, which stands above
# the commands it measures).
COMMANDS = {
    "run": "run or resume a study (tuning, final runs, report)",
    "report": "rebuild a study's ablation report from the Optuna and MLflow stores",
    "reproduce": "re-run logged runs and check them against the originals",
    "register": "register each cell's best final model in MLflow's model registry",
    "list": "list the studies in experiments/",
    "benchmark": "measure training speed (e.g. the cost of gradient-norm tracking)",
}
MODULES = {"list": "reuse_nets.commands.list_studies", "benchmark": "reuse_nets.bench.command"}


def _parser() -> common.ArgumentParser:
    width = max(map(len, COMMANDS))
    table = "\n".join(f"  {name:{width}s}  {description}" for name, description in COMMANDS.items())
    parser = common.ArgumentParser(
        prog="reuse-nets",
        usage="reuse-nets COMMAND [ARGS] (reuse-nets COMMAND --help for its options)",
        description="Input-reuse ablations: Optuna sweeps of Keras models, tracked in MLflow.",
        epilog=f"commands:\n{table}",
    )
    parser.add_argument("command", metavar="COMMAND", choices=COMMANDS, help=argparse.SUPPRESS)
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def command_module(name: str) -> str:
    """The module whose `main` runs command `name`."""
    return MODULES.get(name, f"reuse_nets.commands.{name}")


def main(argv=None) -> int:
    """`reuse-nets COMMAND ARGS...`: runs the command; its exit code."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    common.PROG = f"reuse-nets {args.command}"
    # Imported only now: each command imports what it needs.
    module = importlib.import_module(command_module(args.command))
    interrupted = getattr(module, "INTERRUPTED", common.SWEEP_INTERRUPTED)
    code = common.main_guard(lambda: module.main(args.args), interrupted)
    if argv is None:  # the process's own command line (the `reuse-nets` script): its exit is ours
        common.exit_with(code)
    return code
