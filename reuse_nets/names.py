"""The project's vocabulary: MLflow tags, Optuna attributes, metric keys, outcomes, phases.

Every spelling that a study writes and other code reads back (report,
reproduction, reconciliation, results) is defined here once;
`tests/test_vocabulary.py` fails if one is spelled as a literal anywhere else.
"""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """The two phases of a study (see `reuse_nets.design.plan`)."""

    TUNE = "tune"
    FINAL = "final"


class Kind(enum.StrEnum):
    """What made an MLflow run (`KIND_TAG`)."""

    STUDY = "study"  # a study's parent run
    TRIAL = "trial"
    REPRODUCTION = "reproduction"


class Outcome(enum.StrEnum):
    """How a trial ended (`OUTCOME_TAG` on its run, `OUTCOME_ATTR` on its Optuna trial)."""

    COMPLETED = "completed"
    PRUNED = "pruned"  # stopped by the cell's pruner
    DIVERGED = "diverged"  # non-finite loss
    ERROR = "error"  # raised during set-up or training
    INTERRUPTED = "interrupted"  # a signal stopped it; run again on resume, no retry used
    DISK_FULL = "disk_full"  # a full disk stopped the study; run again on resume, no retry used
    DIED = "died"  # its process vanished; found later by reconciliation
    TRANSIENT = "transient"  # a storage error cut it short; its slot is retried like a death
    UNUSED = "unused"  # asked for a slot when none was waiting (never trained)
    DUPLICATE = "duplicate"  # another trial already owns its slot (never trained)


class Verdict(enum.StrEnum):
    """What the report says of one comparison (cell vs baseline, or a declared contrast)."""

    BETTER = "better"
    WORSE = "worse"
    EQUIVALENT = "equivalent"  # within ±report.min_effect, by TOST
    INCONCLUSIVE = "inconclusive"


class RunStatus(enum.StrEnum):
    """MLflow's run statuses that this project sets or reads (`RunInfo.status`)."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class TrialState(enum.StrEnum):
    """Optuna's trial states, by name (`trial.state.name`; `STATE_TAG` mirrors them)."""

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"


# How a trial run ended -> (MLflow run status, the Optuna trial state it mirrors).
RUN_END = {
    Outcome.COMPLETED: (RunStatus.FINISHED, TrialState.COMPLETE),
    Outcome.PRUNED: (RunStatus.KILLED, TrialState.PRUNED),
    Outcome.DIVERGED: (RunStatus.FAILED, TrialState.FAIL),
    Outcome.ERROR: (RunStatus.FAILED, TrialState.FAIL),
    Outcome.INTERRUPTED: (RunStatus.KILLED, TrialState.FAIL),
    Outcome.DISK_FULL: (RunStatus.KILLED, TrialState.FAIL),
    Outcome.DIED: (RunStatus.FAILED, TrialState.FAIL),
    Outcome.TRANSIENT: (RunStatus.FAILED, TrialState.FAIL),
}
# Outcomes of trials that ran to a result; a FAIL trial without one died and is retried.
RESULT_OUTCOMES = (Outcome.COMPLETED, Outcome.PRUNED, Outcome.DIVERGED, Outcome.ERROR)
# Of those, the ones a FAIL trial can carry as its result. A FAIL trial marked `completed`
# recorded its result but died before Optuna's COMPLETE: it has no value, and is retried.
FAILED_WITH_RESULT = (Outcome.DIVERGED, Outcome.ERROR)
# Runs that stopped before their last epoch: a reproduction re-trains them as far as they went.
STOPPED_EARLY = (
    Outcome.PRUNED,
    Outcome.INTERRUPTED,
    Outcome.DISK_FULL,
    Outcome.DIED,
    Outcome.ERROR,
    Outcome.TRANSIENT,
)
# Trials a study re-check (`reproduce --study`) may pick.
RECHECKABLE = (Outcome.COMPLETED, Outcome.PRUNED, Outcome.DIVERGED)

# --- Per-epoch metrics `training.train` logs, and what a better value means -----------
EPOCH_METRICS = {"loss": "minimize", "accuracy": "maximize", "val_loss": "minimize", "val_accuracy": "maximize"}
# The weights a run ends with (the best epoch's under early stopping, else the last's):
# which epoch, how many were trained, whether a plateau stopped it (1) or the cap (0),
# and the epoch metrics of those weights, e.g. "selected/val_accuracy".
BEST_EPOCH_METRIC = "best_epoch"
EPOCHS_TRAINED_METRIC = "epochs_trained"
PLATEAU_METRIC = "stopped_on_plateau"
SELECTED_PREFIX = "selected/"
GRAD_NORM_PREFIX = "grad_norm/"  # + "global" or a block name, e.g. "grad_norm/block_01"
TEST_PREFIX = "test_"  # test_loss, test_accuracy: logged once, after the last epoch
# Capacity of the trial's network (`nn.capacity`), logged once at step 0 when the run starts
CAPACITY_METRICS = {
    "trainable_params": "model/trainable_params",
    "effective_params": "model/effective_params",
    "total_params": "model/total_params",
    "flops": "model/flops_per_example",
}

# --- MLflow tags: ours -----------------------------------------------------------------
TAG_PREFIX = "reuse_nets."
KIND_TAG = TAG_PREFIX + "kind"  # a `Kind`: runs this project made
STUDY_TAG = TAG_PREFIX + "study"  # the study (spec) name, on the parent and every trial run
PHASE_TAG = TAG_PREFIX + "phase"  # a `Phase`
IDENTITY_TAG = TAG_PREFIX + "spec_identity"  # on the parent run: a hash of the study's spec
CELL_TAG = TAG_PREFIX + "cell"  # the compared cell, e.g. "strategy=residual,depth=64"
RESUMED_EPOCHS_TAG = TAG_PREFIX + "resumed_epochs"  # epochs a retried trial restored from its checkpoint
RESUMED_FROM_TAG = TAG_PREFIX + "resumed_from"  # the run whose attempt wrote that checkpoint
REGISTERED_RUN_TAG = TAG_PREFIX + "run_id"  # on a registered model version: the final run it came from
REPEAT_TAG = TAG_PREFIX + "repeat"  # the tuning repeat of a trial run (only with tune.repeats > 1)
OUTCOME_TAG = TAG_PREFIX + "outcome"  # an `Outcome`
REASON_TAG = TAG_PREFIX + "failure_reason"
MODEL_URI_TAG = TAG_PREFIX + "model_uri"
# Provenance (`store.provenance`)
COMMAND_TAG = TAG_PREFIX + "command"
LOCK_TAG = TAG_PREFIX + "uv_lock_sha256"
GIT_COMMIT_TAG = TAG_PREFIX + "git_commit"
GIT_DIRTY_TAG = TAG_PREFIX + "git_dirty"
CPU_TAG = TAG_PREFIX + "cpu"  # the model name, for people: two different CPUs may share it
CPU_VENDOR_TAG = TAG_PREFIX + "cpu_vendor"
CPU_FAMILY_MODEL_TAG = TAG_PREFIX + "cpu_family_model"  # "family/model/stepping"
CPU_FEATURES_TAG = TAG_PREFIX + "cpu_features"  # the kernel-selecting flags, e.g. "avx avx2 fma avx512f"
KERNEL_ISA_TAG = TAG_PREFIX + "kernel_isa"  # oneDNN's ISA for this run's kernels, e.g. "AVX2"
VERSION_TAG_PREFIX = TAG_PREFIX + "version."  # + a library name
# Execution settings (`train.execution`)
EXEC_TAG_PREFIX = TAG_PREFIX + "exec."
INTRA_TAG = EXEC_TAG_PREFIX + "intra_op_threads"
INTER_TAG = EXEC_TAG_PREFIX + "inter_op_threads"
ONEDNN_TAG = EXEC_TAG_PREFIX + "onednn"
XLA_TAG = EXEC_TAG_PREFIX + "xla"
CORES_TAG = EXEC_TAG_PREFIX + "machine_cores"
# How many compiled architectures a process keeps, and whether this trial used one
# an earlier trial traced; neither changes results (they are not read by reproduce).
COMPILE_CACHE_TAG = EXEC_TAG_PREFIX + "compile_cache"
TRAINER_REUSED_TAG = EXEC_TAG_PREFIX + "trainer_reused"
# On an `mlflow run` project run, linking it to what the command made
PROJECT_STUDY_TAG = STUDY_TAG
PROJECT_PARENT_TAG = TAG_PREFIX + "study_parent_run_id"
PROJECT_REPRODUCES_TAG = TAG_PREFIX + "reproduces"
PROJECT_REPRODUCES_STUDY_TAG = TAG_PREFIX + "reproduces_study"
PROJECT_AGREE_TAG = TAG_PREFIX + "agree"

# --- MLflow tags: Optuna's and MLflow's own ------------------------------------------
REPRODUCES_TAG = "reproduces"  # on a reproduction run: the run id it re-ran
OPTUNA_STUDY_TAG = "optuna.study_name"  # the Optuna study of the trial (one per cell and phase)
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"  # mirrors the Optuna trial state
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI
GIT_SOURCE_TAG = "mlflow.source.git.commit"

# --- Optuna user attributes ---------------------------------------------------------------
RUN_ID_ATTR = "mlflow_run_id"
RUN_URL_ATTR = "mlflow_run_url"  # the trial's run page in the MLflow UI (for optuna-dashboard)
CELL_ATTR = "cell"  # the compared cell of a trial, e.g. "strategy=residual,depth=64"
PHASE_ATTR = "phase"  # "tune" or "final"
OUTCOME_ATTR = "outcome"  # set by the objective; absent when the trial's process died
SLOT_ATTR = "slot"  # index of the planned trial a trial fills (tuning slot or final point)
IDENTITY_ATTR = "spec_identity"
SELECTION_ATTR = "selection"  # on the final-phase study: the config chosen per cell
