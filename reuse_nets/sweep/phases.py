"""The two phases as Optuna studies: samplers, pruners, selection, and dead trials.

What a phase's Optuna study runs (its sampler and pruner, from the study spec),
how the final phase's configs are selected from the tuning trials (on the
validation objective, never on test), and how trials whose process died are
failed and their MLflow runs closed. The plan itself is `reuse_nets.spec.plan`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from reuse_nets.names import OPTUNA_STUDY_TAG, OUTCOME_ATTR, RUN_ID_ATTR, SLOT_ATTR, TRIAL_TAG, Outcome, Phase
from reuse_nets.spec import plan
from reuse_nets.spec.plan import Job, Selection
from reuse_nets.spec.studies import StudySpec
from reuse_nets.store import optuna_store, tracking

STREAM_STRIDE = 100_003  # seed distance between worker processes (a prime, past any trial count)


def sampler(spec: StudySpec, phase: Phase, stream: int = 0, trials_before: int = 0, repeat: int = 0):
    """A cell's tuning sampler: the same settings and seed in every cell.

    A sampler's random draws restart from its seed in every process, so the seed
    is offset by the worker index (`stream`) and by the trials the study already
    holds: workers, and a resumed study, would otherwise draw the values already
    tried again. An uninterrupted one-process run uses the seed itself.
    """
    op = optuna_store.optuna()
    settings = spec.tune.sampler if spec.tune and phase == Phase.TUNE else None
    if settings is None:
        # The final phase enqueues every trial's parameters: its sampler never chooses.
        return op.samplers.RandomSampler(seed=0)
    seed = spec.tune.sampler_seed(repeat) + STREAM_STRIDE * stream + trials_before
    if settings.type == "tpe":
        return op.samplers.TPESampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    return op.samplers.RandomSampler(seed=seed)


def pruner(spec: StudySpec, epochs: int, phase: Phase):
    """The tuning pruner of one cell; final runs are never pruned."""
    op = optuna_store.optuna()
    settings = spec.tune.pruner if spec.tune and phase == Phase.TUNE else None
    if settings is None or settings.type == "none":
        return op.pruners.NopPruner()
    if settings.type == "median":
        # Epochs are reported as steps 1, 2, ...; Optuna never prunes while
        # step < n_warmup_steps, so +1 makes `n_warmup_steps: 2` protect epochs 1 and 2.
        return op.pruners.MedianPruner(
            n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.n_warmup_steps + 1
        )
    return op.pruners.HyperbandPruner(
        min_resource=settings.min_resource, max_resource=epochs, reduction_factor=settings.reduction_factor
    )


def open_job(spec: StudySpec, storage, job: Job, stream: int = 0):
    """The job's Optuna study; `stream` is the worker index (see `sampler`)."""
    epochs = {cell.values.get("epochs", spec.base.epochs) for cell, _ in job.slots} or {spec.base.epochs}
    existing = optuna_store.load_existing(storage, job.study_name)
    trials_before = len(existing.get_trials(deepcopy=False)) if existing is not None else 0
    return optuna_store.open_study(
        storage,
        job.study_name,
        plan.identity_of(spec, job),
        direction=spec.objective.direction,
        sampler=sampler(spec, job.phase, stream, trials_before, job.repeat),
        pruner=pruner(spec, max(epochs), job.phase),
    )


def select_best(spec: StudySpec, storage) -> Selection:
    """Per cell (and tuning repeat), its best COMPLETE tuning trial by the objective (ties: lowest number)."""
    maximize = spec.objective.direction == "maximize"
    selection: Selection = {}
    for cell, repeat in plan.units(spec):
        key = plan.unit_key(spec, cell, repeat)
        study = optuna_store.load_existing(storage, plan.tune_study_name(spec, cell, repeat))
        complete = optuna_store.trials_in(study, "COMPLETE") if study else []
        if not complete:
            selection[key] = None
            continue
        best = min(complete, key=lambda t: ((-t.value if maximize else t.value), t.number))
        selection[key] = {
            "trial": best.number,
            "value": best.value,
            "params": dict(best.params),
            "run_id": best.user_attrs.get(RUN_ID_ATTR),
        }
    return selection


def final_job(spec: StudySpec, storage, say: Callable[[str], None]) -> Job:
    """The final phase's job: from the stored selection, or a new one (stored now)."""
    study = optuna_store.load_existing(storage, plan.final_study_name(spec))
    selection = optuna_store.stored_selection(study) if study is not None else None
    if selection is None:
        selection = select_best(spec, storage) if spec.tune else {}
        optuna_store.store_selection(open_job(spec, storage, plan.final_job(spec, selection)), selection)
    if spec.tune:
        seeds = [spec.tuning_seed(r) for r in range(spec.repeats)]
        say(
            f"selected on {spec.objective.metric} (tuning seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}):"
        )
        for row in plan.selection_rows(spec, selection):
            say(row)
    return plan.final_job(spec, selection)


def stored_final_job(spec: StudySpec, storage) -> Job:
    """The final phase's job from the selection stored when the phase began (workers)."""
    study = optuna_store.load_existing(storage, plan.final_study_name(spec))
    return plan.final_job(spec, optuna_store.stored_selection(study) or {})


DIED_REASON = "the trial's process died (no heartbeat); its slot is retried up to execution.max_retry times"
DISK_FULL_REASON = "a full disk stopped the study, and refused this run's closing writes; its slot is run again"


def reconcile(study, experiment_id: str, max_retry: int) -> int:
    """Fails trials whose process died and closes their MLflow runs; returns how many runs.

    The run of a slot's last allowed attempt says that the slot failed for good.
    """
    import mlflow

    op = optuna_store.optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", op.exceptions.ExperimentalWarning)
        op.storages.fail_stale_trials(study)
    client = mlflow.MlflowClient()
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = 0
    dangling = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{OPTUNA_STUDY_TAG}` = '{study.study_name}'",
    )
    for run in dangling:
        number = run.data.tags.get(TRIAL_TAG)
        trial = by_number.get(int(number)) if number is not None else None
        # A RUNNING trial is alive: a dead one was just failed by its stale heartbeat.
        if trial is None or trial.state.name == "RUNNING":
            continue
        if trial.user_attrs.get(OUTCOME_ATTR) == Outcome.DISK_FULL:  # stopped, not dead: no retry used
            tracking.close_run(client, run.info.run_id, Outcome.DISK_FULL, DISK_FULL_REASON)
            closed += 1
            continue
        # Lost attempts of this slot up to this one: the last allowed one fails it for good.
        attempts = optuna_store.slot_trials(study).get(trial.user_attrs.get(SLOT_ATTR), [trial])
        lost = optuna_store.deaths([t for t in attempts if t.number <= trial.number])
        reason = DIED_REASON
        if lost > max_retry:
            reason = (
                f"failed for good: {lost} attempts lost (process died or storage error), the first and all "
                f"execution.max_retry={max_retry} retries; the study goes on without it"
            )
        tracking.close_run(client, run.info.run_id, Outcome.DIED, reason)
        closed += 1
    return closed


# --- which worker runs what: an architecture's trials in the process that compiled it ---


def _share(items: int, index: int, count: int) -> range:
    """Worker `index`'s (1..count) contiguous share of `items` things."""
    return range((index - 1) * items // count, index * items // count)


def worker_order(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs (cells, when tuning) rotated so that worker `index` of `count` starts
    with its own share; it then helps with the others' as they run out.

    Each process keeps its compiled trainers (`train.trainers`): workers that start
    on different cells compile each architecture about once, where workers all
    taking the same cell's trials in turn would each compile every architecture.
    """
    start = _share(len(jobs), index, count).start
    return jobs[start:] + jobs[:start]


def worker_slots(job: Job, index: int, count: int) -> set[int]:
    """Slots of worker `index`'s share of the cells in a job whose slots span cells."""
    cells = list(dict.fromkeys(cell.key for cell, _ in job.slots))
    mine = {cells[i] for i in _share(len(cells), index, count)}
    return {slot for slot, (cell, _) in enumerate(job.slots) if cell.key in mine}
