"""Benchmark section `soak`: does one process's memory stay flat over many trials?

Runs a study of many short trials through the real command (`sweeps/run.py`, one
process, compile cache on) and samples the process's resident memory (VmRSS) as its
trials start. Reports the RSS once warmed up (after `WARM_UP` of the trials) and the
largest RSS after that: a leak of models, traced graphs, MLflow or Optuna objects
grows with the trial count.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from reuse_nets.bench.plans import Plan
from reuse_nets.bench.sweeps import study_command
from reuse_nets.train import data

WARM_UP = 0.1  # share of the trials before the reference RSS is taken (caches fill, graphs trace)
SAMPLE_EVERY = 0.2  # seconds between RSS samples
STARTED = ": started ["  # the runner's line as a trial starts


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process, from /proc (Linux); None once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def soak(plan: Plan, source: data.DataSource, folder: Path) -> dict:
    """`plan.soak_trials` trials in one runner process; RSS by trial, warmed-up RSS and growth."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = study_command(plan.soak_study, plan.soak_overrides, folder, source)
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trials = 0
    peak: dict[int, int] = {}  # trial count -> largest RSS seen while it was the count
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = rss_bytes(proc.pid)
            if rss is not None:
                peak[trials] = max(peak.get(trials, 0), rss)
            time.sleep(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if STARTED in line:
            trials += 1
        tail = (tail + [line])[-20:]
    proc.wait()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"soak study failed (exit {proc.returncode}): {''.join(tail)[-2000:]}")
    if not trials or not peak:
        raise RuntimeError(f"soak study ran no trial: {''.join(tail)[-2000:]}")
    warm = max(1, round(WARM_UP * trials))
    after = [rss for count, rss in peak.items() if count >= warm]
    reference = peak.get(warm) or min(after)
    return {
        "study": plan.soak_study,
        "trials": trials,
        "warm_up_trials": warm,
        "rss_mb_warm": round(reference / 2**20, 1),
        "rss_mb_max_after": round(max(after) / 2**20, 1),
        "rss_mb_last": round(peak[max(peak)] / 2**20, 1),
        "growth": round(max(after) / reference - 1, 4),
        "rss_mb_by_trial": {count: round(rss / 2**20, 1) for count, rss in sorted(peak.items())},
        "seconds": round(time.monotonic() - started, 1),
    }
