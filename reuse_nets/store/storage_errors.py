"""Which failures are a storage's passing trouble, not a trial's own result.

A locked SQLite database, a dropped database connection or a tracking server
that does not answer for a moment say nothing about the trial: such a trial is
*lost*, like one whose process died, and its slot is retried (with a growing
pause, at most `execution.max_retry` times) instead of counting as an error.

A full disk is not passing trouble, though SQLAlchemy reports SQLite's "database
or disk is full" with the same type as a locked database: retrying would only meet
it again. It stops the study instead (`runtime.disk`).
"""

from __future__ import annotations

from reuse_nets.runtime import disk

BACKOFF_BASE = 2.0  # seconds before the first retry; doubled per lost attempt of a slot
BACKOFF_MAX = 60.0
# Phrases of transient trouble in errors that only carry a message (MLflow wraps
# SQLAlchemy's errors in its own exception type).
TRANSIENT_PHRASES = (
    "database is locked",
    "could not connect to server",
    "connection refused",
    "server closed the connection",
    "connection reset",
    "temporarily unavailable",
    "max retries exceeded",
    "read timed out",
)
TRANSIENT_MLFLOW_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")


def is_transient(error: BaseException | None) -> bool:
    """A storage or tracking-server failure that may well not happen again (never a full disk)."""
    if disk.is_disk_full(error):
        return False
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _transient_type(error):
            return True
        if any(phrase in str(error).lower() for phrase in TRANSIENT_PHRASES):
            return True
        error = error.__cause__ or error.__context__
    return False


def _transient_type(error: BaseException) -> bool:
    try:
        import sqlalchemy.exc

        if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DisconnectionError)):
            return True
    except ImportError:
        pass
    try:
        import requests

        if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:
        pass
    code = getattr(error, "error_code", None)  # MlflowException
    return code in TRANSIENT_MLFLOW_CODES


def backoff(lost_attempts: int) -> float:
    """Seconds to wait before retrying a slot that has lost `lost_attempts` attempts."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, lost_attempts - 1))
