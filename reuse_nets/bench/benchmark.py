"""How fast training runs, and what the framework around it costs, measured side by side.

Measurements, each a section of one JSON document (`measure`):

- `ceiling`: this machine's float32 matmul rate, to judge each step's FLOP rate.
- `training`: the same network and batches trained by plain `keras.Model.fit` and
  by this project (gradient norms, MLflow logging), interleaved; examples/s and ratio.
- `sweep`: a study through the real runner vs the sum of bare fits of its configs.
- `startup`: seconds from the command to `--dry-run` output and to the first step.
- `pruning`: one tuned study with and without its pruner: epochs, time, best cell.
- `profile`: a depth-heavy study through the command with the compile cache off and
  on, each run's wall time split into sections (data, tracing, training, MLflow...).
- `workers`: that study (cache on) with 1 and with 2 worker processes.
- `soak`: 200 short trials in one runner process: its RSS once warmed up, and after.
- `memory` (only when named): that study under a memory probe; the growth per trial
  attributed to Python allocation sites, object types, malloc and mapped files.
- `runners` (only when named): 8 runners at once on one study through PostgreSQL and
  `mlflow server`: every slot once, no runner failed, trials per minute, store latency.

Every store the benchmark writes lives in a temporary directory; nothing of the
user's (mlflow.db, optuna.db, reports/) is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from reuse_nets.bench import memory, runners, soak, study_profile
from reuse_nets.bench.plans import DEFAULT_SECTIONS, QUICK, Plan
from reuse_nets.bench.sweeps import pruning, startup, sweep_overhead
from reuse_nets.bench.training_speed import matmul_ceiling, training_speed
from reuse_nets.store import provenance
from reuse_nets.train import data, execution

SCHEMA_VERSION = 2


def measure(plan: Plan, source: data.DataSource, say=print, sections: tuple[str, ...] = DEFAULT_SECTIONS) -> dict:
    """Runs `sections` of `plan` (`workers` needs `profile`); the JSON-able result."""
    started = time.monotonic()
    result: dict[str, Any] = {"schema": SCHEMA_VERSION, "machine": machine(), "quick": plan is QUICK}
    settings = execution.pin(execution.for_workers(1))
    result["execution"] = settings.describe()
    import mlflow

    previous_uri = mlflow.get_tracking_uri()
    with (
        tempfile.TemporaryDirectory(prefix="reuse-nets-bench-") as scratch,
        contextlib.chdir(scratch),
        _restored(previous_uri),
    ):
        mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
        if "ceiling" in sections or "training" in sections:
            say("ceiling: float32 matmul rate")
            result["ceiling"] = matmul_ceiling(plan.matmul_size)
        if "training" in sections:
            say("training: plain fit vs framework, interleaved")
            result["training"] = [
                training_speed(size, plan, source, result["ceiling"]["gflops"], say) for size in plan.sizes
            ]
        if "sweep" in sections:
            say("sweep: real runner vs bare fits")
            result["sweep"] = sweep_overhead(plan, source, Path(scratch) / "sweep")
        if "startup" in sections:
            say("startup: command to --dry-run output and to the first training step")
            result["startup"] = startup(plan, source, Path(scratch) / "startup")
        if "pruning" in sections:
            say("pruning: the same study with and without its pruner")
            result["pruning"] = pruning(plan, source, Path(scratch) / "pruning")
        if "profile" in sections or "workers" in sections:
            say("profile: a depth-heavy study with the compile cache off, then on")
            result["profile"] = study_profile.study_profile(plan, source, Path(scratch) / "profile")
        if "workers" in sections:
            say("workers: the profiled study again with 2 workers")
            result["workers"] = study_profile.workers(
                plan, source, Path(scratch) / "workers", result["profile"]["cache_on"]
            )
        if "soak" in sections:
            say("soak: many short trials in one process, its resident memory sampled")
            result["soak"] = soak.soak(plan, source, Path(scratch) / "soak")
        if "memory" in sections:
            say("memory: short trials in one probed process, the growth attributed")
            result["memory"] = memory.memory(plan, source, Path(scratch) / "memory")
        if "runners" in sections:
            say(f"runners: {plan.runners} runners at once on one study (PostgreSQL, mlflow server)")
            result["runners"] = runners.runners(plan, source, Path(scratch) / "runners")
    result["device"] = device()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def device() -> str:
    """What TensorFlow trained on: the visible GPUs, or the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ", ".join(gpu.name for gpu in gpus) if gpus else "CPU (no GPU visible)"


@contextlib.contextmanager
def _restored(tracking_uri: str):
    """Puts back the tracking URI and execution settings, even when a section fails."""
    import mlflow

    settings = execution.current()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking_uri)
        execution.pin(settings)


def machine() -> dict:
    """Where and when: CPU, cores, libraries, commit, date."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": provenance.cpu_model(),
        "cores": execution.machine_cores(),
        "python": platform.python_version(),
        "libraries": provenance.library_versions(),
        "commit": provenance.git_state()["commit"] + (" (dirty)" if provenance.git_state()["dirty"] == "true" else ""),
        "command": provenance.command_line(),
    }


def markdown(result: dict) -> str:
    """The result as the README's tables (the sections it holds)."""
    m = result["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {result['execution']}; "
        f"commit {m['commit'][:10]}; `{m['command']}`"
        + (" (quick mode: tiny sizes, not for conclusions)" if result["quick"] else ""),
    ]
    if "ceiling" in result:
        c = result["ceiling"]
        lines += ["", f"Float32 matmul ceiling ({c['matmul_size']}^2): {c['gflops']} GFLOP/s."]
    if "training" in result:
        lines += [
            "",
            "| depth | width | plain fit ex/s | framework ex/s | ratio | framework+XLA ex/s | ratio XLA | first epoch plain / fw / XLA (s) | GFLOP/s (share of ceiling) |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
    for e in result.get("training", []):
        xla = e.get("framework_xla")
        best = max((e[k] for k in ("plain", "framework", "framework_xla") if k in e), key=lambda v: v["gflops"])
        cells = [
            e["depth"],
            e["width"],
            f"{e['plain']['examples_per_s']:.0f}",
            f"{e['framework']['examples_per_s']:.0f}",
            f"{e['ratio']:.2f}",
            f"{xla['examples_per_s']:.0f}" if xla else "-",
            f"{e['ratio_xla']:.2f}" if xla else "-",
            f"{e['plain']['first_epoch_s']} / {e['framework']['first_epoch_s']} / {xla['first_epoch_s'] if xla else '-'}",
            f"{best['gflops']} ({best['ceiling_fraction']:.0%})",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if any(key in result for key in ("sweep", "startup", "pruning", "profile", "workers", "soak", "memory", "runners")):
        lines += ["", "| measure | value |", "|---|---|"]
    if "sweep" in result:
        s = result["sweep"]
        lines.append(
            f"| sweep: {s['trials']} smoke trials through the runner vs bare fits | {s['sweep_s']} s vs {s['bare_fits_s']} s = {s['ratio']:.2f}x ({s['per_trial_overhead_s']} s per trial) |"
        )
    if "startup" in result:
        st = result["startup"]
        lines.append(f"| start-up: command to `--dry-run` output | {st['dry_run_s']} s |")
        lines.append(f"| start-up: command to the first training step | {st['first_step_s']} s |")
    if "pruning" in result:
        p = result["pruning"]
        lines.append(
            f"| pruning: tuning epochs with / without the median pruner | {p['pruned']['tuning_epochs']} / {p['unpruned']['tuning_epochs']} ({p['epochs_saved']:.0%} saved), "
            f"{p['pruned']['wall_s']} s / {p['unpruned']['wall_s']} s; same best cell: {'yes' if p['same_best_cell'] else 'NO'} ({p['pruned']['best_cell']}) |"
        )
    if "profile" in result:
        pr = result["profile"]
        off, on = pr["cache_off"], pr["cache_on"]
        lines.append(
            f"| profile: {on['trials']} trials, compile cache off / on | {off['wall_s']} s / {on['wall_s']} s = {pr['wall_ratio']:.2f}x; "
            f"traced {off['traced']} / {on['traced']} times; tracing and compilation {off['tracing_share']:.0%} / {on['tracing_share']:.0%} of the wall time |"
        )
    if "workers" in result:
        w = result["workers"]
        lines.append(
            f"| workers: trials per minute with 1 / 2 workers (profiled study, cache on) | {w['1']['trials_per_minute']} / {w['2']['trials_per_minute']} ({w['speedup']:.2f}x); "
            f"traced {w['1']['traced']} / {w['2']['traced']} times |"
        )
    if "soak" in result:
        so = result["soak"]
        lines.append(
            f"| soak: {so['trials']} trials in one process, RSS after {so['warm_up_trials']} / largest after / last | "
            f"{so['rss_mb_warm']} / {so['rss_mb_max_after']} / {so['rss_mb_last']} MiB ({so['growth']:+.1%}) |"
        )
    if "memory" in result:
        me = result["memory"]
        grew, per_trial, explained = me["growth_mb"], me["per_trial_mb"], me["explained_share"]
        untraced = me["untraced"]
        lines.append(
            f"| memory: trials {untraced['from_trial']}-{untraced['to_trial']} of one process, RSS growth per trial "
            f"(after malloc_trim) / malloc in use / Python heap (traced) | {per_trial['rss']} ({per_trial['rss_after_malloc_trim']}) / "
            f"{per_trial['malloc_in_use']} / {per_trial['python_heap']} MiB; RSS +{grew['rss']} MiB, "
            f"explained {'-' if explained is None else f'{explained:.0%}'} |"
        )
    if "runners" in result:
        ru = result["runners"]
        optuna, tracking = ru["latency_ms"]["optuna"]["all"], ru["latency_ms"]["mlflow"]["all"]
        lines.append(
            f"| runners: {ru['runners']} at once on one study of {ru['slots']} slots (PostgreSQL, `mlflow server`) | "
            f"every slot once: {'yes' if ru['every_slot_once'] else 'NO'}; failed runners: {ru['failed_runners']}; "
            f"{ru['trials_per_minute']} trials/min ({ru['trials_per_minute_training']} while training); "
            f"store latency median / p95: Optuna {optuna.get('median')} / {optuna.get('p95')} ms, "
            f"MLflow {tracking.get('median')} / {tracking.get('p95')} ms |"
        )
    if "profile" in result:
        pr = result["profile"]
        names = list(dict.fromkeys([*pr["cache_off"]["sections"], *pr["cache_on"]["sections"]]))
        lines += ["", f"Where the profiled study's wall time went (`{pr['study']}`, {' '.join(pr['overrides'])}):", ""]
        lines += ["| section | cache off s (share) | cache on s (share) |", "|---|---:|---:|"]
        for name in names:
            cells = []
            for run in (pr["cache_off"], pr["cache_on"]):
                entry = run["sections"].get(name)
                cells.append(f"{entry['s']} ({entry['share']:.0%})" if entry else "-")
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
        lines.append(f"| **wall** | {pr['cache_off']['wall_s']} | {pr['cache_on']['wall_s']} |")
    lines += ["", f"Device: {result.get('device', 'CPU')}."]
    return "\n".join(lines) + "\n"
