"""SQLite storage shared by `--workers` processes and runners: one waiting trial, one process; one slot, one run."""

import multiprocessing
import sys
from pathlib import Path

import optuna
import pytest

from reuse_nets.design import plan, selection, study_files
from reuse_nets.design.selection import Chosen
from reuse_nets.design.study_spec import ExecutionSpec
from reuse_nets.errors import TrialFailed
from reuse_nets.names import OUTCOME_ATTR, SLOT_ATTR, Outcome
from reuse_nets.report import writer
from reuse_nets.store import optuna_store
from reuse_nets.sweep import phases
from reuse_nets.sweep.study_run import StudyRun, SweepOptions

TRIALS = 400  # enough claims racing that, without immediate transactions, some trial is claimed twice


def claim_all(url, trial_ids, results, start):
    """A worker's pop of waiting trials: WAITING -> RUNNING, as Optuna's `ask` does it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    storage = optuna_store.make_storage(url, ExecutionSpec())
    start.wait(timeout=60)
    results.put([tid for tid in trial_ids if storage.set_trial_state_values(tid, optuna.trial.TrialState.RUNNING)])


def test_two_processes_never_claim_the_same_waiting_trial(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=optuna_store.make_storage(url, ExecutionSpec()), study_name="race")
    for index in range(TRIALS):
        study.enqueue_trial({"x": index})
    trial_ids = [trial._trial_id for trial in study.get_trials(deepcopy=False)]

    context = multiprocessing.get_context("spawn")
    results, start = context.Queue(), context.Barrier(2)
    processes = [
        context.Process(target=claim_all, args=(url, trial_ids, results, start), daemon=True) for _ in range(2)
    ]
    for process in processes:
        process.start()
    try:
        first, second = results.get(timeout=120), results.get(timeout=120)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()

    assert set(first) & set(second) == set()  # before the fix: a trial both ran, one "told" it twice
    assert sorted(first + second) == sorted(trial_ids)


def test_an_in_memory_sqlite_storage_still_works():
    # Only file databases get immediate transactions: disposing an in-memory
    # database's connections would drop the tables Optuna just made.
    for url in ("sqlite://", "sqlite:///:memory:"):
        study = optuna.create_study(storage=optuna_store.make_storage(url, ExecutionSpec()), study_name="in-memory")
        study.enqueue_trial({"x": 1})
        assert len(study.get_trials(deepcopy=False)) == 1


def test_preferred_slots_are_handed_out_first_and_every_slot_still_once(tmp_path):
    storage = optuna_store.make_storage(f"sqlite:///{tmp_path}/optuna.db", ExecutionSpec())
    study = optuna.create_study(storage=storage, study_name="final")
    optuna_store.enqueue_slots(study, [{"x": slot} for slot in range(6)], max_retry=0)
    mine = optuna.load_study(storage=storage, study_name="final")
    optuna_store.prefer_slots(mine, {3, 5})
    theirs = optuna.load_study(storage=storage, study_name="final")  # Optuna's own order
    taken = [mine.ask().user_attrs["slot"], mine.ask().user_attrs["slot"], theirs.ask().user_attrs["slot"]]
    assert taken == [3, 5, 0]
    taken += [mine.ask().user_attrs["slot"] for _ in range(3)]  # then the rest, in order
    assert taken == [3, 5, 0, 1, 2, 4]
    assert not optuna_store.trials_in(study, "WAITING")


# --- One slot, one run: "of the trials holding a slot, the lowest-numbered live or finished one runs" ---

TWO_SLOTS = ("compare.strategy=[plain, residual]", "compare.depth=[2]")  # smoke's final phase: 2 slots, 1 seed


class NoTraining:
    """A runner's progress that fails the test if a trial gets past its slot claim."""

    def say(self, line: str) -> None:
        raise AssertionError(f"a duplicate trial went on towards training: {line}")


# `ask` outside `optimize` on a storage with heartbeats: Optuna warns; these trials need none.
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_slot_enqueued_twice_at_once_runs_once_and_keeps_the_earlier_trials_result(tmp_path, monkeypatch):
    spec = study_files.load_study("smoke", TWO_SLOTS)
    job = plan.final_job(spec, {})
    points = [params for _, params in job.slots]
    storage = optuna_store.make_storage(f"sqlite:///{tmp_path}/optuna.db", spec.execution)
    study = phases.open_job(spec, storage, job)
    optuna_store.store_selection(study, {})
    # Two runners look for open slots before either has enqueued, then both enqueue them.
    seen = optuna_store.open_slots(study, len(points), spec.execution.max_retry)
    with monkeypatch.context() as both_saw_them_open:
        both_saw_them_open.setattr(optuna_store, "open_slots", lambda *args: seen)
        assert [optuna_store.enqueue_slots(study, points, spec.execution.max_retry) for _ in "AB"] == [2, 2]
    assert [(t.number, t.user_attrs[SLOT_ATTR]) for t in study.get_trials()] == [(0, 0), (1, 1), (2, 0), (3, 1)]

    # Runner A's workers take trials 0 and 1: trial 1 finishes, trial 0 is still training ...
    runner_a = optuna.load_study(study_name=job.study_name, storage=storage)
    training, finished = runner_a.ask(), runner_a.ask()
    assert [optuna_store.claim_slot(training), optuna_store.claim_slot(finished)] == [0, 1]
    finished.set_user_attr(OUTCOME_ATTR, Outcome.COMPLETED)
    runner_a.tell(finished, 0.75)
    # ... when runner B runs the other two as every runner does (its objective, `catch`).
    runner_b = StudyRun(spec, SweepOptions(), storage, None, "0", "parent", None, NoTraining())
    runner_b.optimize(job, study=phases.open_job(spec, storage, job))
    runner_a.tell(training, 0.5)

    trials = study.get_trials()
    assert [(t.state.name, t.user_attrs.get(OUTCOME_ATTR)) for t in trials[2:]] == [("FAIL", Outcome.DUPLICATE)] * 2
    by_slot = optuna_store.slot_trials(study)
    assert {slot: [(t.number, t.value) for t in ts if t.state.name == "COMPLETE"] for slot, ts in by_slot.items()} == {
        0: [(0, 0.5)],
        1: [(1, 0.75)],
    }
    # The runner's bookkeeping: both slots done, nothing to retry, no attempt counted as lost.
    assert optuna_store.count_finished_slots(study, len(points)) == 2
    assert optuna_store.pending(study, len(points), max_retry=0) == 0
    assert optuna_store.enqueue_slots(study, points, max_retry=0) == 0
    assert [optuna_store.deaths(ts) for ts in by_slot.values()] == [0, 0]
    assert writer.final_status(spec, storage) == {
        cell.key: {"complete": 1, "failed": 0, "pending": 0} for cell in spec.cells()
    }


def test_a_trial_that_died_after_recording_its_result_but_before_complete_is_retried():
    """Its outcome says `completed` but Optuna never saw COMPLETE (killed while its run closed):
    no value, so the slot is not done, and the attempt counts as a death."""
    study = optuna.create_study(storage="sqlite:///:memory:", study_name="gap")
    trial = study.ask()
    trial.set_user_attr(SLOT_ATTR, 0)
    trial.set_user_attr(OUTCOME_ATTR, Outcome.COMPLETED)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # as `fail_stale_trials` leaves it
    (died,) = study.get_trials()
    assert not optuna_store.is_finished(died)
    assert optuna_store.deaths([died]) == 1
    assert optuna_store.open_slots(study, 1, max_retry=1) == [0]
    assert optuna_store.slot_done([died], max_retry=0)  # out of retries: given up, as any death


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
@pytest.mark.parametrize(
    "earlier, outcome, refused",
    [
        pytest.param("RUNNING", None, True, id="running"),
        pytest.param("COMPLETE", Outcome.COMPLETED, True, id="complete"),
        pytest.param("PRUNED", Outcome.PRUNED, True, id="pruned"),
        pytest.param("FAIL", Outcome.DIVERGED, True, id="diverged"),  # a result: the slot is done
        pytest.param("FAIL", Outcome.ERROR, True, id="error"),
        pytest.param("FAIL", None, False, id="died"),  # no result: the retry runs
        pytest.param("FAIL", Outcome.INTERRUPTED, False, id="interrupted"),
        pytest.param("FAIL", Outcome.TRANSIENT, False, id="transient"),
        pytest.param("FAIL", Outcome.DUPLICATE, False, id="duplicate"),
    ],
)
def test_only_a_live_or_finished_earlier_trial_keeps_a_later_one_off_its_slot(tmp_path, earlier, outcome, refused):
    study = optuna.create_study(
        storage=optuna_store.make_storage(f"sqlite:///{tmp_path}/optuna.db", ExecutionSpec()), study_name="final"
    )
    for _ in range(2):
        study.enqueue_trial({"x": 0}, user_attrs={SLOT_ATTR: 0}, skip_if_exists=False)
    first = study.ask()
    assert optuna_store.claim_slot(first) == 0
    if outcome is not None:
        first.set_user_attr(OUTCOME_ATTR, outcome)
    if earlier != "RUNNING":
        study.tell(first, 0.5 if earlier == "COMPLETE" else None, state=optuna.trial.TrialState[earlier])

    later = study.ask()
    if refused:
        with pytest.raises(TrialFailed, match="slot 0 is already trial 0's"):
            optuna_store.claim_slot(later)
        assert later.user_attrs[OUTCOME_ATTR] == Outcome.DUPLICATE
        study.tell(later, state=optuna.trial.TrialState.FAIL)  # as Optuna ends a trial that raised
        assert optuna_store.deaths(optuna_store.slot_trials(study)[0][1:]) == 0  # no retry used up
    else:
        assert optuna_store.claim_slot(later) == 0
        assert OUTCOME_ATTR not in later.user_attrs


def test_a_selection_is_stored_as_the_json_earlier_versions_wrote_and_read_back_typed():
    # The stored form is what studies run before the typed selection hold: read it back as is.
    stored = '{"a": {"params": {"learning_rate": 0.001}, "run_id": "r1", "trial": 3, "value": 0.85}, "b": null}'
    chosen = selection.from_json(stored)
    assert chosen == {"a": Chosen(trial=3, value=0.85, params={"learning_rate": 0.001}, run_id="r1"), "b": None}
    assert selection.to_json(chosen) == stored
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    optuna_store.store_selection(study, chosen)
    assert optuna_store.stored_selection(study) == chosen
