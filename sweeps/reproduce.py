"""Re-run a logged run and check it: `python sweeps/reproduce.py RUN_ID`.

Exits 0 when the reproduced metrics agree with the original within --tolerance
(exact by default: training is deterministic on CPU), 1 when they do not, and 2
for a run id that cannot be reproduced.
"""

from __future__ import annotations

import argparse
import sys

import _cli


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id", help="MLflow run id of a reuse-nets trial")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest allowed metric difference (default 0)")
    parser.add_argument("--strict", action="store_true", help="refuse to run when code, libraries or data differ")
    parser.add_argument("--evaluate-only", action="store_true", help="re-score the logged model instead of re-training")
    _cli.add_tracking_args(parser)
    _cli.add_data_args(parser)
    args = parser.parse_args(argv)
    if args.tolerance < 0:
        parser.error(f"--tolerance must be non-negative, got {args.tolerance}")
    return args


def main(argv=None) -> int:
    from reuse_nets import reproduce, tracking

    args = parse_args(argv)
    tracking.set_tracking_uri(args.tracking_uri)
    outcome = reproduce.reproduce(
        args.run_id,
        source=_cli.data_source(args),
        tolerance=args.tolerance,
        strict=args.strict,
        evaluate_only=args.evaluate_only,
    )
    _cli.tag_project_run({"reuse_nets.reproduces": args.run_id, "reuse_nets.agree": outcome.agree})
    if outcome.new_run_id:
        print(f"reproduction logged as run {outcome.new_run_id} (tag reproduces={outcome.original_run_id})")
    print(outcome.table())
    return 0 if outcome.agree else 1


if __name__ == "__main__":
    sys.exit(_cli.main_guard(main))
