"""Optuna sweeps of reuse strategies, tracked as nested MLflow runs.

Layout: one MLflow experiment per study, one parent run per study (found again on
resume), one child run `trial-<n>` per trial. Optuna keeps the truth about trials
in an RDB storage with heartbeats, so a study killed at any point resumes with
the same command: dead trials are failed, retried, and their MLflow runs closed.

Grid studies enqueue every grid point once as a WAITING trial; Optuna hands each
waiting trial to exactly one process, so parallel workers never duplicate a point.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

from reuse_nets import studies
from reuse_nets.data import DataSource, Splits
from reuse_nets.studies import StudySpec

DEFAULT_STORAGE = "sqlite:///optuna.db"  # in the working directory, beside mlflow.db
STUDY_TAG = "optuna.study_name"
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"
RUN_ID_ATTR = "mlflow_run_id"
OUTCOME_ATTR = "outcome"  # set by the objective; absent when the trial's process died
GRID_ATTR = "grid_point"
PARENT_ATTR = "mlflow_parent_run_id"
IDENTITY_ATTR = "spec_identity"


class SweepError(Exception):
    """A sweep problem the user can fix; the message is one line."""


class TrialFailed(Exception):
    """A trial that ended without a value (diverged or raised); the study goes on."""


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """How to run a study, beyond what the study file says."""

    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = None
    n_trials: int | None = None  # total finished trials wanted; default the spec's
    timeout: float | None = None  # seconds for this invocation; default the spec's
    workers: int = 1
    data: DataSource = DataSource()
    verbose: bool = True


def _print(message: str) -> None:
    print(message, flush=True)


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_storage(url: str, spec: StudySpec):
    """RDB storage with heartbeats, so that dead trials are detected and retried."""
    optuna = _optuna()
    execution = spec.execution
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                heartbeat_interval=execution.heartbeat_interval,
                grace_period=execution.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=execution.max_retry
                ),
            )
    except Exception as error:  # SQLAlchemy raises many types for a bad URL or server.
        raise SweepError(f"cannot open Optuna storage {url!r}: {str(error).splitlines()[0]}") from None


def _sampler(spec: StudySpec):
    optuna = _optuna()
    sampler = spec.sampler
    if sampler.type == "tpe":
        return optuna.samplers.TPESampler(seed=sampler.seed, n_startup_trials=sampler.n_startup_trials)
    # Grid points are enqueued, so the sampler only orders nothing; random is inert.
    return optuna.samplers.RandomSampler(seed=sampler.seed)


def _pruner(spec: StudySpec):
    optuna = _optuna()
    pruner = spec.pruner
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.n_startup_trials, n_warmup_steps=pruner.n_warmup_steps
        )
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_resource, max_resource=spec.epochs, reduction_factor=pruner.reduction_factor
        )
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, storage):
    """Creates the Optuna study, or loads it if it exists with the same spec."""
    import json

    optuna = _optuna()
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=_sampler(spec),
        pruner=_pruner(spec),
        direction=spec.objective.direction,
        load_if_exists=True,
    )
    identity = json.dumps(spec.identity(), sort_keys=True)
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
    elif stored != identity:
        raise SweepError(
            f"study {spec.name!r} already exists in this storage with a different spec; "
            f"rename it (--set name={spec.name}_v2) or use another --storage"
        )
    return study


def load_existing_study(spec: StudySpec, url: str):
    """The stored Optuna study of `spec`, without creating anything."""
    optuna = _optuna()
    storage = make_storage(url, spec)
    try:
        return optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        raise SweepError(f"no study {spec.name!r} in storage {url}; run it first with sweeps/run.py") from None


# ---------------------------------------------------------------------------
# Trial bookkeeping


def _finished(trial) -> bool:
    """A trial that produced a result: complete, pruned, or failed with a reason.

    A failed trial without an outcome died or was interrupted and gets retried.
    """
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and trial.user_attrs.get(OUTCOME_ATTR) in ("diverged", "error"))


def count_finished(study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if _finished(t))


def _trials_in(study, *states):
    optuna = _optuna()
    return study.get_trials(deepcopy=False, states=tuple(getattr(optuna.trial.TrialState, s) for s in states))


def enqueue_grid(study, spec: StudySpec) -> int:
    """Enqueues every grid point no live or finished trial covers; returns how many."""
    covered = set()
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name in ("RUNNING", "WAITING") or _finished(trial):
            if GRID_ATTR in trial.user_attrs:
                covered.add(trial.user_attrs[GRID_ATTR])
    added = 0
    for index, point in enumerate(spec.grid()):
        if index not in covered:
            params = {k: v for k, v in point.items() if k != "seed" or len(spec.seeds) > 1}
            study.enqueue_trial(params, user_attrs={GRID_ATTR: index})
            added += 1
    return added


def reconcile(study, experiment_id: str) -> int:
    """Fails trials whose process died and closes MLflow runs left RUNNING.

    Returns the number of MLflow runs it closed.
    """
    import mlflow

    from reuse_nets import tracking

    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    client = mlflow.MlflowClient()
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = 0
    dangling = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{STUDY_TAG}` = '{study.study_name}'",
    )
    for run in dangling:
        number = run.data.tags.get(TRIAL_TAG)
        trial = by_number.get(int(number)) if number is not None else None
        # A RUNNING trial is alive: a dead one was just failed by its stale heartbeat.
        if trial is None or trial.state.name == "RUNNING":
            continue  # the parent run, or a live trial
        client.set_tag(run.info.run_id, STATE_TAG, trial.state.name)
        client.set_tag(run.info.run_id, tracking.OUTCOME_TAG, "died")
        client.set_tag(
            run.info.run_id, tracking.REASON_TAG, "the trial's process died (no heartbeat); Optuna retries its parameters"
        )
        client.set_terminated(run.info.run_id, status="FAILED")
        closed += 1
    return closed


def ensure_parent_run(study, spec: StudySpec, experiment_id: str) -> str:
    """The study's parent MLflow run: reused on resume, created once otherwise."""
    import mlflow
    import yaml

    from reuse_nets import tracking

    client = mlflow.MlflowClient()
    parent_filter = f"tags.`{tracking.KIND_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{spec.name}'"
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            if client.get_run(run_id).info.experiment_id != experiment_id:
                run_id = None
        except mlflow.exceptions.MlflowException:
            run_id = None
    if not run_id:
        found = client.search_runs([experiment_id], filter_string=parent_filter, max_results=1)
        run_id = found[0].info.run_id if found else None
    if not run_id:
        run = client.create_run(
            experiment_id,
            run_name=spec.name,
            tags={tracking.KIND_TAG: "study", STUDY_TAG: spec.name, **tracking.provenance_tags()},
        )
        # Runners on several machines may start a new study at once: all of them keep
        # the earliest parent run and delete their own if it lost.
        parents = client.search_runs([experiment_id], filter_string=parent_filter, order_by=["attributes.start_time ASC"])
        run_id = parents[0].info.run_id
        if run_id != run.info.run_id:
            client.delete_run(run.info.run_id)
        for key, value in {
            "sampler": spec.sampler.type,
            "pruner": spec.pruner.type,
            "objective": f"{spec.objective.direction} {spec.objective.metric}",
            "dataset": spec.dataset.name,
            "family": spec.family,
            "epochs": spec.epochs,
            "seeds": ",".join(map(str, spec.seeds)),
        }.items():
            client.log_param(run_id, key, value)
    study.set_user_attr(PARENT_ATTR, run_id)
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "n_trials", str(spec.total_trials))
    client.log_text(run_id, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), "study.yaml")
    return run_id


# ---------------------------------------------------------------------------
# The objective


class PruningHook:
    """Reports each epoch's objective metric to Optuna and prunes when told to."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def __call__(self, epoch: int, metrics: dict) -> None:
        optuna = _optuna()
        value = metrics.get(self.metric)
        # A diverged network still has a finite accuracy (chance level); divergence
        # is the training loop's to report, as a failure, never as a pruning.
        if value is None or not math.isfinite(value) or not math.isfinite(metrics.get("loss", 0.0)):
            return
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.metric}={value:.4f})")


class Objective:
    """Trains one trial's config under a child MLflow run; returns the final metric."""

    def __init__(self, spec: StudySpec, dataset, experiment_id: str, parent_run_id: str, total: int, say: Callable):
        self.spec, self.dataset, self.total, self.say = spec, dataset, total, say
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id

    def __call__(self, trial) -> float:
        import mlflow

        from reuse_nets import tracking

        optuna = _optuna()
        if self.spec.sampler.type == "grid":
            self._claim_grid_point(trial)
        config = studies.suggest_config(self.spec, trial)
        client = mlflow.MlflowClient()
        metric = self.spec.objective.metric
        label = f"trial {trial.number} ({config.strategy} depth={config.depth} width={config.width} lr={config.learning_rate:.2g} seed={config.seed})"
        self.say(f"{label}: started [{count_finished(trial.study)}/{self.total} finished]")

        def progress(epoch: int, metrics: dict) -> None:
            self.say(
                f"  trial {trial.number} epoch {epoch}/{config.epochs}: loss={metrics['loss']:.4f} "
                f"{metric}={metrics.get(metric, float('nan')):.4f} ({metrics['epoch_time']:.1f}s)"
            )

        run_ids = []

        def on_start(run_id: str) -> None:
            run_ids.append(run_id)
            trial.set_user_attr(RUN_ID_ATTR, run_id)

        tags = {STUDY_TAG: self.spec.name, TRIAL_TAG: str(trial.number), STATE_TAG: "RUNNING"}
        try:
            run_id, result = tracking.track_training(
                config,
                self.dataset,
                experiment_id=self.experiment_id,
                run_name=f"trial-{trial.number}",
                parent_run_id=self.parent_run_id,
                tags=tags,
                hooks=(PruningHook(trial, metric), progress),
                killed_on=(optuna.TrialPruned,),
                on_start=on_start,
            )
        except optuna.TrialPruned as pruned:
            self._finish(client, run_ids, trial, "pruned", "PRUNED")
            self.say(f"{label}: PRUNED ({pruned})")
            raise
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self._finish(client, run_ids, trial, "error", "FAIL")
            self.say(f"{label}: FAILED ({type(error).__name__}: {error})")
            raise TrialFailed(f"{type(error).__name__}: {error}") from error
        if result.status == "diverged":
            self._finish(client, run_ids, trial, "diverged", "FAIL")
            self.say(f"{label}: FAILED (diverged: {result.reason})")
            raise TrialFailed(f"diverged: {result.reason}")
        value = result.final(metric)
        for key, score in result.test_metrics.items():
            trial.set_user_attr(key, score)
        self._finish(client, run_ids, trial, "completed", "COMPLETE")
        self.say(f"{label}: {metric}={value:.4f}")
        return value

    @staticmethod
    def _claim_grid_point(trial) -> None:
        """Refuses a trial whose grid point another trial already owns.

        Runners on several machines may enqueue the same point at the same time;
        of the trials holding a point, the lowest-numbered live or finished one runs.
        """
        point = trial.user_attrs.get(GRID_ATTR)
        if point is None:
            # Another worker took the last grid point between our check and our ask.
            trial.set_user_attr(OUTCOME_ATTR, "unused")
            raise TrialFailed("grid exhausted: no waiting grid point for this trial")
        owners = [
            other.number
            for other in trial.study.get_trials(deepcopy=False)
            if other.user_attrs.get(GRID_ATTR) == point
            and other.number != trial.number
            and (other.state.name == "RUNNING" or _finished(other))
        ]
        if owners and min(owners) < trial.number:
            trial.set_user_attr(OUTCOME_ATTR, "duplicate")
            raise TrialFailed(f"grid point {point} is already trial {min(owners)}'s")

    @staticmethod
    def _finish(client, run_ids, trial, outcome: str, state: str) -> None:
        trial.set_user_attr(OUTCOME_ATTR, outcome)
        for run_id in run_ids:
            client.set_tag(run_id, STATE_TAG, state)


# ---------------------------------------------------------------------------
# Running


def _load_data(spec: StudySpec, source: DataSource):
    from reuse_nets import data

    return data.load_dataset(
        spec.dataset.name,
        Splits(train=spec.dataset.train_split, validation=spec.dataset.validation_split, test=spec.dataset.test_split),
        source,
    )


def _optimize(study, spec: StudySpec, objective: Objective, total: int, deadline: float | None) -> None:
    """Runs trials in this process until the study has `total` finished trials."""
    grid = spec.sampler.type == "grid"

    def enough(study, trial) -> None:
        if count_finished(study) >= total or (grid and not _trials_in(study, "WAITING")):
            study.stop()

    while True:
        remaining = len(_trials_in(study, "WAITING")) if grid else total - count_finished(study)
        timeout = None if deadline is None else deadline - time.monotonic()
        if remaining <= 0 or count_finished(study) >= total or (timeout is not None and timeout <= 0):
            return
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            catch=(TrialFailed,),
            callbacks=[enough],
            gc_after_trial=True,
        )
        if not grid:
            return


def threads_per_worker(workers: int) -> int:
    """TensorFlow threads for each of `workers` processes, so they share the cores."""
    return max(1, (os.cpu_count() or 1) // workers)


def _worker(spec_data: dict, options: SweepOptions, index: int, deadline: float | None) -> None:
    """Entry point of a `--workers` process: shares the storage and the parent's
    deadline (`time.monotonic` is system-wide), runs trials."""
    from reuse_nets import tracking, training

    training.configure_threads(threads_per_worker(options.workers))
    spec = StudySpec.model_validate(spec_data)
    say = (lambda m: _print(f"[worker {index}] {m}")) if options.verbose else (lambda m: None)
    tracking.set_tracking_uri(options.tracking_uri)
    storage = make_storage(options.storage, spec)
    study = open_study(spec, storage)
    experiment_id = tracking.experiment_id(spec.name)
    total = options.n_trials or spec.total_trials
    objective = Objective(spec, _load_data(spec, options.data), experiment_id, study.user_attrs[PARENT_ATTR], total, say)
    _optimize(study, spec, objective, total, deadline)


def _deadline(options: SweepOptions, spec: StudySpec) -> float | None:
    timeout = options.timeout or spec.timeout
    return None if timeout is None else time.monotonic() + timeout


@dataclasses.dataclass
class SweepResult:
    study_name: str
    experiment_id: str
    parent_run_id: str
    finished: int
    total: int
    report_dir: str | None


def run_sweep(spec: StudySpec, options: SweepOptions = SweepOptions()) -> SweepResult:
    """Runs (or resumes) a study until it has its number of finished trials.

    Raises:
        SweepError, DataError: problems the user can fix, raised before anything
            is written to the tracking store.
    """
    from reuse_nets import report, tracking

    say = _print if options.verbose else (lambda m: None)
    if options.workers < 1:
        raise SweepError(f"--workers must be at least 1, got {options.workers}")
    total = options.n_trials or spec.total_trials
    if spec.sampler.type == "grid" and total > len(spec.grid()):
        raise SweepError(f"n_trials={total} exceeds the {len(spec.grid())} points of the grid of {spec.name!r}")
    # Before anything is written: a data problem must leave no runs behind. With
    # workers this also prepares the dataset once, before they start.
    dataset = _load_data(spec, options.data)
    storage = make_storage(options.storage, spec)
    study = open_study(spec, storage)
    tracking.set_tracking_uri(options.tracking_uri)
    experiment_id = tracking.experiment_id(spec.name)
    parent_run_id = ensure_parent_run(study, spec, experiment_id)
    closed = reconcile(study, experiment_id)
    if closed:
        say(f"closed {closed} MLflow run(s) left RUNNING by a dead process")
    if spec.sampler.type == "grid":
        added = enqueue_grid(study, spec)
        say(f"study {spec.name}: grid of {len(spec.grid())} points, {added} enqueued now")
    say(f"study {spec.name}: {count_finished(study)}/{total} trials finished; experiment {experiment_id}, parent run {parent_run_id}")
    deadline = _deadline(options, spec)
    import mlflow

    client = mlflow.MlflowClient()
    try:
        _run_until_done(study, spec, options, dataset, experiment_id, parent_run_id, total, deadline, say)
    except BaseException as error:
        reconcile(study, experiment_id)
        client.set_terminated(parent_run_id, status="KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finished = count_finished(study)
    report_dir = None
    if finished:
        report_dir = report.write_report(study, spec, parent_run_id)
    client.set_terminated(parent_run_id, status="FINISHED" if finished >= total else "KILLED")
    return SweepResult(spec.name, experiment_id, parent_run_id, finished, total, report_dir)


def _run_until_done(study, spec, options, dataset, experiment_id, parent_run_id, total, deadline, say) -> None:
    """Runs trials (here or in workers), then waits out dead trials and retries them."""
    grace = spec.execution.grace_period + spec.execution.heartbeat_interval
    waited_since = None
    while True:
        if options.workers == 1:
            objective = Objective(spec, dataset, experiment_id, parent_run_id, total, say)
            _optimize(study, spec, objective, total, deadline)
        else:
            _run_workers(spec, options, deadline)
        reconcile(study, experiment_id)
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if out_of_time or count_finished(study) >= total:
            return  # grid points still WAITING (a smaller --n-trials) wait for a resume
        if _trials_in(study, "WAITING") or not _trials_in(study, "RUNNING"):
            if spec.sampler.type == "grid" and not _trials_in(study, "WAITING"):
                if not enqueue_grid(study, spec):
                    return  # every grid point is finished or failed for good
            waited_since = None
            continue
        # Trials RUNNING elsewhere: alive ones finish, dead ones go stale and retry.
        waited_since = waited_since or time.monotonic()
        if time.monotonic() - waited_since > grace:
            return
        say(f"waiting for {len(_trials_in(study, 'RUNNING'))} running trial(s) elsewhere")
        time.sleep(spec.execution.heartbeat_interval)


def _run_workers(spec: StudySpec, options: SweepOptions, deadline: float | None) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(spec.model_dump(mode="json"), options, i + 1, deadline), daemon=False)
        for i in range(options.workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        raise
    failed = [p.exitcode for p in processes if p.exitcode]
    if len(failed) == len(processes):
        raise SweepError(f"all {len(processes)} workers failed (exit codes {failed}); see their output above")
    if failed:
        print(f"warning: {len(failed)} worker(s) exited with codes {failed}", file=sys.stderr)


def describe_plan(spec: StudySpec, options: SweepOptions) -> str:
    """What `run_sweep` would do, as text; reads and writes nothing."""
    import yaml

    total = options.n_trials or spec.total_trials
    lines = [
        f"study {spec.name}: {total} finished trials wanted, sampler {spec.sampler.type} (seed {spec.sampler.seed}), "
        f"pruner {spec.pruner.type}, objective {spec.objective.direction} {spec.objective.metric}",
        f"storage {options.storage}; MLflow tracking {options.tracking_uri or 'MLflow default (MLFLOW_TRACKING_URI or sqlite:///mlflow.db)'}",
        f"workers {options.workers} x {threads_per_worker(options.workers)} TensorFlow threads",
    ]
    if spec.sampler.type == "grid":
        grid = spec.grid()
        lines.append(f"grid of {len(grid)} points:")
        lines += [f"  {i:3d}: {point}" for i, point in enumerate(grid)]
    lines += ["resolved study:", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).rstrip()]
    return "\n".join(lines)


def summary(result: SweepResult) -> str:
    """The end-of-study summary: counts, where to look, and the report's tables."""
    lines = [
        f"study {result.study_name}: {result.finished}/{result.total} trials finished",
        f"MLflow experiment {result.experiment_id}, parent run {result.parent_run_id} (run `mlflow ui` here to browse)",
    ]
    if result.report_dir:
        report = (Path(result.report_dir) / "report.md").read_text().splitlines()
        lines += [line for line in report if not line.startswith(("![", "# ", "## Plots"))]
        lines.append(f"report: {result.report_dir}/report.md (also logged to the parent run)")
    return "\n".join(lines).rstrip()
