"""SQLite storage shared by `--workers` processes: one waiting trial, one runner."""

import multiprocessing
import sys
from pathlib import Path

import optuna

from reuse_nets.spec.studies import ExecutionSpec
from reuse_nets.store import optuna_store

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
