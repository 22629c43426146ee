"""Fault injection for the reliability tests: SIGKILL this process at a named point.

`REUSE_NETS_KILL_AT=POINT[@TEXT]` kills the process that reaches POINT in a
context whose description contains TEXT (e.g. a cell key), with SIGKILL, as the
out-of-memory killer would: no clean-up runs. Points: see `POINTS`. Unset (always,
outside those tests) a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "REUSE_NETS_KILL_AT"
POINTS = {
    "data": "the dataset is prepared and loaded, before anything is written",
    "trial": "a trial's MLflow run is open, before training starts",
    "epoch": "an epoch ended and was logged; the trial is mid-training",
    "model": "training ended, before the model is logged",
    "report": "both phases are done, before the report is written",
}


def point(name: str, context: str = "") -> None:
    """Dies here if `REUSE_NETS_KILL_AT` names this point (and its text is in `context`)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    where, _, text = wanted.partition("@")
    if where == name and text in context:
        os.kill(os.getpid(), signal.SIGKILL)
