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

SHUTDOWN_GRACE = 10.0  # seconds a worker gets to close its runs after being told to stop
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop(signum, frame):
    for each in SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def stop_on_signals() -> None:
    """Makes the first SIGINT/SIGTERM a `KeyboardInterrupt`; call from the main thread."""
    for each in SIGNALS:
        signal.signal(each, _stop)
