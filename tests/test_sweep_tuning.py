"""End-to-end: tuned studies. An equal budget per cell with `--workers 2` and after an
interrupted run is resumed, final runs that retrain each cell's selection, Sobol
candidates that do not depend on the workers, and repeated tuning.
"""

import math

import numpy as np
import pytest
import yaml
from sweep_helpers import (
    Stores,
    explain,
    quiet_optuna,  # noqa: F401  (autouse: Optuna's log at WARNING in every test here)
    run,
    run_reproduce,
    run_sweep,
    slots,
    small_spec,
    sweep_command,
    tracking_url,
    trials_in,
)

from reuse_nets.report import results
from reuse_nets.train import execution

# A tuned study small enough for CI: 2 cells x 3 tuning trials, then 2 cells x 2 seeds.
TINY_TUNED = (
    "compare.depth=[2]",
    "base.epochs=2",
    "base.width=16",
    "tune.trials_per_cell=3",
    "tune.pruner.n_startup_trials=1",
    "tune.pruner.n_warmup_steps=0",
    "final.seeds=[1, 2]",
    "execution.heartbeat_interval=2",
    "execution.grace_period=8",
)

pytestmark = pytest.mark.slow


# --- a tuned study: equal budget per cell, final runs of the selected configs ----------------


def assert_equal_budget(stores: Stores, spec) -> None:
    """Every cell: exactly `trials_per_cell` slots with a result, each slot once."""
    for cell in spec.cells():
        trials = stores.tune(cell.key).get_trials()
        ended = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert slots(ended) == list(range(spec.tune.trials_per_cell)), (
            cell.key,
            [(t.number, t.state.name) for t in trials],
        )
        assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def assert_final_retrains_the_selection(stores: Stores, spec) -> None:
    """Final runs = each cell's best COMPLETE tuning trial (on val) x the declared seeds."""
    final = stores.final().get_trials()
    for cell in spec.cells():
        complete = [t for t in stores.tune(cell.key).get_trials() if t.state.name == "COMPLETE"]
        best = max(complete, key=lambda t: (t.value, -t.number))
        runs = [
            t for t in final if t.state.name == "COMPLETE" and all(t.params[k] == v for k, v in cell.values.items())
        ]
        assert sorted(t.params["seed"] for t in runs) == spec.final.seeds
        for trial in runs:
            assert trial.params["learning_rate"] == best.params["learning_rate"]
            logged = stores.child_of(trial).data.params
            assert float(logged["learning_rate"]) == best.params["learning_rate"]
            assert logged["seed"] == str(trial.params["seed"]) and logged["seed"] != "0"  # fresh, not the tuning seed


def test_two_workers_give_every_cell_the_same_budget(tmp_path):
    result = run_sweep(tmp_path, "residual_depth", "--workers", "2", *[a for o in TINY_TUNED for a in ("--set", o)])
    assert "[worker 1]" in result.stdout and "[worker 2]" in result.stdout
    assert "study residual_depth: complete" in result.stdout
    spec = small_spec("residual_depth", *TINY_TUNED)
    stores = Stores(tmp_path, "residual_depth")
    assert_equal_budget(stores, spec)
    assert_final_retrains_the_selection(stores, spec)
    for cell in spec.cells():
        # Regression: workers with one sampler seed drew the same start-up values.
        rates = [t.params["learning_rate"] for t in stores.tune(cell.key).get_trials() if "learning_rate" in t.params]
        assert len(set(rates)) == len(rates) == spec.tune.trials_per_cell, (cell.key, rates)
    final = stores.final().get_trials()
    assert slots([t for t in final if t.state.name == "COMPLETE"]) == [0, 1, 2, 3]
    # A worker that asked after the last slot was taken gets an unused trial, and no run.
    for study in [stores.final()] + [stores.tune(c.key) for c in spec.cells()]:
        for trial in study.get_trials():
            if trial.state.name not in ("COMPLETE", "PRUNED"):
                assert trial.state.name == "FAIL" and trial.user_attrs.get("outcome") == "unused", trial
    runs = stores.runs()
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(stores.parent_runs()) == 1
    # Every MLflow run's tags agree with its Optuna trial.
    for run in stores.children():  # noqa: F402  (the helper `run` is not called in this test)
        trial = stores.optuna_study(run.data.tags["optuna.study_name"]).trials[
            int(run.data.tags["optuna.trial_number"])
        ]
        assert run.data.tags["optuna.trial_state"] == trial.state.name
    # The report's numbers: mean test metric of the final runs of each cell.
    report = (tmp_path / "reports" / "residual_depth" / "report.md").read_text()
    for cell in spec.cells():
        tests = [
            t.user_attrs["test_accuracy"]
            for t in final
            if t.state.name == "COMPLETE" and all(t.params[k] == v for k, v in cell.values.items())
        ]
        assert f"| {cell.key} | {sum(tests) / len(tests):.4f} ± " in report

    # Each worker pinned its share of the cores and logged it; a run reproduces
    # bit-exactly in a process whose own default would be another thread count.
    # The run reproduced trained on a trainer an earlier trial of its worker traced
    # (the compile cache): the fresh process traces its own and still agrees.
    threads = max(1, execution.machine_cores() // 2)
    finals = [stores.child_of(t) for t in final if t.state.name == "COMPLETE"]
    assert {r.data.tags["reuse_nets.exec.compile_cache"] for r in finals} == {"4"}
    reused = [r for r in finals if r.data.tags["reuse_nets.exec.trainer_reused"] == "true"]
    assert reused, "no final run reused its cell's compiled trainer"
    original = reused[0]
    assert original.data.tags["reuse_nets.exec.intra_op_threads"] == str(threads)
    assert "--workers 2" in original.data.tags["reuse_nets.command"]
    proc = run_reproduce(tmp_path, original.info.run_id)
    assert proc.returncode == 0, explain(proc)
    assert f"execution: {threads} intra-op / {min(threads, 2)} inter-op threads" in proc.stdout, explain(proc)
    assert "AGREE within tolerance 0" in proc.stdout, explain(proc)


def test_an_interrupted_tuned_study_resumes_to_the_same_budget(tmp_path):
    overrides = [a for o in TINY_TUNED for a in ("--set", o)]
    # 2 s: less than the first trial takes (tracing, MLflow) on any machine, so tuning cannot finish.
    first = run(sweep_command(tmp_path, "residual_depth", *overrides, "--timeout", "2"), cwd=tmp_path)
    assert first.returncode == 1, explain(first)  # out of time: incomplete, resumable
    assert "incomplete (re-run the same command to resume)" in first.stdout
    stores = Stores(tmp_path, "residual_depth")
    assert stores.parent().info.status == "KILLED"
    assert "residual_depth:final" not in stores.optuna_names()  # tuning was not done

    run_sweep(tmp_path, "residual_depth", *overrides)

    spec = small_spec("residual_depth", *TINY_TUNED)
    assert_equal_budget(stores, spec)
    assert_final_retrains_the_selection(stores, spec)
    assert stores.parent().info.status == "FINISHED"


# --- the candidates tried and their selection: the same whatever the workers; repeated tuning ---


def test_sobol_candidates_and_selections_do_not_depend_on_the_workers(tmp_path):
    """Slot k of every cell tries the k-th point of one seeded Sobol sequence, however many workers."""
    overrides = [a for o in (*TINY_TUNED, "tune.sampler.type=sobol") for a in ("--set", o)]
    found = {}
    for workers in (1, 2):
        directory = tmp_path / f"workers{workers}"
        directory.mkdir()
        run_sweep(directory, "residual_depth", "--workers", str(workers), *overrides)
        stores = Stores(directory, "residual_depth")
        spec = small_spec("residual_depth", *TINY_TUNED, "tune.sampler.type=sobol")
        tried = {
            cell.key: {t.user_attrs["slot"]: t.params["learning_rate"] for t in stores.tune(cell.key).get_trials()}
            for cell in spec.cells()
        }
        finals = {
            (t.params["strategy"], t.params["seed"]): (t.params["learning_rate"], t.value)
            for t in trials_in(stores.final(), "COMPLETE")
        }
        found[workers] = (tried, finals)
    points = [p["learning_rate"] for p in spec.tune.points()]
    for tried in (found[1][0], found[2][0]):
        assert all(list(dict(sorted(slots.items())).values()) == points for slots in tried.values()), tried
    # The same candidates, the same selections, and bit-identical final runs.
    assert found[1] == found[2]


def test_repeated_tuning_is_retrained_per_repeat_and_reported_with_its_variance(tmp_path):
    """`tune.repeats: 2`: each cell tuned twice with shifted seeds, each selection retrained
    with its own final seeds, and the report's tests run over the repeats' means."""
    extra = (*TINY_TUNED, "tune.sampler.type=sobol", "tune.repeats=2")
    spec = small_spec("residual_depth", *extra)
    study_file = tmp_path / "repeated.yaml"  # a file, so that a later study can name it as its pilot
    study_file.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    run_sweep(tmp_path, str(study_file), small=False)
    stores = Stores(tmp_path, "residual_depth")
    assert stores.optuna_names() == sorted(
        [f"residual_depth:tune:{c.key}:repeat={r}" for c in spec.cells() for r in (0, 1)] + ["residual_depth:final"]
    )
    by_id = {c.info.run_id: c for c in stores.children()}
    selected = {}
    for cell in spec.cells():
        for repeat in (0, 1):
            study = stores.optuna_study(f"residual_depth:tune:{cell.key}:repeat={repeat}")
            trials = study.get_trials(deepcopy=False)
            assert len(trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
            # Slot k tries the k-th point of the repeat's own Sobol sequence, the same in every cell.
            tried = [t.params["learning_rate"] for t in sorted(trials, key=lambda t: t.user_attrs["slot"])]
            assert tried == [p["learning_rate"] for p in spec.tune.points(repeat)]
            for t in trials:  # tuning trains with the repeat's tuning seed, and says which repeat
                logged = by_id[t.user_attrs["mlflow_run_id"]]
                assert logged.data.params["seed"] == str(repeat * 1000)
                assert logged.data.tags["reuse_nets.repeat"] == str(repeat)
            best = max(trials_in(study, "COMPLETE"), key=lambda t: (t.value, -t.number))
            selected[(cell.key, repeat)] = best.params["learning_rate"]
    assert spec.tune.points(0) != spec.tune.points(1)

    finals = trials_in(stores.final(), "COMPLETE")
    assert len(finals) == len(spec.cells()) * 2 * 2
    seen = set()
    for t in finals:
        logged = by_id[t.user_attrs["mlflow_run_id"]]
        cell, repeat, seed = (
            logged.data.tags["reuse_nets.cell"],
            int(logged.data.tags["reuse_nets.repeat"]),
            t.params["seed"],
        )
        assert t.params["repeat"] == repeat and seed in spec.final_seeds(repeat)
        assert t.params["learning_rate"] == selected[(cell, repeat)]  # the repeat's own selection
        seen.add((cell, repeat, seed))
    assert seen == {(c.key, r, s) for c in spec.cells() for r in (0, 1) for s in spec.final_seeds(r)}

    # The report: per-cell n counts repeats, verdicts rest on repeat means, and the variance is split.
    tests = {
        (r.data.tags["reuse_nets.cell"], int(r.data.tags["reuse_nets.repeat"])): []
        for r in by_id.values()
        if r.data.tags["reuse_nets.phase"] == "final"
    }
    for logged in by_id.values():
        if logged.data.tags["reuse_nets.phase"] == "final":
            tests[(logged.data.tags["reuse_nets.cell"], int(logged.data.tags["reuse_nets.repeat"]))].append(
                logged.data.metrics["test_accuracy"]
            )
    report = (tmp_path / "reports" / "residual_depth" / "report.md").read_text()
    section = report.split("## Tuning variance")[1].split("\n## ")[0]
    for cell in spec.cells():
        groups = [np.array(tests[(cell.key, r)]) for r in (0, 1)]
        within = np.mean([g.var(ddof=1) for g in groups])
        row = next(line for line in section.splitlines() if line.startswith(f"| {cell.key} | "))
        assert f"| {math.sqrt(within):.4f} |" in row, (row, within)
        repeat_means = [g.mean() for g in groups]
        cell_row = next(line for line in report.splitlines() if line.startswith(f"| {cell.key} | ") and "± " in line)
        assert f"| {np.mean(repeat_means):.4f} ± " in cell_row and "| 2 |" in cell_row, cell_row
    assert "tuning repeat" in report.split("## Verdict")[1].split("\n## ")[0]
    assert "| per-repeat |" in report

    frame = results.final_runs(str(study_file), tracking_uri=tracking_url(tmp_path))
    assert sorted(frame["repeat"].tolist()) == [0] * 4 + [1] * 4

    # As a pilot: --dry-run's power uses its paired differences' SD between seeds (pooled within
    # repeats), and names their SD between tuning runs.
    by_seed = {
        (r.data.tags["reuse_nets.cell"], int(r.data.tags["reuse_nets.repeat"]), r.data.params["seed"]): r.data.metrics[
            "test_accuracy"
        ]
        for r in by_id.values()
        if r.data.tags["reuse_nets.phase"] == "final"
    }
    plain, residual = (c.key for c in spec.cells())
    diffs = [
        [by_seed[(residual, r, str(s))] - by_seed[(plain, r, str(s))] for s in spec.final_seeds(r)] for r in (0, 1)
    ]
    seed_sd = math.sqrt(np.mean([np.var(d, ddof=1) for d in diffs]))
    dry = run(
        [*sweep_command(tmp_path, "residual_depth", "--dry-run", "--set", f"report.pilot={study_file}")], tmp_path
    )
    assert dry.returncode == 0, explain(dry)
    assert f"a paired-difference SD of {seed_sd:.4g} (between seeds, pooled over 1 comparisons" in dry.stdout, (
        dry.stdout
    )
    assert "between tuning runs the pilot's SD was" in dry.stdout
