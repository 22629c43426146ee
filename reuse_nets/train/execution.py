"""Execution settings that change floating-point results: pinned, recorded, applied.

With op determinism on, TensorFlow's CPU kernels still split reductions by the
size of their thread pool (a 784x256 @ 256x128 matmul sums in another order with
1 and 2 intra-op threads), and oneDNN kernels round differently from Eigen's. So
a run is bit-exact only under the same settings: every trial pins them
explicitly (never "TensorFlow's default", which depends on the machine), logs
them as tags, and `reproduce` applies the logged ones whatever this machine's
core count.

XLA (`jit_compile`) is one of these settings: it fuses the training step into
fewer, faster kernels, which round differently from TensorFlow's own, and is
deterministic on CPU for a given thread count (checked by the tests).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

from reuse_nets.errors import ExecutionError
from reuse_nets.names import CORES_TAG, INTER_TAG, INTRA_TAG, ONEDNN_TAG, XLA_TAG

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"  # read by TensorFlow once, when it is imported
MAX_INTER_OP_THREADS = 2  # independent ops per step are few; more threads only contend


@dataclasses.dataclass(frozen=True)
class Settings:
    intra_op_threads: int
    inter_op_threads: int
    onednn: bool
    xla: bool = False  # compile training steps with XLA (Keras `jit_compile`)

    def describe(self) -> str:
        return (
            f"{self.intra_op_threads} intra-op / {self.inter_op_threads} inter-op threads, "
            f"oneDNN {'on' if self.onednn else 'off'}, XLA {'on' if self.xla else 'off'}"
        )

    def tags(self) -> dict[str, str]:
        return {
            INTRA_TAG: str(self.intra_op_threads),
            INTER_TAG: str(self.inter_op_threads),
            ONEDNN_TAG: str(self.onednn).lower(),
            XLA_TAG: str(self.xla).lower(),
            CORES_TAG: str(machine_cores()),
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Settings | None:
        """The settings a run logged; None for runs older than these tags.

        Runs logged before the XLA tag existed trained without XLA."""
        try:
            return cls(
                int(tags[INTRA_TAG]), int(tags[INTER_TAG]), tags[ONEDNN_TAG] == "true", tags.get(XLA_TAG) == "true"
            )
        except (KeyError, ValueError):
            return None

    def environment(self) -> dict[str, str]:
        """Environment a fresh process needs before importing TensorFlow."""
        return {ONEDNN_ENV: "1" if self.onednn else "0"}


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Intra-op threads each of `workers` processes sharing this machine's cores gets."""
    return max(1, machine_cores() // workers)


def for_workers(workers: int, xla: bool = False) -> Settings:
    """The settings each of `workers` processes sharing this machine's cores pins."""
    threads = threads_per_worker(workers)
    return Settings(threads, min(threads, MAX_INTER_OP_THREADS), _onednn_enabled(), xla)


CUDA_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"  # read by CUDA when TensorFlow first touches a GPU
# TensorFlow otherwise reserves nearly all of a GPU's memory in the first process that
# touches it: the parent (it loads the data) or a worker sharing its GPU would starve.
GPU_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"


def visible_gpus(environ=os.environ, nvidia_smi: str | None = None) -> list[str]:
    """This machine's GPUs a process may use, without importing TensorFlow (workers
    choose theirs before importing it): `CUDA_VISIBLE_DEVICES` when set, else the
    indices `nvidia-smi -L` lists, else none."""
    if CUDA_DEVICES_ENV in environ:
        return [d.strip() for d in environ[CUDA_DEVICES_ENV].split(",") if d.strip() and d.strip() != "-1"]
    smi = nvidia_smi or shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def gpu_for_worker(index: int, gpus: list[str]) -> str | None:
    """The one GPU worker `index` (from 1) places itself on: round robin, so that with
    as many workers as GPUs each has its own."""
    return gpus[(index - 1) % len(gpus)] if gpus else None


def share_gpus() -> None:
    """Lets several processes share a GPU (call before TensorFlow first touches one)."""
    os.environ.setdefault(GPU_GROWTH_ENV, "true")


def place_worker(index: int) -> str | None:
    """Makes this worker process see only its GPU (call before importing TensorFlow)."""
    gpu = gpu_for_worker(index, visible_gpus())
    if gpu is not None:
        os.environ[CUDA_DEVICES_ENV] = gpu
        share_gpus()
    return gpu


def _onednn_enabled() -> bool:
    """Whether TensorFlow uses oneDNN kernels; it decides once, when it is imported
    (from the CPU's features and `TF_ENABLE_ONEDNN_OPTS`), so this imports it."""
    import tensorflow  # noqa: F401

    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # not exposed by this build: its documented rule
        return os.environ.get(ONEDNN_ENV, "1").strip().lower() not in ("0", "false", "off")


# XLA is not a TensorFlow process setting but a compile option: this process's
# choice, set by `pin` and read by `training.compile_for_training`.
_xla = False


def current() -> Settings:
    """What this process runs with now (0 threads means TensorFlow's default: unpinned)."""
    import tensorflow as tf

    return Settings(
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
        _onednn_enabled(),
        _xla,
    )


def pin(settings: Settings) -> Settings:
    """Makes this process run with `settings`; call before TensorFlow runs any op.

    Raises:
        ExecutionError: TensorFlow was imported with the other oneDNN setting, or
            already runs with other thread counts.
    """
    if "tensorflow" not in sys.modules:
        os.environ.update(settings.environment())  # read once, when TensorFlow is imported
    elif settings.onednn != _onednn_enabled():
        raise ExecutionError(
            f"TensorFlow was imported with oneDNN {'on' if _onednn_enabled() else 'off'}; "
            f"these settings need it {'on' if settings.onednn else 'off'} (set {ONEDNN_ENV} before it starts)"
        )
    import tensorflow as tf

    global _xla
    now = current()
    try:
        if now.intra_op_threads != settings.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
        if now.inter_op_threads != settings.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
    except RuntimeError:
        raise ExecutionError(
            f"TensorFlow in this process already runs with {now.describe()}; {settings.describe()} need a fresh process"
        ) from None
    _xla = settings.xla
    pinned = current()
    if pinned != settings:  # e.g. this TensorFlow build cannot turn oneDNN on
        raise ExecutionError(f"asked for {settings.describe()}, but TensorFlow runs with {pinned.describe()}")
    return pinned


def ensure_pinned() -> Settings:
    """This process's settings, pinning the one-process defaults if nothing was pinned yet."""
    now = current()
    if now.intra_op_threads and now.inter_op_threads:
        return now
    try:
        return pin(for_workers(1, now.xla))
    except ExecutionError:
        return now  # TensorFlow started unpinned: recorded as 0 threads, and `reproduce` says so
