"""Logins: the shared deployment of docs/many-machines.md, with a password on each server.

PostgreSQL takes password logins only (scram-sha-256, `PG_HBA`), with the roles of the
docs: `mlflow` owns MLflow's two databases (its runs, its users), `runner` the Optuna
one. `mlflow server --app-name basic-auth` (`AUTH_CONFIG`) gives every user READ on the
experiments they did not create. The tests show that both servers refuse a missing or
wrong password; that a user with READ can neither create nor change runs; that a
runner given its logins through the environment completes a study, and that no
password then appears in MLflow's tags, params or artifacts, in either database, in the
runner's folder or in its output; and that a runner without a valid login stops with
one line naming the refusal.

The servers are those of tests/test_many_machines.py (`Postgres`, `serving_mlflow`),
started once for this file, on 127.0.0.1.
"""

import contextlib
import dataclasses
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import mlflow.server
import psycopg
import pytest
import requests
import yaml
from mlflow.entities import ViewType
from psycopg import sql
from sweep_helpers import MANUAL_DIR, RUNNER, SMALL_DATA, assert_wrote_nothing, error_line, explain, runner_env
from test_many_machines import HOST, Postgres, postgres_bin_dir, serving_mlflow, stop_group

from reuse_nets.errors import SweepError, redact
from reuse_nets.names import COMMAND_TAG, KIND_TAG, Kind
from reuse_nets.store import optuna_store, parent_run

pytestmark = pytest.mark.slow

# pg_hba.conf: every login, over the socket and over TCP from 127.0.0.1, needs a password.
PG_HBA = """\
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
"""
# PostgreSQL roles and the databases each owns (docs/many-machines.md, step 1).
ROLES = {"mlflow": ("mlflow", "mlflow_auth"), "runner": ("optuna",)}
# MLflow's auth app: its users live in PostgreSQL too; the admin's password comes from
# MLFLOW_AUTH_ADMIN_PASSWORD, PostgreSQL's from PGPASSWORD (docs/many-machines.md, step 2).
# The cache spares each request a scrypt check of the password (0.2 s of CPU here).
AUTH_CONFIG = """\
[mlflow]
default_permission = READ
database_uri = {database_uri}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""
MLFLOW_USERS = ("runner", "viewer")  # created by the admin; each owns nothing at first
STUDY = "smoke"
# One final run per cell, 2 cells of depth 1, one epoch on SMALL_DATA: a few seconds of training.
OVERRIDES = (*SMALL_DATA, "compare.strategy=[plain, residual]", "compare.depth=[1]", "base.epochs=1")
RUN_TIMEOUT = 300  # seconds for one runner
# The environment variables a runner's logins come from: none reaches a process unless a test sets it.
LOGINS = ("PGPASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def new_password() -> str:
    """A random password, long enough for MLflow (12 characters at least) and found by no accident."""
    return secrets.token_hex(16)


class PasswordPostgres(Postgres):
    """A throwaway PostgreSQL that takes password logins only, with the roles of `ROLES`."""

    def __init__(self, bin_dir: Path, passwords: dict[str, str]):
        super().__init__(bin_dir)
        self.passwords = passwords  # by role, the superuser `postgres` included

    def own(self, path: Path) -> None:
        """Makes a file the server's own (it runs as another user when the tests run as root)."""
        path.chmod(0o600)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> None:
        password_file = self.root / "superuser-password"
        password_file.write_text(self.passwords["postgres"])
        self.own(password_file)
        self.initdb("--auth=scram-sha-256", f"--pwfile={password_file}")
        password_file.unlink()
        hba = self.data / "pg_hba.conf"
        hba.write_text(PG_HBA)
        self.own(hba)
        self.launch()
        with self.connect("postgres", "postgres", self.passwords["postgres"]) as connection:
            for role, databases in ROLES.items():
                create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}")
                connection.execute(create.format(sql.Identifier(role), sql.Literal(self.passwords[role])))
                for database in databases:
                    connection.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, (database, role)))
                    )

    def connect(self, user: str, database: str, password: str | None) -> psycopg.Connection:
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user=user,
            dbname=database,
            password=password,
            autocommit=True,
            connect_timeout=10,
        )

    def login_url(self, user: str, database: str) -> str:
        """A URL without its password: libpq takes that from PGPASSWORD (or ~/.pgpass)."""
        return f"postgresql+psycopg://{user}@{HOST}:{self.port}/{database}"


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The running servers, and the passwords the tests log in with and search for."""

    postgres: PasswordPostgres
    tracking_uri: str
    server_folder: Path  # the tracking server's artifacts and log
    passwords: dict[str, str]  # every password of the deployment, by its PostgreSQL role or MLflow user

    def mlflow_password(self, user: str) -> str:
        return self.passwords[f"mlflow:{user}"]


def without_logins(env: dict, home: Path) -> dict:
    """`env` without any login variable, and a home folder of its own: no ~/.pgpass or
    ~/.mlflow/credentials of this machine's user logs anyone in. TFDS keeps its folder."""
    home.mkdir(exist_ok=True)
    tfds = env.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    clean = {key: value for key, value in env.items() if key not in LOGINS}
    return {**clean, "HOME": str(home), "TFDS_DATA_DIR": tfds, "PGPASSFILE": str(home / ".pgpass")}


@contextlib.contextmanager
def logged_in(user: str | None, password: str | None):
    """This process's MLflow requests made inside carry `user`'s login (none: no login)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """PostgreSQL with passwords, and `mlflow server --app-name basic-auth` on it, with users
    `runner` and `viewer` made by the admin."""
    roles = ("postgres", *ROLES)
    passwords = {role: new_password() for role in roles}
    passwords.update({f"mlflow:{user}": new_password() for user in ("admin", *MLFLOW_USERS)})
    postgres = PasswordPostgres(postgres_bin_dir(), passwords)
    folder = tmp_path_factory.mktemp("auth_server")
    config = folder / "basic_auth.ini"
    config.write_text(AUTH_CONFIG.format(database_uri=postgres.login_url("mlflow", "mlflow_auth")))
    env = {
        **without_logins(runner_env(), folder / "home"),
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": passwords["mlflow:admin"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "PGPASSWORD": passwords["mlflow"],
        # Without MLflow's job runner: 8 more Python processes, each importing MLflow, for
        # GenAI jobs this project never runs.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    try:
        postgres.start()
        backend = postgres.login_url("mlflow", "mlflow")
        with serving_mlflow(backend, folder, "--app-name", "basic-auth", env=env) as url:
            with logged_in("admin", passwords["mlflow:admin"]):
                auth_client = mlflow.server.get_app_client("basic-auth", tracking_uri=url)
                for user in MLFLOW_USERS:
                    auth_client.create_user(username=user, password=passwords[f"mlflow:{user}"])
            yield Deployment(postgres, url, folder, passwords)
    finally:
        postgres.stop()


# --- Both servers refuse a missing or wrong password ----------------------------------------


def test_the_tracking_server_refuses_requests_without_a_valid_login(deployment):
    """401 without a login, with a wrong password or an unknown user; the runner's line for it."""
    search = f"{deployment.tracking_uri}/api/2.0/mlflow/experiments/search"
    for login in (None, ("runner", "not-the-password"), ("nobody", deployment.mlflow_password("runner"))):
        refused = requests.get(search, params={"max_results": 1}, auth=login, timeout=30)
        assert refused.status_code == 401, (login and login[0], refused.status_code, refused.text[:300])
        assert refused.headers["WWW-Authenticate"].startswith("Basic"), refused.headers
    # The same request with the right login is answered: the refusals were about the login.
    answered = requests.get(
        search, params={"max_results": 1}, auth=("runner", deployment.mlflow_password("runner")), timeout=30
    )
    assert answered.status_code == 200, answered.text[:300]
    # What a runner makes of a refusal (`parent_run.refused_logins`): one line naming the login.
    client = mlflow.MlflowClient(tracking_uri=deployment.tracking_uri)
    refused = f"MLflow tracking server {deployment.tracking_uri} refused the login"
    for user, password, says in (
        (None, None, f"{refused} (HTTP 401): no username given"),
        ("runner", "not-the-password", f"{refused} of user 'runner' (HTTP 401): wrong username or password"),
    ):
        with logged_in(user, password), pytest.raises(SweepError) as error:
            with parent_run.refused_logins(STUDY, deployment.tracking_uri):
                client.get_experiment_by_name(STUDY)
        assert str(error.value).startswith(says), str(error.value)


def test_postgresql_refuses_connections_without_the_right_password(deployment, monkeypatch, tmp_path):
    """libpq's refusals, and the runner's one line for them (its storage check), password masked."""
    postgres = deployment.postgres
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        postgres.connect("runner", "optuna", None)
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "runner"'):
        postgres.connect("runner", "optuna", "not-the-password")
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "postgres"'):
        postgres.connect("postgres", "postgres", deployment.passwords["runner"])  # another role's password
    with postgres.connect("runner", "optuna", deployment.passwords["runner"]) as connection:
        assert connection.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
    # The runner's check of its storage: a wrong password from PGPASSWORD or from the URL.
    url = postgres.login_url("runner", "optuna")
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(SweepError, match=f"^cannot open Optuna storage '{re.escape(url)}': .*password authentication"):
        optuna_store.check_storage(url)
    monkeypatch.delenv("PGPASSWORD")
    with_password = url.replace("runner@", "runner:not-the-password@")
    with pytest.raises(SweepError) as refused:
        optuna_store.check_storage(with_password)
    assert f"'{url.replace('runner@', 'runner:***@')}'" in str(refused.value) and "not-the-password" not in str(
        refused.value
    )
    monkeypatch.setenv("PGPASSWORD", deployment.passwords["runner"])
    optuna_store.check_storage(url)  # the right one passes
    # What the server enforces: scram-sha-256 for every rule, and SCRAM verifiers, not passwords, stored.
    with postgres.connect("postgres", "postgres", deployment.passwords["postgres"]) as connection:
        rules = connection.execute("SELECT type, address, auth_method, error FROM pg_hba_file_rules").fetchall()
        assert rules == [("local", None, "scram-sha-256", None), ("host", HOST, "scram-sha-256", None)], rules
        stored = connection.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL"
        ).fetchall()
    assert {role for role, _ in stored} == {"postgres", *ROLES}
    assert all(verifier.startswith("SCRAM-SHA-256$") for _, verifier in stored), [role for role, _ in stored]


# --- A user with READ permission cannot create or change runs -------------------------------


def test_a_user_with_read_permission_cannot_create_or_change_runs(deployment):
    """`default_permission = READ`: viewer reads runner's experiment but every write is 403,
    until the admin grants viewer EDIT on it."""
    client = mlflow.MlflowClient(tracking_uri=deployment.tracking_uri)
    with logged_in("runner", deployment.mlflow_password("runner")):
        experiment_id = client.create_experiment("auth_permissions")  # runner's own: MANAGE
        run_id = client.create_run(experiment_id).info.run_id
        client.set_tag(run_id, "owner", "runner")

    attempts = {
        "create a run": lambda: client.create_run(experiment_id),
        "set a tag": lambda: client.set_tag(run_id, "owner", "viewer"),
        "log a param": lambda: client.log_param(run_id, "learning_rate", "1"),
        "log a metric": lambda: client.log_metric(run_id, "val_accuracy", 1.0),
        "end the run": lambda: client.set_terminated(run_id, status="FAILED"),
        "delete the run": lambda: client.delete_run(run_id),
    }
    with logged_in("viewer", deployment.mlflow_password("viewer")):
        assert client.get_run(run_id).data.tags["owner"] == "runner"  # READ: viewer may look
        for what, attempt in attempts.items():
            with pytest.raises(mlflow.exceptions.MlflowException) as refused:
                attempt()
            assert refused.value.get_http_status_code() == 403, (what, refused.value.message[:300])

    with logged_in("runner", deployment.mlflow_password("runner")):
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING" and run.info.lifecycle_stage == "active"
        assert run.data.tags["owner"] == "runner" and not run.data.params and not run.data.metrics
        assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]
        client.set_tag(run_id, "owner", "still runner")  # the owner may: the refusals were permissions
    # The admin grants viewer EDIT on the experiment (docs/many-machines.md): now viewer may write.
    with logged_in("admin", deployment.mlflow_password("admin")):
        auth_client = mlflow.server.get_app_client("basic-auth", tracking_uri=deployment.tracking_uri)
        auth_client.grant_user_permission("viewer", "experiment", experiment_id, "EDIT")
    with logged_in("viewer", deployment.mlflow_password("viewer")):
        client.set_tag(run_id, "owner", "viewer")
        client.create_run(experiment_id)


# --- A runner with its logins completes a study and leaks no password ------------------------


def runner_command(deployment: Deployment, name: str) -> list[str]:
    """The runner of `STUDY` as study `name`, on the deployment's servers, URLs without passwords."""
    command = [sys.executable, str(RUNNER), "--study", STUDY, "--manual-dir", MANUAL_DIR, "--set", f"name={name}"]
    command += [
        "--storage",
        deployment.postgres.login_url("runner", "optuna"),
        "--tracking-uri",
        deployment.tracking_uri,
    ]
    return command + [arg for override in OVERRIDES for arg in ("--set", override)]


def runner_login_env(home: Path, logins: dict[str, str]) -> dict:
    """The runner's environment: only the login variables in `logins`, as a scheduler would pass them."""
    return {**without_logins(runner_env(), home), **logins}


def the_runners_logins(deployment: Deployment) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_USERNAME": "runner",
        "MLFLOW_TRACKING_PASSWORD": deployment.mlflow_password("runner"),
        "PGPASSWORD": deployment.passwords["runner"],
    }


def leaked(passwords: dict[str, str], text: str) -> list[str]:
    """Whose passwords `text` holds."""
    return [who for who, password in passwords.items() if password in text]


def leaks_in_folder(passwords: dict[str, str], folder: Path) -> dict[str, list[str]]:
    """Files under `folder` holding a password, with whose."""
    found = {}
    for path in (p for p in folder.rglob("*") if p.is_file()):
        if whose := leaked(passwords, path.read_bytes().decode("latin-1")):
            found[str(path.relative_to(folder))] = whose
    return found


def database_rows(postgres: PasswordPostgres, database: str) -> dict[str, list[str]]:
    """Every row of every table of `database`, as text, by table (read as the superuser)."""
    with postgres.connect("postgres", database, postgres.passwords["postgres"]) as connection:
        tables = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        query = sql.SQL("SELECT t::text FROM {}.{} AS t")
        return {
            f"{schema}.{table}": [
                row for (row,) in connection.execute(query.format(sql.Identifier(schema), sql.Identifier(table)))
            ]
            for schema, table in tables
        }


def test_a_runner_with_its_logins_completes_a_study_and_leaks_no_password(deployment, tmp_path, fashion_mnist):
    """The runner logs in from its environment (`fashion_mnist` prepares the data it reads);
    afterwards no password of the deployment is found anywhere it wrote or printed."""
    name = "auth_smoke"
    folder = tmp_path / "runner"
    folder.mkdir()
    done = subprocess.run(
        runner_command(deployment, name),
        cwd=folder,
        env=runner_login_env(tmp_path / "home", the_runners_logins(deployment)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, explain(done)
    assert f"study {name}: complete" in done.stdout, explain(done)
    passwords = deployment.passwords

    # Nothing the runner printed names a password.
    assert not leaked(passwords, done.stdout + done.stderr), leaked(passwords, done.stdout + done.stderr)

    # MLflow, read as the runner: every run's tags, params and name, the experiment's tags.
    client = mlflow.MlflowClient(tracking_uri=deployment.tracking_uri)
    with logged_in("runner", deployment.mlflow_password("runner")):
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=100)
    assert sorted(r.data.tags[KIND_TAG] for r in runs) == [Kind.STUDY, Kind.TRIAL, Kind.TRIAL]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_id, r.info.status) for r in runs]
    # The logged command names both servers (the scan below could find a password there).
    command = next(r.data.tags[COMMAND_TAG] for r in runs if r.data.tags[KIND_TAG] == Kind.STUDY)
    assert deployment.postgres.login_url("runner", "optuna") in command and deployment.tracking_uri in command
    logged = [experiment.tags, *({**r.data.tags, **r.data.params, "run name": r.info.run_name} for r in runs)]
    texts = [f"{key}={value}" for mapping in logged for key, value in mapping.items()]
    assert not [text for text in texts if leaked(passwords, text)]

    # Every artifact the server stores (configs, models, plots, the report) and its log; the runner's folder.
    artifacts = deployment.server_folder / "artifacts"
    stored = {path.name for path in artifacts.rglob("*") if path.is_file()}
    assert {"config.yaml", "study.yaml", "report.md", "model.keras", "MLmodel"} <= stored, sorted(stored)
    assert leaks_in_folder(passwords, deployment.server_folder) == {}
    assert (folder / "reports" / name / "report.md").is_file()
    assert leaks_in_folder(passwords, folder) == {}

    # Both databases, every row: MLflow's runs (tags, params, metrics, logged models), Optuna's
    # trials and attributes, and the auth app's users (password hashes only).
    for database in ("mlflow", "optuna", "mlflow_auth"):
        rows = database_rows(deployment.postgres, database)
        assert sum(map(len, rows.values())) > 0, database
        found = {table: leaked(passwords, "\n".join(texts)) for table, texts in rows.items()}
        assert not {table: whose for table, whose in found.items() if whose}, database


# --- A runner without a valid login: one line naming the refusal -----------------------------


def refused_logins(deployment: Deployment) -> dict[str, tuple[dict[str, str], str, str]]:
    """case: (the login variables the runner gets, its study's name, its error line after "error: ")."""
    refused = f"MLflow tracking server {deployment.tracking_uri} refused the login"
    postgres = {"PGPASSWORD": deployment.passwords["runner"]}
    viewer = {"MLFLOW_TRACKING_USERNAME": "viewer", "MLFLOW_TRACKING_PASSWORD": deployment.mlflow_password("viewer")}
    return {
        "no MLflow login": (
            postgres,
            "auth_nologin",
            f"{refused} (HTTP 401): no username given; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
        "READ only": (
            {**postgres, **viewer},
            "auth_read_only",
            f"{refused} of user 'viewer' (HTTP 403): no EDIT permission on experiment 'auth_read_only'; ask the "
            "server's admin for it, or rename the study (--set name=NEW_NAME)",
        ),
    }


def test_a_runner_without_a_valid_login_stops_with_one_line_naming_the_refusal(deployment, tmp_path, fashion_mnist):
    """Exit 2, one `error:` line, nothing written, no password printed. The cases run side by
    side, as runners on several machines would. 'READ only' is viewer running a study whose
    experiment runner made. (A wrong PostgreSQL password: `test_postgresql_refuses_...`.)"""
    client = mlflow.MlflowClient(tracking_uri=deployment.tracking_uri)
    with logged_in("runner", deployment.mlflow_password("runner")):
        read_only_experiment = client.create_experiment("auth_read_only")
    cases = refused_logins(deployment)
    started = {}
    for case, (logins, name, _) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        env = runner_login_env(tmp_path / f"{name}-home", logins)
        with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
            started[case] = subprocess.Popen(
                runner_command(deployment, name), cwd=folder, env=env, stdout=out, stderr=err, start_new_session=True
            )
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        for process in started.values():
            process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        for process in started.values():
            stop_group(process, grace=10)

    for case, (_, name, message) in cases.items():
        process = started[case]
        output = [(tmp_path / f"{name}.{stream}").read_text() for stream in ("out", "err")]
        result = subprocess.CompletedProcess(process.args, process.returncode, *output)
        assert result.returncode == 2, (case, explain(result))
        assert error_line(result).startswith(f"error: {message}"), (case, explain(result))
        assert not leaked(deployment.passwords, result.stdout + result.stderr), case
        assert_wrote_nothing(tmp_path / name)
    with logged_in("runner", deployment.mlflow_password("runner")):
        assert client.search_runs([read_only_experiment], run_view_type=ViewType.ALL) == []  # viewer made no run
        made = {name: client.get_experiment_by_name(name) for _, name, _ in cases.values()}
    assert [name for name, experiment in made.items() if experiment] == ["auth_read_only"]


# --- The recipes --------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_recipes_keep_passwords_out_of_the_urls():
    """The Kubernetes Secret's URLs and the Slurm recipe's hold no password; the Job's runners
    get the three logins from the Secret, as environment variables."""
    secret = yaml.safe_load((EXAMPLES / "kubernetes" / "stores-secret.yaml").read_text())
    job = yaml.safe_load((EXAMPLES / "kubernetes" / "study-job.yaml").read_text())
    urls = [secret["stringData"]["optuna-storage"], secret["stringData"]["mlflow-tracking-uri"]]
    sbatch = (EXAMPLES / "slurm" / "study.sbatch").read_text()
    urls += re.findall(r"\b(?:postgresql\+psycopg|http)://\S+", sbatch)
    assert len(urls) >= 4 and all(redact(url) == url for url in urls), urls  # redact masks a URL's password
    [container] = job["spec"]["template"]["spec"]["containers"]
    from_secret = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert set(LOGINS) <= set(from_secret), sorted(from_secret)
    for name in LOGINS:
        assert from_secret[name]["name"] == secret["metadata"]["name"], name
        assert from_secret[name]["key"] in secret["stringData"], name
    assert not any(name in " ".join(container["command"] + container["args"]) for name in LOGINS)
