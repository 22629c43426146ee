"""One study run: its context, and running a phase's jobs until every slot has a result.

`StudyRun` holds what every part of a run needs (spec, options, Optuna storage,
dataset, MLflow experiment and parent run, deadline, progress). The parent
process opens it with `StudyRun.start` (which checks everything before writing
anything); a `--workers` process rebuilds it with `StudyRun.join`. Both run a
phase's waiting trials the same way, through `optimize`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reuse_nets.design import plan
from reuse_nets.design.plan import Job
from reuse_nets.design.study_spec import StudySpec
from reuse_nets.errors import DiskFull, ExecutionError, SweepError, TrialFailed, first_line
from reuse_nets.names import Phase, TrialState
from reuse_nets.runtime import disk, faults, profile
from reuse_nets.store import optuna_store, parent_run, storage_errors
from reuse_nets.sweep import phases, reconcile, worker_share, workers
from reuse_nets.sweep.objective import Objective
from reuse_nets.sweep.progress import Progress

STORAGE_OUTAGE_ROUNDS = 8  # failed rounds in a row (pauses 2 s, 4 s, ... ~4 min in all) before giving up


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """How to run a study, beyond what the study file says."""

    storage: str = optuna_store.DEFAULT_STORAGE
    tracking_uri: str | None = None
    timeout: float | None = None  # seconds for this invocation; default the spec's
    workers: int = 1
    data: Any = None  # a train.data.DataSource; None: TFDS defaults
    reports: str | None = None  # folder of report folders; None: ./reports
    verbose: bool = True
    checkpoints: str | None = None  # folder of per-slot epoch checkpoints; None: ./checkpoints


@dataclasses.dataclass
class StudyRun:
    """A study being run, in the parent process or in a worker."""

    spec: StudySpec
    options: SweepOptions
    storage: Any  # optuna RDBStorage
    dataset: Any  # train.data.Dataset
    experiment_id: str
    parent_run_id: str
    deadline: float | None  # time.monotonic() value; shared with workers (system-wide clock)
    progress: Any  # sweep.progress.Progress, or WorkerLines in a worker
    stream: int = 0  # worker index (0: the parent); offsets the sampler seed

    @classmethod
    def start(cls, spec: StudySpec, options: SweepOptions, progress: Progress) -> StudyRun:
        """Checks stores, data and identities, then opens the experiment and parent run.

        Raises:
            SweepError, DataError, ExecutionError: problems the user can fix, raised
                before anything is written to either store.
        """
        import mlflow

        from reuse_nets.store import tracking
        from reuse_nets.train import data, execution, trainers

        if options.workers < 1:
            raise SweepError(f"--workers must be at least 1, got {options.workers}")
        trainers.set_capacity(spec.execution.compile_cache)
        if options.workers > 1:
            execution.share_gpus()  # this process loads the data beside its workers
        if options.workers == 1:
            # Thread counts change rounding: pinned (and logged on every run), never left
            # to TensorFlow's machine-dependent default. Workers pin their own share.
            try:
                execution.pin(execution.for_workers(1, spec.execution.xla))
            except ExecutionError as error:
                raise SweepError(str(error)) from None
        # Writes nothing; check_experiment below may create the MLflow store.
        optuna_store.check_storage(options.storage)
        # Before anything is written: a data problem must leave no runs behind. With
        # workers this also prepares the dataset once, before they start.
        progress.say(f"loading {spec.base.dataset.name} (prepared on first use)")
        with contextlib.redirect_stdout(io.StringIO()), profile.section("data"):  # TFDS prints its preparation
            dataset = data.load(spec.base.dataset, options.data or data.DataSource())
        faults.point("data", spec.name)
        tracking.set_tracking_uri(options.tracking_uri)
        parent_run.check_experiment(spec)
        storage = optuna_store.make_storage(options.storage, spec.execution)
        # The identity of every Optuna study is checked here, once, before anything is written.
        for job in plan.tune_jobs(spec):
            optuna_store.check_identity(storage, job.study_name, job.identity)
        optuna_store.check_identity(storage, plan.final_study_name(spec), spec.identity())
        # A user who may only read the experiment is refused (403) at the first write,
        # the parent run's, so nothing is written: one line, as for a refused login (401).
        with parent_run.refused_logins(spec.name, mlflow.get_tracking_uri()):
            experiment_id = parent_run.experiment_id(spec)
            parent_run_id = parent_run.ensure_parent_run(spec, experiment_id, dataset)
            parent_run.describe_experiment(spec, experiment_id)
        timeout = options.timeout or spec.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        return cls(spec, options, storage, dataset, experiment_id, parent_run_id, deadline, progress)

    @classmethod
    def join(
        cls, spec: StudySpec, options: SweepOptions, parent_run_id: str, deadline: float | None, stream: int, lines
    ) -> StudyRun:
        """The same study run, in `--workers` process `stream` (the parent checked everything)."""
        from reuse_nets.store import tracking
        from reuse_nets.train import data, execution, trainers

        execution.pin(execution.for_workers(options.workers, spec.execution.xla))
        trainers.set_capacity(spec.execution.compile_cache)
        tracking.set_tracking_uri(options.tracking_uri)
        storage = optuna_store.make_storage(options.storage, spec.execution)
        dataset = data.load(spec.base.dataset, options.data or data.DataSource())
        experiment_id = parent_run.experiment_id(spec)
        return cls(spec, options, storage, dataset, experiment_id, parent_run_id, deadline, lines, stream)

    def say(self, line: str) -> None:
        self.progress.say(line)

    def jobs(self, phase: Phase) -> list[Job]:
        """The phase's jobs; the final one from the selection stored when it began."""
        if phase == Phase.TUNE:
            return plan.tune_jobs(self.spec)
        return [phases.stored_final_job(self.spec, self.storage)]

    def open(self, job: Job):
        return phases.open_job(self.spec, self.storage, job, stream=self.stream)

    def optimize(self, job: Job, after_trial: Callable[[], None] = lambda: None, study=None) -> None:
        """Runs the job's waiting trials in this process.

        `study`: the job's study as the phase opened it, before its slots were enqueued,
        so that its sampler seed counts only earlier trials (`phases.sampler`); a
        worker opens its own.
        """
        study = study if study is not None else self.open(job)
        from reuse_nets.train import checkpoints

        objective = Objective(
            self.spec,
            job,
            self.dataset,
            self.experiment_id,
            self.parent_run_id,
            self.progress,
            checkpoint_root=Path(self.options.checkpoints or checkpoints.DEFAULT_ROOT),
            storage_url=self.options.storage,
        )

        def no_more_waiting(study, trial) -> None:
            after_trial()
            if not optuna_store.trials_in(study, TrialState.WAITING):
                study.stop()

        while waiting := len(optuna_store.trials_in(study, TrialState.WAITING)):
            timeout = None if self.deadline is None else self.deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            # No forced gc.collect() after each trial (~0.5 s each): Python's own collector
            # frees the old models' reference cycles as trials go.
            try:
                study.optimize(
                    objective, n_trials=waiting, timeout=timeout, catch=(TrialFailed,), callbacks=[no_more_waiting]
                )
            except Exception as error:
                # Optuna's own write after the trial (its FAIL state) may meet the full disk
                # too: the first write refused names the disk, not the clean-up's after it.
                if objective.full_disk is None or error is objective.full_disk:
                    raise
                raise objective.full_disk from error

    def reconcile_all(self, studies) -> None:
        """Closes the runs of trials that died, in every opened study (after a failure)."""
        for study in studies:
            reconcile.reconcile(study, self.experiment_id, self.spec.execution.max_retry)

    def run_phase(self, jobs: list[Job], opened: list) -> bool:
        """Runs `jobs` until every slot has a result; False if time ran out first.

        A transient storage error (a locked SQLite file, a dropped connection, a
        tracking server that did not answer) pauses the round, with backoff, and the
        next round goes on; trials it cut short are lost and retried, never failed.
        """
        if not jobs:
            return True
        studies = {job.study_name: self.open(job) for job in jobs}
        opened.extend(studies.values())
        self.progress.phase(jobs[0].phase, sum(len(job.slots) for job in jobs))
        announced, outages = False, 0
        while True:
            try:
                state = self._round(jobs, studies, announce_waiting=not announced)
            except Exception as error:
                if not storage_errors.is_transient(error) or outages >= STORAGE_OUTAGE_ROUNDS:
                    raise
                outages += 1
                pause = storage_errors.backoff(outages)
                self.say(f"storage error ({type(error).__name__}: {first_line(error, '')}); retrying in {pause:.1f} s")
                time.sleep(pause)
                continue
            outages = 0
            if isinstance(state, bool):
                return state
            announced = state == "waiting"

    def _round(self, jobs: list[Job], studies: dict, announce_waiting: bool) -> bool | str:
        """One round: True (every slot done), False (out of time), "ran" or "waiting"."""
        max_retry = self.spec.execution.max_retry
        left = 0
        for job in jobs:
            study = studies[job.study_name]
            closed = reconcile.reconcile(study, self.experiment_id, max_retry)
            if closed:
                self.say(f"closed {closed} MLflow run(s) of {job.label} left RUNNING by a dead process")
            optuna_store.enqueue_slots(study, [params for _, params in job.slots], max_retry)
            left += optuna_store.pending(study, len(job.slots), max_retry)
        self.progress.update(sum(len(job.slots) for job in jobs) - left)
        if not left:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        waiting = sum(len(optuna_store.trials_in(studies[j.study_name], TrialState.WAITING)) for j in jobs)
        if waiting:
            self.say(f"phase {jobs[0].phase}: {left} trial(s) to run")

            def count() -> None:  # progress counts what the storage holds, whoever ran it
                with contextlib.suppress(Exception):  # a storage hiccup only delays the count
                    self.progress.update(self._done(jobs, studies))

            if self.options.workers == 1:
                for job in jobs:
                    self.optimize(job, count, study=studies[job.study_name])
            else:
                # No more processes than waiting trials (e.g. one retry after a death).
                spec_data, phase = self.spec.model_dump(mode="json"), jobs[0].phase
                started = min(self.options.workers, waiting)
                workers.run_workers(
                    worker_main,
                    lambda index: (spec_data, self.options, index, started, phase, self.parent_run_id, self.deadline),
                    started,
                    count,
                )
            return "ran"
        # Only trials RUNNING elsewhere (another worker or machine). Every storage has
        # heartbeats: live trials finish, dead ones go stale, are failed by `reconcile`
        # above and retried. So wait (until the deadline, if any), saying so once.
        if announce_waiting:
            self.say(f"waiting for {left} trial(s) running elsewhere")
        time.sleep(self.spec.execution.heartbeat_interval)
        return "waiting"

    def _done(self, jobs: list[Job], studies: dict) -> int:
        """Slots of the phase with a result (or failed for good)."""
        max_retry = self.spec.execution.max_retry
        return sum(
            len(job.slots) - optuna_store.pending(studies[job.study_name], len(job.slots), max_retry) for job in jobs
        )


def worker_main(
    spec_data: dict,
    options: SweepOptions,
    index: int,
    count: int,
    phase: Phase,
    parent_run_id: str,
    deadline: float | None,
    stops=None,
) -> None:
    """Entry point of worker `index` of `count`: runs the phase's waiting trials,
    its own share of the cells first (`worker_share.worker_order`, `worker_share.worker_slots`).
    `stops`: a queue for the message of a full disk, which the parent reports."""
    from reuse_nets.runtime import interrupts

    interrupts.stop_on_signals()
    disk.quiet_in_threads()
    try:
        with disk.guard(optuna_storage=options.storage):
            _work(spec_data, options, index, count, phase, parent_run_id, deadline)
    except KeyboardInterrupt:
        # Its trial and MLflow run are closed already (interrupted, KILLED); the
        # parent reports the interruption once, for all workers. At once: Python's
        # teardown of TensorFlow and MLflow could outlast the parent's grace.
        interrupts.exit_at_once(workers.INTERRUPTED_EXIT)
    except DiskFull as full:
        # Its trial is closed as stopped as far as the disk let it; the parent stops the
        # other workers and reports the full disk once. At once, as above: Python's teardown
        # would write (atexit handlers, logs) to the full disk. `stops` is a SimpleQueue: its
        # put is written to the pipe before it returns.
        if stops is not None:
            stops.put(str(full))
        interrupts.exit_at_once(workers.DISK_FULL_EXIT)


def _work(
    spec_data: dict,
    options: SweepOptions,
    index: int,
    count: int,
    phase: Phase,
    parent_run_id: str,
    deadline: float | None,
) -> None:
    """The body of `worker_main`."""
    from reuse_nets.runtime import noise
    from reuse_nets.sweep.progress import WorkerLines
    from reuse_nets.train import execution

    noise.quiet_environment()  # our own process: as quiet as the command that started it
    noise.quiet_libraries()
    profile.started(command=False)
    execution.place_worker(index)  # one GPU per worker, round robin, where there are GPUs
    noise.import_tensorflow()
    spec = StudySpec.model_validate(spec_data)
    lines = WorkerLines(index, options.verbose)  # the parent shows the counts
    run = StudyRun.join(spec, options, parent_run_id, deadline, index, lines)
    jobs = run.jobs(phase)
    for job in worker_share.worker_order(jobs, index, count):
        study = run.open(job)
        if len(jobs) == 1:  # the final phase: one study whose slots span every cell
            optuna_store.prefer_slots(study, worker_share.worker_slots(job, index, count))
        run.optimize(job, study=study)
