"""Rebuild a study's ablation report from the stores: `reuse-nets report --study NAME`.

Reads the trials from Optuna and MLflow (never from memory), writes
reports/<study>/report.{md,html} with its PNGs and logs them to the parent run.
"""

from __future__ import annotations

from pathlib import Path

from reuse_nets.commands import common


def parse_args(argv):
    parser = common.ArgumentParser(description=__doc__)
    parser.add_argument("--study", required=True, help="study name in experiments/ or path to a study YAML file")
    parser.add_argument("--storage", help="Optuna RDB URL (default: sqlite:///optuna.db here)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the overrides the study was run with, if any")
    common.add_tracking_args(parser)
    common.add_reports_arg(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import mlflow

    from reuse_nets import optuna_store, phases, report, study_files, study_runs, tracking

    spec = study_files.load_study(args.study, args.overrides)
    tracking.set_tracking_uri(args.tracking_uri)
    storage = optuna_store.make_storage(args.storage or optuna_store.DEFAULT_STORAGE, spec.execution)
    if optuna_store.load_existing(storage, phases.final_study_name(spec)) is None:
        raise optuna_store.SweepError(f"study {spec.name!r} has no final runs in this storage yet; run it first with sweeps/run.py")
    # The same spec (overrides included) as the run, or the report would describe another study.
    optuna_store.check_identity(storage, phases.final_study_name(spec), spec.identity())
    experiment = mlflow.MlflowClient().get_experiment_by_name(spec.name)
    parent_run_id = study_runs.find_parent_run(spec, experiment.experiment_id) if experiment else None
    if not parent_run_id:
        raise optuna_store.SweepError(f"study {spec.name!r} has no MLflow parent run yet; run it first with sweeps/run.py")
    out = report.write_report(spec, storage, parent_run_id, *([Path(args.reports)] if args.reports else []))
    print((Path(out) / "report.md").read_text())
    print(f"report: {out}/report.md (also logged to parent run {parent_run_id})")
    return 0
