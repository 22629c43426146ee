"""Measure training speed and the framework's cost: `reuse-nets benchmark [--quick]`.

Plain `keras.Model.fit` vs this project's training at depth 8/64 x width 128/512,
a sweep vs bare fits, start-up, pruning, a depth-heavy study's profile with the
compile cache off and on, 1 vs 2 workers and the matmul ceiling,
side by side in one process; when named in `--sections`, also where a runner's
memory grows (`memory`) and many runners on one study through PostgreSQL and
`mlflow server` (`runners`). Writes JSON (`--output`) and a Markdown table beside
it (same name, .md), and prints the table. All stores live in a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from reuse_nets.bench.plans import DEFAULT_SECTIONS, SECTIONS
from reuse_nets.commands import common

DEFAULT_OUTPUT = Path("reports") / "benchmark" / "benchmark.json"


def parse_args(argv):
    parser = common.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one repetition: 3.5-4.5 minutes here, same JSON shape"
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file to write (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} "
        f"(default: {','.join(DEFAULT_SECTIONS)}; workers also runs profile)",
    )
    common.add_data_args(parser)
    args = parser.parse_args(argv)
    args.sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown or not args.sections:
        parser.error(f"--sections takes some of {','.join(SECTIONS)}; got {','.join(unknown) or 'none'}")
    if args.output.suffix != ".json":
        parser.error(f"--output must name a .json file, got {str(args.output)!r}")
    return args


def main(argv=None) -> int:
    from reuse_nets.bench import benchmark
    from reuse_nets.bench import plans as bench_plans
    from reuse_nets.runtime import noise

    args = parse_args(argv)
    noise.quiet_libraries()
    noise.import_tensorflow()  # without its C++ start-up lines
    plan = bench_plans.QUICK if args.quick else bench_plans.FULL
    output = args.output.resolve()  # the benchmark works in a temporary folder
    output.parent.mkdir(parents=True, exist_ok=True)
    result = benchmark.measure(
        plan, common.data_source(args), say=lambda message: print(message, flush=True), sections=args.sections
    )
    table = benchmark.markdown(result)
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(table)
    print(table)
    print(f"benchmark: {output} and {output.with_suffix('.md')} ({result['seconds']} s)")
    return 0
