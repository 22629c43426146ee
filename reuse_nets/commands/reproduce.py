"""Re-run logged runs and check them against the originals.

    reuse-nets reproduce RUN_ID            one run
    reuse-nets reproduce --study NAME      a study's final runs (else its finished trials)

Each run is re-trained with its original's execution settings (thread counts,
oneDNN), as far as the original got (a pruned run stops where it was pruned).
Exits 0 when every reproduced metric agrees with the original within --tolerance
(exact by default: training is deterministic on CPU), 1 when any does not, and 2
for a run or study that cannot be reproduced.
"""

from __future__ import annotations

import math

from reuse_nets import names
from reuse_nets.commands import common
from reuse_nets.runtime import noise

INTERRUPTED = "interrupted: the reproduction run was closed as KILLED"


def parse_args(argv):
    parser = common.ArgumentParser(description=__doc__)
    parser.add_argument("run_id", nargs="?", help="MLflow run id of a reuse-nets trial")
    parser.add_argument("--study", help="reproduce this study's final-phase runs (else its finished trials)")
    parser.add_argument(
        "--sample", type=int, help="with --study: reproduce only N runs, picked at random with --sample-seed"
    )
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of --sample's pick (default 0)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest allowed metric difference (default 0)")
    parser.add_argument(
        "--strict", action="store_true", help="refuse to run when code, uv.lock, libraries or data differ"
    )
    parser.add_argument("--evaluate-only", action="store_true", help="re-score the logged model instead of re-training")
    parser.add_argument(
        "--threads",
        type=int,
        help="run with N TensorFlow threads instead of the original's (to test whether results depend on it)",
    )
    parser.add_argument(
        "--onednn",
        choices=("on", "off"),
        help="run with oneDNN kernels on/off instead of as the original (same purpose)",
    )
    common.add_tracking_args(parser)
    common.add_data_args(parser)
    args = parser.parse_args(argv)
    if (args.run_id is None) == (args.study is None):
        parser.error("give either a RUN_ID or --study NAME")
    if args.sample is not None and (args.study is None or args.sample < 1):
        parser.error("--sample N needs --study and N >= 1")
    if args.evaluate_only and args.study:
        parser.error("--evaluate-only works on one RUN_ID")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        parser.error(f"--tolerance must be a non-negative number, got {args.tolerance}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from reuse_nets.reproduce import runs as reproduce
    from reuse_nets.reproduce import study as reproduce_study
    from reuse_nets.store import tracking

    noise.quiet_libraries()
    tracking.set_tracking_uri(args.tracking_uri)
    onednn = None if args.onednn is None else args.onednn == "on"
    kwargs = dict(
        source=common.data_source(args),
        tolerance=args.tolerance,
        strict=args.strict,
        threads=args.threads,
        onednn=onednn,
    )
    if args.study:
        _, rows = reproduce_study.reproduce_study(args.study, sample=args.sample, seed=args.sample_seed, **kwargs)
        print(reproduce_study.study_table(rows))
        agree = all(row.agree for row in rows)
        common.tag_project_run({names.PROJECT_REPRODUCES_STUDY_TAG: args.study, names.PROJECT_AGREE_TAG: agree})
        return 0 if agree else 1
    outcome = reproduce.reproduce(args.run_id, evaluate_only=args.evaluate_only, **kwargs)
    common.tag_project_run({names.PROJECT_REPRODUCES_TAG: args.run_id, names.PROJECT_AGREE_TAG: outcome.agree})
    if outcome.new_run_id:
        print(f"reproduction logged as run {outcome.new_run_id} (tag reproduces={outcome.original_run_id})")
    print(outcome.table())
    print(f"reproduced in {outcome.seconds:.1f} s with {outcome.settings}")
    return 0 if outcome.agree else 1
