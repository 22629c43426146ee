"""Two runners on "two machines" share one study through a real PostgreSQL server
(the Optuna storage and MLflow's backend store) and a real `mlflow server`.

Each runner works in a directory of its own, as on another machine; both are
started at the same moment, so they race for everything a study creates (Optuna's
tables, the MLflow experiment, the parent run, the slots). The stores must then
hold each wanted point exactly once, under one parent run, with every run closed.

PostgreSQL runs from the server binaries of the machine image (Debian's
`postgresql` package; installed with apt only if they are missing), as the
`postgres` user when the tests run as root, which initdb refuses. Everything
binds to 127.0.0.1.
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import mlflow
import optuna
import pytest
from mlflow.entities import ViewType
from sweep_helpers import MANUAL_DIR, RUNNER, SMALL_DATA, runner_env
from test_tracking import environment_without_this_project

import reuse_nets.nn.layers  # noqa: F401  (registers the layers a logged model holds)
from reuse_nets.bench import servers
from reuse_nets.bench.servers import HOST, Postgres, free_port, serving_mlflow, stop_group
from reuse_nets.design import study_files
from reuse_nets.design.study_spec import Cell

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STUDY = "smoke"
RUNNERS_TIMEOUT = 420  # seconds for both runners together
# The study as run on both machines: smoke (8 cells, one final seed) on SMALL_DATA,
# with smoke's short heartbeat grace (8 s): a runner whose own share is done keeps
# waiting for the live trials of the other (regression: it once gave up after
# grace_period + heartbeat_interval seconds and left the study incomplete).
OVERRIDES = SMALL_DATA


# --- PostgreSQL -----------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """The newest PostgreSQL server binaries on this machine; apt-installed if there are none."""
    if (found := servers.find_postgres_bin_dir()) is not None:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        if (found := servers.find_postgres_bin_dir()) is not None:
            return found
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found under /usr/lib/postgresql/*/bin "
        "or on PATH, and `apt-get install postgresql` did not provide them; this test needs a PostgreSQL server"
    )


@pytest.fixture(scope="module")
def postgres():
    server = Postgres(postgres_bin_dir())
    try:
        server.start(("optuna", "mlflow", "slurm"))
        yield server
    finally:
        server.stop()


# --- MLflow tracking server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` with PostgreSQL as backend store and a local artifact store it serves."""
    with serving_mlflow(postgres.url("mlflow"), tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url


# --- Two machines, one study ----------------------------------------------------------------

# One completed trial, as the runner prints it: "final CELL slot S (trial N, ...): val_accuracy=V".
DONE_LINE = re.compile(r"^final (?P<cell>\S+) slot \d+ \(trial (?P<trial>\d+),.*\): val_accuracy=", re.MULTILINE)
PARENT_LINE = re.compile(r"MLflow experiment (\w+), parent run (\w+)")


def start_runner(directory: Path, storage: str, tracking_uri: str) -> tuple[subprocess.Popen, Path, Path]:
    directory.mkdir()
    command = [sys.executable, str(RUNNER), "--study", STUDY, "--manual-dir", MANUAL_DIR]
    command += ["--storage", storage, "--tracking-uri", tracking_uri]
    for override in OVERRIDES:
        command += ["--set", override]
    stdout, stderr = directory / "stdout.txt", directory / "stderr.txt"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(
            command, cwd=directory, stdout=out, stderr=err, env=runner_env(), start_new_session=True
        )
    return process, stdout, stderr


def cell_key(spec, trial) -> str:
    """The cell of a final trial, from the compared values it ran with."""
    return Cell(values={name: trial.params[name] for name in spec.compare}).key


def explain(name: str, process: subprocess.Popen, stdout: Path, stderr: Path) -> str:
    return (
        f"{name}: exit {process.returncode}\n--- stdout ---\n{stdout.read_text()[-4000:]}\n"
        f"--- stderr ---\n{stderr.read_text()[-4000:]}"
    )


def test_two_runners_on_two_machines_share_one_study(postgres, mlflow_server, tmp_path, fashion_mnist):
    # `fashion_mnist` prepares the TFDS data once, before the runners share its directory.
    storage = postgres.url("optuna")
    machines = {name: start_runner(tmp_path / name, storage, mlflow_server) for name in ("machine-1", "machine-2")}
    deadline = time.monotonic() + RUNNERS_TIMEOUT
    try:
        for process, _, _ in machines.values():
            process.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for process, _, _ in machines.values():
            stop_group(process, grace=30)
        pytest.fail("runners timed out:\n" + "\n".join(explain(n, *m) for n, m in machines.items()))
    for name, (process, stdout, stderr) in machines.items():
        assert process.returncode == 0, explain(name, process, stdout, stderr)
        assert f"study {STUDY}: complete" in stdout.read_text(), explain(name, process, stdout, stderr)

    # Optuna: every wanted (cell, seed) point COMPLETE exactly once, nothing left running.
    spec = study_files.load_study(STUDY, list(OVERRIDES))
    cells = {cell.key: cell for cell in spec.cells()}
    wanted = {(key, seed) for key in cells for seed in spec.final.seeds}
    final = optuna.load_study(study_name=f"{STUDY}:final", storage=storage)
    trials = final.get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    points = []
    for trial in complete:
        key = cell_key(spec, trial)
        assert trial.params == {**cells[key].values, "seed": trial.params["seed"]}, (trial.number, trial.params)
        points.append((key, trial.params["seed"]))
    assert len(points) == len(set(points)), f"a point ran twice: {sorted(points)}"
    assert set(points) == wanted
    states = [(t.number, t.state.name, t.user_attrs.get("outcome")) for t in trials]
    assert not [s for s in states if s[1] in ("RUNNING", "WAITING")], states
    # Anything else is a slot both runners enqueued, given up before it trained.
    assert all(s[2] in ("duplicate", "unused") for s in states if s[1] != "COMPLETE"), states

    # Both machines did part of the work, and no trial was done by both.
    done = {
        name: {int(m["trial"]) for m in DONE_LINE.finditer(stdout.read_text())}
        for name, (_, stdout, _) in machines.items()
    }
    assert all(done.values()), f"a runner completed no trial: {done}"
    assert not set.intersection(*done.values()), done
    assert set.union(*done.values()) == {t.number for t in complete}, done

    # MLflow, asked through the tracking server: one experiment, one parent run, every run closed.
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    active = [r for r in runs if r.info.lifecycle_stage == "active"]
    parents = [r for r in active if r.data.tags.get("reuse_nets.kind") == "study"]
    assert len(parents) == 1, [(r.info.run_id, r.info.start_time) for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # Both runners logged under that parent run ("MLflow experiment E, parent run P").
    for name, (_process, stdout, _stderr) in machines.items():
        used = set(PARENT_LINE.findall(stdout.read_text()))
        assert used == {(experiment.experiment_id, parent.info.run_id)}, (name, used)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    # A runner that lost the race for the parent run deleted its own, before any trial.
    deleted = [r for r in runs if r.info.lifecycle_stage != "active"]
    assert all(r.data.tags.get("reuse_nets.kind") == "study" for r in deleted), [r.data.tags for r in deleted]
    children = [r for r in active if r.data.tags.get("reuse_nets.kind") == "trial"]
    assert len(active) == len(children) + 1
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in trials if "mlflow_run_id" in t.user_attrs}
    assert sorted(by_run) == sorted(r.info.run_id for r in children)  # one run per trial that trained
    for run in children:
        trial = by_run[run.info.run_id]
        tags = run.data.tags
        assert run.info.status == "FINISHED", (run.info.run_id, run.info.status, tags.get("reuse_nets.failure_reason"))
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["optuna.study_name"] == f"{STUDY}:final"
        assert tags["optuna.trial_number"] == str(trial.number)
        assert tags["optuna.trial_state"] == trial.state.name
        assert tags["reuse_nets.cell"] == cell_key(spec, trial)
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # Artifacts went through the server's artifact proxy: a model loads back, the report is there.
    # (A `models:/` URI resolves through the process's global tracking URI, so: its location.)
    logged = client.get_logged_model(children[0].data.tags["reuse_nets.model_uri"].removeprefix("models:/"))
    assert logged.artifact_location.startswith("mlflow-artifacts:"), logged.artifact_location
    folder = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=logged.artifact_location, dst_path=str(tmp_path / "model"), tracking_uri=mlflow_server
        )
    )
    assert keras.saving.load_model(folder / "artifacts" / "model.keras", safe_mode=True).output_shape == (None, 10)
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}

    # The model registry on the server: each cell's best model registered, and the best
    # loaded by alias in a fresh process that cannot import this project.
    command = [sys.executable, os.fspath(RUNNER.parent / "register.py"), "--study", STUDY, "--storage", storage]
    command += ["--tracking-uri", mlflow_server, *[a for o in OVERRIDES for a in ("--set", o)]]
    registered = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert registered.returncode == 0, registered.stderr[-3000:]
    versions = client.search_model_versions(f"name='{STUDY}'")
    assert len(versions) == len(cells) and {v.tags["reuse_nets.cell"] for v in versions} == set(cells)
    best = client.get_model_version_by_alias(STUDY, "best")
    python = environment_without_this_project(tmp_path / "env")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    script = (
        "import sys, mlflow, numpy as np\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(np.asarray(model.predict(np.zeros((2, 28, 28, 1), 'float32'))).shape)\n"
    )
    loaded = subprocess.run(
        [python, "-c", script, f"models:/{STUDY}@best"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    assert loaded.stdout.strip().splitlines()[-1] == "(2, 10)"
    assert best.run_id in {r.info.run_id for r in children}


def test_the_logged_command_hides_url_passwords(monkeypatch):
    """Runners on other machines name servers on the command line; its tag is readable by all."""
    from reuse_nets.store import provenance

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "sweeps/run.py",
            "--storage",
            "postgresql+psycopg://alice:s3cr%40t@db.example:5432/optuna",
            "--tracking-uri=http://bob:hunter2@mlflow.example:5000",
            "--set",
            "name=a:b@c",
        ],
    )
    command = provenance.command_line()
    assert "s3cr" not in command and "hunter2" not in command, command
    assert "postgresql+psycopg://alice:***@db.example:5432/optuna" in command
    assert "--tracking-uri=http://bob:***@mlflow.example:5000" in command
    assert "name=a:b@c" in command  # not a URL: left alone


# --- A Slurm job array (examples/slurm/study.sbatch) on a one-node cluster -----------------

SLURM_DAEMONS = ("munged", "slurmctld", "slurmd")
SLURM_TIMEOUT = 900  # seconds for the whole array: two runners of the small smoke grid
SLURM_CONF = """\
ClusterName=reusenets
SlurmctldHost=localhost({host})
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeAddr={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def slurm_sbin(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster (Debian's slurm-wlm): munged, slurmctld and slurmd, this user's.

    Slurm's daemons have no listen-address option: they listen on their (random, high)
    ports on every interface; the node and controller are addressed as 127.0.0.1.
    """
    missing = [name for name in (*SLURM_DAEMONS, "sbatch", "sinfo", "squeue") if not slurm_sbin(name)]
    if missing:
        if os.environ.get("REUSE_NETS_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is missing ({', '.join(missing)}) and REUSE_NETS_REQUIRE_SLURM=1 (.ci/run installs it)")
        pytest.skip(f"Debian's slurm-wlm is not installed ({', '.join(missing)}): sudo apt-get install slurm-wlm")
    root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))  # short paths: munge's socket path is limited
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    user = pwd.getpwuid(os.getuid()).pw_name
    conf.write_text(
        SLURM_CONF.format(
            host=HOST, user=user, root=root, ctld_port=free_port(), d_port=free_port(), cpus=os.cpu_count() or 2
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munged = [slurm_sbin("munged"), f"--key-file={key}", f"--socket={root}/munge.socket", "--force"]
    munged += [f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"]
    processes = []
    try:
        subprocess.run(munged, check=True, capture_output=True, timeout=30)  # daemonises itself
        for command in ([slurm_sbin("slurmctld"), "-D", "-i"], [slurm_sbin("slurmd"), "-D", "-N", "localhost"]):
            with open(root / f"{Path(command[0]).name}.out", "w") as log:  # the daemon keeps its own copy
                processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(2)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout:
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in root.glob("*.log"))
                pytest.fail(f"the Slurm node never became idle:\n{logs}")
            time.sleep(1)
        yield env
    finally:
        for process in processes:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            if process.poll() is None:
                process.kill()
        pid = root / "munged.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text().strip()), signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


def test_a_slurm_job_array_runs_one_study_with_every_slot_once(postgres, mlflow_server, slurm, tmp_path, fashion_mnist):
    """examples/slurm/study.sbatch as a user submits it: two array tasks, one study through
    PostgreSQL and `mlflow server`; every final slot COMPLETE exactly once."""
    # `fashion_mnist` prepares the TFDS data once, before the tasks share its directory.
    name = "smoke_slurm"  # another study than the two-runner test's, on the same servers
    flags = ["--set", f"name={name}", *[a for o in OVERRIDES for a in ("--set", o)], "--manual-dir", MANUAL_DIR]
    env = {
        **runner_env(),
        **slurm,
        "OPTUNA_STORAGE": postgres.url("slurm"),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "REUSE_NETS_STUDY": STUDY,
        "REUSE_NETS_WORKDIR": str(tmp_path / "runs"),
        "REUSE_NETS_ARGS": " ".join(flags),
    }
    outputs = tmp_path / "slurm-%A_%a.out"
    submit = ["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", "--mem=1G", f"--output={outputs}"]
    submitted = subprocess.run(
        [*submit, str(ROOT / "examples" / "slurm" / "study.sbatch")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + SLURM_TIMEOUT
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], env=env)
            pytest.fail("the job array timed out:\n" + "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("*.out")))
        time.sleep(3)
    logs = sorted(tmp_path.glob("slurm-*.out"))
    assert len(logs) == 2, logs
    for log in logs:
        assert f"study {name}: complete" in log.read_text(), log.read_text()[-4000:]

    spec = study_files.load_study(STUDY, [f"name={name}", *OVERRIDES])
    final = optuna.load_study(study_name=f"{name}:final", storage=postgres.url("slurm"))
    complete = [t for t in final.get_trials() if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["slot"] for t in complete) == list(range(spec.n_final_runs))  # each slot once
    # Both tasks ran trials (a runner per task, sharing the study), under one parent run.
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)
    parents = [r for r in runs if r.data.tags.get("reuse_nets.kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    started = [sum(": started [" in line for line in log.read_text().splitlines()) for log in logs]
    assert all(count > 0 for count in started), started


def test_the_kubernetes_recipe_is_valid_against_the_kubernetes_schema(tmp_path):
    """examples/kubernetes/*.yaml against Kubernetes 1.37's schema, strictly (kubernetes-validate, offline)."""
    manifests = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
    assert {m.name for m in manifests} == {"study-job.yaml", "stores-secret.yaml"}
    checked = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *map(str, manifests)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("passed for resource") == 2, checked.stdout
    # The check can fail: a misspelt field of the Job is refused.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (ROOT / "examples" / "kubernetes" / "study-job.yaml").read_text().replace("completionMode", "completionMod")
    )
    refused = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "completionMod" in refused.stdout + refused.stderr
