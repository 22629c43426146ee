"""reuse-nets: how should a deep network reuse its inputs?

The package root stays light (no TensorFlow import) so that study validation and
command-line errors are fast. The public layers, `build_model` and
`count_capacity` live in `reuse_nets.nn` and are re-exported here on first use;
importing any of them registers the Keras layers for
`keras.saving.load_model(path, safe_mode=True)`.

Modules of the flat layout before the package split (2026-11) moved into
subpackages: `reuse_nets.layers` and `reuse_nets.models` still import (their new
module's names, the same objects), with a `DeprecationWarning`; the others fail with a
message naming their new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# Flat-layout module -> where it lives now (under this package). `report` and `reproduce`
# were modules too; they are packages now, found before this finder is asked.
MOVED = {
    "layers": "nn.layers",
    "models": "nn.models",
    "analysis": "report.analysis",
    "config": "design.trial_config",
    "data": "train.data",
    "execution": "train.execution",
    "faults": "runtime.faults",
    "interrupts": "runtime.interrupts",
    "noise": "runtime.noise",
    "objective": "sweep.objective",
    "optuna_store": "store.optuna_store",
    "phases": "sweep.phases",
    "progress": "sweep.progress",
    "provenance": "store.provenance",
    "pyfunc_model": "store.pyfunc_model",
    "report_html": "report.html_page",
    "report_plots": "report.plots",
    "reproduce_study": "reproduce.study",
    "results": "report.results",
    "runner": "sweep.runner",
    "storage_errors": "store.storage_errors",
    "studies": "design.study_spec",
    "study_files": "design.study_files",
    "study_runs": "store.parent_run",
    "tracking": "store.tracking",
    "training": "train.training",
    "ui_links": "store.ui_links",
}
# Users imported these; they keep working for now. The rest were internal.
DEPRECATED_ALIASES = ("layers", "models")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `reuse_nets.<old>` only: a module holding its new module's names, or a one-line error naming it."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.rpartition(".")
        if package != __name__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        old = spec.name.rpartition(".")[2]
        if old not in DEPRECATED_ALIASES:
            new = f"{__name__}.{MOVED[old]}"
            raise ModuleNotFoundError(f"{spec.name} moved to {new} when the package was split; import {new}")
        return None  # a module of its own: the new one keeps its name and spec

    def exec_module(self, module):
        new = f"{__name__}.{MOVED[module.__name__.rpartition('.')[2]]}"
        warnings.warn(
            f"{module.__name__} moved to {new}; import it from there (or from {__name__}.nn)", DeprecationWarning, 2
        )
        module.__dict__.update({k: v for k, v in vars(importlib.import_module(new)).items() if not k.startswith("__")})


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    nn = importlib.import_module(f"{__name__}.nn")  # not `from . import nn`: that asks this function for "nn"
    if name in nn.PUBLIC:
        return getattr(nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
