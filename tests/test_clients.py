"""End-to-end tests of the real clients: `mlflow ui` and optuna-dashboard in Chromium,
their HTTP APIs, and the HTML report.

One tiny tuned study runs once per module through the real entry point
(`sweeps/run.py`), as a user would run it: in a folder (here a temporary one) with
the default stores, `sqlite:///mlflow.db` + `./mlruns` and `sqlite:///optuna.db`.
A bare `mlflow ui` and `optuna-dashboard` are then started in that folder on free
ports of 127.0.0.1, and Debian's Chromium (`/usr/bin/chromium`, driven by
Playwright; never a downloaded browser) opens what the study printed and wrote.
Screenshots are saved in the module's temporary folder (`screenshots/`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import fashion_mnist_manual_dir
from mlflow.entities import ViewType
from playwright.sync_api import expect, sync_playwright

from reuse_nets import names
from reuse_nets.design import study_files
from reuse_nets.errors import plain_text
from reuse_nets.report import writer as report
from reuse_nets.store import ui_links

ROOT = Path(__file__).resolve().parents[1]
STUDY = "residual_depth"
CELLS = ("strategy=plain,depth=2", "strategy=residual,depth=2")
# 2 cells x 1 tuning trial, then 2 cells x 1 final seed: 4 runs of 500 images, 2 epochs.
OVERRIDES = (
    "compare.strategy=[plain, residual]",
    "compare.depth=[2]",
    "base.epochs=2",
    "base.width=16",
    "base.dataset.train_split=train[:500]",
    "base.dataset.validation_split=train[50000:50300]",
    "base.dataset.test_split=test[:300]",
    "tune.trials_per_cell=1",
    "tune.sampler.n_startup_trials=1",
    "tune.pruner.n_startup_trials=1",
    "tune.pruner.n_warmup_steps=0",
    "final.seeds=[1]",
    "execution.heartbeat_interval=2",
    "execution.grace_period=8",
)
RUN_TIMEOUT = 300  # seconds for the study; about 40 on a busy 2-core machine
SERVER_TIMEOUT = 180  # seconds for a server to answer; `mlflow ui` takes 10-40 on 2 busy cores
UI_TIMEOUT_MS = 30_000  # for a page element to appear
CHROMIUM = "/usr/bin/chromium"  # Debian's package (`.ci/run` installs it)
# Headless as root, and quiet on a closed network: without the background-networking
# flags Chromium's own connections are refused and slow it down.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
# The MLflow runs table (AG Grid): each row's run name is a link to the run's page.
RUN_NAME_LINKS = '[role=gridcell][col-id="attributes.`Run Name`"] a[href]'
# MLflow 3.17 opens its assistant panel on a first visit; it would hide half of each screenshot.
CLOSE_ASSISTANT = """
localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
"""

# --- The study -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Study:
    directory: Path  # where the study ran: mlflow.db, mlruns/, optuna.db, reports/
    stdout: str
    spec: object  # the resolved StudySpec
    experiment_id: str
    parent_run_id: str
    runs: list  # every MLflow run of the experiment, as the store holds them

    @property
    def run_ids(self) -> set[str]:
        return {run.info.run_id for run in self.runs}

    def trials(self, phase: str) -> list:
        return [run for run in self.runs if run.data.tags.get(names.PHASE_TAG) == phase]


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


def clean_env(**extra) -> dict:
    """This environment without MLflow settings: the default stores in the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """The tiny study, run by `sweeps/run.py` with no store arguments in a temporary folder."""
    directory = tmp_path_factory.mktemp("study")
    command = [
        sys.executable,
        os.fspath(ROOT / "sweeps" / "run.py"),
        "--study",
        STUDY,
        "--manual-dir",
        fashion_mnist_manual_dir(),
        "--set",
        " ".join(OVERRIDES),
    ]
    proc = subprocess.run(
        command, cwd=directory, env=clean_env(PYTHONUNBUFFERED="1"), capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert proc.returncode == 0, explain(proc)
    assert {"mlflow.db", "mlruns", "optuna.db", "reports"} <= {p.name for p in directory.iterdir()}, explain(proc)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{directory}/mlflow.db")
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    (parent,) = [run for run in runs if run.data.tags.get(names.KIND_TAG) == "study"]
    return Study(
        directory=directory,
        stdout=proc.stdout,
        spec=study_files.load_study(STUDY, list(OVERRIDES)),
        experiment_id=experiment.experiment_id,
        parent_run_id=parent.info.run_id,
        runs=runs,
    )


# --- Servers ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Server:
    name: str
    process: subprocess.Popen
    port: int
    logs: Path  # the server's stdout and stderr go to logs/<name>.{out,err}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        tails = []
        for stream in ("err", "out"):
            path = self.logs / f"{self.name}.{stream}"
            text = path.read_text(errors="replace") if path.exists() else ""
            tails.append(f"--- {self.name} std{stream}\n{text[-4000:]}")
        return "\n".join(tails)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Never through a proxy the environment may name: every server here is on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, body: dict | None = None, timeout: float = 30) -> dict:
    """GET `url` (or POST `body` as JSON) and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def wait_until_up(server: Server, path: str, timeout: float = SERVER_TIMEOUT) -> None:
    """Waits until `path` answers 200; fails with the server's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"{server.name} exited with code {server.process.returncode}\n{server.output()}")
        with contextlib.suppress(OSError):  # refused, reset or timed out: not up yet
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                pass
            with _OPENER.open(server.url + path, timeout=5) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.25)
    pytest.fail(f"{server.name} did not answer {server.url}{path} within {timeout:.0f} s\n{server.output()}")


def stop(process: subprocess.Popen, grace: float = 10) -> None:
    """Stops the server and every process it started (workers, job queues), by its group id.

    SIGTERM first, then SIGKILL for whatever is left: `mlflow ui` may exit and leave
    its job consumers behind. The group is the server's own session: nothing else.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def serve(name: str, command: list[str], cwd: Path, logs: Path, ready_path: str) -> Iterator[Server]:
    """Runs `command --host 127.0.0.1 --port <free>` in `cwd` until the block ends, even on failure."""
    port = free_port()
    logs.mkdir(exist_ok=True)
    with open(logs / f"{name}.out", "wb") as out, open(logs / f"{name}.err", "wb") as err:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            stdout=out,
            stderr=err,
            # HOME: gunicorn (optuna-dashboard) keeps a control socket there; not the user's.
            env=clean_env(HOME=os.fspath(logs)),
            start_new_session=True,
        )
    server = Server(name, process, port, logs)
    try:
        wait_until_up(server, ready_path)
        yield server
    finally:
        stop(process)


def venv_script(name: str) -> str:
    """A console script of this environment (`mlflow`, `optuna-dashboard`), as a user runs it."""
    return os.fspath(Path(sys.executable).with_name(name))


@pytest.fixture(scope="module")
def mlflow_ui(study) -> Iterator[Server]:
    """A bare `mlflow ui` in the study's folder: no store arguments, its defaults find the runs.

    One worker (the default is 4) starts faster on 2 cores and serves one browser well.
    """
    command = [venv_script("mlflow"), "ui", "--workers", "1"]
    with serve("mlflow-ui", command, study.directory, study.directory / "server-logs", "/health") as server:
        yield server


@pytest.fixture(scope="module")
def dashboard(study) -> Iterator[Server]:
    command = [venv_script("optuna-dashboard"), f"sqlite:///{study.directory}/optuna.db"]
    with serve("optuna-dashboard", command, study.directory, study.directory / "server-logs", "/api/meta") as server:
        yield server


# --- The browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        # A newcomer's machine may lack the browser; CI (REUSE_NETS_REQUIRE_BROWSER=1) must not.
        if os.environ.get("REUSE_NETS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and REUSE_NETS_REQUIRE_BROWSER=1 (.ci/run installs it)")
        pytest.skip(f"Debian's Chromium is not installed ({CHROMIUM}): sudo apt-get install chromium")
    """Debian's Chromium with a fresh profile, driven by Playwright (sync API)."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport=VIEWPORT,
        )
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            context.add_init_script(CLOSE_ASSISTANT)
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    """A new tab; JavaScript errors on it are collected in `page.errors`."""
    tab = browser.new_page()
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def run_ids_in(links) -> list[str]:
    """Run ids from the runs table's links (`#/experiments/<id>/runs/<run id>`)."""
    return [href.rsplit("/", 1)[-1] for href in links.evaluate_all("links => links.map(a => a.getAttribute('href'))")]


def rest_runs(server: Server, experiment_id: str) -> list[dict]:
    """The runs `POST /api/2.0/mlflow/runs/search` returns (one page is all of them here)."""
    answer = http(f"{server.url}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 1000})
    assert "next_page_token" not in answer
    return answer["runs"]


def tags_of(entity: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in entity.get("tags", entity.get("data", {}).get("tags", []))}


# --- mlflow ui ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_printed_link_opens_the_training_runs_page_with_the_parent_and_its_trials(
    study, mlflow_ui, page, screenshots
):
    hints = [line for line in study.stdout.splitlines() if line.startswith("MLflow: ")]
    link = ui_links.mlflow_runs_url(study.experiment_id)
    assert hints == [f"MLflow: run `mlflow ui` here, then open {link}"], study.stdout[-3000:]
    assert link.startswith(f"http://127.0.0.1:{ui_links.MLFLOW_UI_PORT}/#/experiments/{study.experiment_id}/runs")
    url = link.replace(f":{ui_links.MLFLOW_UI_PORT}/", f":{mlflow_ui.port}/", 1)

    page.goto(url)
    names_in_table = page.locator(RUN_NAME_LINKS)
    expect(names_in_table).to_have_text([STUDY])  # the parent run, its trials folded under it
    assert page.url.startswith(url)  # the page the link names (the app appends its table state)
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()  # "Model training" view
    expect(page.get_by_text(study.spec.description, exact=True)).to_be_visible()  # the experiment's description
    page.screenshot(path=screenshots / "mlflow_runs_folded.png")

    page.locator('[role=gridcell][col-id="attributes.`Run Name`"]', has_text=STUDY).get_by_role("button").click()
    expect(names_in_table).to_have_count(len(study.runs))
    page.screenshot(path=screenshots / "mlflow_runs.png")

    shown = dict(zip(run_ids_in(names_in_table), names_in_table.all_inner_texts()))
    assert shown == {run.info.run_id: run.info.run_name for run in study.runs}
    assert next(iter(shown)) == study.parent_run_id  # first, with its nested trials below it
    assert sorted(shown.values()) == sorted(
        [STUDY] + [f"tune-{cell}-0" for cell in CELLS] + [f"final-{cell}-seed=1" for cell in CELLS]
    )
    assert set(shown) == {run["info"]["run_id"] for run in rest_runs(mlflow_ui, study.experiment_id)}
    assert not page.errors


DATASET_CELLS = '[role=gridcell][col-id="attributes.`Dataset`"]'
SOURCE_CELLS = '[role=gridcell][col-id="attributes.`Source`"]'


def test_the_study_row_shows_the_data_it_trained_on_and_the_code_that_ran(study, mlflow_ui, page, screenshots):
    """The parent run's row, all a user sees of a study at first, fills the Dataset and Source columns."""
    (parent,) = [run for run in study.runs if run.info.run_id == study.parent_run_id]
    trial = next(run for run in study.runs if run.info.run_id != study.parent_run_id)
    inputs = parent.inputs.dataset_inputs
    contexts = sorted(tag.value for entry in inputs for tag in entry.tags if tag.key == "mlflow.data.context")
    assert contexts == ["testing", "training", "validation"]
    assert {(e.dataset.name, e.dataset.digest) for e in inputs} == {
        (e.dataset.name, e.dataset.digest) for e in trial.inputs.dataset_inputs
    }
    for key in ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit", "mlflow.user"):
        assert parent.data.tags.get(key) == trial.data.tags.get(key) is not None, key

    page.goto(f"{mlflow_ui.url}/#/experiments/{study.experiment_id}/runs")
    # The grid splits a row between its pinned name column and the rest: matched by row index.
    name_link = page.locator(f'{RUN_NAME_LINKS}[href*="{study.parent_run_id}"]')
    expect(name_link).to_have_text(STUDY)
    index = page.locator("[role=row]", has=name_link).get_attribute("row-index")
    row = page.locator(f'[role=row][row-index="{index}"]')
    dataset = row.locator(DATASET_CELLS)
    for entry in inputs:
        expect(dataset).to_contain_text(f"{entry.dataset.name} ({entry.dataset.digest})")
    expect(row.locator(SOURCE_CELLS)).to_have_text(Path(parent.data.tags["mlflow.source.name"]).name)
    page.screenshot(path=screenshots / "mlflow_study_row.png")
    assert not page.errors


@pytest.mark.slow
def test_rest_api_returns_the_runs_and_the_experiment_the_stores_hold(study, mlflow_ui):
    runs = rest_runs(mlflow_ui, study.experiment_id)

    assert {run["info"]["run_id"] for run in runs} == study.run_ids
    parents = {run["info"]["run_id"]: tags_of(run).get(names.PARENT_TAG) for run in runs}
    assert parents.pop(study.parent_run_id) is None
    assert set(parents.values()) == {study.parent_run_id}  # every trial nested under the study's run
    assert len(parents) == 2 * len(CELLS)  # one tuning trial and one final run per cell
    experiment = http(f"{mlflow_ui.url}/api/2.0/mlflow/experiments/get?experiment_id={study.experiment_id}")[
        "experiment"
    ]
    assert experiment["name"] == STUDY
    assert tags_of(experiment)[names.NOTE_TAG] == plain_text(study.spec.description)  # rendered as written
    assert tags_of(experiment)[names.STUDY_TAG] == STUDY


@pytest.mark.slow
def test_a_trials_metrics_page_shows_the_grad_norm_section(study, mlflow_ui, page, screenshots):
    (trial,) = [run for run in study.trials("final") if run.data.tags[names.CELL_TAG] == CELLS[-1]]
    grad_norms = sorted(
        k.removeprefix(names.GRAD_NORM_PREFIX) for k in trial.data.metrics if k.startswith(names.GRAD_NORM_PREFIX)
    )
    assert grad_norms == ["block_01", "block_02", "global"]  # depth 2

    page.goto(f"{mlflow_ui.url}/#/experiments/{study.experiment_id}/runs/{trial.info.run_id}/model-metrics")
    expect(page.get_by_role("heading", name=trial.info.run_name, exact=True)).to_be_visible()
    # Metric keys "grad_norm/<name>" are grouped in a section named after the prefix.
    section = page.get_by_test_id("experiment-view-compare-runs-section-header").filter(has_text="grad_norm")
    expect(section).to_contain_text(re.compile(rf"^grad_norm\s*\({len(grad_norms)}\)"))  # "grad_norm (3)"
    for name in grad_norms:  # one chart each, titled by the rest of the key, with the run's line drawn
        chart = page.get_by_test_id("experiment-view-compare-runs-card").filter(has=page.get_by_text(name, exact=True))
        expect(chart).to_be_visible()
        expect(
            chart.get_by_text(f"{trial.info.run_name} ({names.GRAD_NORM_PREFIX}{name})", exact=True)
        ).to_be_attached()
        expect(chart.locator(".js-plotly-plot path.js-line").first).to_be_attached()
    page.screenshot(path=screenshots / "mlflow_trial_metrics.png")
    assert not page.errors


DEEP = 256  # blocks: 257 grad_norm series (global + one per block), as a depth-256 trial logs
DEEP_EPOCHS = 10
MAX_BATCH = 1000  # metrics per MLflow log_batch request


@pytest.mark.slow
def test_a_depth_256_trials_metrics_page_loads_with_its_257_grad_norm_series(study, mlflow_ui, page, screenshots):
    """The UI at depth: the per-block series of a deep trial still load and draw in the browser.

    The run is written with MLflow's client (the series a depth-256 trial logs, 10 epochs),
    in an experiment of its own beside the study's; training one here would take minutes.
    """
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{study.directory}/mlflow.db")
    experiment_id = client.create_experiment("ui_at_depth")
    run_id = client.create_run(experiment_id, run_name="depth-256").info.run_id
    keys = [f"{names.GRAD_NORM_PREFIX}global"] + [f"{names.GRAD_NORM_PREFIX}block_{i:02d}" for i in range(1, DEEP + 1)]
    metrics = [
        Metric(k, 1.0 / (1 + i + epoch), 0, epoch) for epoch in range(1, DEEP_EPOCHS + 1) for i, k in enumerate(keys)
    ]
    for start in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])
    client.set_terminated(run_id)

    started = time.monotonic()
    page.goto(f"{mlflow_ui.url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
    section = page.get_by_test_id("experiment-view-compare-runs-section-header").filter(has_text="grad_norm")
    expect(section).to_contain_text(re.compile(rf"^grad_norm\s*\({len(keys)}\)"))  # "grad_norm (257)"
    first = page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=page.get_by_text("block_01", exact=True)
    )
    expect(first.locator(".js-plotly-plot path.js-line").first).to_be_attached()
    seconds = time.monotonic() - started
    page.screenshot(path=screenshots / "mlflow_depth_256_metrics.png")
    (screenshots / "mlflow_depth_256_seconds.txt").write_text(f"{seconds:.1f}\n")
    print(f"depth-256 metrics page: section and first chart in {seconds:.1f} s")
    assert seconds < UI_TIMEOUT_MS / 1000  # within what every other page gets
    assert not page.errors


@pytest.mark.slow
def test_the_parent_runs_overview_shows_the_report_as_its_description(study, mlflow_ui, page, screenshots):
    page.goto(f"{mlflow_ui.url}/#/experiments/{study.experiment_id}/runs/{study.parent_run_id}")

    expect(page.get_by_role("heading", name=f"Study {STUDY}", exact=True)).to_be_visible()  # the report's "# Study `…`"
    page.get_by_text("Show more", exact=True).click()  # the description is folded after a few lines
    for heading in ("Verdict", "Tuning budget and selection", f"Final {study.spec.objective.test_metric} per cell"):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    expect(page.locator("table", has_text="strategy=residual,depth=2").first).to_be_visible()
    # The report's plots, linked to the parent run's logged copies, load from the UI's server.
    plots = page.locator("img[src*='get-artifact']")
    expect(plots.first).to_be_visible()
    page.wait_for_function(
        "() => { const i = [...document.images].filter(i => i.src.includes('get-artifact'));"
        " return i.length >= 3 && i.every(x => x.complete && x.naturalWidth > 0); }"
    )
    page.screenshot(path=screenshots / "mlflow_parent_overview.png")
    assert not page.errors


# --- optuna-dashboard ----------------------------------------------------------------------------


@pytest.mark.slow
def test_optuna_dashboard_lists_every_optuna_study_of_the_study(study, dashboard, page, screenshots):
    expected = {f"{STUDY}:tune:{cell}" for cell in CELLS} | {f"{STUDY}:final"}
    stored = {s.study_name for s in optuna.get_all_study_summaries(storage=f"sqlite:///{study.directory}/optuna.db")}
    assert stored == expected

    listed = [s["study_name"] for s in http(f"{dashboard.url}/api/studies")["study_summaries"]]

    assert sorted(listed) == sorted(expected)
    page.goto(f"{dashboard.url}/dashboard")
    for name in expected:  # each study a card headed "<number>. <name>"
        expect(page.get_by_role("heading", name=re.compile(rf"^\d+\. {re.escape(name)}$"))).to_be_visible()
    page.screenshot(path=screenshots / "optuna_dashboard.png")
    assert not page.errors


@pytest.mark.slow
def test_optuna_dashboard_shows_each_trials_cell_phase_and_mlflow_run_link(study, dashboard, page, screenshots):
    (summary,) = [
        s for s in http(f"{dashboard.url}/api/studies")["study_summaries"] if s["study_name"].endswith(":final")
    ]
    trials = optuna.load_study(study_name=summary["study_name"], storage=f"sqlite:///{study.directory}/optuna.db")
    attrs = [t.user_attrs for t in trials.get_trials(deepcopy=False)]
    page.goto(f"{dashboard.url}/dashboard/studies/{summary['study_id']}/trials")
    # The selected trial's user attributes: its cell, its phase, the link to its MLflow run.
    shown = page.get_by_role("paragraph").filter(has_text=re.compile(r"^mlflow_run_url http"))
    expect(shown.first).to_be_visible()
    url = shown.first.inner_text().removeprefix("mlflow_run_url").strip()
    (selected,) = [a for a in attrs if a["mlflow_run_url"] == url]
    for key in ("cell", "phase"):
        expect(page.get_by_role("paragraph").filter(has_text=f"{key} {selected[key]}").first).to_be_visible()
    assert selected["phase"] == "final" and selected["cell"] in CELLS
    page.screenshot(path=screenshots / "optuna_dashboard_trial.png")
    assert not page.errors


@pytest.mark.slow
def test_a_trials_system_metrics_page_charts_mlflow_system_metrics(study, mlflow_ui, page, screenshots):
    sampled = [
        run
        for run in study.trials("final") + study.trials("tune")
        if "system/cpu_utilization_percentage" in run.data.metrics
    ]
    assert sampled, "no trial of the study logged system metrics"
    run = sampled[0]
    page.goto(f"{mlflow_ui.url}/#/experiments/{study.experiment_id}/runs/{run.info.run_id}/system-metrics")
    chart = page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=page.get_by_text("cpu_utilization_percentage", exact=True)
    )
    expect(chart).to_be_visible()
    expect(chart.locator(".js-plotly-plot").first).to_be_attached()
    page.screenshot(path=screenshots / "mlflow_system_metrics.png")
    assert not page.errors


# --- The HTML report -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_html_report_renders_headings_tables_images_and_figures(study, page, screenshots):
    path = study.directory / report.REPORT_ROOT / STUDY / "report.html"
    assert path.is_file()

    page.goto(path.as_uri())
    page.wait_for_function("Array.from(document.images).every(image => image.complete)")

    assert page.locator("h1").count() == 1
    assert page.locator("h2").count() >= 4  # Design, Verdict, tuning budget, final results, ...
    text = page.inner_text("body")
    assert not [line for line in text.splitlines() if line.lstrip().startswith("#")], "Markdown headings left as text"
    assert "|---" not in text, "Markdown tables left as text"
    assert page.locator("table").count() >= 3  # tuning budget, final results, paired differences
    expect(page.locator("th", has_text="test_accuracy").first).to_be_visible()
    images = page.evaluate(
        "() => Array.from(document.images, i => ({src: i.getAttribute('src'), width: i.naturalWidth}))"
    )
    assert images, "no plots"
    assert [image for image in images if image["width"] == 0] == []  # every PNG loaded
    # The study is tuned, so the page has plotly figures: loaded offline, drawn, with a size.
    assert page.locator("script[src*=plotly]").count() == 1
    expect(page.locator(".js-plotly-plot").first).to_be_attached()
    assert page.evaluate("typeof window.Plotly") == "object"
    for figure in page.locator(".js-plotly-plot").all():
        box = figure.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        assert figure.locator(".main-svg").count() > 0  # plotly drew it
    page.screenshot(path=screenshots / "report.png", full_page=True)
    assert not page.errors


# --- The printed link, for other tracking stores (no study needed) -------------------------------


@pytest.mark.parametrize(
    "tracking_uri, hint",
    [
        (
            "sqlite:///mlflow.db",
            "MLflow: run `mlflow ui` here, then open http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning",
        ),
        (
            "sqlite:////elsewhere/m.db",
            "MLflow: run `mlflow ui --backend-store-uri sqlite:////elsewhere/m.db` here, then open "
            "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning",
        ),
        (
            "http://tracking:5000/",
            "MLflow: open http://tracking:5000/#/experiments/7/runs?workflowType=machine_learning",
        ),
    ],
    ids=["default-store", "other-store", "tracking-server"],
)
def test_the_mlflow_hint_names_the_store_to_open(tracking_uri, hint, tmp_path):
    assert ui_links.mlflow_ui_hint("7", tracking_uri, cwd=tmp_path) == hint
