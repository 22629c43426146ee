"""Ctrl-C and SIGTERM: one signal stops a process cleanly, whatever else arrives.

The first SIGINT or SIGTERM raises `KeyboardInterrupt` in the main thread, so
running trials close their MLflow runs as KILLED and their Optuna trials as
interrupted (resumable). Later signals are ignored: a second Ctrl-C, or the
terminal's SIGINT arriving beside a forwarded SIGTERM, must not cut that clean-up
short. A process that does not finish it within `SHUTDOWN_GRACE` is killed by its
parent (workers) or, failing that, by the user.
"""

from __future__ import annotations

import signal
import sys
import threading

SHUTDOWN_GRACE = 10.0  # seconds a worker gets to close its runs after being told to stop
SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVERY_DELAY = 0.05  # seconds before a stop lost in a finalizer is raised again

_stopped_by: int | None = None
_unraisable_hook = sys.unraisablehook


def _stop(signum, frame):
    global _stopped_by
    for each in SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    _stopped_by = signum
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _stop_again(unraisable) -> None:
    """A stop raised inside a finalizer (a weakref callback run by the garbage collector)
    cannot propagate: Python prints it as "Exception ignored" and goes on, and with
    signals then ignored the process would never stop. Deliver the same signal again,
    once the finalizer has returned, so that it is raised in the main thread's own code."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _stopped_by is not None:
        signal.signal(_stopped_by, _stop)
        # After a moment (finalizers return in microseconds), to the main thread itself,
        # so that a blocking call there (a sleep) is interrupted too.
        main = threading.main_thread().ident
        threading.Timer(REDELIVERY_DELAY, signal.pthread_kill, (main, _stopped_by)).start()
        return
    _unraisable_hook(unraisable)


def stop_on_signals() -> None:
    """Makes the first SIGINT/SIGTERM a `KeyboardInterrupt`; call from the main thread."""
    sys.unraisablehook = _stop_again
    for each in SIGNALS:
        signal.signal(each, _stop)
