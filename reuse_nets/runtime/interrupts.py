"""Ctrl-C and SIGTERM: one signal stops a process cleanly, whatever else arrives.

The first SIGINT or SIGTERM raises `KeyboardInterrupt` in the main thread, so
running trials close their MLflow runs as KILLED and their Optuna trials as
interrupted (resumable). Later signals are ignored: a second Ctrl-C, or the
terminal's SIGINT arriving beside a forwarded SIGTERM, must not cut that clean-up
short. A process that does not finish it within `SHUTDOWN_GRACE` is killed by its
parent (workers) or, failing that, by the user.

A stop is never raised inside a database call (`STORE_MODULES`) or a `held` block:
raised between a write and its commit, it left that transaction open, and SQLite's
write lock held by the frames of its own traceback, so closing the interrupted run
then waited out MLflow's 20 s busy timeout and failed ("database is locked"), past
the grace. It is delivered again a moment later, once the call or block is done.
Raised inside a Python callback of C++ code (TensorFlow's compiled train step), it
may come out as another error; `stopping` tells that it is still the stop.

Once its runs are closed, a stopped process ends at once (`exit_at_once`): Python's
own exit would first tear down every module, TensorFlow's and MLflow's among them,
about 2.5 s of CPU, and more than `SHUTDOWN_GRACE` on a loaded machine, where a
worker that had closed everything was then killed, and the sweep took over 15 s to end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

SHUTDOWN_GRACE = 10.0  # seconds a worker gets to close its runs after being told to stop
SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVERY_DELAY = 0.05  # seconds before a stop lost in a finalizer, or held back, is raised again
INTERRUPTED_EXIT = 130  # exit code of a process stopped by a signal, its runs closed (128 + SIGINT)
# Database clients and the stores built on them: a stop is held back while one runs.
STORE_MODULES = ("sqlalchemy", "sqlite3", "alembic", "psycopg2", "pymysql", "mlflow.store", "optuna.storages")

_stopped_by: int | None = None
_held = 0  # `held` blocks the main thread is in
_unraisable_hook = sys.unraisablehook


def _stop(signum, frame):
    global _stopped_by
    if _stopped_by is None:
        _stopped_by = signum
    if _held or _in_store_call(frame):
        _deliver_again(signum)  # the handler stays: a second signal meanwhile is held back the same way
        return
    for each in SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt(f"stopped by {signal.Signals(_stopped_by).name}")


def _in_store_call(frame) -> bool:
    """Whether `frame`, or one of its callers, is code of a database client (`STORE_MODULES`)."""
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        if any(module == name or module.startswith(name + ".") for name in STORE_MODULES):
            return True
        frame = frame.f_back
    return False


def _deliver_again(signum: int) -> None:
    """Sends `signum` to the main thread after REDELIVERY_DELAY, so that a blocking call
    there (a sleep) is interrupted too."""
    main = threading.main_thread().ident
    timer = threading.Timer(REDELIVERY_DELAY, signal.pthread_kill, (main, signum))
    timer.daemon = True  # an exit meanwhile needs no more signals
    timer.start()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Holds a stop back while the block runs: it is raised a moment after the block ends.

    For work a stop must not split, e.g. creating a run and reaching the code that
    closes it.
    """
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1


def stopping() -> bool:
    """Whether a stop signal reached this process (raised, or held back to be raised)."""
    return _stopped_by is not None


def exit_at_once(code: int = INTERRUPTED_EXIT) -> NoReturn:
    """Ends the process with `code` now, skipping Python's teardown of its modules.

    For a process whose stop is handled: its runs and trials closed (every store
    write is synchronous), its message printed. Output still buffered is flushed.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


def _stop_again(unraisable) -> None:
    """A stop raised inside a finalizer (a weakref callback run by the garbage collector)
    cannot propagate: Python prints it as "Exception ignored" and goes on, and with
    signals then ignored the process would never stop. Deliver the same signal again,
    once the finalizer has returned, so that it is raised in the main thread's own code."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _stopped_by is not None:
        signal.signal(_stopped_by, _stop)
        _deliver_again(_stopped_by)  # after a moment: finalizers return in microseconds
        return
    _unraisable_hook(unraisable)


def stop_on_signals() -> None:
    """Makes the first SIGINT/SIGTERM a `KeyboardInterrupt`; call from the main thread."""
    sys.unraisablehook = _stop_again
    for each in SIGNALS:
        signal.signal(each, _stop)
