"""A full disk: recognised in every shape it is reported in, named, and never left half-written.

A disk that fills while a study runs stops the study like an interrupt: one line
naming what could not be written and its filesystem (`errors.DiskFull`), the
trial's slot left to be run again once space is freed. It is neither a passing
storage error to retry (`store.storage_errors`) nor the trial's own result.
Libraries report it as an OSError (ENOSPC, EDQUOT), as SQLite's "database or disk
is full" wrapped by SQLAlchemy, Optuna or MLflow, as PostgreSQL's "could not
extend file", or as the OS's text inside another error (h5py).

Files the project writes itself (checkpoints, reports) go to a temporary name
first and replace the old file only once whole (`write_atomically`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from reuse_nets.errors import DiskFull
from reuse_nets.runtime import faults

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# A database's own words for it: SQLite (through SQLAlchemy, Optuna and MLflow), PostgreSQL.
DATABASE_FULL_PHRASES = ("database or disk is full", "could not extend file")
# The OS's words, in errors that carry only a message (h5py, MLflow's re-raised errors).
FILE_FULL_PHRASES = ("no space left on device", "disk quota exceeded")
# The libraries whose stores a database error can come from; the innermost frame of theirs decides.
STORE_LIBRARIES = {"optuna": "the Optuna storage", "mlflow": "the MLflow tracking store"}
RESUME_HINT = "free space there, then re-run the same command to resume"


def is_disk_full(error: BaseException | None) -> bool:
    """`error`, or one it was raised from or during, says that a disk or database is full."""
    return any(_says_full(each) for each in _chain(error))


def _says_full(error: BaseException) -> bool:
    if isinstance(error, DiskFull) or (isinstance(error, OSError) and error.errno in FULL_ERRNOS):
        return True
    text = str(error).lower()
    return any(phrase in text for phrase in (*DATABASE_FULL_PHRASES, *FILE_FULL_PHRASES))


def _chain(error: BaseException | None) -> list[BaseException]:
    """`error` and every exception it was raised from or while handling, outermost first."""
    found: list[BaseException] = []
    while error is not None and all(error is not seen for seen in found):
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


def describe(
    error: BaseException, *, place: str | None = None, path=None, optuna_storage: str | None = None
) -> DiskFull:
    """The `DiskFull` that a disk-full `error` stops the study with.

    A database's "full" names the store of the library that raised it (its URL); a
    file's names `place` (what the caller was writing, e.g. "the report folder X",
    whose filesystem `path` is on) or else the file the OSError names. A `DiskFull`
    already in the chain is returned as it is.
    """
    chain = _chain(error)
    for each in chain:
        if isinstance(each, DiskFull):
            return each
    if any(phrase in str(each).lower() for each in chain for phrase in DATABASE_FULL_PHRASES):
        library = _store_library(chain)
        if library is not None:
            url = optuna_storage if library == "optuna" else _tracking_uri()
            return _full(f"{STORE_LIBRARIES[library]} {url or ''}".rstrip(), local_path(url) if url else None)
        if place is None:
            return _full("a database", None)
    named = _named_file(chain)
    if place is not None:
        return _full(place, path if path is not None else named)
    return _full(os.fspath(named) if named else "a file", named)


def _full(place: str, path) -> DiskFull:
    return DiskFull(f"disk full: could not write {place}{_filesystem(path)}; {RESUME_HINT}")


def _store_library(chain: list[BaseException]) -> str | None:
    """Optuna or MLflow: whose code is innermost in the tracebacks, from the innermost exception out."""
    for error in reversed(chain):
        frames = []
        traceback = error.__traceback__
        while traceback is not None:
            frames.append(traceback.tb_frame.f_globals.get("__name__", ""))
            traceback = traceback.tb_next
        for module in reversed(frames):
            library = module.partition(".")[0]
            if library in STORE_LIBRARIES:
                return library
    return None


def _tracking_uri() -> str | None:
    mlflow = sys.modules.get("mlflow")  # only ever asked after MLflow wrote (or failed to)
    return mlflow.get_tracking_uri() if mlflow is not None else None


def _named_file(chain: list[BaseException]) -> Path | None:
    """The file a full disk refused, as an OSError names it (a copy's destination first)."""
    for error in chain:
        if isinstance(error, OSError):
            name = error.filename2 or error.filename
            if name:
                return Path(os.fsdecode(name))
    return None


def local_path(location: str) -> Path | None:
    """The local file or folder a store or artifact URL (or a plain path) names; None for a server's."""
    if location.startswith("sqlite:///"):
        # sqlite:///relative.db, sqlite:////absolute.db (a fourth slash)
        return Path(location.removeprefix("sqlite:///").partition("?")[0])
    scheme = urllib.parse.urlparse(location).scheme
    if scheme == "file":
        return Path(urllib.parse.urlparse(location).path)
    return Path(location) if not scheme else None  # mlflow-artifacts:, s3:, postgresql:, http: ...


def _filesystem(path) -> str:
    """' (filesystem MOUNT, N free)' for a local path; '' where it cannot be told."""
    if path is None:
        return ""
    try:
        existing = Path(os.path.abspath(path))
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        mount = existing
        while not os.path.ismount(mount):
            mount = mount.parent
        free = shutil.disk_usage(existing).free
    except OSError:
        return ""
    return f" (filesystem {mount}, {_size(free)} free)"


def _size(count: int) -> str:
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"


@contextlib.contextmanager
def guard(place: str | None = None, path=None, optuna_storage: str | None = None) -> Iterator[None]:
    """Turns a full disk met inside the block into `DiskFull`; other errors pass unchanged.

    `place` and `path`: what the block writes (a file's error then names it);
    `optuna_storage`: the URL to name if the Optuna storage is the one that is full.
    """
    try:
        yield
    except Exception as error:
        if isinstance(error, DiskFull) or not is_disk_full(error):
            raise
        raise describe(error, place=place, path=path, optuna_storage=optuna_storage) from error


def write_atomically(path: Path, write: Callable[[Path], object], point: str | None = None, context: str = "") -> None:
    """Writes `path` through `write(temporary)`, then renames it into place.

    A full disk (or any failure) leaves the previous file whole, or none, and no
    temporary behind. `point`: the fault-injection name of this write (`faults.disk_full`).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: writers never share one
    try:
        write(temporary)
        if point is not None:
            faults.disk_full(point, context, temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_text(path: Path, text: str, point: str | None = None, context: str = "") -> None:
    """`path.write_text(text)`, whole or not at all (`write_atomically`)."""
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), point, context)


def quiet_in_threads() -> None:
    """A background thread that dies of a full disk (Optuna's heartbeat) prints no traceback:
    the main thread meets the same disk at its next write and stops with one line."""
    previous = threading.excepthook
    if getattr(previous, "quiet_on_full_disk", False):
        return

    def hook(args) -> None:
        if not is_disk_full(args.exc_value):
            previous(args)

    hook.quiet_on_full_disk = True  # type: ignore[attr-defined]
    threading.excepthook = hook
