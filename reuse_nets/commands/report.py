"""Rebuild a study's ablation report from the stores: `reuse-nets report --study NAME`.

Reads the trials from Optuna and MLflow (never from memory) and the spec the study
ran with from its parent run (its `--set`s need not be repeated), writes
reports/<study>/report.{md,html} with its PNGs and logs them to the parent run.
"""

from __future__ import annotations

from pathlib import Path

from reuse_nets.commands import common


def parse_args(argv):
    parser = common.ArgumentParser(description=__doc__)
    parser.add_argument("--study", required=True, help="study name in experiments/ or path to a study YAML file")
    parser.add_argument("--storage", help="Optuna RDB URL (default: sqlite:///optuna.db here)")
    common.add_overrides_arg(parser, common.RAN_SPEC_SET_HELP)
    common.add_tracking_args(parser)
    common.add_reports_arg(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from reuse_nets.report import writer
    from reuse_nets.store import optuna_store, parent_run, tracking

    tracking.set_tracking_uri(args.tracking_uri)
    spec = parent_run.ran_spec(args.study, args.overrides)
    storage = args.storage or optuna_store.DEFAULT_STORAGE
    written, parent_run_id = writer.rebuild_report(
        spec, storage, args.tracking_uri, *([Path(args.reports)] if args.reports else [])
    )
    print("\n".join(written.findings))
    print(f"report: {writer.report_paths(written.folder)} (also logged to parent run {parent_run_id})")
    return 0
