"""Runs (or resumes) a study: tuning in every cell, then the final runs, then the report.

    spec -> data -> Optuna studies + MLflow parent run -> phase "tune" (one job
    per cell) -> selection -> phase "final" -> report

Each phase enqueues its slots, runs them here or in `--workers` processes, closes
the runs of trials that died, and repeats until every slot has a result or
failed for good. Re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import multiprocessing.connection
import sys
import time
from pathlib import Path

from reuse_nets import faults, optuna_store, phases, storage_errors, study_runs
from reuse_nets.progress import Progress, WorkerLines
from reuse_nets.phases import Job
from reuse_nets.objective import Objective
from reuse_nets.optuna_store import SweepError, TrialFailed
from reuse_nets.studies import StudySpec


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """How to run a study, beyond what the study file says."""

    storage: str = optuna_store.DEFAULT_STORAGE
    tracking_uri: str | None = None
    timeout: float | None = None  # seconds for this invocation; default the spec's
    workers: int = 1
    data: object = None  # a data.DataSource; None: TFDS defaults
    reports: str | None = None  # folder of report folders; None: report.REPORT_ROOT (./reports)
    verbose: bool = True


@dataclasses.dataclass
class StudyResult:
    study_name: str
    experiment_id: str
    parent_run_id: str
    complete: bool  # every slot of both phases has a result
    report_dir: str | None


PROGRESS_POLL = 2.0  # seconds between the parent's counts of finished trials, with workers
STORAGE_OUTAGE_ROUNDS = 8  # failed rounds in a row (pauses 2 s, 4 s, ... ~4 min in all) before giving up
INTERRUPTED_EXIT = 130  # a worker that stopped on a signal, its trial closed cleanly


def identity_of(spec: StudySpec, job: Job) -> dict:
    return spec.tune_identity(job.slots[0][0]) if job.phase == "tune" else spec.identity()


def run_study(spec: StudySpec, options: SweepOptions = SweepOptions()) -> StudyResult:
    """Runs (or resumes) `spec` until both phases are done, or time runs out.

    Raises:
        SweepError, DataError: problems the user can fix, raised before anything
            is written to either store.
    """
    from reuse_nets import data, execution, report, tracking

    progress = Progress(enabled=options.verbose)
    say = progress.say
    if options.workers < 1:
        raise SweepError(f"--workers must be at least 1, got {options.workers}")
    if options.workers == 1:
        # Thread counts change rounding: pinned (and logged on every run), never left
        # to TensorFlow's machine-dependent default. Workers pin their own share.
        try:
            execution.pin(execution.for_workers(1, spec.execution.xla))
        except execution.ExecutionError as error:
            raise SweepError(str(error)) from None
    # Writes nothing; check_experiment below may create the MLflow store.
    optuna_store.check_storage(options.storage)
    # Before anything is written: a data problem must leave no runs behind. With
    # workers this also prepares the dataset once, before they start.
    say(f"loading {spec.base.dataset.name} (prepared on first use)")
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints its preparation steps
        dataset = data.load(spec.base.dataset, options.data or data.DataSource())
    faults.point("data", spec.name)
    tracking.set_tracking_uri(options.tracking_uri)
    study_runs.check_experiment(spec)
    storage = optuna_store.make_storage(options.storage, spec.execution)
    tune_jobs = phases.tune_jobs(spec)
    for job in tune_jobs:
        optuna_store.check_identity(storage, job.study_name, identity_of(spec, job))
    optuna_store.check_identity(storage, phases.final_study_name(spec), spec.identity())
    experiment_id = study_runs.experiment_id(spec)
    parent_run_id = study_runs.ensure_parent_run(spec, experiment_id)
    study_runs.describe_experiment(spec, experiment_id)
    say(f"study {spec.name}: {len(spec.cells())} cells; MLflow experiment {experiment_id}, parent run {parent_run_id}")
    timeout = options.timeout or spec.timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    context = (spec, options, storage, dataset, experiment_id, parent_run_id, deadline, progress)
    opened: list = []
    try:
        complete = _run_phase(*context, tune_jobs, opened)
        if complete:
            final = _final_job(spec, storage, say)
            complete = _run_phase(*context, [final], opened)
    except BaseException as error:
        for study in opened:
            study_runs.reconcile(study, experiment_id, spec.execution.max_retry)
        study_runs.close_parent(parent_run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        progress.close()
    report_dir = None
    try:
        if optuna_store.load_existing(storage, phases.final_study_name(spec)) is not None:
            faults.point("report", spec.name)
            report_dir = report.write_report(spec, storage, parent_run_id, *([Path(options.reports)] if options.reports else []))
    except BaseException:
        study_runs.close_parent(parent_run_id, "FAILED")
        raise
    study_runs.close_parent(parent_run_id, "FINISHED" if complete else "KILLED")
    return StudyResult(spec.name, experiment_id, parent_run_id, complete, report_dir)


def _final_job(spec: StudySpec, storage, say) -> Job:
    """The final phase's job: from the stored selection, or a new one (stored now)."""
    study = optuna_store.load_existing(storage, phases.final_study_name(spec))
    selection = phases.stored_selection(study) if study is not None else None
    if selection is None:
        selection = phases.select_best(spec, storage) if spec.tune else {}
        job = phases.final_job(spec, selection)
        phases.store_selection(phases.open_job(spec, storage, job, spec.identity()), selection)
    if spec.tune:
        say("selected on " + spec.objective.metric + " (tuning seed " + str(spec.base.seed) + "):")
        for row in phases.selection_rows(spec, selection):
            say(row)
    return phases.final_job(spec, selection)


def _run_phase(spec, options, storage, dataset, experiment_id, parent_run_id, deadline, progress, jobs, opened) -> bool:
    """Runs `jobs` until every slot has a result; False if time ran out first.

    A transient storage error (a locked SQLite file, a dropped connection, a
    tracking server that did not answer) pauses the round, with backoff, and the
    next round goes on; trials it cut short are lost and retried, never failed.
    """
    if not jobs:
        return True
    studies = {job.study_name: phases.open_job(spec, storage, job, identity_of(spec, job)) for job in jobs}
    opened.extend(studies.values())
    progress.phase(jobs[0].phase, sum(len(job.slots) for job in jobs))
    say = progress.say
    context = (spec, options, dataset, experiment_id, parent_run_id, deadline, progress, jobs, studies)
    announced, outages = False, 0
    while True:
        try:
            state = _phase_round(*context, announce_waiting=not announced)
        except Exception as error:
            if not storage_errors.is_transient(error) or outages >= STORAGE_OUTAGE_ROUNDS:
                raise
            outages += 1
            pause = storage_errors.backoff(outages)
            first = (str(error).strip().splitlines() or [""])[0]
            say(f"storage error ({type(error).__name__}: {first}); retrying in {pause:.1f} s")
            time.sleep(pause)
            continue
        outages = 0
        if isinstance(state, bool):
            return state
        announced = state == "waiting"


def _phase_round(spec, options, dataset, experiment_id, parent_run_id, deadline, progress, jobs, studies, announce_waiting):
    """One round: True (every slot done), False (out of time), "ran" or "waiting"."""
    max_retry = spec.execution.max_retry
    say = progress.say
    left = 0
    for job in jobs:
        study = studies[job.study_name]
        closed = study_runs.reconcile(study, experiment_id, max_retry)
        if closed:
            say(f"closed {closed} MLflow run(s) of {job.label} left RUNNING by a dead process")
        optuna_store.enqueue_slots(study, [params for _, params in job.slots], max_retry)
        left += optuna_store.pending(study, len(job.slots), max_retry)
    progress.update(sum(len(job.slots) for job in jobs) - left)
    if not left:
        return True
    if deadline is not None and time.monotonic() >= deadline:
        return False
    waiting = sum(len(optuna_store.trials_in(studies[j.study_name], "WAITING")) for j in jobs)
    if waiting:
        phase = jobs[0].phase
        say(f"phase {phase}: {left} trial(s) to run")

        def count() -> None:  # progress counts what the storage holds, whoever ran it
            with contextlib.suppress(Exception):  # a storage hiccup only delays the count
                progress.update(_done(spec, jobs, studies))

        if options.workers == 1:
            for job in jobs:
                objective = Objective(spec, job, dataset, experiment_id, parent_run_id, progress)
                _optimize(studies[job.study_name], objective, deadline, count)
        else:
            # No more processes than waiting trials (e.g. one retry after a death).
            _run_workers(spec, options, phase, parent_run_id, deadline, min(options.workers, waiting), count)
        return "ran"
    # Only trials RUNNING elsewhere (another worker or machine). Every storage has
    # heartbeats: live trials finish, dead ones go stale, are failed by `reconcile`
    # above and retried. So wait (until the deadline, if any), saying so once.
    if announce_waiting:
        say(f"waiting for {left} trial(s) running elsewhere")
    time.sleep(spec.execution.heartbeat_interval)
    return "waiting"


def _done(spec: StudySpec, jobs: list[Job], studies: dict) -> int:
    """Slots of the phase with a result (or failed for good)."""
    max_retry = spec.execution.max_retry
    return sum(len(job.slots) - optuna_store.pending(studies[job.study_name], len(job.slots), max_retry) for job in jobs)


def _optimize(study, objective: Objective, deadline: float | None, after_trial=lambda: None) -> None:
    """Runs this study's waiting trials in this process."""

    def no_more_waiting(study, trial) -> None:
        after_trial()
        if not optuna_store.trials_in(study, "WAITING"):
            study.stop()

    while waiting := len(optuna_store.trials_in(study, "WAITING")):
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return
        # No forced gc.collect() after each trial (~0.5 s each): Python's own collector
        # frees the old models' reference cycles as trials go.
        study.optimize(objective, n_trials=waiting, timeout=timeout, catch=(TrialFailed,), callbacks=[no_more_waiting])


def _worker(spec_data: dict, options: SweepOptions, index: int, phase: str, parent_run_id: str, deadline: float | None) -> None:
    """Entry point of a `--workers` process: runs the phase's waiting trials.

    It shares the storage and the parent's deadline (`time.monotonic` is system-wide).
    """
    from reuse_nets import interrupts, noise

    interrupts.stop_on_signals()
    try:
        noise.quiet_environment()  # our own process: as quiet as the command that started it
        noise.quiet_libraries()
        noise.import_tensorflow()
        _work(spec_data, options, index, phase, parent_run_id, deadline)
    except KeyboardInterrupt:
        # Its trial and MLflow run are closed already (interrupted, KILLED); the
        # parent reports the interruption once, for all workers.
        sys.exit(INTERRUPTED_EXIT)


def _work(spec_data: dict, options: SweepOptions, index: int, phase: str, parent_run_id: str, deadline: float | None) -> None:
    from reuse_nets import data, execution, tracking

    spec = StudySpec.model_validate(spec_data)
    execution.pin(execution.for_workers(options.workers, spec.execution.xla))
    lines = WorkerLines(index, options.verbose)  # the parent shows the counts
    tracking.set_tracking_uri(options.tracking_uri)
    storage = optuna_store.make_storage(options.storage, spec.execution)
    if phase == "tune":
        jobs = phases.tune_jobs(spec)
    else:
        final = optuna_store.load_existing(storage, phases.final_study_name(spec))
        jobs = [phases.final_job(spec, phases.stored_selection(final))]
    experiment_id = study_runs.experiment_id(spec)
    dataset = data.load(spec.base.dataset, options.data or data.DataSource())
    for job in jobs:
        study = phases.open_job(spec, storage, job, identity_of(spec, job), stream=index)
        _optimize(study, Objective(spec, job, dataset, experiment_id, parent_run_id, lines), deadline)


def _run_workers(
    spec: StudySpec, options: SweepOptions, phase: str, parent_run_id: str, deadline: float | None, count: int, poll
) -> None:
    """Runs `count` worker processes until they exit, calling `poll()` every PROGRESS_POLL s."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker, args=(spec.model_dump(mode="json"), options, i + 1, phase, parent_run_id, deadline), daemon=False
        )
        for i in range(count)
    ]
    for process in processes:
        process.start()
    try:
        while alive := [p.sentinel for p in processes if p.is_alive()]:
            multiprocessing.connection.wait(alive, timeout=PROGRESS_POLL)
            poll()
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        _stop_workers(processes)
        raise
    failed = [p.exitcode for p in processes if p.exitcode]
    # A worker killed by a signal (the OOM killer's SIGKILL) lost its trial: that trial's
    # heartbeat goes stale and its slot is retried, up to execution.max_retry times. A
    # worker that exited with an error of its own (exit code > 0) points at a bug.
    if len(failed) == len(processes) and all(code > 0 and code != INTERRUPTED_EXIT for code in failed):
        raise SweepError(f"all {len(processes)} workers failed (exit codes {failed}); see their output above")
    if failed:
        print(f"warning: {len(failed)} worker(s) exited with codes {failed}", file=sys.stderr)


def _stop_workers(processes) -> None:
    """Asks every worker to stop (SIGTERM), gives them time to close their runs, then kills."""
    from reuse_nets.interrupts import SHUTDOWN_GRACE

    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: a KeyboardInterrupt in the worker, as Ctrl-C would be
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            # Its trial is left RUNNING; its heartbeat goes stale and the next run retries it.
            process.kill()
            process.join()


def summary(result: StudyResult) -> str:
    """The end-of-study summary: state, where to look, and the report's findings."""
    from pathlib import Path

    import mlflow

    from reuse_nets import ui_links

    state = "complete" if result.complete else "incomplete (re-run the same command to resume)"
    lines = [
        f"study {result.study_name}: {state}",
        f"MLflow experiment {result.experiment_id}, parent run {result.parent_run_id}",
        # run_study set the tracking URI: this is where the runs went.
        ui_links.mlflow_ui_hint(result.experiment_id, mlflow.get_tracking_uri()),
    ]
    if result.report_dir:
        report = (Path(result.report_dir) / "report.md").read_text().splitlines()
        lines += [line for line in report if not line.startswith(("![", "# ", "## Plots"))]
        lines.append(f"report: {result.report_dir}/report.md (also logged to the parent run)")
    return "\n".join(lines).rstrip()
