"""The benchmark: `reuse-nets benchmark --quick` writes the documented JSON and Markdown.

Timings are not asserted (absolute and even relative speed is noise on a shared
2-core machine); the structure, the arithmetic and where files land are.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import optuna
import pytest
from conftest import fashion_mnist_manual_dir

from reuse_nets.bench import benchmark
from reuse_nets.bench import plans as bench_plans
from reuse_nets.bench import training_speed as bench_training

ROOT = Path(__file__).resolve().parents[1]
VARIANT_KEYS = {"examples_per_s", "min", "max", "epochs", "first_epoch_s", "gflops", "ceiling_fraction"}


def test_training_flops_count_every_dense_matmul_forward_and_backward():
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32), keras.layers.Dense(10)])
    # Forward and weight gradients of both; the input gradient of the second only.
    assert bench_training.training_flops_per_example(model) == 2 * 2 * (784 * 32 + 32 * 10) + 2 * 32 * 10


def test_quick_and_full_plans_measure_the_same_sections():
    assert {(s.depth, s.width) for s in bench_plans.FULL.sizes} == {(8, 128), (64, 128), (8, 512), (64, 512)}
    assert bench_plans.QUICK.repeats >= 1 and len(bench_plans.QUICK.sizes) >= 1


def refused(tmp_path, *args) -> str:
    """Runs `sweeps/benchmark.py` with bad `args`: exit 2, nothing on stdout; its stderr."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "benchmark.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    return done.stderr


def test_unknown_sections_are_refused(tmp_path):
    stderr = refused(tmp_path, "--sections", "training,speed")
    assert stderr.startswith("error: --sections takes some of ceiling,") and "got speed" in stderr


def test_output_must_be_json(tmp_path):
    stderr = refused(tmp_path, "--output", "table.txt")
    assert stderr.startswith("error: --output must name a .json file") and len(stderr.splitlines()) == 1


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """`reuse-nets benchmark --quick` run once, from an empty folder."""
    work = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    command = [sys.executable, "-c", "import sys; from reuse_nets.commands import main; sys.exit(main())"]
    done = subprocess.run(
        [*command, "benchmark", "--quick", "--output", "out/bench.json", "--manual-dir", fashion_mnist_manual_dir()],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return work, json.loads((work / "out" / "bench.json").read_text()), done.stdout


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(quick):
    _, result, _ = quick
    assert result["schema"] == benchmark.SCHEMA_VERSION and result["quick"] is True
    assert {"date", "cpu", "cores", "libraries", "commit", "command"} <= set(result["machine"])
    assert "benchmark --quick" in result["machine"]["command"]
    assert result["ceiling"]["gflops"] > 0

    assert isinstance(result["training"], list) and len(result["training"]) == len(bench_plans.QUICK.sizes)
    for entry, size in zip(result["training"], bench_plans.QUICK.sizes):
        assert (entry["depth"], entry["width"], entry["examples_per_epoch"]) == (size.depth, size.width, size.examples)
        for variant in ("plain", "framework"):
            assert set(entry[variant]) == VARIANT_KEYS
            assert entry[variant]["examples_per_s"] > 0
            assert entry[variant]["epochs"] == bench_plans.QUICK.repeats * (bench_plans.QUICK.epochs - 1)
        # The ratio is framework over plain fit, as documented.
        assert entry["ratio"] == pytest.approx(
            entry["framework"]["examples_per_s"] / entry["plain"]["examples_per_s"], rel=0.01
        )

    sweep = result["sweep"]
    assert sweep["trials"] == 2 and sweep["sweep_s"] > 0 and sweep["bare_fits_s"] > 0
    assert sweep["ratio"] == pytest.approx(sweep["sweep_s"] / sweep["bare_fits_s"], rel=0.01)  # of rounded seconds
    assert 0 < result["startup"]["dry_run_s"] and 0 < result["startup"]["first_step_s"]

    pruning = result["pruning"]
    for label in ("pruned", "unpruned"):
        assert pruning[label]["tuning_epochs"] > 0 and pruning[label]["best_cell"] == "strategy=plain,depth=1"
    # Without a pruner every tuning trial trains every epoch.
    assert pruning["unpruned"]["tuning_epochs"] == 3 * 2
    assert isinstance(pruning["same_best_cell"], bool)

    # The profiled study: 2 cells (plain, residual at depth 2) x (2 tuning trials + 1 final seed).
    profile = result["profile"]
    off, on = profile["cache_off"], profile["cache_on"]
    assert off["trials"] == on["trials"] == 6
    assert off["traced"] == 6  # every trial compiled afresh
    assert on["traced"] == 2  # once per architecture: the final runs reuse the tuning trials' trainers
    assert profile["wall_ratio"] == pytest.approx(on["wall_s"] / off["wall_s"], rel=0.01)
    for run in (off, on):
        sections = run["sections"]
        assert {"process start", "data", "build and compile", "training steps", "test evaluation"} <= set(sections)
        assert {"mlflow: epoch metrics", "mlflow: model", "mlflow: plots", "report"} <= set(sections)
        assert all(entry["s"] >= 0 for entry in sections.values())
        assert sum(entry["s"] for entry in sections.values()) == pytest.approx(run["wall_s"], abs=0.1 * len(sections))
        assert 0 < run["tracing_share"] < 1
    # Tracing moves out of the repeats' first steps: the cached run spends less on it.
    assert on["tracing_s"] < off["tracing_s"]

    workers = result["workers"]
    assert workers["1"]["trials"] == workers["2"]["trials"] == 6
    assert 2 <= workers["2"]["traced"] <= 6  # each worker process compiles what it runs
    assert workers["speedup"] == pytest.approx(
        workers["2"]["trials_per_minute"] / workers["1"]["trials_per_minute"], rel=0.01
    )
    assert result["device"] == "CPU (no GPU visible)"

    # The soak: 2 cells x 10 tuning trials + 2 final runs in one process, its RSS sampled as trials start.
    soak = result["soak"]
    assert soak["trials"] == 22 and soak["warm_up_trials"] == 2
    by_trial = {int(k): v for k, v in soak["rss_mb_by_trial"].items()}
    assert set(range(1, 23)) <= set(by_trial) and all(v > 100 for v in by_trial.values())
    assert soak["rss_mb_max_after"] == max(v for k, v in by_trial.items() if k >= 2)
    assert soak["growth"] == pytest.approx(soak["rss_mb_max_after"] / soak["rss_mb_warm"] - 1, abs=1e-3)


@pytest.mark.slow
def test_quick_benchmark_writes_its_table_and_nothing_else(quick):
    work, result, stdout = quick
    table = (work / "out" / "bench.md").read_text()
    assert table in stdout
    assert "| depth | width | plain fit ex/s | framework ex/s | ratio |" in table
    for entry in result["training"]:
        assert f"| {entry['depth']} | {entry['width']} | " in table
    assert "quick mode" in table and result["machine"]["date"] in table
    assert "| profile: 6 trials, compile cache off / on |" in table
    assert "| soak: 22 trials in one process, RSS after 2 / largest after / last |" in table
    assert "| first training step (traces unless reused) |" in table
    # Stores, reports and data of the measured studies lived in a temporary folder.
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == ["out", "out/bench.json", "out/bench.md"]


# --- Sections run only when named: memory and runners (quick plan, in this process) ---------


def quiet(message: str) -> None:
    pass


@pytest.mark.slow
def test_quick_memory_section_attributes_the_growth_after_warm_up(data_source):
    result = benchmark.measure(bench_plans.QUICK, data_source, say=quiet, sections=("memory",))
    assert set(result) >= {"machine", "memory"} and "soak" not in result
    memory = result["memory"]
    # 2 cells (plain, residual at depth 2) x 3 tuning trials + 2 final runs. The residual
    # cell starts at trial 4; one trial later (the soak's warm-up) the untraced window
    # starts, then the traced one (a trial to settle, a trial measured).
    assert memory["trials"] == 8 and memory["last_cell_starts_at_trial"] == 4
    assert memory["untraced"] == {"from_trial": 5, "to_trial": 6} and memory["traced"] == {
        "from_trial": 7,
        "to_trial": 8,
    }
    by_trial = memory["rss_mb_by_trial"]
    assert len(by_trial) == 8 and all(mb > 100 for mb in by_trial)
    assert memory["rss_mb_before"] == {"trial": 1, "mb": by_trial[0]}
    grew = memory["growth_mb"]
    assert set(grew) == {
        "rss",
        "rss_anonymous",
        "rss_files",
        "rss_after_malloc_trim",
        "malloc_in_use",
        "malloc_free_kept",
        "pymalloc_arenas",
    }
    assert grew["rss"] == pytest.approx(memory["rss_mb"]["untraced_end"] - memory["rss_mb"]["warm"], abs=0.02)
    assert grew["rss"] == pytest.approx(grew["rss_anonymous"] + grew["rss_files"], abs=0.02)
    # One trial in each window: per trial is the window's growth.
    assert memory["per_trial_mb"]["rss"] == pytest.approx(grew["rss"], abs=0.01)
    assert memory["per_trial_mb"]["python_heap"] == pytest.approx(memory["python_heap_growth_mb"], abs=0.01)
    for share in ("explained_share", "python_heap_share"):
        assert memory[share] is None or isinstance(memory[share], float)
    assert all(isinstance(name, str) and isinstance(mb, float) for name, mb in memory["packages_mb"].items())
    sites = memory["top_sites"]
    assert sites and all({"site", "caller", "package", "blocks", "kib"} == set(s) for s in sites)
    assert all(":" in s["site"] and "bench/memory.py" not in s["site"] for s in sites)  # not the probe's own
    assert [s["kib"] for s in sites] == sorted((s["kib"] for s in sites), reverse=True)
    growers = memory["object_types"]
    assert all(g["end"] > g["warm"] for g in growers)
    assert [g["end"] - g["warm"] for g in growers] == sorted((g["end"] - g["warm"] for g in growers), reverse=True)
    state = memory["framework_state"]
    # Both architectures were traced and cached before the window: nothing traced in it.
    assert state["reuse_nets: compiled trainers cached"] == [2, 2]
    functions = state["tensorflow: functions in the eager context"]
    assert functions[0] == functions[1] > 0
    # What grows with every trial in MLflow: a cached artifact repository per run and per
    # logged model, and two `code_model_<uuid>` modules (pyfunc_model.py, loaded to log the model).
    repositories, modules = state["mlflow: artifact repositories cached"], state["python: modules in sys.modules"]
    assert repositories[1] - repositories[0] == 2 and modules[1] - modules[0] == 2
    row = "| memory: trials 5-6 of one process, RSS growth per trial (after malloc_trim) / malloc in use / Python heap (traced) |"
    assert row in benchmark.markdown(result)


@pytest.mark.slow
def test_quick_runners_section_runs_every_slot_once_with_no_failed_runner(data_source):
    from test_many_machines import postgres_bin_dir

    postgres_bin_dir()  # PostgreSQL's server binaries, apt-installed if missing
    assert bench_plans.FULL.runners == 8
    result = benchmark.measure(bench_plans.QUICK, data_source, say=quiet, sections=("runners",))
    runners = result["runners"]
    assert runners["runners"] == 2 and runners["slots"] == 4  # smoke's plain cell at depth 1 x 4 seeds
    assert runners["exit_codes"] == [0, 0] and runners["failed_runners"] == 0 and runners["failures"] == []
    assert sum(runners["trials_started_by_runner"]) == 4
    # Every slot once, in both stores.
    assert runners["every_slot_once"] is True
    optuna_side = runners["optuna"]
    assert optuna_side["every_slot_once"] is True and optuna_side["complete"] == 4
    assert optuna_side["slots_run_twice"] == 0 and optuna_side["states"]["COMPLETE"] == 4
    # Slots both runners enqueued at start (timing decides how many) were refused before training.
    failed = optuna_side["states"].get("FAIL", 0)
    assert set(optuna_side["states"]) <= {"COMPLETE", "FAIL"} and sum(optuna_side["other_outcomes"].values()) == failed
    assert set(optuna_side["other_outcomes"]) <= {"duplicate", "unused"}
    assert runners["mlflow"] == {
        "every_slot_once": True,
        "parent_runs": 1,
        "finished_trial_runs": 4,
        "complete_trials_with_their_run": 4,
        "unfinished_trial_runs": 0,
    }
    assert 0 < runners["training_span_s"] <= runners["wall_s"] and runners["servers_start_s"] > 0
    assert runners["trials_per_minute"] == pytest.approx(60 * 4 / runners["wall_s"], rel=0.02)
    assert runners["trials_per_minute_training"] >= runners["trials_per_minute"]
    # Both runners timed their calls to both stores.
    for store in ("optuna", "mlflow"):
        latency = runners["latency_ms"][store]
        pooled = latency["all"]
        assert 0 < pooled["median"] <= pooled["p95"] <= pooled["max"]
        assert len(latency["by_runner"]) == 2 and all(r["calls"] > 0 for r in latency["by_runner"])
        assert sum(r["calls"] for r in latency["by_runner"]) == pooled["calls"]
        assert 0 < len(latency["by_call"]) <= 8
        assert all(0 < c["median"] <= c["p95"] <= c["max"] for c in latency["by_call"].values())
    storage = optuna.storages.RDBStorage
    for name in runners["latency_ms"]["optuna"]["by_call"]:
        assert hasattr(storage, name) or hasattr(storage, f"_{name}"), name
    # Every model's files go up through the server's artifact proxy, file by file: among the heaviest requests.
    assert "PUT artifacts" in runners["latency_ms"]["mlflow"]["by_call"]
    assert "| runners: 2 at once on one study of 4 slots (PostgreSQL, `mlflow server`) | every slot once: yes;" in (
        benchmark.markdown(result)
    )
