"""End-to-end: one `smoke` study (a plain grid of 8 cells, 4 workers on SQLite) run by
`sweeps/run.py` through the whole pipeline, then what the Optuna and MLflow stores, the
console and the report hold.

The study runs once (the module fixture `smoke`) and is shared by every test here.
Tests run in file order: `test_resume_of_a_finished_study_runs_nothing_new`, which
re-runs the command on the shared stores, comes after the tests that read them as the
first run left them.
"""

import re
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.entities import ViewType
from sweep_helpers import (
    ROOT,
    Stores,
    error_line,
    explain,
    quiet_optuna,  # noqa: F401  (autouse: Optuna's log at WARNING in every test here)
    run,
    run_sweep,
    slots,
    small_spec,
    storage_url,
    sweep_command,
    tracking_url,
    trials_in,
)

from reuse_nets.errors import plain_text
from reuse_nets.report import analysis

pytestmark = pytest.mark.slow


# --- smoke: a plain grid through the whole pipeline, then what the stores hold ----------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One finished `smoke` study (8 cells, one final run each, 2 epochs), shared by readers.

    Run by 4 worker processes on the default SQLite storage: more writers than cores.
    """
    directory = tmp_path_factory.mktemp("smoke")
    result = run_sweep(directory, "smoke", "--workers", "4")
    return result, Stores(directory, "smoke")


def test_smoke_ends_with_plain_verdict_lines_and_where_the_report_is(smoke):
    result, _ = smoke
    assert "study smoke: complete" in result.stdout
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1] == "report: reports/smoke/report.md, reports/smoke/report.html (also logged to the parent run)"
    spec = small_spec("smoke")
    comparisons = len(analysis.conditions(spec)) * len(spec.contrast_pairs())
    verdicts = lines[-1 - comparisons : -1]
    assert comparisons == 6 and all(
        re.fullmatch(
            r"strategy=\w+,depth=\d vs strategy=plain: inconclusive, [+-]\d\.\d{4} test_accuracy \(1 seed, no interval\)",
            line,
        )
        for line in verdicts
    ), result.stdout[-3000:]
    # Plain text: no Markdown escapes (the description's "1\-2"), headings or tables.
    assert "\\" not in result.stdout and "## " not in result.stdout and "|---" not in result.stdout


def test_four_workers_on_sqlite_lose_and_duplicate_no_point(smoke):
    result, stores = smoke
    assert all(f"[worker {i}]" in result.stdout for i in (1, 2, 3, 4)), result.stdout[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    assert "LOST" not in result.stdout  # no trial was cut short by a storage error
    study = stores.final()
    complete = trials_in(study, "COMPLETE")
    assert slots(complete) == list(range(8))  # every point once: none lost, none twice
    for trial in study.get_trials():
        assert trial.state.name == "COMPLETE" or trial.user_attrs.get("outcome") == "unused", trial
    assert len(stores.children()) == 8


def test_smoke_has_one_experiment_and_one_finished_parent_run(smoke):
    _, stores = smoke
    experiments = stores.client.search_experiments(view_type=ViewType.ALL)
    assert sorted(e.name for e in experiments) == ["Default", "smoke"]  # MLflow's own, and ours
    experiment = stores.experiment()
    # The description as one escaped Markdown paragraph: the UI renders it as written.
    assert experiment.tags["mlflow.note.content"] == plain_text(small_spec("smoke").description)
    parent = stores.parent()
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "smoke"
    assert parent.data.tags["reuse_nets.study"] == "smoke"
    assert parent.data.params["compare"] == "strategy=['plain', 'concat', 'residual', 'masked'], depth=[1, 2]"
    assert parent.data.params["tuned"] == "none"
    # The report is the parent run's description in the MLflow UI.
    assert parent.data.tags["mlflow.note.content"].startswith("# Study `smoke`")
    assert stores.optuna_names() == ["smoke:final"]  # a plain grid has no tuning studies


def test_smoke_parent_run_carries_spec_and_report(smoke):
    _, stores = smoke
    parent_id = stores.parent().info.run_id
    assert {"study.yaml", "report"} <= stores.artifacts(parent_id)
    report = stores.artifacts(parent_id, "report")
    expected = {"report.md", "report.html", "isolation.png", "paired_differences.png", "grad_norm_vs_depth.png"}
    assert {f"report/{name}" for name in expected} <= report
    # The resolved spec travels with the result: it validates back to what was run.
    spec_file = stores.client.download_artifacts(parent_id, "study.yaml", str(stores.directory / "download"))
    from reuse_nets.design.study_spec import StudySpec

    assert StudySpec.model_validate(yaml.safe_load(Path(spec_file).read_text())) == small_spec("smoke")
    png = stores.client.download_artifacts(parent_id, "report/isolation.png", str(stores.directory / "download"))
    assert Path(png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_smoke_has_one_finished_child_run_per_final_slot(smoke):
    _, stores = smoke
    study = stores.final()
    parent_id = stores.parent().info.run_id
    trials = study.get_trials()
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert len(stores.runs()) == 9  # nothing else in the experiment
    spec = small_spec("smoke")
    for trial in trials:
        run = stores.child_of(trial)
        tags = run.data.tags
        cell = spec.cells()[trial.user_attrs["slot"]]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"final-{cell.key}-seed=0"
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["reuse_nets.study"] == "smoke"
        assert tags["reuse_nets.phase"] == "final"
        assert tags["reuse_nets.cell"] == cell.key
        assert tags["optuna.study_name"] == "smoke:final"
        assert tags["optuna.trial_number"] == str(trial.number)
        assert tags["optuna.trial_state"] == "COMPLETE"
        assert tags["reuse_nets.outcome"] == "completed"
        assert tags["reuse_nets.exec.compile_cache"] == "4"
        assert tags["reuse_nets.exec.trainer_reused"] in ("true", "false")
        assert trial.params == {**cell.values, "seed": 0}
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value), name
        assert run.data.params["width"] == "32"
        assert run.data.params["learning_rate"] == "0.002"
        assert run.data.params["epochs"] == "2"
        assert run.data.params["split.train"] == "train[:1000]"


def test_smoke_child_runs_have_per_epoch_metrics(smoke):
    _, stores = smoke
    for trial in stores.final().get_trials():
        run_id = trial.user_attrs["mlflow_run_id"]
        val_accuracy = stores.history(run_id, "val_accuracy")
        assert [step for step, _ in val_accuracy] == [1, 2]
        assert trial.value == pytest.approx(val_accuracy[-1][1], abs=1e-7)
        assert trial.intermediate_values == {}  # final runs are never reported to a pruner
        assert [step for step, _ in stores.history(run_id, "grad_norm/block_01")] == [1, 2]
        block_02 = stores.history(run_id, "grad_norm/block_02")
        assert [step for step, _ in block_02] == ([1, 2] if trial.params["depth"] == 2 else [])
        metrics = stores.client.get_run(run_id).data.metrics
        assert {"loss", "accuracy", "val_loss", "test_accuracy", "test_loss"} <= set(metrics)
        assert trial.user_attrs["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_smoke_report_numbers_are_the_final_runs_test_metrics(smoke):
    _, stores = smoke
    report = (stores.directory / "reports" / "smoke" / "report.md").read_text()
    for trial in stores.final().get_trials():
        cell = small_spec("smoke").cells()[trial.user_attrs["slot"]]
        test = stores.client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics["test_accuracy"]
        assert f"| {cell.key} | {test:.4f} (1 seed, no interval) | 1 | 0 | {trial.value:.4f} |" in report
    differences = [line for line in report.splitlines() if line.startswith("| depth=")]
    assert len(differences) == 6 and all("| 1 seed, no interval |" in line for line in differences), differences


def test_resume_of_a_finished_study_runs_nothing_new(smoke):
    """Re-running the same command on a finished study: no trial, no second parent run.

    Runs after the read-only smoke tests above (it touches the shared stores).
    """
    _, stores = smoke
    before_trials = [(t.number, t.state.name, t.value) for t in stores.final().get_trials()]
    before_runs = {r.info.run_id: r.info.status for r in stores.runs()}
    parent_id = stores.parent().info.run_id

    result = run_sweep(stores.directory, "smoke")

    assert "started" not in result.stdout, result.stdout  # no trial ran
    assert "study smoke: complete" in result.stdout
    assert [(t.number, t.state.name, t.value) for t in stores.final().get_trials()] == before_trials
    assert {r.info.run_id: r.info.status for r in stores.runs()} == before_runs
    assert stores.parent().info.run_id == parent_id
    assert stores.parent().info.status == "FINISHED"


def test_another_spec_of_the_same_study_in_the_same_experiment_is_refused(smoke, tmp_path):
    """A second storage (or a deleted optuna.db) would otherwise mix two designs in one report."""
    _, stores = smoke
    command = sweep_command(stores.directory, "smoke", "--set", "base.epochs=1")
    command[command.index("--storage") + 1] = f"sqlite:///{tmp_path}/other.db"
    result = run(command, cwd=stores.directory)
    assert result.returncode == 2, explain(result)
    assert "holds a run of a different spec of this study" in error_line(result)
    assert len(stores.parent_runs()) == 1


def test_report_and_register_read_the_spec_the_study_ran_with_and_refuse_a_different_set(smoke):
    """smoke ran with --set (SMALL_DATA): report and register read its spec from the parent run."""
    _, stores = smoke
    stores_args = ["--storage", storage_url(stores.directory), "--tracking-uri", tracking_url(stores.directory)]

    def command(script: str, *extra: str) -> list[str]:
        return [sys.executable, str(ROOT / "sweeps" / script), "--study", "smoke", *stores_args, *extra]

    rebuilt = run(command("report.py"), cwd=stores.directory)  # without the run's --set
    assert rebuilt.returncode == 0, explain(rebuilt)
    last = rebuilt.stdout.rstrip().splitlines()[-1]
    assert last.startswith("report: reports/smoke/report.md, reports/smoke/report.html (also logged to parent run ")
    assert "strategy=residual,depth=2 vs strategy=plain: inconclusive" in rebuilt.stdout
    registered = run(command("register.py"), cwd=stores.directory)
    assert registered.returncode == 0, explain(registered)
    assert registered.stdout.count("models:/smoke@") == 9, registered.stdout  # 8 cells and best
    for script in ("report.py", "register.py"):
        differs = run(command(script, "--set", "base.epochs=1"), cwd=stores.directory)
        assert differs.returncode == 2, explain(differs)
        assert "study 'smoke' ran with a different spec (parent run " in error_line(differs)


def test_trial_runs_record_mlflow_system_metrics(smoke):
    """MLflow's own system-metrics logging, one sample per `SYSTEM_METRICS_INTERVAL` and one at
    the end of a shorter run: every trial run holds CPU and memory series (GPU ones only where
    a GPU is present)."""
    _, stores = smoke
    children = stores.children()
    sampled = [run for run in children if "system/cpu_utilization_percentage" in run.data.metrics]
    assert children and len(sampled) == len(children), "a trial run of the smoke study holds no system metrics"
    for run in sampled:  # noqa: F402  (the helper `run` is not called here)
        metrics = run.data.metrics
        assert metrics["system/system_memory_usage_megabytes"] > 0 and 0 <= metrics["system/cpu_utilization_percentage"]
        assert not any(name.startswith("system/gpu") for name in metrics)  # no GPU on this machine
        history = stores.history(run.info.run_id, "system/cpu_utilization_percentage")
        assert [step for step, _ in history] == list(range(len(history)))  # one per sample, from 0


def test_every_trial_names_its_cell_phase_and_mlflow_run_for_optuna_dashboard(smoke):
    _, stores = smoke
    experiment_id = stores.experiment().experiment_id
    for trial in stores.final().get_trials(deepcopy=False):
        run = stores.child_of(trial)
        assert trial.user_attrs["cell"] == run.data.tags["reuse_nets.cell"]
        assert trial.user_attrs["phase"] == "final"
        assert trial.user_attrs["mlflow_run_url"] == (
            f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run.info.run_id}"
        )
