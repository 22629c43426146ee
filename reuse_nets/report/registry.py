"""Registering a study's models in MLflow's model registry.

Each cell's best final run (on the selection metric, validation: never the test split)
becomes a version of the registered model named after the study, with an alias naming
its cell; the best of them all also gets `best`. Versions carry tags linking back to
the study, cell and run. The logged models are self-contained pyfuncs with a `keras`
flavour too, so `mlflow.pyfunc.load_model("models:/STUDY@ALIAS")` works where this
project is absent, and `mlflow.keras.load_model("models:/STUDY@ALIAS")` where it is
installed (docs/results.md, "Getting the Keras model back").
"""

from __future__ import annotations

import dataclasses
import re

from reuse_nets.design.study_spec import StudySpec
from reuse_nets.errors import SweepError, first_line
from reuse_nets.names import CELL_TAG, MODEL_URI_TAG, REGISTERED_RUN_TAG, STUDY_TAG
from reuse_nets.report.analysis import FinalRun

BEST_ALIAS = "best"  # the study's best final run over all cells
ALIAS_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


@dataclasses.dataclass(frozen=True)
class Registered:
    name: str  # the registered model
    version: str
    alias: str
    cell: str
    run_id: str
    value: float  # the selection metric (validation) of the run


def cell_alias(cell_key: str) -> str:
    """`strategy=residual,depth=64` -> `strategy_residual_depth_64` (aliases take letters, digits, `_`)."""
    return ALIAS_UNSAFE.sub("_", cell_key).strip("_")


def choose(spec: StudySpec, runs: list[FinalRun]) -> dict[str, FinalRun]:
    """Per cell, its final run with the best selection metric (ties: the lowest seed); plus `best`."""
    maximize = spec.objective.direction == "maximize"

    def rank(run: FinalRun):
        return (-run.val if maximize else run.val, run.seed)

    cells = {cell_alias(cell.key): cell.key for cell in spec.cells()}
    if len(cells) != len(spec.cells()) or BEST_ALIAS in cells:
        raise SweepError(f"study {spec.name!r}: two cells (or a cell and {BEST_ALIAS!r}) would get the same alias")
    chosen: dict[str, FinalRun] = {}
    for run in sorted(runs, key=rank):
        chosen.setdefault(cell_alias(run.cell), run)
    if chosen:
        chosen[BEST_ALIAS] = min(chosen.values(), key=rank)
    return chosen


def register(spec: StudySpec, runs: list[FinalRun], name: str | None = None) -> list[Registered]:
    """Registers each cell's chosen run's model (and the best) under `name` (default: the study's)."""
    import mlflow

    client = mlflow.MlflowClient()
    name = name or spec.name
    chosen = choose(spec, runs)
    if not chosen:
        raise SweepError(f"study {spec.name!r} has no finished final run with a model to register")
    versions: dict[str, str] = {}  # run id -> version: a run chosen twice is registered once
    done = []
    for alias, run in chosen.items():
        model_uri = client.get_run(run.run_id).data.tags.get(MODEL_URI_TAG)
        if not model_uri:
            raise SweepError(f"final run {run.run_id} ({run.cell}) logged no model; nothing to register")
        if run.run_id not in versions:
            try:
                version = mlflow.register_model(
                    model_uri,
                    name,
                    tags={STUDY_TAG: spec.name, CELL_TAG: run.cell, REGISTERED_RUN_TAG: run.run_id},
                )
            except mlflow.exceptions.MlflowException as error:
                raise SweepError(f"cannot register {model_uri} as {name!r}: {first_line(error)}") from None
            versions[run.run_id] = version.version
        client.set_registered_model_alias(name, alias, versions[run.run_id])
        done.append(Registered(name, versions[run.run_id], alias, run.cell, run.run_id, run.val))
    client.set_registered_model_tag(name, STUDY_TAG, spec.name)
    return done
