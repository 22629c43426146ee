"""Study-level MLflow runs: the study's experiment and its parent run.

One experiment per study holds one parent run (found again on resume) with every
trial run nested under it. Closing the runs of trials that died is
`sweep.reconcile.reconcile`'s job.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING

import pydantic
import yaml

from reuse_nets import names
from reuse_nets.design import study_files
from reuse_nets.design.study_spec import StudySpec
from reuse_nets.errors import SweepError, first_line, plain_text
from reuse_nets.names import IDENTITY_TAG, KIND_TAG, NOTE_TAG, STUDY_TAG, Kind, RunStatus
from reuse_nets.store import dataset_inputs, provenance, readback

if TYPE_CHECKING:
    from reuse_nets.train.data import Dataset

STUDY_ARTIFACT = "study.yaml"  # the parent run's resolved spec (`ensure_parent_run`, `ran_spec`)


def check_experiment(spec: StudySpec) -> None:
    """Refuses, before anything is written, an experiment of this name we cannot use.

    Raises:
        SweepError: the tracking server refused the login (`refused_logins`), the
            experiment was deleted (MLflow still holds the name), or it holds
            runs that no reuse-nets study of this name made (a foreign experiment).
    """
    import mlflow

    check_server(mlflow.get_tracking_uri())
    try:
        uri = mlflow.get_tracking_uri()
        with patient_requests(), schema_lock(uri), refused_logins(spec.name, uri):
            client = mlflow.MlflowClient()
            experiment = client.get_experiment_by_name(spec.name)
    except SweepError:
        raise
    except Exception as error:  # an unreachable server, a bad URI, a broken database: nothing written
        raise SweepError(
            f"MLflow tracking store {mlflow.get_tracking_uri()} is unusable: {first_line(error)}"
        ) from None
    if experiment is None:
        return
    if experiment.lifecycle_stage == "deleted":
        raise SweepError(
            f"MLflow experiment {spec.name!r} was deleted but still exists in the tracking store; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or rename the study "
            f"(--set name=NEW_NAME)"
        )
    if experiment.tags.get(STUDY_TAG) == spec.name or find_parent_run(spec, experiment.experiment_id):
        return
    if client.search_runs([experiment.experiment_id], max_results=1, run_view_type=mlflow.entities.ViewType.ALL):
        raise SweepError(
            f"MLflow experiment {spec.name!r} (id {experiment.experiment_id}) holds runs that are not this study's; "
            f"rename the study (--set name=NEW_NAME) or use another tracking store"
        )


# Checking a tracking server: one that does not accept a TCP connection within
# SERVER_CONNECT_TIMEOUT seconds (refused, no route, unknown host) fails at once. One
# that accepts but answers slowly (busy, e.g. under another runner's load) gets
# patience: MLflow's request timeout and retries below, with backoff 2, 4, 8 s: about
# 95 s at most. MLflow's own default (7 retries, 120 s timeout) takes about 4 minutes.
SERVER_CONNECT_TIMEOUT = 5
PATIENT_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
}


def check_server(uri: str) -> None:
    """Refuses an HTTP tracking URI whose server does not accept connections, in seconds.

    Raises:
        SweepError: the host is unknown, refuses the connection or does not answer.
    """
    import socket
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname):
        return  # requests go through a proxy: the server's own address says nothing
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=SERVER_CONNECT_TIMEOUT).close()
    except (OSError, ValueError) as error:
        raise SweepError(
            f"MLflow tracking server {uri} is unreachable: {first_line(error, type(error).__name__)}"
        ) from None


@contextlib.contextmanager
def refused_logins(study: str, uri: str):
    """Turns a refusal of the login by tracking server `uri` (HTTP 401 or 403) into a one-line error.

    A server started with `--app-name basic-auth` answers 401 to a request without a
    valid username and password, and 403 to a user who may not do what was asked
    (e.g. write runs into an experiment where they have READ permission only).

    Raises:
        SweepError: the server refused the login; other errors pass unchanged.
    """
    import mlflow

    try:
        yield
    except mlflow.exceptions.MlflowException as error:
        message = refusal_message(error.get_http_status_code(), uri, study)
        if message is None:
            raise
        raise SweepError(message) from None


def refusal_message(status: int, uri: str, study: str) -> str | None:
    """What a 401 or 403 reply of the tracking server means and how to fix it; None for other statuses."""
    from mlflow.utils.credentials import read_mlflow_creds

    user = read_mlflow_creds().username  # MLFLOW_TRACKING_USERNAME, else ~/.mlflow/credentials
    refused = f"MLflow tracking server {uri} refused the login" + (f" of user {user!r}" if user else "")
    if status == HTTPStatus.UNAUTHORIZED and not user:
        return f"{refused} (HTTP 401): no username given; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    if status == HTTPStatus.UNAUTHORIZED:
        return f"{refused} (HTTP 401): wrong username or password (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)"
    if status == HTTPStatus.FORBIDDEN:
        return (
            f"{refused} (HTTP 403): no EDIT permission on experiment {study!r}; ask the server's admin "
            "for it, or rename the study (--set name=NEW_NAME)"
        )
    return None


@contextlib.contextmanager
def schema_lock(uri: str):
    """Holds an exclusive lock on a SQLite tracking store's folder while MLflow opens it.

    MLflow creates and migrates a new SQLite store's schema on first use, without a
    lock: two runners starting at once on a fresh store fail with "table ... already
    exists" or "duplicate column". The lock is `flock` on the folder itself (released
    when the process ends, however it ends), so it leaves no file behind.
    """
    import fcntl
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    database = urllib.parse.unquote(parts.path)[1:] if parts.scheme == "sqlite" else ""
    folder = os.path.dirname(os.path.abspath(database)) if database and database != ":memory:" else ""
    if not folder or not os.path.isdir(folder):
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


@contextlib.contextmanager
def patient_requests():
    """MLflow HTTP requests made inside wait for a slow server, but not for minutes (`PATIENT_HTTP`)."""
    saved = {name: os.environ.get(name) for name in PATIENT_HTTP}
    os.environ.update(PATIENT_HTTP)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def experiment_id(spec: StudySpec) -> str:
    """The study's MLflow experiment, created if absent (tagged by `describe_experiment`).

    Call `check_experiment` first: this one writes.
    """
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(spec.name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        try:
            experiment_id = client.create_experiment(spec.name)
        except mlflow.exceptions.MlflowException as error:
            # Runners on several machines may create it at once: one wins, the others use it.
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(spec.name)
            assert experiment is not None  # another runner just created it
            experiment_id = experiment.experiment_id
    return experiment_id


def describe_experiment(spec: StudySpec, experiment_id: str) -> None:
    """Marks the experiment as this study's, with its description (after `ensure_parent_run`)."""
    import mlflow

    client = mlflow.MlflowClient()
    _set_experiment_tag(client, experiment_id, STUDY_TAG, spec.name)
    if spec.description:
        _set_experiment_tag(client, experiment_id, NOTE_TAG, plain_text(spec.description))  # the UI renders Markdown


def _set_experiment_tag(client, experiment_id: str, key: str, value: str, attempts: int = 3) -> None:
    """Sets an experiment tag that runners on several machines may set at the same moment.

    MLflow's SQL store adds a new tag with a plain INSERT, so of two runners that
    set it at once one fails on the primary key; it then finds the value there.
    (Run tags go through `log_batch`, whose store retries such conflicts itself.)
    """
    import mlflow

    for attempt in range(1, attempts + 1):
        try:
            client.set_experiment_tag(experiment_id, key, value)
            return
        except mlflow.exceptions.MlflowException:
            if client.get_experiment(experiment_id).tags.get(key) == value:
                return  # another runner set it
            if attempt == attempts:
                raise


def find_parent_run(spec: StudySpec, experiment_id: str) -> str | None:
    """The id of the study's parent run (`readback.parent`), or None."""
    import mlflow

    found = readback.parent(mlflow.MlflowClient(), experiment_id, spec.name)
    return found.info.run_id if found else None


def spec_digest(spec: StudySpec) -> str:
    """A short hash of what makes the study this study (`StudySpec.identity`)."""
    return hashlib.sha256(json.dumps(spec.identity(), sort_keys=True).encode()).hexdigest()[:16]


def ensure_parent_run(spec: StudySpec, experiment_id: str, dataset: Dataset | None = None) -> str:
    """The study's parent run: reused on resume, created once otherwise; marked RUNNING.

    Like its trials, it carries MLflow's source tags (entry point, type, user, git
    commit) and, given the study's loaded `dataset`, its splits as dataset inputs, so
    the study's row in `mlflow ui` says which code ran and on what data.

    Raises:
        SweepError: the experiment's parent run belongs to a different spec of
            this name (e.g. made with another Optuna storage); nothing is written.
    """
    import mlflow
    from mlflow.entities import RunTag

    digest, params = spec_digest(spec), _parent_params(spec)
    client = mlflow.MlflowClient()
    run_id = find_parent_run(spec, experiment_id)
    if run_id:
        stored = client.get_run(run_id).data.tags.get(IDENTITY_TAG)
        if stored is not None and stored != digest:
            raise SweepError(
                f"MLflow experiment {spec.name!r} holds a run of a different spec of this study "
                f"(parent run {run_id}); rename the study (--set name=NEW_NAME)"
            )
    if not run_id:
        from mlflow.tracking.context.registry import resolve_tags

        run = client.create_run(
            experiment_id,
            run_name=spec.name,
            # resolve_tags: the source tags `mlflow.start_run` gives a trial (ours override).
            tags=resolve_tags(
                {
                    KIND_TAG: Kind.STUDY,
                    STUDY_TAG: spec.name,
                    IDENTITY_TAG: digest,
                    **provenance.provenance_tags(),
                }
            ),
        )
        # Runners on several machines may start a new study at once: all of them keep
        # the earliest parent run and delete their own if it lost.
        run_id = find_parent_run(spec, experiment_id) or run.info.run_id
        if run_id != run.info.run_id:
            client.set_terminated(run.info.run_id, status=RunStatus.KILLED)  # never left RUNNING, even deleted
            client.delete_run(run.info.run_id)
        else:
            for key, value in params.items():
                client.log_param(run_id, key, value)
            if dataset is not None:
                dataset_inputs.log_dataset_inputs(run_id, dataset)
    # The latest command that (re)started the study; each trial records its own. Through
    # log_batch: runners on several machines may set these at once (see _set_experiment_tag).
    client.log_batch(
        run_id,
        tags=[
            RunTag(names.COMMAND_TAG, provenance.command_line()),
            RunTag(names.LOCK_TAG, provenance.lock_hash()),
        ],
    )
    client.update_run(run_id, status=RunStatus.RUNNING)
    client.log_text(run_id, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), STUDY_ARTIFACT)
    return run_id


def _parent_params(spec: StudySpec) -> dict:
    """What the parent run logs as params: the study's design at a glance in `mlflow ui`."""
    return {
        "compare": ", ".join(f"{n}={v}" for n, v in spec.compare.items()),
        "tuned": ", ".join(spec.tune.search_space) if spec.tune else "none",
        "trials_per_cell": spec.tune.trials_per_cell if spec.tune else 0,
        "final_seeds": ",".join(map(str, spec.all_final_seeds())),
        "objective": f"{spec.objective.direction} {spec.objective.metric}",
        "dataset": spec.base.dataset.name,
        "epochs": spec.base.epochs,
    }


def close_parent(parent_run_id: str, status: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_terminated(parent_run_id, status=status)


def ran_spec(name_or_path: str, overrides: Sequence[str] = ()) -> StudySpec:
    """The spec a study ran with, for the commands that act on it afterwards (report, register).

    Its parent run's `study.yaml` (the resolved spec, `--set`s included) with `overrides`
    applied on top, as `--set` applies them to a study file: the run's own `--set`s need
    not be repeated. A study with no parent run in the tracking store (MLflow's current
    one) yet, or no `study.yaml` this code reads, is read from its study file with
    `overrides`, as `reuse-nets run` reads it.

    Raises:
        StudyError: a bad study file or override.
        SweepError: the tracking store is unusable, or `overrides` change what the
            study is (its identity digest differs from the parent run's).
    """
    path, raw = study_files.read_study(name_or_path)
    name = study_files.apply_overrides(copy.deepcopy(raw), list(overrides)).get("name")
    stored = _stored_spec(name) if isinstance(name, str) else None
    if stored is None:
        return study_files.validate_study(raw, overrides, path)
    run, data = stored
    spec = study_files.validate_study(data, overrides, f"study.yaml of parent run {run.info.run_id}")
    digest = run.data.tags.get(IDENTITY_TAG)
    if digest is not None and digest != spec_digest(spec):
        raise SweepError(
            f"study {name!r} ran with a different spec (parent run {run.info.run_id}); its spec is read from the "
            f"stores, so give no --set that changes it (got: {' '.join(overrides) or 'none'})"
        )
    return spec


def _stored_spec(study_name: str):
    """`(parent run, data of its study.yaml)`, or None: no tracking store, parent run or valid study.yaml."""
    import mlflow

    from reuse_nets.store import optuna_store

    uri = mlflow.get_tracking_uri()
    try:
        optuna_store.require_existing_sqlite(uri, "MLflow tracking store")
    except SweepError:
        return None  # reading must not create a store; the command's own checks say it is missing
    check_server(uri)
    try:
        with refused_logins(study_name, uri):
            client = mlflow.MlflowClient()
            experiment = client.get_experiment_by_name(study_name)
            run = readback.parent(client, experiment.experiment_id, study_name) if experiment else None
    except SweepError:
        raise
    except Exception as error:  # a bad URI or a broken database
        raise SweepError(f"MLflow tracking store {uri} is unusable: {first_line(error)}") from None
    if run is None:
        return None
    try:
        data = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{STUDY_ARTIFACT}"))
    except (mlflow.exceptions.MlflowException, OSError, yaml.YAMLError):
        return None  # a parent run killed before it logged its spec
    try:
        StudySpec.model_validate(copy.deepcopy(data))
    except pydantic.ValidationError:
        return None  # not a spec this version of the code reads (e.g. an older one's): the study file decides
    return run, data
