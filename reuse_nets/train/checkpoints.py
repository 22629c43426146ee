"""Per-epoch checkpoints: a trial whose process died, was interrupted or lost to
storage resumes from its last complete epoch and ends bit-identical to a run that
was never stopped.

A checkpoint holds, after each epoch: the network's weights and the optimizer's
variables, and with early stopping the best epoch's weights too (`state.npz`, arrays
only, loaded with `allow_pickle=False`); Python's and
NumPy's RNG states; and the epochs' logged metrics, the trial config and a digest of
the arrays (`meta.json`). The data order needs no state of its own: the training
pipeline reshuffles per epoch from the trial's seed, and a resumed trial draws the
same orders and drops those of the epochs it skips (`Dataset.resumed_pipeline`).

One folder per slot (`slot_folder`): each epoch replaces the previous checkpoint
(both files written under temporary names, then renamed), so a slot never holds
more than one, and a disk that fills while one is written leaves the previous one
whole. The caller removes it when the run ends, unless told to keep it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np

from reuse_nets.runtime import disk, faults

FORMAT = 1  # meta.json's "format": checkpoints of another format are ignored
STATE_FILE = "state.npz"
META_FILE = "meta.json"
DEFAULT_ROOT = Path("checkpoints")  # under the working directory, beside reports/


def slot_folder(root: Path, study_name: str, slot: int) -> Path:
    """The checkpoint folder of one slot of one Optuna study (every attempt of the slot shares it)."""
    digest = hashlib.sha256(study_name.encode("utf-8")).hexdigest()[:16]
    return Path(root) / f"{digest}-slot{slot}"


@dataclasses.dataclass(frozen=True)
class Restored:
    """What a checkpoint gave back: the epochs done and their metrics, and who wrote it."""

    history: list[dict]
    run_id: str | None  # the MLflow run of the attempt that wrote it
    best_weights: list | None = None  # with early stopping: the network's weights at its best epoch

    @property
    def epochs(self) -> int:
        return len(self.history)


class Checkpoint:
    """The checkpoint of one trial config in `folder`; `run_id`: the attempt writing it.

    `config_json` is what a checkpoint must have been made from to be resumed: the
    trial config, and whatever else changes the bytes (the caller adds the code's
    commit, the lock file, library versions, XLA and the data's digest).
    """

    def __init__(self, folder: Path, config_json: str, run_id: str | None = None):
        self.folder, self.config_json, self.run_id = Path(folder), config_json, run_id
        self.restored_from: str | None = None  # the attempt whose checkpoint this one resumed

    # --- writing ---------------------------------------------------------------------

    def save(self, trainer, history: list[dict], best_weights: list | None = None) -> bool:
        """Stores the state after the epochs in `history` (replacing the previous one).

        False, and the trial goes on without it, if it could not be written for another
        reason than a full disk (a checkpoint saves work, its absence loses none of the
        results). A full disk raises `DiskFull`: the study stops there, before the next
        write (the run's metrics, its model) meets the same disk, and the previous
        checkpoint stays whole for the resumed trial.

        Raises:
            DiskFull: no space left for the checkpoint.
        """
        temporaries = [self.folder / f"{name}.{os.getpid()}.tmp" for name in (STATE_FILE, META_FILE)]
        try:
            with disk.guard(f"the checkpoint {self.folder.absolute()}", self.folder):
                self._save(trainer, history, best_weights, *temporaries)
        except OSError:
            return False
        finally:
            for temporary in temporaries:  # only a failed save leaves one
                with contextlib.suppress(OSError):
                    temporary.unlink()
        return True

    def _save(
        self, trainer, history: list[dict], best_weights: list | None, state_temporary: Path, meta_temporary: Path
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = _state_arrays(trainer)
        arrays.update({f"b{i:05d}": np.asarray(value) for i, value in enumerate(best_weights or ())})
        numpy_state = np.random.get_state(legacy=True)  # the default, spelled out: numpy's stubs assume False
        if not isinstance(numpy_state, tuple):  # legacy=True gives a tuple for the global MT19937 generator
            raise TypeError(f"numpy's global generator state is not MT19937's: {type(numpy_state).__name__}")
        arrays["numpy_rng_keys"] = numpy_state[1]
        # Temporary names of this process's own: two attempts of a slot never share one.
        with open(state_temporary, "wb") as handle:
            faults.disk_full("checkpoint", f"epoch {len(history)}", state_temporary)
            np.savez(handle, allow_pickle=True, **arrays)  # the default, explicit so `**arrays` cannot be it
        meta = {
            "format": FORMAT,
            "config": self.config_json,
            "history": history,
            "run_id": self.run_id,
            "digest": _digest(state_temporary),
            "python_rng": _python_state(random.getstate()),
            "numpy_rng": [numpy_state[0], int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        }
        meta_temporary.write_text(json.dumps(meta), encoding="utf-8")
        # Both files written: renaming takes no space. A kill between the two renames leaves
        # arrays whose digest is not the metadata's, which `restore` refuses.
        os.replace(state_temporary, self.folder / STATE_FILE)
        os.replace(meta_temporary, self.folder / META_FILE)  # last: a checkpoint is complete once this exists

    def remove(self) -> None:
        """Deletes this slot's checkpoint, unless another attempt of the slot wrote it
        (one judged dead while it still runs), and the root folder once it is empty.

        The attempt this one resumed counts as this one: resumed after its last epoch
        (stopped while logging the model), an attempt writes no checkpoint of its own.
        """
        try:
            writer = json.loads((self.folder / META_FILE).read_text(encoding="utf-8")).get("run_id")
        except (OSError, ValueError):
            writer = None
        if writer is not None and self.run_id is not None and writer not in (self.run_id, self.restored_from):
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another slot's checkpoint is still there
            self.folder.parent.rmdir()

    # --- reading ---------------------------------------------------------------------

    def restore(self, trainer) -> Restored | None:
        """Loads the stored state into `trainer`; None (and `trainer` untouched) if there is
        no complete checkpoint of this very config."""
        try:
            meta = json.loads((self.folder / META_FILE).read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("config") != self.config_json:
                return None
            content = (self.folder / STATE_FILE).read_bytes()  # once: digest and arrays from the same bytes
            if meta["digest"] != hashlib.sha256(content).hexdigest():
                return None  # the arrays of another epoch than the metadata's: never mix them
            with np.load(io.BytesIO(content), allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except (OSError, ValueError, KeyError):
            return None
        variables = _state_variables(trainer)
        if len(variables) != sum(1 for name in arrays if name.startswith(("w", "o"))):
            return None
        for name, variable in variables.items():
            if tuple(arrays[name].shape) != tuple(variable.shape):
                return None
        for name, variable in variables.items():
            variable.assign(arrays[name])
        random.setstate(_python_tuple(meta["python_rng"]))
        kind, position, has_gauss, gauss = meta["numpy_rng"]
        np.random.set_state((kind, arrays["numpy_rng_keys"], position, has_gauss, gauss))
        self.restored_from = meta.get("run_id")
        best = [arrays[name] for name in sorted(arrays) if name.startswith("b")] or None
        return Restored(history=meta["history"], run_id=self.restored_from, best_weights=best)


def _state_variables(trainer) -> dict:
    """The trainer's state, by stable names: network weights (w*) and optimizer variables (o*)."""
    optimizer = trainer.optimizer
    if not optimizer.built:  # built as the first step would build it (as the compile cache does)
        optimizer.build(trainer.network.trainable_variables)
    found = {f"w{i:05d}": v for i, v in enumerate(trainer.network.weights)}
    found.update({f"o{i:05d}": v for i, v in enumerate(optimizer.variables)})
    return found


def _state_arrays(trainer) -> dict[str, np.ndarray]:
    return {name: np.asarray(variable.numpy()) for name, variable in _state_variables(trainer).items()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _python_state(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_tuple(state: list):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
