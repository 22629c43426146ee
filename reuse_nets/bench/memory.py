"""Benchmark section `memory`: where a runner's memory growth per trial goes.

The `soak` section sees a runner's resident memory (RSS) grow slowly over many short
trials. This section runs the same kind of study, longer, in one runner process
under a probe (`python -m reuse_nets.bench.memory`, which wraps `reuse-nets run`),
in two windows of trials, both after the last cell's first trials (its first
trial traces a new architecture, a one-time cost), so every architecture is traced:

1. Untraced: at its start and end (each time after a full `gc.collect()`) the probe
   records RSS, split into anonymous memory and mapped files (`/proc/self/status`),
   and again after `malloc_trim(0)` (what glibc keeps but could give back); glibc
   malloc's bytes in use and free-but-kept over all arenas (`mallinfo2`: C/C++
   allocations, TensorFlow's among them, and Python's large blocks); Python's
   small-object arenas (pymalloc, outside malloc); live objects by type
   (`gc.get_objects`); Keras's global state, the functions in TensorFlow's eager
   context, MLflow's cached artifact repositories, the compiled trainers and the
   imported modules.
2. Traced: `tracemalloc` starts, runs a few trials to settle, then a snapshot; a
   second one after the last trial: the Python allocation sites that grew.

The windows are apart because tracing perturbs what the first one measures: it slows
trials several times, and its own tables churn malloc (traced from start-up,
importing TensorFlow alone took minutes).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from pathlib import Path

from reuse_nets.bench.plans import Plan
from reuse_nets.bench.soak import WARM_UP
from reuse_nets.bench.sweeps import study_command
from reuse_nets.train import data

# Frames kept per allocation: the allocating line and its caller. Each frame more
# costs: a one-second trial took 1.4 s traced with 2 frames, 7.5 s with 8.
FRAMES = 2
TOP_SITES = 15  # allocation sites listed
TOP_TYPES = 15  # object types listed
MIB = 2**20


# --- In the runner process (`python -m reuse_nets.bench.memory OUT WARM TOTAL -- RUN ARGS`) ----


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_bytes() -> dict[str, int]:
    """glibc's heap over all arenas: bytes in use (`uordblks` + mmapped `hblkhd`) and free-but-kept."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc (>= 2.33)
        return {}
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks}


def pymalloc_bytes() -> int | None:
    """Bytes in Python's small-object arenas (pymalloc: mmapped, outside malloc), from `sys._debugmallocstats`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        found = re.search(rb"\d+ arenas \* \d+ bytes/arena\s+=\s+([\d,]+)", captured.read())
    return int(found.group(1).replace(b",", b"")) if found else None


def rss_parts() -> dict[str, int]:
    """VmRSS and its anonymous and file-backed parts, in bytes (Linux)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            parts[fields[key]] = int(value.split()[0]) * 1024
    return parts


def framework_state() -> dict[str, int]:
    """Keras's global state (sizes of its entries) and the functions in TensorFlow's eager context."""
    state: dict[str, int] = {}
    if "keras" in sys.modules:
        from keras.src.backend.common import global_state

        for name, value in vars(global_state.GLOBAL_STATE_TRACKER).items():
            state[f"keras global state: {name}"] = len(value) if hasattr(value, "__len__") else 1
    if "tensorflow" in sys.modules:
        from tensorflow.python.eager import context

        state["tensorflow: functions in the eager context"] = len(context.context().list_function_names())
    if "mlflow" in sys.modules:
        from mlflow.tracking._tracking_service import utils as tracking_utils

        # A repository (and its idle async-upload queue) per run and per logged model, up to 1025.
        state["mlflow: artifact repositories cached"] = len(tracking_utils._artifact_repos_cache)
    from reuse_nets.train import trainers

    state["reuse_nets: compiled trainers cached"] = len(trainers._CACHE)
    state["python: modules in sys.modules"] = len(sys.modules)
    return state


def _type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def malloc_trim() -> None:
    """Hands the free memory glibc keeps (at the top of its heaps and in whole free pages) back to the system."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def point() -> dict:
    """Everything measured at one moment, after a full collection (memory first, then objects, then trimmed)."""
    gc.collect()
    measured = {
        "time": time.monotonic(),
        "rss": rss_parts(),
        "malloc": malloc_bytes(),
        "pymalloc": pymalloc_bytes(),
        "framework": framework_state(),
    }
    measured["objects"] = dict(collections.Counter(_type_name(type(o)) for o in gc.get_objects()))
    malloc_trim()
    measured["rss_trimmed"] = rss_parts()["rss"]
    return measured


def probe(argv: list[str]) -> int:
    """`OUT WARM UNTRACED_END TRACED_START END -- RUN ARGS`: runs `reuse-nets run RUN ARGS`, measuring
    after those trials; writes OUT (JSON) when the command ends.

    Untraced points after trials WARM and UNTRACED_END; tracing from UNTRACED_END on,
    snapshots after TRACED_START and END. Blocks allocated before tracing and freed in
    the traced window are not seen, which can only make the Python-heap growth look
    larger. The first snapshot goes to a file at once: held in memory, it would be growth.
    """
    out = Path(argv[0])
    warm, untraced_end, traced_start, end = map(int, argv[1:5])
    run_args = argv[argv.index("--") + 1 :]
    from reuse_nets.commands import common, run
    from reuse_nets.sweep import objective

    points: dict[str, dict] = {}
    rss_by_trial: list[int] = []
    first = out.with_suffix(".snapshot")
    original = objective.Objective.__call__

    def observed(self, trial):
        try:
            return original(self, trial)
        finally:
            rss_by_trial.append(rss_parts()["rss"])
            done = len(rss_by_trial)
            if done == warm:
                points["warm"] = point()
            if done == untraced_end:
                points["untraced_end"] = point()
                tracemalloc.start(FRAMES)
            if done == traced_start:
                gc.collect()
                tracemalloc.take_snapshot().dump(os.fspath(first))
                points["traced_start"] = {"traced": tracemalloc.get_traced_memory()[0]}
            if done == end:
                gc.collect()
                points["end"] = {"traced": tracemalloc.get_traced_memory()[0]}
                points["end"]["sites"] = sites(tracemalloc.take_snapshot(), tracemalloc.Snapshot.load(os.fspath(first)))
                tracemalloc.stop()  # the report is not measured

    objective.Objective.__call__ = observed  # type: ignore[method-assign]
    code = common.main_guard(lambda: run.main(run_args))
    out.write_text(json.dumps({"exit": code, "points": points, "rss_by_trial": rss_by_trial}))
    return code


# --- Attribution ----------------------------------------------------------------------------

_PACKAGE_ROOTS = sorted(
    {os.path.realpath(p) for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])},
    key=len,
    reverse=True,
)
_PROJECT_ROOT = os.path.realpath(Path(__file__).resolve().parents[1])


def package_of(filename: str) -> str | None:
    """The installed package a source file belongs to (`mlflow`, `keras`...), `reuse_nets`, or None (stdlib)."""
    path = os.path.realpath(filename)
    if path.startswith(_PROJECT_ROOT + os.sep):
        return "reuse_nets"
    for root in _PACKAGE_ROOTS:
        if path.startswith(root + os.sep):
            top = path[len(root) + 1 :].split(os.sep)[0]
            return re.sub(r"\.py$|-[\d.]+.*$", "", top).lstrip("_") or None
    return None


def _short(filename: str) -> str:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return filename
    path = os.path.realpath(filename)
    for root in (_PROJECT_ROOT, *_PACKAGE_ROOTS):
        if path.startswith(root + os.sep):
            return path[len(root) + 1 :]
    return re.sub(r".*/lib/python3\.\d+/", "", path)


def sites(end: tracemalloc.Snapshot, warm: tracemalloc.Snapshot) -> dict:
    """Python-heap growth from `warm` to `end`: by package and by allocation site.

    A site is the line that allocated, with the line that called it; its package is
    that of the newest of the two frames outside the standard library.
    """
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]  # the probe's own
    diffs = end.filter_traces(ignore).compare_to(warm.filter_traces(ignore), "traceback")
    by_package: collections.Counter = collections.Counter()
    by_site: dict[tuple[str, str], dict] = {}
    for diff in diffs:
        frames = list(diff.traceback)[::-1]  # newest first
        package = next((p for p in map(package_of, (f.filename for f in frames)) if p), "python (stdlib)")
        site = f"{_short(frames[0].filename)}:{frames[0].lineno}"
        caller = f"{_short(frames[1].filename)}:{frames[1].lineno}" if len(frames) > 1 else ""
        by_package[package] += diff.size_diff
        entry = by_site.setdefault(
            (site, caller), {"site": site, "caller": caller, "package": package, "bytes": 0, "blocks": 0}
        )
        entry["bytes"] += diff.size_diff
        entry["blocks"] += diff.count_diff
    top = sorted(by_site.values(), key=lambda e: -e["bytes"])[:TOP_SITES]
    return {"by_package": dict(by_package.most_common()), "top": top}


# --- In the benchmark process ---------------------------------------------------------------


TRACED = 40  # trials in the traced window (after SETTLE more)
SETTLE = 5  # traced trials before its first snapshot: tracemalloc's tables fill


def windows(total: int, last_cell_starts: int, warm_up: int) -> tuple[int, int, int, int]:
    """Trial counts after which the probe measures: warm, untraced end, traced start, end."""
    warm = last_cell_starts + warm_up
    left = total - warm
    traced = max(1, min(TRACED, left // 3))
    settle = max(1, min(SETTLE, traced))
    return warm, total - traced - settle, total - traced, total


def memory(plan: Plan, source: data.DataSource, folder: Path) -> dict:
    """The plan's memory study in one probed runner process: growth per trial after warm-up, attributed."""
    from reuse_nets.design import plan as study_plan
    from reuse_nets.design import study_files

    folder.mkdir(parents=True, exist_ok=True)
    spec = study_files.load_study(plan.memory_study, list(plan.memory_overrides))
    total = spec.n_tuning_trials + spec.n_final_runs
    warm_up = max(1, round(WARM_UP * total))  # trials, as the soak's
    units = len(study_plan.units(spec))
    last_cell_starts = (units - 1) * (spec.n_tuning_trials // units) + 1 if units else 1
    at = windows(total, last_cell_starts, warm_up)
    run_args = study_command(plan.memory_study, plan.memory_overrides, folder, source, "--quiet")[2:]
    out = folder / "memory.json"
    argv = [sys.executable, "-m", "reuse_nets.bench.memory", os.fspath(out), *map(str, at), "--", *run_args]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"memory study failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    probed = json.loads(out.read_text())
    rss = probed["rss_by_trial"]
    if set(probed["points"]) != {"warm", "untraced_end", "traced_start", "end"}:
        raise RuntimeError(f"memory study ran {len(rss)} of {total} trials")
    warm, untraced_end, traced_start, end = at
    return {
        "study": plan.memory_study,
        "overrides": list(plan.memory_overrides),
        "trials": total,
        "last_cell_starts_at_trial": last_cell_starts,
        "untraced": {"from_trial": warm, "to_trial": untraced_end},
        "traced": {"from_trial": traced_start, "to_trial": end},
        # RSS at the soak's warm point: from there to `untraced.from_trial`, warm-up and the last cell's first trace.
        "rss_mb_before": {"trial": warm_up, "mb": round(rss[warm_up - 1] / MIB, 1)},
        **attribution(probed["points"], untraced_end - warm, end - traced_start),
        "rss_slope_mb_per_trial": slope(rss[warm - 1 : untraced_end]),
        "rss_mb_by_trial": [round(value / MIB, 1) for value in rss],
        "seconds": round(time.monotonic() - started, 1),
    }


def slope(values: list[int]) -> float:
    """Least-squares growth per step of `values` (bytes), in MiB."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    return round(covariance / sum((x - mean_x) ** 2 for x in range(n)) / MIB, 4)


def _mb(value: float) -> float:
    return round(value / MIB, 2)


def attribution(points: dict, untraced: int, traced: int) -> dict:
    """The growth over the untraced window (`untraced` trials) and the traced one (`traced` trials), and where it is.

    RSS grows by anonymous memory (malloc's heaps: C/C++ allocations, TensorFlow's
    among them, and Python's large blocks; Python's small-object arenas) and by pages
    of mapped files; `malloc_trim` takes back what glibc kept but did not use.
    """
    warm, end = points["warm"], points["untraced_end"]
    grew = {
        "rss": end["rss"]["rss"] - warm["rss"]["rss"],
        "rss_anonymous": end["rss"]["anon"] - warm["rss"]["anon"],
        "rss_files": end["rss"]["file"] - warm["rss"]["file"],
        "rss_after_malloc_trim": end["rss_trimmed"] - warm["rss_trimmed"],
        "malloc_in_use": end["malloc"].get("in_use", 0) - warm["malloc"].get("in_use", 0),
        "malloc_free_kept": end["malloc"].get("free", 0) - warm["malloc"].get("free", 0),
        "pymalloc_arenas": (end["pymalloc"] or 0) - (warm["pymalloc"] or 0),
    }
    python = points["end"]["traced"] - points["traced_start"]["traced"]
    explained = sum(grew[k] for k in ("malloc_in_use", "malloc_free_kept", "pymalloc_arenas", "rss_files"))
    per_trial = {name: grew[name] / untraced for name in ("rss", "rss_after_malloc_trim", "malloc_in_use")}
    per_trial["python_heap"] = python / traced
    objects = {
        name: (warm["objects"].get(name, 0), count)
        for name, count in end["objects"].items()
        if count > warm["objects"].get(name, 0)
    }
    top_types = sorted(objects.items(), key=lambda item: item[1][0] - item[1][1])[:TOP_TYPES]
    sites_found = points["end"]["sites"]
    return {
        "rss_mb": {"warm": _mb(warm["rss"]["rss"]), "untraced_end": _mb(end["rss"]["rss"])},
        "growth_mb": {name: _mb(value) for name, value in grew.items()},
        "python_heap_growth_mb": _mb(python),
        "per_trial_mb": {name: round(value / MIB, 4) for name, value in per_trial.items()},
        "explained_share": round(explained / grew["rss"], 3) if grew["rss"] > 0 else None,
        "python_heap_share": round(per_trial["python_heap"] / per_trial["rss"], 3) if grew["rss"] > 0 else None,
        "packages_mb": {name: _mb(size) for name, size in sites_found["by_package"].items()},
        "top_sites": [
            {key: value for key, value in e.items() if key != "bytes"} | {"kib": round(e["bytes"] / 1024, 1)}
            for e in sites_found["top"]
        ],
        "object_types": [
            {"type": name, "warm": w, "end": e, "per_trial": round((e - w) / untraced, 2)} for name, (w, e) in top_types
        ],
        "framework_state": {name: [warm["framework"].get(name, 0), n] for name, n in end["framework"].items()},
    }


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1:]))
