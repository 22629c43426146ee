"""Reproduce a logged run from its run id, and say whether the numbers agree.

Everything comes from the run itself: `config.yaml`, the params (dataset version
and digest), the provenance tags (commit, uv.lock hash, libraries, CPU) and the
execution settings (thread counts, oneDNN), which are applied before training
whatever this machine's core count. A run that stopped early (pruned, diverged,
interrupted) is re-trained exactly as far as it got. Differences that could
explain a disagreement are reported before training.

`reproduce_study.py` re-checks a whole study with this, run by run.
"""

from __future__ import annotations

import dataclasses
import math
import time

from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.errors import ExecutionError, ReproduceError, SettingsUnavailable, first_line
from reuse_nets.names import (
    KIND_TAG,
    MODEL_URI_TAG,
    OUTCOME_TAG,
    PARENT_TAG,
    REPRODUCES_TAG,
    SELECTED_PREFIX,
    STOPPED_EARLY,
    TEST_PREFIX,
    Kind,
    RunStatus,
)
from reuse_nets.names import Outcome as RunOutcome
from reuse_nets.store import provenance, tracking
from reuse_nets.train import execution
from reuse_nets.train.data import DataSource

# Timings differ between any two runs; they are not results.
NOT_COMPARED = ("epoch_time", "throughput")  # measurements of the machine, not results (and system/*)
SYSTEM_PREFIX = "system/"  # MLflow's system metrics (`tracking.SYSTEM_METRICS_INTERVAL`)
PROJECT_KINDS = (Kind.TRIAL, Kind.REPRODUCTION)
# Outcomes of runs that stopped by a decision: re-trained to the same epoch, same end.
EPOCH_METRIC = "loss"  # logged every epoch by every run: says how far a run got


@dataclasses.dataclass
class MetricComparison:
    name: str
    original: float
    reproduced: float
    final_diff: float
    max_epoch_diff: float
    worst_epoch: int | None = None  # the epoch (step) of the largest difference


@dataclasses.dataclass
class Reproduction:
    """One logged run re-run: the metrics compared with the original, and the warnings."""

    original_run_id: str
    new_run_id: str | None
    warnings: list[str]
    rows: list[MetricComparison]
    tolerance: float
    seconds: float = 0.0
    settings: str = ""  # the execution settings the reproduction ran with
    # The kernel instruction sets differ (`provenance.isa_difference`): the last bits may too.
    isa_difference: str | None = None

    @property
    def agree(self) -> bool:
        """Every compared metric within tolerance; nothing compared is no agreement."""
        return bool(self.rows) and all(self._within(row) for row in self.rows)

    def _within(self, row: MetricComparison) -> bool:
        return row.final_diff <= self.tolerance and row.max_epoch_diff <= self.tolerance

    def worst(self) -> MetricComparison | None:
        """The compared metric furthest from the original (None if nothing was compared)."""
        return max(self.rows, key=lambda row: max(row.final_diff, row.max_epoch_diff), default=None)

    def table(self) -> str:
        lines = [
            f"{'metric':24s} {'original':>12s} {'reproduced':>12s} {'final diff':>11s} {'max epoch diff':>15s} {'at epoch':>8s}"
        ]
        beyond = "  <- beyond tolerance (instruction sets differ)" if self.isa_difference else "  <- differs"
        for row in self.rows:
            flag = "" if self._within(row) else beyond
            epoch = "-" if row.worst_epoch is None else str(row.worst_epoch)
            lines.append(
                f"{row.name:24s} {row.original:12.6g} {row.reproduced:12.6g} {row.final_diff:11.3g} "
                f"{row.max_epoch_diff:15.3g} {epoch:>8s}{flag}"
            )
        lines.append(self.verdict())
        return "\n".join(lines)

    def verdict(self) -> str:
        if self.agree:
            return f"AGREE within tolerance {self.tolerance:g}"
        worst = self.worst()
        if worst is None:
            return "DISAGREE: nothing was compared"
        where = "" if worst.worst_epoch is None else f" at epoch {worst.worst_epoch}"
        if self.isa_difference:
            # Not "differs" unexplained: the kernels were not the same, so the bits need not be.
            return (
                f"DISAGREE ACROSS INSTRUCTION SETS: {worst.name} measured {max(worst.final_diff, worst.max_epoch_diff):.3g} "
                f"from the original{where}, beyond tolerance {self.tolerance:g}; bit-exact agreement needs the same "
                "instruction set (see the instruction-set warning above)"
            )
        return f"DISAGREE: {worst.name} differs by {max(worst.final_diff, worst.max_epoch_diff):.3g}{where} (tolerance {self.tolerance:g})"


def _diff(a: float | None, b: float | None) -> float:
    """|a - b|, with NaN equal to NaN and a missing value infinitely far."""
    if a is None or b is None:
        return math.inf
    if math.isnan(a) and math.isnan(b):
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b)


def _fetch_run(run_id: str):
    import mlflow

    from reuse_nets.errors import SweepError, first_line
    from reuse_nets.store import optuna_store, parent_run

    uri = mlflow.get_tracking_uri()
    try:
        parent_run.check_server(uri)
        optuna_store.require_existing_sqlite(uri, "MLflow tracking store")  # reading creates no store
    except SweepError as error:
        raise ReproduceError(str(error)) from None
    try:
        with parent_run.patient_requests():
            run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ReproduceError(f"no MLflow run {run_id!r} in tracking store {uri}") from None
        raise ReproduceError(f"MLflow tracking store {uri} is unusable: {first_line(error)}") from None
    kind = run.data.tags.get(KIND_TAG)
    experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
    if experiment.lifecycle_stage == "deleted":
        raise ReproduceError(f"run {run_id} is in deleted MLflow experiment {experiment.name!r}; restore it first")
    if run.info.status == RunStatus.RUNNING:
        raise ReproduceError(
            f"run {run_id} is still RUNNING (or its process died unnoticed); reproduce it once it has ended"
        )
    if kind == Kind.STUDY:
        raise ReproduceError(f"run {run_id} is a study's parent run; pass the run id of one of its trials, or --study")
    if kind not in PROJECT_KINDS:
        raise ReproduceError(f"run {run_id} was not made by reuse-nets (it has no {KIND_TAG} tag)")
    return run


def _load_config(run) -> TrialConfig:
    import mlflow
    import pydantic
    import yaml

    try:
        return TrialConfig.model_validate(tracking.read_config(run.info.run_id))
    except (OSError, mlflow.exceptions.MlflowException, yaml.YAMLError, pydantic.ValidationError, TypeError) as error:
        raise ReproduceError(f"run {run.info.run_id} has no valid config.yaml: {first_line(error)}") from None


def check_provenance(run, config: TrialConfig, dataset) -> list[str]:
    """What differs between the run's recorded world and this one."""
    params = run.data.params
    problems = []
    logged = {k: str(v) for k, v in tracking.trial_params(config, dataset).items()}
    # config.yaml must say what the params say: a mismatch means it was edited.
    mismatched = sorted(
        k
        for k, v in params.items()
        if k in logged and logged[k] != v and not k.startswith("dataset_") and not k.startswith("num_examples.")
    )
    if mismatched:
        problems.append("config.yaml disagrees with the logged params on " + ", ".join(mismatched))
    if params.get("dataset_version") != dataset.version:
        problems.append(
            f"dataset version: run used {params.get('dataset_version')}, this machine has {dataset.version}"
        )
    if params.get("dataset_digest") != dataset.digest:
        problems.append(f"dataset digest: run used {params.get('dataset_digest')}, this machine gives {dataset.digest}")
    return problems + provenance.differences(run.data.tags)


def _histories(client, run_id: str) -> dict[str, dict[int, float]]:
    run = client.get_run(run_id)
    return {
        name: {m.step: m.value for m in client.get_metric_history(run_id, name)}
        for name in run.data.metrics
        if name not in NOT_COMPARED and not name.startswith(SYSTEM_PREFIX)
    }


def compare_runs(original_id: str, new_id: str) -> list[MetricComparison]:
    """Final values and the largest per-epoch difference (and its epoch) of every metric the original logged."""
    import mlflow

    client = mlflow.MlflowClient()
    before, after = _histories(client, original_id), _histories(client, new_id)
    rows = []
    for name in sorted(before):
        final_before = before[name][max(before[name])]
        if name not in after:
            rows.append(MetricComparison(name, final_before, math.nan, math.inf, math.inf, max(before[name])))
            continue
        steps = sorted(set(before[name]) | set(after[name]))
        diffs = [_diff(before[name].get(s), after[name].get(s)) for s in steps]
        worst = max(range(len(steps)), key=lambda i: diffs[i])
        final_after = after[name][max(after[name])]
        rows.append(
            MetricComparison(
                name,
                final_before,
                final_after,
                _diff(final_before, final_after),
                diffs[worst],
                steps[worst] if diffs[worst] > 0 else None,
            )
        )
    return rows


def _evaluate(run, config: TrialConfig, dataset) -> list[MetricComparison]:
    """Re-scores the logged model on the logged test (else validation) split."""
    from reuse_nets.train import training

    uri = run.data.tags.get(MODEL_URI_TAG)
    if not uri:
        raise ReproduceError(f"run {run.info.run_id} logged no model (it did not finish); nothing to evaluate")
    # Deterministic ops as in training: they change reduction kernels, hence rounding.
    training.seed_everything(config.seed)
    import mlflow

    try:
        model = tracking.load_logged_model(uri)
    except mlflow.exceptions.MlflowException as error:  # the artifact is gone, or the store cannot serve it
        raise ReproduceError(
            f"run {run.info.run_id}'s logged model {uri} cannot be read ({first_line(error)}); "
            "was its artifact deleted? re-run without --evaluate-only to retrain it"
        ) from None
    except (OSError, ValueError) as error:
        raise ReproduceError(
            f"run {run.info.run_id}'s model cannot be loaded by this version ({first_line(error)}); "
            "models logged before the self-contained pyfunc format need the commit that logged them"
        ) from None
    role = "test" if "test" in dataset.splits and "test_accuracy" in run.data.metrics else "validation"
    # The same trainer graph that scored the run, so that even float rounding matches.
    trainer = training.compile_for_training(model, config)
    scores = trainer.evaluate(dataset.pipeline(role, config.batch_size), verbose=0, return_dict=True)
    prefix = "test_" if role == "test" else "val_"
    rows = []
    for name in ("loss", "accuracy"):
        key = prefix + name
        # Validation: the metric of the weights the model holds (the best epoch's under early
        # stopping), logged apart from the last epoch's since early stopping existed.
        metrics = run.data.metrics
        logged = metrics.get(SELECTED_PREFIX + key, metrics[key]) if role == "validation" else metrics[key]
        now = float(scores[name])
        rows.append(MetricComparison(key, logged, now, _diff(logged, now), _diff(logged, now)))
    return rows


class StopAfter:
    """An epoch hook that ends training where the original run ended, the way it ended."""

    def __init__(self, epochs: int, outcome: str):
        self.epochs, self.outcome = epochs, outcome

    def __call__(self, epoch: int, metrics: dict) -> None:
        from reuse_nets.train import training

        if epoch >= self.epochs:
            raise training.StopTraining(
                self.outcome, f"stopped at epoch {epoch}, where the original run ({self.outcome}) stopped"
            )


def _settings_for(run, threads: int | None, onednn: bool | None, say) -> execution.Settings:
    """The original's execution settings, or (`threads`, `onednn`) a deliberate change of them."""
    settings = execution.Settings.from_tags(run.data.tags)
    if settings is None:
        say("warning: the run recorded no execution settings (older run); using this machine's defaults")
        settings = execution.for_workers(1)
    changed = settings
    if threads:
        changed = dataclasses.replace(
            changed, intra_op_threads=threads, inter_op_threads=min(threads, execution.MAX_INTER_OP_THREADS)
        )
    if onednn is not None:
        changed = dataclasses.replace(changed, onednn=onednn)
    if changed != settings:
        say(f"warning: running with {changed.describe()}, not the original's {settings.describe()}")
    return changed


def reproduce(
    run_id: str,
    *,
    source: DataSource = DataSource(),
    tolerance: float = 0.0,
    strict: bool = False,
    evaluate_only: bool = False,
    threads: int | None = None,
    onednn: bool | None = None,
    say=print,
) -> Reproduction:
    """Checks, then re-trains (or re-scores) a logged run and compares the metrics.

    The original's thread counts and oneDNN setting are pinned first; `threads`
    and `onednn` override them on purpose (to see whether a result depends on them).

    Raises:
        ReproduceError: unknown or foreign run id; settings this process can no
            longer take; with `strict`, any provenance difference.
        DataError: the run's data cannot be loaded here.
    """
    from reuse_nets.train import data

    started = time.monotonic()
    run = _fetch_run(run_id)
    config = _load_config(run)
    logged = [m.step for m in _client().get_metric_history(run_id, EPOCH_METRIC)]
    if not logged:
        raise ReproduceError(f"run {run_id} logged no metrics (it failed before its first epoch); nothing to compare")
    settings = _settings_for(run, threads, onednn, say)
    try:
        pinned = execution.pin(settings)
    except ExecutionError as error:
        raise SettingsUnavailable(f"cannot reproduce run {run_id} in this process: {error}") from None
    as_original = threads is None and onednn is None
    say(
        f"execution: {pinned.describe()}"
        + (f" (as the original; this machine has {execution.machine_cores()} cores)" if as_original else "")
    )
    dataset = data.load(config.dataset, source)
    problems = check_provenance(run, config, dataset)
    isa_difference = provenance.isa_difference(run.data.tags)
    for problem in problems:
        say(f"warning: {problem}")
    if problems and strict:
        raise ReproduceError(f"{len(problems)} provenance difference(s) and --strict: " + "; ".join(problems))
    if evaluate_only:
        rows = _evaluate(run, config, dataset)
        return Reproduction(
            run_id, None, problems, rows, tolerance, time.monotonic() - started, pinned.describe(), isa_difference
        )
    from reuse_nets.train import training

    outcome = run.data.tags.get(OUTCOME_TAG, RunOutcome.COMPLETED)
    epochs = max(logged)
    hooks: tuple[StopAfter, ...] = ()
    if outcome in STOPPED_EARLY and epochs < config.epochs:
        say(f"the original ended {outcome} after epoch {epochs}: re-training exactly that far")
        hooks = (StopAfter(epochs, outcome),)
    # Test metrics only where the original has them (tuning runs never see the test split).
    evaluate_test = any(name.startswith(TEST_PREFIX) for name in run.data.metrics)
    tags = {REPRODUCES_TAG: run_id, KIND_TAG: Kind.REPRODUCTION}
    try:
        with tracking.trial_run(
            config,
            dataset,
            experiment_id=run.info.experiment_id,
            run_name=f"reproduce-{run.info.run_name}",
            parent_run_id=run.data.tags.get(PARENT_TAG),
            tags=tags,
            log_model=bool(run.data.tags.get(MODEL_URI_TAG)),
        ) as reproduction:
            result = training.train(
                config, dataset, hooks=(reproduction.log_epoch, *hooks), evaluate_test=evaluate_test
            )
            reproduction.record(result)
    except training.StopTraining:
        pass  # the planned stop: the run is closed with the original's outcome
    rows = compare_runs(run_id, reproduction.run_id)
    return Reproduction(
        run_id,
        reproduction.run_id,
        problems,
        rows,
        tolerance,
        time.monotonic() - started,
        pinned.describe(),
        isa_difference,
    )


def _client():
    import mlflow

    return mlflow.MlflowClient()
