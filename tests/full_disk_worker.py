"""A stand-in `--workers` process for tests/test_disk_full.py; spawned, so it imports nothing heavy."""

import sys
import time


def stopped_by_a_full_disk(index: int, exit_code: int, message: str, stops) -> None:
    """Worker 1 meets a full disk (says so in `stops`, exits `exit_code`); the others would run on."""
    if index == 1:
        stops.put(message)
        sys.exit(exit_code)
    time.sleep(60)
