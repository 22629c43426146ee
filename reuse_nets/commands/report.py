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
    common.add_overrides_arg(
        parser,
        "the overrides the study was run with, if any",
    )
    common.add_tracking_args(parser)
    common.add_reports_arg(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from reuse_nets.report import writer
    from reuse_nets.spec import study_files
    from reuse_nets.store import optuna_store

    spec = study_files.load_study(args.study, args.overrides)
    storage = args.storage or optuna_store.DEFAULT_STORAGE
    out, parent_run_id = writer.rebuild_report(
        spec, storage, args.tracking_uri, *([Path(args.reports)] if args.reports else [])
    )
    print((Path(out) / "report.md").read_text(encoding="utf-8"))
    print(f"report: {out}/report.md (also logged to parent run {parent_run_id})")
    return 0
