"""Reproduce a logged run from its run id, and say whether the numbers agree.

Everything comes from the run itself: `config.yaml`, the params (dataset version
and digest), the provenance tags (git commit, library versions) and the model.
Differences that could explain a disagreement are reported before training.
"""

from __future__ import annotations

import dataclasses
import math

from reuse_nets import tracking
from reuse_nets.config import TrialConfig
from reuse_nets.data import DataSource
from reuse_nets.names import KIND_TAG, MODEL_URI_TAG, PARENT_TAG, REPRODUCES_TAG, TAG_PREFIX

# Timings differ between any two runs; they are not results.
NOT_COMPARED = ("epoch_time", "throughput")
PROJECT_KINDS = ("trial", "reproduction")


class ReproduceError(Exception):
    """A run that cannot be reproduced as asked; the message is one line."""


@dataclasses.dataclass
class MetricComparison:
    name: str
    original: float
    reproduced: float
    final_diff: float
    max_epoch_diff: float


@dataclasses.dataclass
class Outcome:
    original_run_id: str
    new_run_id: str | None
    warnings: list[str]
    rows: list[MetricComparison]
    tolerance: float

    @property
    def agree(self) -> bool:
        """Every compared metric within tolerance; nothing compared is no agreement."""
        return bool(self.rows) and all(
            row.final_diff <= self.tolerance and row.max_epoch_diff <= self.tolerance for row in self.rows
        )

    def table(self) -> str:
        lines = [f"{'metric':24s} {'original':>12s} {'reproduced':>12s} {'final diff':>11s} {'max epoch diff':>15s}"]
        for row in self.rows:
            lines.append(
                f"{row.name:24s} {row.original:12.6g} {row.reproduced:12.6g} {row.final_diff:11.3g} {row.max_epoch_diff:15.3g}"
            )
        verdict = "AGREE" if self.agree else "DISAGREE"
        lines.append(f"{verdict} within tolerance {self.tolerance:g}")
        return "\n".join(lines)


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

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ReproduceError(f"no MLflow run {run_id!r} in tracking store {mlflow.get_tracking_uri()}") from None
    kind = run.data.tags.get(KIND_TAG)
    if kind == "study":
        raise ReproduceError(f"run {run_id} is a study's parent run; pass the run id of one of its trials")
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
        first = str(error).splitlines()[0]
        raise ReproduceError(f"run {run.info.run_id} has no valid config.yaml: {first}") from None


def check_provenance(run, config: TrialConfig, dataset) -> list[str]:
    """What differs between the run's recorded world and this one."""
    tags, params = run.data.tags, run.data.params
    problems = []
    logged = {k: str(v) for k, v in tracking.trial_params(config, dataset).items()}
    # config.yaml must say what the params say: a mismatch means it was edited.
    mismatched = sorted(k for k, v in params.items() if k in logged and logged[k] != v and not k.startswith("dataset_") and not k.startswith("num_examples."))
    if mismatched:
        problems.append("config.yaml disagrees with the logged params on " + ", ".join(mismatched))
    if params.get("dataset_version") != dataset.version:
        problems.append(f"dataset version: run used {params.get('dataset_version')}, this machine has {dataset.version}")
    if params.get("dataset_digest") != dataset.digest:
        problems.append(f"dataset digest: run used {params.get('dataset_digest')}, this machine gives {dataset.digest}")
    git = tracking.git_state()
    commit = tags.get(TAG_PREFIX + "git_commit")
    if commit != git["commit"]:
        problems.append(f"git commit: run used {commit}, this checkout is {git['commit']}")
    if tags.get(TAG_PREFIX + "git_dirty") == "true":
        problems.append("the run was made from a dirty tree: its code is not exactly any commit")
    if git["dirty"] == "true":
        problems.append("this checkout has uncommitted changes")
    for name, version in tracking.library_versions().items():
        then = tags.get(f"{TAG_PREFIX}version.{name}")
        if then is not None and then != version:
            problems.append(f"{name}: run used {then}, this environment has {version}")
    return problems


def _histories(client, run_id: str) -> dict[str, dict[int, float]]:
    run = client.get_run(run_id)
    return {
        name: {m.step: m.value for m in client.get_metric_history(run_id, name)}
        for name in run.data.metrics
        if name not in NOT_COMPARED
    }


def compare_runs(original_id: str, new_id: str) -> list[MetricComparison]:
    """Final values and the largest per-epoch difference of every shared metric."""
    import mlflow

    client = mlflow.MlflowClient()
    before, after = _histories(client, original_id), _histories(client, new_id)
    rows = []
    for name in sorted(before):
        if name not in after:
            rows.append(MetricComparison(name, before[name][max(before[name])], math.nan, math.inf, math.inf))
            continue
        steps = sorted(set(before[name]) | set(after[name]))
        diffs = [_diff(before[name].get(s), after[name].get(s)) for s in steps]
        final_before, final_after = before[name][max(before[name])], after[name][max(after[name])]
        rows.append(MetricComparison(name, final_before, final_after, _diff(final_before, final_after), max(diffs)))
    return rows


def _evaluate(run, config: TrialConfig, dataset) -> list[MetricComparison]:
    """Re-scores the logged model on the logged test (else validation) split."""
    from reuse_nets import training

    uri = run.data.tags.get(MODEL_URI_TAG)
    if not uri:
        raise ReproduceError(f"run {run.info.run_id} logged no model (it did not finish); nothing to evaluate")
    # Deterministic ops as in training: they change reduction kernels, hence rounding.
    training.seed_everything(config.seed)
    model = tracking.load_logged_model(uri)
    role = "test" if "test" in dataset.splits and "test_accuracy" in run.data.metrics else "validation"
    # The same trainer graph that scored the run, so that even float rounding matches.
    trainer = training.compile_for_training(model, config)
    scores = trainer.evaluate(dataset.pipeline(role, config.batch_size), verbose=0, return_dict=True)
    prefix = "test_" if role == "test" else "val_"
    rows = []
    for name in ("loss", "accuracy"):
        key = prefix + name
        logged, now = run.data.metrics[key], float(scores[name])
        rows.append(MetricComparison(key, logged, now, _diff(logged, now), _diff(logged, now)))
    return rows


def reproduce(
    run_id: str,
    *,
    source: DataSource = DataSource(),
    tolerance: float = 0.0,
    strict: bool = False,
    evaluate_only: bool = False,
    say=print,
) -> Outcome:
    """Checks, then re-trains (or re-scores) a logged run and compares the metrics.

    Raises:
        ReproduceError: unknown or foreign run id; with `strict`, any provenance
            difference.
        DataError: the run's data cannot be loaded here.
    """
    from reuse_nets import data

    run = _fetch_run(run_id)
    config = _load_config(run)
    if not any(name not in NOT_COMPARED for name in run.data.metrics):
        raise ReproduceError(f"run {run_id} logged no metrics (it failed before its first epoch); nothing to compare")
    dataset = data.load(config.dataset, source)
    problems = check_provenance(run, config, dataset)
    for problem in problems:
        say(f"warning: {problem}")
    if problems and strict:
        raise ReproduceError(f"{len(problems)} provenance difference(s) and --strict: {problems[0]}")
    if evaluate_only:
        return Outcome(run_id, None, problems, _evaluate(run, config, dataset), tolerance)
    from reuse_nets import training

    tags = {REPRODUCES_TAG: run_id, KIND_TAG: "reproduction"}
    with tracking.trial_run(
        config,
        dataset,
        experiment_id=run.info.experiment_id,
        run_name=f"reproduce-{run.info.run_name}",
        parent_run_id=run.data.tags.get(PARENT_TAG),
        tags=tags,
    ) as reproduction:
        reproduction.record(training.train(config, dataset, hooks=(reproduction.log_epoch,)))
    return Outcome(run_id, reproduction.run_id, problems, compare_runs(run_id, reproduction.run_id), tolerance)
