"""Re-check a whole study: its final-phase runs (the headline claim), else its
finished trials, each reproduced with its own execution settings; one table, one verdict.

Runs whose settings this process can still take are reproduced here; the others
in a fresh process each, which sends its comparison back as JSON text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import queue as queue_module
import random
import re
from typing import TypedDict

from reuse_nets.errors import ReproduceError, SettingsUnavailable, first_line
from reuse_nets.names import OUTCOME_TAG, RECHECKABLE, Phase
from reuse_nets.reproduce.runs import MetricComparison, Reproduction, _client, _settings_for, reproduce
from reuse_nets.runtime import interrupts
from reuse_nets.runtime.interrupts import SHUTDOWN_GRACE
from reuse_nets.store import readback
from reuse_nets.train import execution
from reuse_nets.train.data import DataSource

STUDY_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class _ReproduceOptions(TypedDict):
    """The keyword arguments of `reproduce` that every run of a study shares (a child gets them too)."""

    source: DataSource
    tolerance: float
    strict: bool
    threads: int | None
    onednn: bool | None


@dataclasses.dataclass
class StudyRow:
    run_id: str
    run_name: str
    metric: str  # the headline metric shown: test accuracy for final runs, else validation
    reproduction: Reproduction | None
    error: str | None = None

    @property
    def agree(self) -> bool:
        return self.error is None and self.reproduction is not None and self.reproduction.agree


def study_runs_to_check(study: str, sample: int | None = None, seed: int = 0):
    """(phase, runs): the study's final-phase runs if it has any, else its finished trials.

    `sample` picks that many of them at random with `seed`, reproducibly.
    """
    import mlflow

    if not STUDY_NAME.fullmatch(study):
        raise ReproduceError(f"{study!r} is not a study name (letters, digits, '_', '-', '.')")
    client = _client()
    try:
        experiment = client.get_experiment_by_name(study)
    except mlflow.exceptions.MlflowException as error:
        raise ReproduceError(
            f"MLflow tracking store {mlflow.get_tracking_uri()} is unusable: {first_line(error)}"
        ) from None
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise ReproduceError(f"no MLflow experiment {study!r} in tracking store {mlflow.get_tracking_uri()}")
    found = readback.parent(client, experiment.experiment_id, study)
    if found is None:
        raise ReproduceError(f"MLflow experiment {study!r} holds no parent run of a reuse-nets study")
    runs = readback.trial_runs(client, experiment.experiment_id, parent_run_id=found.info.run_id)
    runs = [r for r in runs if r.data.tags.get(OUTCOME_TAG) in RECHECKABLE and r.data.metrics]
    final = [r for r in runs if readback.is_completed_final_run(r)]
    phase, chosen = (Phase.FINAL, final) if final else ("trials", runs)
    if not chosen:
        raise ReproduceError(f"study {study!r} has no finished runs to reproduce")
    chosen.sort(key=lambda r: (r.info.run_name or "", r.info.run_id))
    if sample is not None and sample < len(chosen):
        chosen = sorted(
            random.Random(seed).sample(chosen, sample), key=lambda r: (r.info.run_name or "", r.info.run_id)
        )
    return phase, chosen


def _reproduce_in_child(run_id: str, settings: execution.Settings, kwargs: _ReproduceOptions) -> Reproduction:
    """Reproduces a run in a fresh process: one whose TensorFlow has not started yet."""
    import mlflow

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(run_id, mlflow.get_tracking_uri(), kwargs, queue))
    saved = {k: os.environ.get(k) for k in settings.environment()}
    os.environ.update(settings.environment())  # read by TensorFlow at import, in the child
    try:
        child.start()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    try:
        while True:
            try:
                answer = json.loads(queue.get(timeout=1.0))
                break
            except queue_module.Empty:
                if not child.is_alive() and queue.empty():
                    raise ReproduceError(
                        f"the process reproducing run {run_id} died (exit code {child.exitcode})"
                    ) from None
    except BaseException:
        # Stopped (Ctrl-C, SIGTERM): the child closes its run as KILLED, or is killed.
        if child.is_alive():
            child.terminate()
            child.join(SHUTDOWN_GRACE)
        if child.is_alive():
            child.kill()
        raise
    child.join()
    if "error" in answer:
        raise ReproduceError(answer["error"])
    fields = answer["reproduction"]
    fields["rows"] = [MetricComparison(**row) for row in fields["rows"]]
    return Reproduction(**fields)


def _child(run_id: str, tracking_uri: str, kwargs: _ReproduceOptions, queue) -> None:
    import mlflow

    interrupts.stop_on_signals()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        reproduction = reproduce(run_id, say=lambda m: None, **kwargs)
        queue.put(
            json.dumps({"reproduction": dataclasses.asdict(reproduction)})
        )  # JSON, not pickles, between processes
    except Exception as error:  # sent back as one line; the parent decides
        queue.put(json.dumps({"error": f"{type(error).__name__}: {first_line(error)}"}))


def reproduce_study(
    study: str,
    *,
    sample: int | None = None,
    seed: int = 0,
    source: DataSource = DataSource(),
    tolerance: float = 0.0,
    strict: bool = False,
    threads: int | None = None,
    onednn: bool | None = None,
    say=print,
) -> tuple[str, list[StudyRow]]:
    """Reproduces a study's final runs (else finished trials); (phase, one row per run).

    Runs whose execution settings this process can still take are reproduced here;
    the others in a fresh process each, so every run gets its original's settings.
    """
    phase, runs = study_runs_to_check(study, sample, seed)
    say(
        f"reproducing {len(runs)} {'final-phase run' if phase == Phase.FINAL else 'finished trial'}(s) of study {study}"
    )
    kwargs = _ReproduceOptions(source=source, tolerance=tolerance, strict=strict, threads=threads, onednn=onednn)
    rows = []
    for index, run in enumerate(runs, 1):
        metric = "test_accuracy" if "test_accuracy" in run.data.metrics else "val_accuracy"
        say(f"[{index}/{len(runs)}] {run.info.run_name} ({run.info.run_id})")
        row = StudyRow(run.info.run_id, run.info.run_name or run.info.run_id, metric, None)
        try:
            try:
                row.reproduction = reproduce(run.info.run_id, say=lambda m: say("  " + m), **kwargs)
            except SettingsUnavailable:
                settings = _settings_for(run, threads, onednn, lambda m: None)
                say(f"  in a fresh process: it needs {settings.describe()}")
                row.reproduction = _reproduce_in_child(run.info.run_id, settings, kwargs)
                for warning in row.reproduction.warnings:
                    say(f"  warning: {warning}")
        except Exception as error:  # one run's problem is its row's, as in a child process
            row.error = (
                first_line(error)
                if isinstance(error, ReproduceError)
                else f"{type(error).__name__}: {first_line(error)}"
            )
        say(f"  {row.reproduction.verdict() if row.reproduction else f'ERROR: {row.error}'}")
        rows.append(row)
    return phase, rows


def study_table(rows: list[StudyRow]) -> str:
    """One line per run: original vs reproduced headline metric, max difference, verdict."""
    lines = [
        f"{'run':40s} {'metric':14s} {'original':>10s} {'reproduced':>10s} {'max diff':>9s} {'worst at':24s} verdict"
    ]
    for row in rows:
        if row.reproduction is None:
            lines.append(
                f"{row.run_name[:40]:40s} {row.metric:14s} {'':>10s} {'':>10s} {'':>9s} {'':24s} ERROR: {row.error}"
            )
            continue
        by_name = {r.name: r for r in row.reproduction.rows}
        headline = by_name.get(row.metric)
        worst = row.reproduction.worst()
        biggest = max(worst.final_diff, worst.max_epoch_diff) if worst else math.inf
        where = (
            "-"
            if worst is None or biggest == 0
            else worst.name + ("" if worst.worst_epoch is None else f"@{worst.worst_epoch}")
        )
        original = f"{headline.original:10.6g}" if headline else f"{'-':>10s}"
        reproduced = f"{headline.reproduced:10.6g}" if headline else f"{'-':>10s}"
        lines.append(
            f"{row.run_name[:40]:40s} {row.metric:14s} {original} {reproduced} {biggest:9.3g} {where[:24]:24s} "
            + ("AGREE" if row.reproduction.agree else "DISAGREE")
            + (" (other ISA)" if row.reproduction.isa_difference and not row.reproduction.agree else "")
        )
    agreed = sum(row.agree for row in rows)
    lines.append(
        f"{agreed}/{len(rows)} runs reproduce"
        + (" exactly" if rows and rows[0].reproduction and rows[0].reproduction.tolerance == 0 else "")
    )
    return "\n".join(lines)
