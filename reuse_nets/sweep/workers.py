"""`--workers` processes: start them, watch them, stop them cleanly.

Each runs `study_run.worker_main`: it joins the study run and runs the phase's
waiting trials.

Workers share the Optuna storage (which hands each waiting trial to exactly one
process) and the parent's deadline (`time.monotonic` is system-wide). They are
spawned, never forked: TensorFlow's threads do not survive a fork.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import sys
import time
from collections.abc import Callable

from reuse_nets.errors import DiskFull, SweepError
from reuse_nets.runtime.interrupts import SHUTDOWN_GRACE

PROGRESS_POLL = 2.0  # seconds between the parent's counts of finished trials
INTERRUPTED_EXIT = 130  # a worker that stopped on a signal, its trial closed cleanly
DISK_FULL_EXIT = 28  # a worker stopped by a full disk (ENOSPC's number); it sent its message first


def run_workers(target: Callable, args_of: Callable[[int], tuple], count: int, poll: Callable[[], None]) -> None:
    """Runs `target(*args_of(i), stops)` in worker processes i = 1..count until they exit.

    Calls `poll()` every PROGRESS_POLL s. Raises SweepError when every worker failed
    with an error of its own (a bug), not when one was killed by a signal. A worker
    stopped by a full disk puts its `DiskFull` message in `stops` and exits with
    DISK_FULL_EXIT: the others are stopped too, and that message raised here, once.
    """
    context = multiprocessing.get_context("spawn")
    stops = context.SimpleQueue()
    processes = [context.Process(target=target, args=(*args_of(i + 1), stops), daemon=False) for i in range(count)]
    for process in processes:
        process.start()
    try:
        while alive := [p.sentinel for p in processes if p.is_alive()]:
            multiprocessing.connection.wait(alive, timeout=PROGRESS_POLL)
            poll()
            if any(p.exitcode == DISK_FULL_EXIT for p in processes):
                stop_workers(processes)  # the others would meet the same disk: their trials close, resumable
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        stop_workers(processes)
        raise
    if any(p.exitcode == DISK_FULL_EXIT for p in processes):
        raise DiskFull(stops.get() if not stops.empty() else "disk full: a worker could not write")
    failed = [p.exitcode for p in processes if p.exitcode]
    # A worker killed by a signal (the OOM killer's SIGKILL) lost its trial: that trial's
    # heartbeat goes stale and its slot is retried, up to execution.max_retry times. A
    # worker that exited with an error of its own (exit code > 0) points at a bug.
    if len(failed) == len(processes) and all(code > 0 and code != INTERRUPTED_EXIT for code in failed):
        raise SweepError(f"all {len(processes)} workers failed (exit codes {failed}); see their output above")
    if failed:
        print(f"warning: {len(failed)} worker(s) exited with codes {failed}", file=sys.stderr)


def stop_workers(processes) -> None:
    """Asks every worker to stop (SIGTERM), gives them time to close their runs, then kills."""
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: a KeyboardInterrupt in the worker, as Ctrl-C would be
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            # Its trial is left RUNNING; its heartbeat goes stale and the next run retries it.
            process.kill()
            process.join()
