"""Names shared between modules: MLflow tags, Optuna attributes, metric keys.

Defined once here so that the runs a study writes and the code that reads them
(report, reproduction, reconciliation) can never disagree on a spelling.
"""

# --- Per-epoch metrics `training.train` logs, and what a better value means -----------
EPOCH_METRICS = {"loss": "minimize", "accuracy": "maximize", "val_loss": "minimize", "val_accuracy": "maximize"}
GRAD_NORM_PREFIX = "grad_norm/"  # + "global" or a block name, e.g. "grad_norm/block_01"
TEST_PREFIX = "test_"  # test_loss, test_accuracy: logged once, after the last epoch

# --- MLflow tags ---------------------------------------------------------------------------
TAG_PREFIX = "reuse_nets."
KIND_TAG = TAG_PREFIX + "kind"  # "study" | "trial" | "reproduction": runs this project made
STUDY_TAG = TAG_PREFIX + "study"  # the study (spec) name, on the parent and every trial run
PHASE_TAG = TAG_PREFIX + "phase"  # "tune" | "final"
IDENTITY_TAG = TAG_PREFIX + "spec_identity"  # on the parent run: a hash of the study's spec
CELL_TAG = TAG_PREFIX + "cell"  # the compared cell, e.g. "strategy=residual,depth=64"
OUTCOME_TAG = TAG_PREFIX + "outcome"  # see tracking.OUTCOMES
REASON_TAG = TAG_PREFIX + "failure_reason"
MODEL_URI_TAG = TAG_PREFIX + "model_uri"
REPRODUCES_TAG = "reproduces"  # on a reproduction run: the run id it re-ran
OPTUNA_STUDY_TAG = "optuna.study_name"  # the Optuna study of the trial (one per cell and phase)
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"  # mirrors the Optuna trial state
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI

# --- Optuna user attributes ---------------------------------------------------------------
RUN_ID_ATTR = "mlflow_run_id"
OUTCOME_ATTR = "outcome"  # set by the objective; absent when the trial's process died
SLOT_ATTR = "slot"  # index of the planned trial a trial fills (tuning slot or final point)
PARENT_ATTR = "mlflow_parent_run_id"
IDENTITY_ATTR = "spec_identity"
SELECTION_ATTR = "selection"  # on the final-phase study: the config chosen per cell
