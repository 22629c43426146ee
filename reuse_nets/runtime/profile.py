"""Where a process's wall time goes, by named section: the benchmark's study profile.

Off (each call a dictionary lookup) unless the environment variable `REUSE_NETS_PROFILE`
names a file prefix; then every section's *self* time (its time minus the time of
sections opened inside it) accumulates, and the process writes
`{prefix}.{pid}.json` when it exits. `REUSE_NETS_PROFILE_T0`, the wall-clock
time the command was started at, lets `started()` record the process start-up.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections import defaultdict

ENV = "REUSE_NETS_PROFILE"
START_ENV = "REUSE_NETS_PROFILE_T0"
PROCESS_START = "process start"

_totals: defaultdict[str, float] = defaultdict(float)
_stack: list[list] = []  # [name, started, seconds spent in nested sections]


def enabled() -> bool:
    return ENV in os.environ


def begin(name: str) -> None:
    if enabled():
        _stack.append([name, time.perf_counter(), 0.0])


def end(name: str) -> None:
    """Closes section `name`, and any section an exception left open inside it."""
    if not enabled() or all(entry[0] != name for entry in _stack):
        return
    while True:
        opened, started, nested = _stack.pop()
        elapsed = time.perf_counter() - started
        _totals[opened] += elapsed - nested
        if _stack:
            _stack[-1][2] += elapsed
        if opened == name:
            return


@contextlib.contextmanager
def section(name: str):
    begin(name)
    try:
        yield
    finally:
        end(name)


def started(command: bool = True) -> None:
    """Called first thing by a command (and by a `--workers` process, `command=False`):
    writes the totals when the process exits; a command also records the seconds since
    `REUSE_NETS_PROFILE_T0` (interpreter and imports), which a worker inherits but did
    not start at."""
    if enabled():
        if command and START_ENV in os.environ:
            _totals[PROCESS_START] += time.time() - float(os.environ[START_ENV])
        atexit.register(_write)


def totals() -> dict[str, float]:
    return dict(_totals)


def _write() -> None:
    with open(f"{os.environ[ENV]}.{os.getpid()}.json", "w", encoding="utf-8") as file:
        json.dump({"pid": os.getpid(), "sections": totals()}, file)
