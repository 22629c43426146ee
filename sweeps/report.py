"""Rebuild a study's report: `python sweeps/report.py --study NAME`, the same as `reuse-nets report`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reuse_nets.commands import common, report

if __name__ == "__main__":
    common.exit_with(common.main_guard(report.main))
