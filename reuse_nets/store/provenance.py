"""Where a run came from: code commit, lock file, libraries, command line, CPU and its instruction set.

Recorded as tags on every study parent run and trial run so that `reproduce`
can name what differs between the run's world and this one before it trains.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from reuse_nets.errors import redact
from reuse_nets.names import (
    COMMAND_TAG,
    CPU_FAMILY_MODEL_TAG,
    CPU_FEATURES_TAG,
    CPU_TAG,
    CPU_VENDOR_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    GIT_SOURCE_TAG,
    KERNEL_ISA_TAG,
    LOCK_TAG,
    VERSION_TAG_PREFIX,
)
from reuse_nets.runtime import instruction_set
from reuse_nets.runtime.paths import PROJECT_ROOT

LOCK_FILE = PROJECT_ROOT / "uv.lock"
# TensorFlow is installed as one of two distributions: the CPU build (the default
# dependency group) or the CUDA build (`--group gpu`); the one present is recorded.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow-cpu", "tensorflow")
LIBRARIES = ("keras", "tensorflow-datasets", "mlflow", "optuna", "numpy")
TAG_VALUE_LIMIT = 5000  # MLflow's limit on a tag value


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on: the TensorFlow build installed
    (`tensorflow-cpu` or `tensorflow`), then `LIBRARIES` ("absent" when missing)."""
    installed = [name for name in TENSORFLOW_DISTRIBUTIONS if _version(name)]
    versions = {name: _version(name) or "absent" for name in installed or TENSORFLOW_DISTRIBUTIONS[:1]}
    versions.update({name: _version(name) or "absent" for name in LIBRARIES})
    return versions


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, str]:
    """Commit of the project checkout and whether its tracked files differ from it."""

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": commit, "dirty": str(dirty).lower()}


def lock_hash(path: Path = LOCK_FILE) -> str:
    """SHA-256 of `uv.lock`: the exact resolved environment; "absent" without one."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "absent"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name: kernels (and so rounding) can differ between CPUs."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line() -> str:
    """The command that started this process, quoted so it can be pasted back.

    Passwords in URLs become `***`: the command is logged where anyone who can
    read the tracking server sees it.
    """
    args = [redact(arg) for arg in sys.argv]
    return shlex.join([Path(sys.executable).name, *args])[:TAG_VALUE_LIMIT]


def cpu_tags() -> dict[str, str]:
    """The CPU as it picks kernels: vendor, family/model/stepping, features, oneDNN's ISA."""
    cpu = instruction_set.this_cpu()
    return {
        CPU_VENDOR_TAG: cpu.vendor,
        CPU_FAMILY_MODEL_TAG: cpu.family_model,
        CPU_FEATURES_TAG: " ".join(cpu.features),
        KERNEL_ISA_TAG: cpu.kernel_isa,
    }


def isa_difference(tags: dict[str, str]) -> str | None:
    """How the run's kernel instruction set differs from this process's (None: same, or not recorded).

    Different kernels sum in a different order: the results may then differ in
    their last bits, so bit-exact agreement is not to be expected.
    """
    then, now = tags.get(KERNEL_ISA_TAG), instruction_set.this_cpu().kernel_isa
    if then is None or then == now:
        return None
    advice = ""
    names = [name for name, _, _ in instruction_set.ONEDNN_ISAS]
    if then in names and now in names and names.index(then) > names.index(now):
        # This CPU can run the original's narrower kernels: oneDNN takes a ceiling.
        advice = f"; to use the run's kernels here, set {instruction_set.ISA_CAP_ENVS[0]}={then} before starting"
    return (
        f"instruction set: the run used {then} kernels (its CPU: {tags.get(CPU_FEATURES_TAG) or 'features not recorded'}), "
        f"this process uses {now}; results may differ in their last bits{advice}"
    )


def provenance_tags() -> dict[str, str]:
    """Tags that say which code, environment and command produced a run."""
    git = git_state()
    tags = {
        GIT_SOURCE_TAG: git["commit"],
        GIT_COMMIT_TAG: git["commit"],
        GIT_DIRTY_TAG: git["dirty"],
        LOCK_TAG: lock_hash(),
        COMMAND_TAG: command_line(),
        CPU_TAG: cpu_model(),
        **cpu_tags(),
    }
    tags.update({VERSION_TAG_PREFIX + name: version for name, version in library_versions().items()})
    return tags


def differences(tags: dict[str, str]) -> list[str]:
    """What differs between the provenance recorded in `tags` and this process's."""
    problems = []
    git = git_state()
    commit = tags.get(GIT_COMMIT_TAG)
    if commit != git["commit"]:
        problems.append(f"git commit: run used {commit}, this checkout is {git['commit']}")
    if tags.get(GIT_DIRTY_TAG) == "true":
        problems.append("the run was made from a dirty tree: its code is not exactly any commit")
    if git["dirty"] == "true":
        problems.append("this checkout has uncommitted changes")
    lock = tags.get(LOCK_TAG)
    if lock is None:
        problems.append("the run recorded no uv.lock hash: its environment cannot be checked")
    elif lock != lock_hash():
        problems.append(f"uv.lock: run used sha256 {lock[:12]}, this checkout has {lock_hash()[:12]}")
    now = library_versions()
    for name in (*TENSORFLOW_DISTRIBUTIONS, *LIBRARIES):
        then, version = tags.get(VERSION_TAG_PREFIX + name), now.get(name, "absent")
        if then is not None and then != version:
            problems.append(f"{name}: run used {then}, this environment has {version}")
    isa = isa_difference(tags)
    if isa is not None:
        problems.append(isa)
    cpu, here = tags.get(CPU_TAG), cpu_model()
    then_id = (tags.get(CPU_VENDOR_TAG), tags.get(CPU_FAMILY_MODEL_TAG))
    now_id = (instruction_set.this_cpu().vendor, instruction_set.this_cpu().family_model)
    if cpu is not None and (cpu != here or (None not in then_id and then_id != now_id)):
        problems.append(
            f"CPU: run used {cpu!r} ({' '.join(filter(None, then_id)) or 'family not recorded'}), "
            f"this machine has {here!r} ({' '.join(now_id)})"
        )
    return problems
