"""Register a study's models: `python sweeps/register.py --study NAME`, the same as `reuse-nets register`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reuse_nets.commands import common, register

if __name__ == "__main__":
    common.exit_with(common.main_guard(register.main))
