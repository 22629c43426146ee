"""Measure training speed and the framework's cost: `python sweeps/benchmark.py`, the same as `reuse-nets benchmark`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reuse_nets.bench import command
from reuse_nets.commands import common

if __name__ == "__main__":
    common.exit_with(common.main_guard(command.main))
