"""Throwaway servers on 127.0.0.1: a PostgreSQL cluster and `mlflow server` on it.

What the many-machines set-up (docs/many-machines.md) runs, started in temporary
folders: by the benchmark's `runners` section and by the tests of several runners
(tests/test_many_machines.py, tests/test_auth.py). PostgreSQL runs from the server
binaries of this machine (Debian's `postgresql` package), as the `postgres` user
when this process is root, which initdb refuses.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SERVER_START_TIMEOUT = 180  # seconds; `mlflow server` takes about 25 on 2 idle cores


class ServerError(RuntimeError):
    """A server did not start; the message holds the end of its log."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def find_postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (initdb, pg_ctl, postgres), or None."""
    found = sorted(
        (d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary directory, on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        # initdb refuses root: the server then runs as `postgres` (Debian's package makes
        # it), else `nobody`, in a directory of its own under /tmp (pytest's is root-only).
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise ServerError("running as root, and neither user postgres nor nobody exists")
        self.root = Path(tempfile.mkdtemp(prefix="reuse-nets-pg-"))
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def command(self, *args: str) -> subprocess.CompletedProcess:
        drop: dict[str, Any] = {}
        if self.user is not None:
            drop = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **drop,
        )

    def check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise ServerError(
                f"PostgreSQL {what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}"
            )

    def start(self, databases: tuple[str, ...] = ("optuna", "mlflow")) -> None:
        """initdb (password-less logins), start, and create `databases`."""
        import psycopg

        self.initdb("--auth=trust")
        self.launch()
        with psycopg.connect(
            host=HOST, port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            for name in databases:
                connection.execute(f"CREATE DATABASE {name}")

    def initdb(self, *flags: str) -> None:
        """Creates the cluster, superuser `postgres`; `flags` say how it logs in (e.g. `--auth=trust`)."""
        initdb = ("initdb", "-D", str(self.data), "-U", "postgres", *flags, "-E", "UTF8", "--no-locale")
        self.check(self.command(*initdb), "initdb")

    def launch(self) -> None:
        """Starts the server on 127.0.0.1 and waits until it accepts connections."""
        options = f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories={self.root}"
        start = ("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)
        self.check(self.command(*start), "start")

    def url(self, database: str) -> str:
        # SQLAlchemy 2 picks psycopg (3) only when told: plain postgresql:// means psycopg2.
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/{database}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            result = self.command("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
            if result.returncode != 0 and (self.data / "postmaster.pid").exists():
                os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)


def client_env() -> dict[str, str]:
    """This environment for a server or runner: the command line says where to track, not MLflow's variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    return {**env, "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def serving_mlflow(backend_store_uri: str, directory: Path, *flags: str, env: dict | None = None) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1, its artifacts in `directory`; yields its URL once /health answers.

    `flags` are more `mlflow server` options (e.g. `--app-name basic-auth`), `env` its
    environment (default: `client_env()`); its output goes to `directory`/server.log.
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(directory / "artifacts"),
        *flags,
    ]
    log = directory / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=client_env() if env is None else env,
            start_new_session=True,
        )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise ServerError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"mlflow server did not answer /health in {SERVER_START_TIMEOUT} s:\n{log.read_text()[-4000:]}"
                )
            time.sleep(1)
        yield url
    finally:
        stop_group(process, grace=20)


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group (a server and its workers), SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
