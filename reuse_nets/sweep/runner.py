"""Runs (or resumes) a study: tuning in every cell, then the final runs, then the report.

    spec -> data -> Optuna studies + MLflow parent run -> phase "tune" (one job
    per cell) -> selection -> phase "final" -> report

Each phase enqueues its slots, runs them here or in `--workers` processes, closes
the runs of trials that died, and repeats until every slot has a result or
failed for good (`StudyRun.run_phase`). Re-running the same command resumes
where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from reuse_nets.design import plan
from reuse_nets.design.study_spec import StudySpec
from reuse_nets.names import RunStatus
from reuse_nets.runtime import disk, faults, profile
from reuse_nets.store import optuna_store, parent_run
from reuse_nets.sweep import phases
from reuse_nets.sweep.progress import Progress
from reuse_nets.sweep.study_run import StudyRun, SweepOptions

__all__ = ["StudyResult", "SweepOptions", "run_study", "summary"]


@dataclasses.dataclass
class StudyResult:
    study_name: str
    experiment_id: str
    parent_run_id: str
    complete: bool  # every slot of both phases has a result
    report_dir: str | None
    findings: list[str] = dataclasses.field(default_factory=list)  # the report's verdict, plain text


def run_study(spec: StudySpec, options: SweepOptions = SweepOptions()) -> StudyResult:
    """Runs (or resumes) `spec` until both phases are done, or time runs out.

    Raises:
        UserError: problems the user can fix, raised before anything is written
            to either store.
        DiskFull: a disk the study writes to filled. The study stopped as on an
            interrupt: what was stored is whole, and the same call resumes it once
            space is freed, running each slot that was cut short again.
    """
    with disk.guard(optuna_storage=options.storage):
        return _run_study(spec, options)


def _stopped(error: BaseException) -> bool:
    """An interrupt or a full disk: the study stopped, to be resumed, rather than failed."""
    return isinstance(error, KeyboardInterrupt) or disk.is_disk_full(error)


def _cleaning_up_after(error: BaseException):
    """Clean-up after `error`. On a full disk its writes may fail too, and are given up:
    the next start closes what is left open, as it does after a kill."""
    return contextlib.suppress(Exception) if disk.is_disk_full(error) else contextlib.nullcontext()


def _run_study(spec: StudySpec, options: SweepOptions) -> StudyResult:
    from reuse_nets.report import writer

    writer.check_report_root(*([Path(options.reports)] if options.reports else []))
    progress = Progress(enabled=options.verbose)
    try:
        run = StudyRun.start(spec, options, progress)
    except BaseException:
        progress.close()
        raise
    run.say(
        f"study {spec.name}: {len(spec.cells())} cells; MLflow experiment {run.experiment_id}, "
        f"parent run {run.parent_run_id}"
    )
    opened: list = []
    try:
        complete = run.run_phase(plan.tune_jobs(spec), opened)
        if complete:
            complete = run.run_phase([phases.select_final_job(spec, run.storage, run.say)], opened)
    except BaseException as error:
        with _cleaning_up_after(error):
            run.reconcile_all(opened)
        with _cleaning_up_after(error):
            parent_run.close_parent(run.parent_run_id, RunStatus.KILLED if _stopped(error) else RunStatus.FAILED)
        raise
    finally:
        progress.close()
    written = None
    try:
        if optuna_store.load_existing(run.storage, plan.final_study_name(spec)) is not None:
            faults.point("report", spec.name)
            folders = [Path(options.reports)] if options.reports else []
            with profile.section("report"):
                written = writer.write_report(spec, run.storage, run.parent_run_id, *folders)
    except BaseException as error:
        with _cleaning_up_after(error):
            parent_run.close_parent(
                run.parent_run_id, RunStatus.KILLED if disk.is_disk_full(error) else RunStatus.FAILED
            )
        raise
    parent_run.close_parent(run.parent_run_id, RunStatus.FINISHED if complete else RunStatus.KILLED)
    if written is None:
        return StudyResult(spec.name, run.experiment_id, run.parent_run_id, complete, None)
    return StudyResult(spec.name, run.experiment_id, run.parent_run_id, complete, written.folder, written.findings)


def summary(result: StudyResult) -> str:
    """The end-of-study summary, in plain text: state, where to look, the verdict, where the report is."""
    import mlflow

    from reuse_nets.store import ui_links

    state = "complete" if result.complete else "incomplete (re-run the same command to resume)"
    lines = [
        f"study {result.study_name}: {state}",
        f"MLflow experiment {result.experiment_id}, parent run {result.parent_run_id}",
        # run_study set the tracking URI: this is where the runs went.
        ui_links.mlflow_ui_hint(result.experiment_id, mlflow.get_tracking_uri()),
    ]
    if result.report_dir:
        from reuse_nets.report import writer

        lines += result.findings
        lines.append(f"report: {writer.report_paths(result.report_dir)} (also logged to the parent run)")
    return "\n".join(lines)
