"""Links into the tracking UIs, for the end-of-study summary.

MLflow 3's UI opens an experiment in its GenAI view, where a study's parent run and
its nested trial runs are on the "Training runs" page, route `#/experiments/<id>/runs`
(a client-side route of the app). `?workflowType=machine_learning` opens that page in
the "Model training" view instead, which shows only runs, models and traces.
"""

from __future__ import annotations

from pathlib import Path

MLFLOW_UI_PORT = 5000  # `mlflow ui`'s default --port
MLFLOW_UI_URL = f"http://127.0.0.1:{MLFLOW_UI_PORT}"  # `mlflow ui`'s default --host and --port


def mlflow_runs_url(experiment_id: str, base_url: str = MLFLOW_UI_URL) -> str:
    """The experiment's runs page, in the "Model training" view of the MLflow UI at `base_url`."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def mlflow_run_url(experiment_id: str, run_id: str, tracking_uri: str) -> str:
    """A run's page in the MLflow UI: on the tracking server itself, else at `mlflow ui`'s default address."""
    from reuse_nets.errors import redact

    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else MLFLOW_UI_URL
    return redact(f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")


def mlflow_ui_hint(experiment_id: str, tracking_uri: str, cwd: Path | None = None) -> str:
    """One line: how to see the experiment's runs in the MLflow UI.

    Args:
        experiment_id: the study's MLflow experiment.
        tracking_uri: where the runs were tracked, as MLflow resolved it
            (`mlflow.get_tracking_uri()`).
        cwd: the folder the user runs `mlflow ui` in; default the working directory.
    """
    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow: open {mlflow_runs_url(experiment_id, tracking_uri)}"
    command = (
        "mlflow ui"
        if _is_default_store(tracking_uri, cwd or Path.cwd())
        else f"mlflow ui --backend-store-uri {tracking_uri}"
    )
    return f"MLflow: run `{command}` here, then open {mlflow_runs_url(experiment_id)}"


def _is_default_store(tracking_uri: str, cwd: Path) -> bool:
    """Whether a bare `mlflow ui` in `cwd` reads this store (its default, `sqlite:///mlflow.db`)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return False
    return (cwd / tracking_uri.removeprefix(prefix)).resolve() == (cwd / "mlflow.db").resolve()
