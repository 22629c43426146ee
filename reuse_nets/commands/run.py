"""Run or resume a study: `reuse-nets run --study residual_depth`.

Re-running the same command continues the study to its number of trials.
"""

from __future__ import annotations

import math
import re

from reuse_nets import names
from reuse_nets.commands import common
from reuse_nets.design import plan
from reuse_nets.runtime import noise, profile

MAX_WORKERS = 64  # processes on one machine; more runners belong on more machines


def parse_args(argv):
    parser = common.ArgumentParser(description=__doc__)
    parser.add_argument("--study", help="study name in experiments/ or path to a study YAML file")
    parser.add_argument("--list", action="store_true", help="list the studies in experiments/ and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit; writes nothing")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--storage", help="Optuna RDB URL (default: sqlite:///optuna.db here)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the storage on this machine")
    common.add_overrides_arg(
        parser,
        "override study fields, e.g. --set base.epochs=1 --set base.dataset.train_split=train[:2000]; "
        "one --set may hold several space-separated overrides",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    common.add_tracking_args(parser)
    common.add_reports_arg(parser)
    common.add_data_args(parser)
    args = parser.parse_args(argv)
    if not args.list and not args.study:
        parser.error("--study is required (or --list)")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout >= 0):
        parser.error(f"--timeout must be a non-negative number of seconds, got {args.timeout}")
    if not 1 <= args.workers <= MAX_WORKERS:
        parser.error(f"--workers must be between 1 and {MAX_WORKERS}, got {args.workers}")
    # Split "a=1 b.c=[1, 2]" before each "key=", so list values may hold spaces.
    args.overrides = [
        item for text in args.overrides for item in re.split(r"\s+(?=[A-Za-z_][\w.]*=)", text.strip()) if item
    ]
    return args


def main(argv=None) -> int:
    profile.started()
    args = parse_args(argv)
    if args.list:
        from reuse_nets.commands import list_studies

        return list_studies.main([])
    from reuse_nets.design import study_files
    from reuse_nets.store import optuna_store
    from reuse_nets.sweep import runner

    spec = study_files.load_study(args.study, args.overrides)
    options = runner.SweepOptions(
        storage=args.storage or optuna_store.DEFAULT_STORAGE,
        tracking_uri=args.tracking_uri,
        timeout=args.timeout or None,  # 0 (MLproject's default): the study's own
        workers=args.workers,
        data=common.data_source(args),
        verbose=not args.quiet,
        reports=args.reports or None,  # "" (MLproject's default): ./reports
    )
    if args.dry_run:
        from reuse_nets.report import pilot as pilots
        from reuse_nets.train import execution

        # Not `for_workers`: that imports TensorFlow (seconds) to read the oneDNN switch.
        threads = execution.threads_per_worker(args.workers)
        pilot = pilots.power_spread(spec.report.pilot, options.tracking_uri) if spec.report.pilot else None
        from reuse_nets.errors import redact

        print(redact(plan.describe_plan(spec, options.storage, options.tracking_uri, args.workers, threads, pilot)))
        return 0
    noise.quiet_libraries()
    noise.import_tensorflow()  # as run_study would (execution.pin), minus its start-up lines
    result = runner.run_study(spec, options)
    common.tag_project_run({names.PROJECT_STUDY_TAG: spec.name, names.PROJECT_PARENT_TAG: result.parent_run_id})
    from reuse_nets.errors import redact

    print(redact(runner.summary(result)))  # its MLflow hint names the tracking URI
    return 0 if result.complete else 1
