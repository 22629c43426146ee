"""Benchmark section `memory`: where a runner's memory growth per trial goes.

The `soak` section sees a runner's resident memory (RSS) grow slowly over many short
trials. This section runs the same kind of study in one runner process under a
probe (`python -m reuse_nets.bench.memory`, which wraps `reuse-nets run`) that
starts `tracemalloc` after the first trial (traced from start-up, importing
TensorFlow alone took minutes), stops it after the last, and once warmed up and again after the last trial
(each time after a full `gc.collect()`), records:

- RSS split into anonymous memory and mapped files (`/proc/self/status`);
- glibc malloc's bytes in use and free-but-kept, over all arenas (`mallinfo2`),
  which hold C/C++ allocations (TensorFlow's among them) as well as Python's large blocks;
- a `tracemalloc` snapshot: every live Python allocation, with the lines that made it;
- live objects by type (`gc.get_objects`), Keras and TensorFlow objects among them;
- Keras's global state and the functions in TensorFlow's eager context.

The parent compares the two points: RSS growth (net of tracemalloc's own memory)
against Python-heap and malloc growth, the allocation sites and packages that
grew, and the object types whose counts grew.
"""

from __future__ import annotations

import collections
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
FIRST_WARM = 2  # the earliest warm point: tracing starts after trial 1
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
    from reuse_nets.train import trainers

    state["reuse_nets: compiled trainers cached"] = len(trainers._CACHE)
    return state


def _type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def point() -> dict:
    """Everything measured at one moment, after a full collection (memory first, then objects)."""
    gc.collect()
    measured = {
        "time": time.monotonic(),
        "rss": rss_parts(),
        "malloc": malloc_bytes(),
        "pymalloc": pymalloc_bytes(),
        "traced": tracemalloc.get_traced_memory()[0],
        "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
        "framework": framework_state(),
    }
    measured["objects"] = dict(collections.Counter(_type_name(type(o)) for o in gc.get_objects()))
    return measured


def probe(argv: list[str]) -> int:
    """Runs `reuse-nets run ARGS` with points after trial WARM and trial TOTAL; writes OUT (JSON).

    Allocations are traced from the end of trial 1: what was allocated before and
    freed later is not seen (it can only make the Python-heap growth look larger).
    The warm snapshot goes to a file at once: held in memory, it would be growth.
    The runner's own output goes on as usual; OUT is written when the command ends.
    """
    out, warm, total = Path(argv[0]), int(argv[1]), int(argv[2])
    run_args = argv[argv.index("--") + 1 :]
    from reuse_nets.commands import common, run
    from reuse_nets.sweep import objective

    points: dict[str, dict] = {}
    rss_by_trial: list[int] = []
    warm_file = out.with_suffix(".warm.snapshot")
    original = objective.Objective.__call__

    def observed(self, trial):
        try:
            return original(self, trial)
        finally:
            rss_by_trial.append(rss_parts()["rss"])
            if len(rss_by_trial) == 1:
                tracemalloc.start(FRAMES)
            if len(rss_by_trial) == warm:
                gc.collect()
                tracemalloc.take_snapshot().dump(os.fspath(warm_file))
                # Measured after the snapshot is gone, so what it left in the allocators is not growth.
                points["warm"] = point()
            elif len(rss_by_trial) == total:
                points["end"] = point()
                points["end"]["sites"] = sites(
                    tracemalloc.take_snapshot(), tracemalloc.Snapshot.load(os.fspath(warm_file))
                )
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


def memory(plan: Plan, source: data.DataSource, folder: Path) -> dict:
    """The plan's memory study in one probed runner process: growth from warm-up to the end, attributed."""
    from reuse_nets.spec import study_files

    folder.mkdir(parents=True, exist_ok=True)
    spec = study_files.load_study(plan.memory_study, list(plan.memory_overrides))
    total = spec.tuning_trials + spec.final_runs
    warm = max(FIRST_WARM, round(WARM_UP * total))
    run_args = study_command(plan.memory_study, plan.memory_overrides, folder, source, "--quiet")[2:]
    out = folder / "memory.json"
    argv = [sys.executable, "-m", "reuse_nets.bench.memory", os.fspath(out), str(warm), str(total), "--", *run_args]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"memory study failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    probed = json.loads(out.read_text())
    if set(probed["points"]) != {"warm", "end"}:
        raise RuntimeError(f"memory study ran {len(probed['rss_by_trial'])} of {total} trials")
    return {
        "study": plan.memory_study,
        "overrides": list(plan.memory_overrides),
        "trials": total,
        "warm_up_trials": warm,
        **attribution(probed["points"]["warm"], probed["points"]["end"], total - warm),
        "rss_slope_mb_per_trial": slope(probed["rss_by_trial"][warm - 1 :]),
        "rss_mb_by_trial": [round(rss / MIB, 1) for rss in probed["rss_by_trial"]],
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


def attribution(warm: dict, end: dict, trials: int) -> dict:
    """The growth between two `point()`s, `trials` apart, and where it is.

    RSS grows by anonymous memory (malloc's heap: C/C++ allocations, TensorFlow's
    among them, and Python's large blocks; Python's small-object arenas) and by pages
    of mapped files. tracemalloc's own tables are malloc'd: taken out of both.
    """
    probe = end["tracemalloc_overhead"] - warm["tracemalloc_overhead"]
    grew = {
        "rss": end["rss"]["rss"] - warm["rss"]["rss"] - probe,
        "rss_anonymous": end["rss"]["anon"] - warm["rss"]["anon"] - probe,
        "rss_files": end["rss"]["file"] - warm["rss"]["file"],
        "malloc_in_use": end["malloc"].get("in_use", 0) - warm["malloc"].get("in_use", 0) - probe,
        "malloc_free_kept": end["malloc"].get("free", 0) - warm["malloc"].get("free", 0),
        "pymalloc_arenas": (end["pymalloc"] or 0) - (warm["pymalloc"] or 0),
        "python_heap": end["traced"] - warm["traced"],  # in malloc and in pymalloc's arenas
        "tracemalloc_itself": probe,
    }
    explained = sum(grew[k] for k in ("malloc_in_use", "malloc_free_kept", "pymalloc_arenas", "rss_files"))
    rss = grew["rss"]
    objects = {
        name: (warm["objects"].get(name, 0), count)
        for name, count in end["objects"].items()
        if count > warm["objects"].get(name, 0)
    }
    top_types = sorted(objects.items(), key=lambda item: item[1][0] - item[1][1])[:TOP_TYPES]
    return {
        "rss_mb": {"warm": _mb(warm["rss"]["rss"]), "end": _mb(end["rss"]["rss"])},
        "growth_mb": {name: _mb(value) for name, value in grew.items()},
        "per_trial_mb": {name: round(grew[name] / MIB / trials, 4) for name in ("rss", "python_heap", "malloc_in_use")},
        "explained_share": round(explained / rss, 3) if rss > 0 else None,
        "python_heap_share": round(grew["python_heap"] / rss, 3) if rss > 0 else None,
        "packages_mb": {name: _mb(size) for name, size in end["sites"]["by_package"].items()},
        "top_sites": [
            {key: value for key, value in e.items() if key != "bytes"} | {"kib": round(e["bytes"] / 1024, 1)}
            for e in end["sites"]["top"]
        ],
        "object_types": [
            {"type": name, "warm": w, "end": e, "per_trial": round((e - w) / trials, 2)} for name, (w, e) in top_types
        ],
        "framework_state": {name: [warm["framework"].get(name, 0), n] for name, n in end["framework"].items()},
        "probed_seconds": round(end["time"] - warm["time"], 1),
    }


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1:]))
