"""Re-run logged runs: `python sweeps/reproduce.py RUN_ID`, the same as `reuse-nets reproduce`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reuse_nets.commands import common, reproduce

if __name__ == "__main__":
    common.exit_with(common.main_guard(reproduce.main, reproduce.INTERRUPTED))
