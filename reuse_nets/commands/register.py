"""Register a study's models in MLflow's model registry: `reuse-nets register --study NAME`.

Each cell's best final run (on the validation metric) becomes a version of the model
named after the study, with an alias naming its cell (`strategy_residual_depth_64`);
the best of all also gets `best`. Load one anywhere with
`mlflow.pyfunc.load_model("models:/NAME@ALIAS")`.
"""

from __future__ import annotations

from reuse_nets.commands import common


def parse_args(argv):
    parser = common.ArgumentParser(description=__doc__)
    parser.add_argument("--study", required=True, help="study name in experiments/ or path to a study YAML file")
    parser.add_argument("--storage", help="Optuna RDB URL the study ran with (default: sqlite:///optuna.db here)")
    parser.add_argument("--name", help="registered model name (default: the study's name)")
    common.add_overrides_arg(parser, common.RAN_SPEC_SET_HELP)
    common.add_tracking_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from reuse_nets.report import registry, writer
    from reuse_nets.store import optuna_store, parent_run, tracking

    tracking.set_tracking_uri(args.tracking_uri)
    spec = parent_run.ran_spec(args.study, args.overrides)
    storage = args.storage or optuna_store.DEFAULT_STORAGE
    runs = writer.final_runs_of(spec, storage, args.tracking_uri)
    for entry in registry.register(spec, runs, args.name):
        print(
            f"models:/{entry.name}@{entry.alias}  version {entry.version}  {entry.cell}  run {entry.run_id}  "
            f"{spec.objective.metric}={entry.value:.4f}"
        )
    return 0
