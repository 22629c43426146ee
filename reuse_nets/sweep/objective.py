"""The trial objective: one Optuna trial -> one config -> one tracked training run.

Tuning trials take the cell's compared values plus what the sampler suggests
for the tuned knobs, with the tuning seed, and report each epoch to the cell's
pruner. Final trials take everything (compared values, the cell's selected tuned
values, a fresh seed) from their enqueued parameters and are never pruned.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from reuse_nets.design import study_spec
from reuse_nets.design.plan import REPEAT_PARAM, Job
from reuse_nets.design.study_spec import Cell, StudySpec
from reuse_nets.errors import TrialFailed
from reuse_nets.names import (
    CELL_ATTR,
    CELL_TAG,
    OPTUNA_STUDY_TAG,
    OUTCOME_ATTR,
    PHASE_ATTR,
    PHASE_TAG,
    REPEAT_TAG,
    RESUMED_EPOCHS_TAG,
    RESUMED_FROM_TAG,
    RUN_ID_ATTR,
    RUN_URL_ATTR,
    STUDY_TAG,
    TRIAL_TAG,
    Outcome,
    Phase,
)
from reuse_nets.runtime import disk, faults, profile
from reuse_nets.store import optuna_store, storage_errors, tracking, ui_links
from reuse_nets.store.optuna_store import claim_slot, count_finished_slots, optuna
from reuse_nets.train import training

# In place of an epoch's time on the console: the epoch was replayed from a checkpoint.
RESTORED_EPOCH = "restored from checkpoint"


class PruningHook:
    """Reports each epoch's objective metric to Optuna; stops training when told to prune."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def __call__(self, epoch: int, metrics: dict) -> None:
        value = metrics.get(self.metric)
        # A diverged network still has a finite accuracy (chance level); divergence
        # is the training loop's to report, as a failure, never as a pruning.
        if value is None or not math.isfinite(value) or not math.isfinite(metrics.get("loss", 0.0)):
            return
        with profile.section("optuna: report and prune"):
            self.trial.report(value, step=epoch)
            prune = self.trial.should_prune()
        if prune:
            raise training.StopTraining(Outcome.PRUNED, f"pruned at epoch {epoch} ({self.metric}={value:.4f})")


class Objective:
    """Trains the config of one trial of `job` under a nested MLflow run."""

    def __init__(
        self,
        spec: StudySpec,
        job: Job,
        dataset,
        experiment_id: str,
        parent_run_id: str,
        progress,
        checkpoint_root: Path | None = None,
        storage_url: str | None = None,
    ):
        """`progress`: where lines and epochs go, a `progress.Progress` or `WorkerLines`.
        `checkpoint_root`: where each slot's epoch checkpoint lives; None: no checkpoints.
        `storage_url`: the Optuna storage's URL, named if it is the store a full disk refused."""
        self.spec, self.job, self.dataset = spec, job, dataset
        self.progress, self.say = progress, progress.say
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.checkpoint_root, self.storage_url = checkpoint_root, storage_url
        self.full_disk: Exception | None = None  # the first full disk a trial met (`errors.DiskFull`)

    def checkpoint_of(self, trial, slot: int, config):
        """The slot's checkpoint (shared by all its attempts), or None without a root."""
        if self.checkpoint_root is None:
            return None
        from reuse_nets.train import checkpoints

        # One folder per slot of this study run (its parent run): a study started afresh
        # in new stores never meets an old run's checkpoints.
        folder = checkpoints.slot_folder(self.checkpoint_root, f"{self.parent_run_id}/{trial.study.study_name}", slot)
        return checkpoints.Checkpoint(folder, json.dumps(self.fingerprint(config), sort_keys=True))

    def fingerprint(self, config) -> dict:
        """What a checkpoint must have been made from to be resumed: anything that changes the bytes."""
        from reuse_nets.store import provenance
        from reuse_nets.train import execution

        git = provenance.git_state()
        return {
            "config": config.model_dump(mode="json"),
            "code": [git["commit"], git["dirty"], provenance.lock_hash()],
            "libraries": provenance.library_versions(),
            "execution": execution.current().tags(),
            "data": self.dataset.digest,
        }

    def config_of(self, trial, cell: Cell):
        if self.job.phase == Phase.TUNE:
            tuned = study_spec.suggest_tuned(self.spec, trial)
            return self.spec.cell_config(cell, tuned, self.spec.tuning_seed(self.job.repeat))
        # Final: every value is enqueued; suggesting with the study's distributions
        # records them as the trial's params (for Optuna's own tools).
        for name, values in self.spec.compare.items():
            trial.suggest_categorical(name, values)
        tuned = study_spec.suggest_tuned(self.spec, trial)
        seed = trial.suggest_categorical("seed", self.spec.all_final_seeds())
        if self.spec.repeats > 1:
            trial.suggest_int(REPEAT_PARAM, 0, self.spec.repeats - 1)
        return self.spec.cell_config(cell, tuned, seed)

    def repeat_of(self, slot: int) -> int:
        """The tuning repeat a slot belongs to."""
        if self.job.phase == Phase.TUNE:
            return self.job.repeat
        return int(self.job.slots[slot][1].get(REPEAT_PARAM, 0))

    def _ended(self, checkpoint) -> None:
        """The run ended for good: its checkpoint goes, unless `execution.keep_checkpoints`."""
        if checkpoint is not None and not self.spec.execution.keep_checkpoints:
            checkpoint.remove()

    def _lost(self, trial, slot: int, label: str, error: Exception) -> None:
        """A storage error, not the trial's result: mark it lost, pause, let the slot be retried."""
        try:
            lost = 1 + optuna_store.deaths(optuna_store.slot_trials(trial.study).get(slot, []))
        except Exception:  # the storage itself is what failed
            lost = 1
        pause = storage_errors.backoff(lost)
        self.say(f"{label}: LOST to a storage error ({type(error).__name__}: {error}); retried after {pause:.0f} s")
        # If the storage is still down, the trial's heartbeat goes stale and it is retried as a death.
        with contextlib.suppress(Exception):
            trial.set_user_attr(OUTCOME_ATTR, Outcome.TRANSIENT)
        time.sleep(pause)
        raise TrialFailed(f"lost to a storage error: {type(error).__name__}: {error}") from error

    def _stopped_by_full_disk(self, trial, label: str, error: Exception) -> None:
        """A full disk stops the study, like an interrupt: it is not the trial's result, so
        the slot is run again on resume, from its checkpoint (kept), without using a retry."""
        full = disk.describe(error, optuna_storage=self.storage_url)
        self.full_disk = self.full_disk or full
        # The Optuna storage may be on the full disk too: the trial is then failed as dead
        # by the next start, and retried as such.
        with contextlib.suppress(Exception):
            trial.set_user_attr(OUTCOME_ATTR, Outcome.DISK_FULL)
        self.say(f"{label}: STOPPED ({full})")
        if full is not error:
            raise full from error
        raise full

    @staticmethod
    def _record_result(trial, result) -> None:
        """The trial's outcome and test scores as Optuna attributes: written while its MLflow
        run is still open, so that a storage refusing them (a full disk) closes the run as
        stopped, never as finished with a result Optuna lacks."""
        if result.status == Outcome.DIVERGED:
            trial.set_user_attr(OUTCOME_ATTR, Outcome.DIVERGED)
            return
        for key, score in result.test_metrics.items():
            trial.set_user_attr(key, score)
        trial.set_user_attr(OUTCOME_ATTR, Outcome.COMPLETED)

    def __call__(self, trial) -> float:
        slot = claim_slot(trial)
        cell, _ = self.job.slots[slot]
        try:
            config = self.config_of(trial, cell)
        except (ValueError, TypeError) as error:  # e.g. a value Optuna cannot suggest
            trial.set_user_attr(OUTCOME_ATTR, Outcome.ERROR)
            self.say(f"{self.job.phase} {cell.key} slot {slot}: FAILED before training ({error})")
            raise TrialFailed(f"{type(error).__name__}: {error}") from error
        metric = self.spec.objective.metric
        label = f"{self.job.phase} {cell.key} slot {slot} (trial {trial.number}, lr={config.learning_rate:.2g} width={config.width} seed={config.seed})"
        done = count_finished_slots(trial.study, len(self.job.slots))
        self.say(f"{label}: started [{done}/{len(self.job.slots)} of {self.job.label}]")

        where = f"{self.job.phase} {cell.key}"
        restored_epochs = 0  # set on resume: epochs replayed from the checkpoint, not trained now

        def progress(epoch: int, metrics: dict) -> None:
            faults.point("epoch", f"{where} epoch {epoch}")
            scores = f"loss={metrics['loss']:.4f} {metric}={metrics.get(metric, float('nan')):.4f}"
            # A restored epoch's time is the earlier attempt's: show where it came from instead.
            how = RESTORED_EPOCH if epoch <= restored_epochs else f"{metrics['epoch_time']:.1f}s"
            line = f"  trial {trial.number} epoch {epoch}/{config.epochs}: {scores} ({how})"
            self.progress.epoch(epoch, line, scores)

        self.progress.trial(f"trial {trial.number}", config.epochs)
        hooks = (PruningHook(trial, metric), progress) if self.job.phase == Phase.TUNE else (progress,)
        tags = {
            STUDY_TAG: self.spec.name,
            PHASE_TAG: self.job.phase,
            CELL_TAG: cell.key,
            OPTUNA_STUDY_TAG: trial.study.study_name,
            TRIAL_TAG: str(trial.number),
        }
        if self.spec.repeats > 1:
            tags[REPEAT_TAG] = str(self.repeat_of(slot))
        repeat = f"repeat={self.repeat_of(slot)}-" if self.spec.repeats > 1 else ""
        run_name = f"{self.job.phase}-{cell.key}-{repeat}" + (
            f"{trial.number}" if self.job.phase == Phase.TUNE else f"seed={config.seed}"
        )
        checkpoint = self.checkpoint_of(trial, slot, config)

        def resumed(restored) -> None:
            import mlflow

            nonlocal restored_epochs
            restored_epochs = restored.epochs
            mlflow.set_tags({RESUMED_EPOCHS_TAG: str(restored.epochs), RESUMED_FROM_TAG: restored.run_id or ""})
            self.say(f"{label}: resumed after epoch {restored.epochs} from the checkpoint of run {restored.run_id}")

        try:
            with tracking.trial_run(
                config,
                self.dataset,
                experiment_id=self.experiment_id,
                run_name=run_name,
                parent_run_id=self.parent_run_id,
                tags=tags,
            ) as run:
                trial.set_user_attr(RUN_ID_ATTR, run.run_id)
                import mlflow

                # What optuna-dashboard shows beside each trial: where it belongs, and its MLflow run.
                trial.set_user_attr(CELL_ATTR, cell.key)
                trial.set_user_attr(PHASE_ATTR, str(self.job.phase))
                trial.set_user_attr(
                    RUN_URL_ATTR, ui_links.mlflow_run_url(self.experiment_id, run.run_id, mlflow.get_tracking_uri())
                )
                if checkpoint is not None:
                    checkpoint.run_id = run.run_id
                faults.point("trial", where)
                # Tuning never looks at the test split: only final runs are scored on it.
                evaluate_test = self.job.phase == Phase.FINAL
                result = training.train(
                    config,
                    self.dataset,
                    hooks=(run.log_epoch, *hooks),
                    evaluate_test=evaluate_test,
                    on_lease=run.note_trainer,
                    checkpoint=checkpoint,
                    on_resume=resumed,
                )
                faults.point("model", where)
                run.record(result)
                self._record_result(trial, result)
        except training.StopTraining as stop:
            self._ended(checkpoint)
            trial.set_user_attr(OUTCOME_ATTR, stop.outcome)
            self.say(f"{label}: PRUNED ({stop})")
            raise optuna().TrialPruned(str(stop)) from None
        except KeyboardInterrupt:
            # Not a death: the slot is run again on resume, without using up a retry,
            # from its checkpoint.
            trial.set_user_attr(OUTCOME_ATTR, Outcome.INTERRUPTED)
            raise
        except Exception as error:
            if disk.is_disk_full(error):
                self._stopped_by_full_disk(trial, label, error)  # run again on resume, from its checkpoint
            if storage_errors.is_transient(error):
                self._lost(trial, slot, label, error)  # retried from its checkpoint
            self._ended(checkpoint)
            trial.set_user_attr(OUTCOME_ATTR, Outcome.ERROR)
            self.say(f"{label}: FAILED ({type(error).__name__}: {error})")
            raise TrialFailed(f"{type(error).__name__}: {error}") from error
        self._ended(checkpoint)
        if result.status == Outcome.DIVERGED:
            self.say(f"{label}: FAILED (diverged: {result.reason})")
            raise TrialFailed(f"diverged: {result.reason}")
        value = result.final(metric)
        self.say(f"{label}: {metric}={value:.4f}")
        return value
