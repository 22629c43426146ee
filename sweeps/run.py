"""Run or resume a study: `python sweeps/run.py --study NAME`, the same as `reuse-nets run`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reuse_nets.commands import common, run

if __name__ == "__main__":
    common.exit_with(common.main_guard(run.main))
