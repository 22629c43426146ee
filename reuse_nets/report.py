"""Ablation report of a study, computed from what MLflow and Optuna stored.

Each finished (COMPLETE) child run is one point; within a (strategy, depth, seed)
cell the best trial counts (tuned studies have several trials per cell), and
across seeds the report gives the mean with a 95% Student-t interval.
"""

from __future__ import annotations

import dataclasses
import html
import math
import warnings
from collections import defaultdict
from pathlib import Path

from reuse_nets.studies import StudySpec

REPORT_ROOT = Path("reports")  # beside mlflow.db, in the working directory
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class TrialPoint:
    run_id: str
    trial_number: int
    strategy: str
    depth: int
    seed: int
    value: float
    first_block_grad_norm: float
    params: dict


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean and half-width of its Student-t confidence interval (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n))


def collect(spec: StudySpec, parent_run_id: str) -> list[TrialPoint]:
    """The study's COMPLETE trial runs, read back from MLflow."""
    import mlflow

    from reuse_nets import sweep, tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}' and tags.`{sweep.STATE_TAG}` = 'COMPLETE' "
            f"and tags.`{tracking.KIND_TAG}` = 'trial'"
        ),
        max_results=10000,
    )
    metric = spec.objective.metric
    points = []
    for run in runs:
        if "reproduces" in run.data.tags or metric not in run.data.metrics:
            continue
        params = run.data.params
        points.append(
            TrialPoint(
                run_id=run.info.run_id,
                trial_number=int(run.data.tags[sweep.TRIAL_TAG]),
                strategy=params["strategy"],
                depth=int(params["depth"]),
                seed=int(params["seed"]),
                value=run.data.metrics[metric],
                first_block_grad_norm=run.data.metrics.get("grad_norm/block_01", float("nan")),
                params=dict(params),
            )
        )
    return sorted(points, key=lambda p: p.trial_number)


def aggregate(points: list[TrialPoint], maximize: bool) -> dict[tuple[str, int], dict]:
    """Per (strategy, depth): best trial per seed, then mean and interval over seeds."""
    best: dict[tuple[str, int, int], TrialPoint] = {}
    pick = max if maximize else min
    for point in points:
        key = (point.strategy, point.depth, point.seed)
        best[key] = pick(best.get(key, point), point, key=lambda p: p.value)
    cells: dict[tuple[str, int], list[TrialPoint]] = defaultdict(list)
    for (strategy, depth, _), point in sorted(best.items()):
        cells[(strategy, depth)].append(point)
    table = {}
    for key, cell in cells.items():
        mean, half = mean_interval([p.value for p in cell])
        grad_mean, grad_half = mean_interval([p.first_block_grad_norm for p in cell])
        table[key] = {"mean": mean, "half": half, "n": len(cell), "grad": grad_mean, "grad_half": grad_half, "points": cell}
    return table


def markdown_table(table: dict, metric: str) -> str:
    """Strategies as rows, depths as columns: `mean ± half (n)`."""
    strategies = sorted({s for s, _ in table})
    depths = sorted({d for _, d in table})
    lines = [
        f"| {metric} | " + " | ".join(f"depth {d}" for d in depths) + " |",
        "|---|" + "---|" * len(depths),
    ]
    for strategy in strategies:
        cells = []
        for depth in depths:
            cell = table.get((strategy, depth))
            cells.append("" if cell is None else f"{cell['mean']:.4f} ± {cell['half']:.4f} (n={cell['n']})")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_by_depth(table: dict, key: str, half_key: str, ylabel: str, path: Path, log_y: bool) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for strategy in sorted({s for s, _ in table}):
        depths = sorted(d for s, d in table if s == strategy)
        ax.errorbar(
            depths,
            [table[(strategy, d)][key] for d in depths],
            yerr=[table[(strategy, d)][half_key] for d in depths],
            marker="o",
            capsize=3,
            label=strategy,
        )
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("depth (blocks)")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_best_curves(points: list[TrialPoint], metric: str, maximize: bool, path: Path) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    client = mlflow.MlflowClient()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    pick = max if maximize else min
    for strategy in sorted({p.strategy for p in points}):
        best = pick((p for p in points if p.strategy == strategy), key=lambda p: p.value)
        history = sorted(client.get_metric_history(best.run_id, metric), key=lambda m: m.step)
        ax.plot([m.step for m in history], [m.value for m in history], marker="o", label=f"{strategy} (depth {best.depth}, trial {best.trial_number})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("best trial of each strategy")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_optuna(study, out: Path) -> list[str]:
    import matplotlib.pyplot as plt
    import optuna

    made = []
    plots = {
        "optuna_history.png": optuna.visualization.matplotlib.plot_optimization_history,
        "optuna_param_importances.png": optuna.visualization.matplotlib.plot_param_importances,
    }
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need two completed trials with varying params
        ax.figure.set_size_inches(7, 4.2)
        ax.figure.tight_layout()
        ax.figure.savefig(out / name, dpi=110)
        plt.close(ax.figure)
        made.append(name)
    return made


def write_report(study, spec: StudySpec, parent_run_id: str, root: Path = REPORT_ROOT) -> str:
    """Writes `reports/<study>/report.{md,html}` and PNGs; logs them to the parent run.

    Returns:
        The report folder.
    """
    import matplotlib

    matplotlib.use("Agg")
    import mlflow

    client = mlflow.MlflowClient()
    out = root / spec.name
    out.mkdir(parents=True, exist_ok=True)
    metric = spec.objective.metric
    maximize = spec.objective.direction == "maximize"
    points = collect(spec, parent_run_id)
    states = defaultdict(int)
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] += 1
    lines = [
        f"# Study `{spec.name}`",
        "",
        spec.description,
        "",
        f"Dataset `{spec.dataset.name}` (train `{spec.dataset.train_split}`), family `{spec.family}`, "
        f"{spec.epochs} epochs, sampler `{spec.sampler.type}`, pruner `{spec.pruner.type}`, seeds {spec.seeds}.",
        "Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) + ".",
        "",
    ]
    images = []
    if points:
        table = aggregate(points, maximize)
        best = (max if maximize else min)(points, key=lambda p: p.value)
        lines += [
            f"**Best trial**: {best.trial_number} — {metric} = {best.value:.4f} "
            f"({best.strategy}, depth {best.depth}, seed {best.seed}; MLflow run `{best.run_id}`).",
            "",
            f"## Final {metric} by strategy and depth",
            f"Mean ± {int(CONFIDENCE * 100)}% interval over seeds (best trial per seed), n = seeds.",
            "",
            markdown_table(table, metric),
            "",
        ]
        _plot_by_depth(table, "mean", "half", f"final {metric}", out / "objective_vs_depth.png", log_y=False)
        _plot_by_depth(table, "grad", "grad_half", "block_01 gradient norm (last epoch)", out / "first_block_grad_norm_vs_depth.png", log_y=True)
        _plot_best_curves(points, metric, maximize, out / "best_curves.png")
        images += ["objective_vs_depth.png", "first_block_grad_norm_vs_depth.png", "best_curves.png"]
        client.log_metric(parent_run_id, "best_value", best.value)
        client.set_tag(parent_run_id, "best_trial", str(best.trial_number))
        client.set_tag(parent_run_id, "best_run_id", best.run_id)
        for key in ("strategy", "depth", "width", "learning_rate", "seed"):
            client.set_tag(parent_run_id, f"best.{key}", best.params.get(key, ""))
    else:
        lines.append("No completed trials yet.")
    images += _plot_optuna(study, out)
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in images]
    markdown = "\n".join(lines) + "\n"
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(spec.name, markdown, images))
    client.log_artifacts(parent_run_id, str(out), artifact_path="report")
    return str(out)


def _html(title: str, markdown: str, images: list[str]) -> str:
    body = "\n".join(
        f"<p>{html.escape(line)}</p>" if not line.startswith("|") else f"<pre>{html.escape(line)}</pre>"
        for line in markdown.splitlines()
        if line and not line.startswith("![")
    )
    pictures = "\n".join(f'<figure><img src="{n}" alt="{n}"><figcaption>{n}</figcaption></figure>' for n in images)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>{body}{pictures}</body></html>"
