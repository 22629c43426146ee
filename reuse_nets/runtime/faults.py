"""Fault injection for the reliability tests: SIGKILL, or a full disk, at a named point.

`REUSE_NETS_KILL_AT=POINT[@TEXT]` kills the process that reaches POINT in a
context whose description contains TEXT (e.g. a cell key), with SIGKILL, as the
out-of-memory killer would: no clean-up runs. Points: see `POINTS`.

`REUSE_NETS_DISK_FULL_AT=WRITE[@TEXT]` makes a write fail as on a full disk. A file
write (`WRITE_POINTS`) whose context contains TEXT raises OSError(ENOSPC), each time
it is reached. A database (`DATABASES`) is full from the first point of `POINTS`
whose context contains TEXT on: every later write statement to that SQLite file, from
any thread, fails with SQLite's own "database or disk is full", raised through
SQLAlchemy and the library above it as a real one would be.

Unset (always, outside those tests) a point or write costs one environment lookup each.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
from pathlib import Path

ENV = "REUSE_NETS_KILL_AT"
POINTS = {
    "data": "the dataset is prepared and loaded, before anything is written",
    "trial": "a trial's MLflow run is open, before training starts",
    "epoch": "an epoch ended and was logged; the trial is mid-training",
    "model": "training ended, before the model is logged",
    "report": "both phases are done, before the report is written",
}

DISK_FULL_ENV = "REUSE_NETS_DISK_FULL_AT"
WRITE_POINTS = {  # the context TEXT is matched against, in brackets
    "checkpoint": "a trial's epoch checkpoint, its temporary file just opened (`epoch N`)",
    "config": "a trial run's config.yaml artifact (the run's name)",
    "model": "a trial run's model artifact, after the model was saved locally (the run's name)",
    "report": "the report's report.md, written but not yet in place (the study's name)",
    "html": "the report's report.html, written but not yet in place (the study's name)",
}
DATABASES = {
    "mlflow.db": "the MLflow tracking store's SQLite file",
    "optuna.db": "the Optuna storage's SQLite file",
}
WRITE_STATEMENTS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "ALTER", "DROP")
_full_databases: set[str] = set()


def point(name: str, context: str = "") -> None:
    """Dies here if `REUSE_NETS_KILL_AT` names this point (and its text is in `context`);
    fills the database `REUSE_NETS_DISK_FULL_AT` names from here on, if its text is in `context`."""
    full = os.environ.get(DISK_FULL_ENV)
    if full:
        database, _, text = full.partition("@")
        if database in DATABASES and text in context:
            _fill(database)
    elif _full_databases:  # a process that runs studies one after another, unset since
        _full_databases.clear()
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    where, _, text = wanted.partition("@")
    if where == name and text in context:
        os.kill(os.getpid(), signal.SIGKILL)


def disk_full(name: str, context: str = "", path=None) -> None:
    """Raises OSError(ENOSPC) for `path` if `REUSE_NETS_DISK_FULL_AT` names this file write."""
    wanted = os.environ.get(DISK_FULL_ENV)
    if not wanted:
        return
    where, _, text = wanted.partition("@")
    if where == name and text in context:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path) if path is not None else None)


def _fill(database: str) -> None:
    """From now on, every write statement to the SQLite file named `database` fails as on a full disk."""
    import sqlalchemy

    if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "before_cursor_execute", _refuse_writes):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", _refuse_writes)
    _full_databases.add(database)


def _refuse_writes(connection, cursor, statement: str, parameters, context, executemany) -> None:
    # Only while the variable still names the database: a test may run several studies in one process.
    database = Path(connection.engine.url.database or "").name
    if database not in _full_databases or os.environ.get(DISK_FULL_ENV, "").partition("@")[0] != database:
        return
    if statement.lstrip().upper().startswith(WRITE_STATEMENTS):
        # What SQLite raises on a full disk (SQLITE_FULL); SQLAlchemy wraps it as it would a real one.
        raise sqlite3.OperationalError("database or disk is full")
