"""Optuna plumbing: storage, samplers, pruners, opening studies, handing out slots.

A study runs as several Optuna studies: one per compared cell for tuning (its
own sampler and pruner, so a trial is only ever compared with its own cell) and
one for the final runs. Every planned trial is a *slot*, enqueued once as a
WAITING trial; Optuna hands each waiting trial to exactly one process, so
workers and several runners never run a slot twice, and a slot whose process
died is enqueued again (at most `max_retry` times).
"""

from __future__ import annotations

import json
import time
import warnings

from reuse_nets.design import selection
from reuse_nets.design.selection import Selection
from reuse_nets.design.study_spec import ExecutionSpec, sampler_to_resume
from reuse_nets.errors import SweepError, TrialFailed, first_line
from reuse_nets.names import (
    FAILED_WITH_RESULT,
    IDENTITY_ATTR,
    OUTCOME_ATTR,
    SELECTION_ATTR,
    SLOT_ATTR,
    Outcome,
    TrialState,
)

DEFAULT_STORAGE = "sqlite:///optuna.db"  # in the working directory, beside mlflow.db


_quieted = False


def optuna():
    import optuna as _optuna

    global _quieted
    if not _quieted:
        # Once, not on every call: failed trials are reported by the objective itself,
        # where Optuna would add a traceback. A user may raise the level again after.
        _optuna.logging.set_verbosity(_optuna.logging.ERROR)
        _quieted = True
    return _optuna


STORAGE_ATTEMPTS = 5  # opening a new, empty database from several runners at once


def make_storage(url: str, execution: ExecutionSpec):
    """RDB storage with heartbeats, so that dead trials are detected and retried.

    Runners that open a new, empty PostgreSQL (or MySQL) database at the same
    moment all create Optuna's tables; the server lets one of them win and fails
    the others' `CREATE TABLE` (a unique violation in its catalog), so those try
    again and find the tables made.
    """
    import sqlalchemy.exc

    op = optuna()
    for attempt in range(1, STORAGE_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", op.exceptions.ExperimentalWarning)
                storage = op.storages.RDBStorage(
                    url,
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                    heartbeat_interval=execution.heartbeat_interval,
                    grace_period=execution.grace_period,
                    heartbeat_stale_trial_callback=op.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=execution.max_retry
                    ),
                )
                if _is_sqlite_file(storage.engine.url):
                    _immediate_transactions(storage.engine)
                return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
            # Lost the race to create the schema (duplicate table, type or version row).
            if attempt == STORAGE_ATTEMPTS:
                raise SweepError(f"cannot open Optuna storage {url!r}: {first_line(error)}") from None
            time.sleep(0.2 * attempt)
        except Exception as error:  # SQLAlchemy raises many types for a bad URL or server.
            raise SweepError(f"cannot open Optuna storage {url!r}: {first_line(error)}") from None


def _is_sqlite_file(url) -> bool:
    """A SQLite database in a file, which other processes can open (not `:memory:`)."""
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and "mode=memory" not in str(url)


def _immediate_transactions(engine) -> None:
    """SQLite: every transaction takes the database's write lock as it begins.

    Optuna pops a waiting trial by reading its state and writing RUNNING in one
    transaction, locking the row with `SELECT ... FOR UPDATE`, which SQLite ignores:
    two `--workers` processes could both read WAITING and both run the same trial
    (the loser then failed with "Cannot tell a COMPLETE trial"). `BEGIN IMMEDIATE`
    makes that read-then-write atomic; other processes wait (busy timeout) instead.
    SQLAlchemy's documented recipe: pysqlite must not begin transactions itself.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners are replaced
    # Not carried by pickling: a storage sent to another process (Optuna rebuilds its
    # engine there) lacks these listeners; our workers open their own with make_storage.


STORAGE_CONNECT_TIMEOUT = 10  # seconds: an unreachable database server fails the check at once


def check_storage(url: str) -> None:
    """Refuses a storage URL Optuna cannot open, before anything is written anywhere.

    It parses the URL, loads the database driver and connects once to a server
    (or to an existing SQLite file), and creates nothing: a new SQLite file is
    only checked for its folder. `make_storage` creates the tables later.

    Raises:
        SweepError: not a database URL, no driver for it, a missing folder, or a
            server that cannot be reached or refuses the connection.
    """
    from pathlib import Path

    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception as error:  # ArgumentError, ValueError: not a URL at all
        raise SweepError(
            f"cannot open Optuna storage {url!r}: {first_line(error)}; give a database URL, "
            "e.g. sqlite:///optuna.db or postgresql://user@host/database"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            return
        if database.startswith("file:"):
            # SQLAlchemy keeps the URI's parameters (`mode=ro`) apart from the database.
            options = {k: v for k, v in parsed.query.items() if k != "uri"}
            query = "&".join(f"{k}={v}" for k, v in options.items() if isinstance(v, str))
            _check_writable_sqlite(database + (f"?{query}" if query else ""), shown)
            return
        path = Path(database).expanduser()
        if not path.absolute().parent.is_dir():
            raise SweepError(f"cannot open Optuna storage {shown!r}: folder {path.absolute().parent} does not exist")
        if not path.exists():
            return  # connecting would create it
        _check_writable_sqlite(database, shown)
    connect_args = (
        {"connect_timeout": STORAGE_CONNECT_TIMEOUT} if parsed.get_backend_name() in ("postgresql", "mysql") else {}
    )
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                if parsed.get_backend_name() == "sqlite":
                    connection.exec_driver_sql("PRAGMA schema_version")  # "file is not a database"
        finally:
            engine.dispose()
    except Exception as error:  # a missing driver, an unreachable server, a refused login, ...
        raise SweepError(f"cannot open Optuna storage {shown!r}: {first_line(error)}") from None


def require_existing_sqlite(url: str, what: str) -> None:
    """A SQLite URL must name an existing file: reading must not create an empty store."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # not a database URL: its client reports errors itself
        return
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        from pathlib import Path

        if not Path(database).expanduser().is_file():
            raise SweepError(f"no {what} at {url} (no such file {Path(database).expanduser().absolute()})")


def _check_writable_sqlite(database: str, shown: str) -> None:
    """Refuses an existing SQLite database that cannot be written (read-only file or `mode=ro`).

    Creates a table inside a transaction and rolls it back: nothing stays. A database
    locked by another writer is writable, just busy.
    """
    import sqlite3

    try:
        connection = sqlite3.connect(database, uri=database.startswith("file:"), isolation_level=None, timeout=1)
    except sqlite3.Error as error:
        raise SweepError(f"cannot open Optuna storage {shown!r}: {first_line(error)}") from None
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE reuse_nets_write_check (x)")
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        if "locked" not in str(error) and "busy" not in str(error):
            raise SweepError(f"cannot open Optuna storage {shown!r}: {first_line(error)}") from None
    finally:
        connection.close()


def check_identity(storage, name: str, identity: dict) -> None:
    """Refuses a stored study of this name that was made from a different spec."""
    op = optuna()
    try:
        stored = op.load_study(study_name=name, storage=storage).user_attrs.get(IDENTITY_ATTR)
    except KeyError:
        return  # not created yet
    if stored is not None and stored != json.dumps(identity, sort_keys=True):
        ran = sampler_to_resume(stored, identity)
        if ran is not None:  # e.g. tpe, the sampler of study files that named none until 2026-12-08
            raise SweepError(
                f"Optuna study {name!r} ran with sampler {ran!r}, not {identity['tune']['sampler']['type']!r}; "
                f"to resume it, name it in the study file (tune.sampler.type: {ran}) or --set tune.sampler.type={ran}"
            )
        raise SweepError(
            f"Optuna study {name!r} already exists in this storage with a different spec; "
            "rename the study (--set name=NEW_NAME)"
        )


def open_study(storage, name: str, identity: dict, *, direction: str, sampler, pruner):
    """Creates the Optuna study, or loads it; call `check_identity` first (once per run)."""
    op = optuna()
    study = op.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction=direction, load_if_exists=True
    )
    if IDENTITY_ATTR not in study.user_attrs:
        study.set_user_attr(IDENTITY_ATTR, json.dumps(identity, sort_keys=True))
    # `check_identity` ran before anything was written; a runner of another spec that
    # created this study in the meantime is caught here (one attribute read).
    check_identity(storage, name, identity)
    return study


def load_existing(storage, name: str):
    """A stored study, or None."""
    op = optuna()
    try:
        return op.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def is_finished(trial) -> bool:
    """A trial that produced a result: complete, pruned, or failed with a reason.

    A failed trial without an outcome died or was interrupted and gets retried; so
    does one marked `completed` (it died between recording its result and COMPLETE).
    """
    state = trial.state.name
    return state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        state == TrialState.FAIL and trial.user_attrs.get(OUTCOME_ATTR) in FAILED_WITH_RESULT
    )


def trials_in(study, *states):
    op = optuna()
    return study.get_trials(deepcopy=False, states=tuple(getattr(op.trial.TrialState, s) for s in states))


def slot_trials(study) -> dict[int, list]:
    """Trials by the slot they fill, in trial order."""
    by_slot: dict[int, list] = {}
    for trial in study.get_trials(deepcopy=False):
        if SLOT_ATTR in trial.user_attrs:
            by_slot.setdefault(trial.user_attrs[SLOT_ATTR], []).append(trial)
    return by_slot


def deaths(trials) -> int:
    """Lost attempts at a slot: its process died (FAIL, no outcome, or `completed` but never
    COMPLETE) or a storage error cut it short (`Outcome.TRANSIENT`). All are retried, at most
    `max_retry` times."""
    lost = (Outcome.TRANSIENT, Outcome.COMPLETED)
    return sum(
        1
        for t in trials
        if t.state.name == TrialState.FAIL and t.user_attrs.get(OUTCOME_ATTR, Outcome.TRANSIENT) in lost
    )


def slot_done(trials, max_retry: int) -> bool:
    """A slot with a result, or one that died more often than it may be retried."""
    return any(is_finished(t) for t in trials) or deaths(trials) > max_retry


def open_slots(study, n_slots: int, max_retry: int) -> list[int]:
    """Slots with neither a result nor a live (running or waiting) trial."""
    by_slot = slot_trials(study)
    return [
        slot
        for slot in range(n_slots)
        if not slot_done(by_slot.get(slot, []), max_retry)
        and not any(t.state.name in (TrialState.RUNNING, TrialState.WAITING) for t in by_slot.get(slot, []))
    ]


def pending(study, n_slots: int, max_retry: int) -> int:
    """Slots still without a result (waiting, running, or to be retried)."""
    by_slot = slot_trials(study)
    return sum(1 for slot in range(n_slots) if not slot_done(by_slot.get(slot, []), max_retry))


def enqueue_slots(study, points: list[dict], max_retry: int) -> int:
    """Enqueues every open slot with its fixed parameters; returns how many."""
    slots = open_slots(study, len(points), max_retry)
    for slot in slots:
        study.enqueue_trial(points[slot], user_attrs={SLOT_ATTR: slot}, skip_if_exists=False)
    return len(slots)


def prefer_slots(study, preferred: set[int]) -> None:
    """Makes this `study` object hand out waiting trials of `preferred` slots first.

    Optuna's `ask` takes the first waiting trial it can set RUNNING; this takes the
    same way (the storage's compare-and-set, so no trial runs twice) in another
    order. Only the order changes: every waiting trial is still taken in the end.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage, study_id = study._storage, study._study_id

    def pop_waiting_trial_id() -> int | None:
        waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
        for trial in sorted(waiting, key=lambda t: t.user_attrs.get(SLOT_ATTR) not in preferred):
            try:
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    return trial._trial_id
            except UpdateFinishedTrialError:
                continue
        return None

    # Optuna has no public hook for the order of its trial queue; `ask` calls this.
    study._pop_waiting_trial_id = pop_waiting_trial_id


def claim_slot(trial) -> int:
    """The slot this trial fills; refuses one another trial already owns.

    Runners on several machines may enqueue the same slot at the same time; of
    the trials holding a slot, the lowest-numbered live or finished one runs.
    """
    slot = trial.user_attrs.get(SLOT_ATTR)
    if slot is None:
        # Another worker took the last waiting slot between our check and our ask.
        trial.set_user_attr(OUTCOME_ATTR, Outcome.UNUSED)
        raise TrialFailed("no waiting slot for this trial")
    owners = [
        other.number
        for other in trial.study.get_trials(deepcopy=False)
        if other.user_attrs.get(SLOT_ATTR) == slot
        and other.number != trial.number
        and (other.state.name == TrialState.RUNNING or is_finished(other))
    ]
    if owners and min(owners) < trial.number:
        trial.set_user_attr(OUTCOME_ATTR, Outcome.DUPLICATE)
        raise TrialFailed(f"slot {slot} is already trial {min(owners)}'s")
    return slot


def count_finished_slots(study, n_slots: int) -> int:
    """Slots with a result."""
    by_slot = slot_trials(study)
    return sum(1 for slot in range(n_slots) if any(is_finished(t) for t in by_slot.get(slot, [])))


def stored_selection(study) -> Selection | None:
    """The selection stored on the final-phase study, or None."""
    raw = study.user_attrs.get(SELECTION_ATTR)
    return None if raw is None else selection.from_json(raw)


def store_selection(study, chosen: Selection) -> None:
    """Stores the final phase's selection on its study, once."""
    study.set_user_attr(SELECTION_ATTR, selection.to_json(chosen))
