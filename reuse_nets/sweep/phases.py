"""The two phases as Optuna studies: samplers, pruners, the selection and the final job.

What a phase's Optuna study runs (its sampler and pruner, from the study spec), and
how the final phase's configs are selected from the tuning trials (on the validation
objective, never on test). The plan itself is `reuse_nets.design.plan`; dead trials
are `reconcile`'s, and which worker runs what is `worker_share`'s.
"""

from __future__ import annotations

from collections.abc import Callable

from reuse_nets.design import plan
from reuse_nets.design.plan import Job
from reuse_nets.design.selection import Chosen, Selection
from reuse_nets.design.study_spec import StudySpec
from reuse_nets.names import (
    RUN_ID_ATTR,
    Phase,
    TrialState,
)
from reuse_nets.store import optuna_store

STREAM_STRIDE = 100_003  # seed distance between worker processes (a prime, past any trial count)


def sampler(spec: StudySpec, phase: Phase, stream: int = 0, trials_before: int = 0, repeat: int = 0):
    """A cell's tuning sampler: the same settings and seed in every cell.

    A sampler's random draws restart from its seed in every process, so the seed
    is offset by the worker index (`stream`) and by the trials the study already
    holds: workers, and a resumed study, would otherwise draw the values already
    tried again. An uninterrupted one-process run uses the seed itself.
    """
    op = optuna_store.optuna()
    tune = spec.tune if phase == Phase.TUNE else None
    if tune is None:
        # The final phase enqueues every trial's parameters: its sampler never chooses.
        return op.samplers.RandomSampler(seed=0)
    settings = tune.sampler
    seed = tune.sampler_seed(repeat) + STREAM_STRIDE * stream + trials_before
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
        job.identity,
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
        complete = optuna_store.trials_in(study, TrialState.COMPLETE) if study else []
        if not complete:
            selection[key] = None
            continue
        best = min(complete, key=lambda t: ((-t.value if maximize else t.value), t.number))
        selection[key] = Chosen(
            trial=best.number,
            value=best.value,
            params=dict(best.params),
            run_id=best.user_attrs.get(RUN_ID_ATTR),
        )
    return selection


def select_final_job(spec: StudySpec, storage, say: Callable[[str], None]) -> Job:
    """The final phase's job (`plan.final_job`) from the stored selection, or from a new
    selection, stored now; says what was selected."""
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
