"""The report's plots: isolation, paired differences, gradient norm vs depth.

The x axis is `depth` when it is compared (else the first compared knob other
than the contrast); every other compared knob stays visible as its own series.
"""

from __future__ import annotations

from pathlib import Path

from reuse_nets.design.study_spec import StudySpec
from reuse_nets.report import analysis
from reuse_nets.report.analysis import FinalRun
from reuse_nets.runtime import disk

PNG_DPI = 110  # the report's plots


def x_axis(spec: StudySpec) -> str | None:
    others = [n for n in spec.compare if n != spec.contrast]
    return "depth" if "depth" in others else (others[0] if others else None)


def _series(spec: StudySpec, x: str | None) -> dict[str, list[tuple]]:
    """Series label (every compared value but x) -> [(x value, cell key)] along the x axis."""
    groups: dict[str, list] = {}
    for cell in spec.cells():
        label = ", ".join(f"{n}={v}" for n, v in cell.values.items() if n != x)
        groups.setdefault(label or "all", []).append((cell.values[x] if x else 0, cell.key))
    return groups


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _axes(ax, spec: StudySpec, x: str | None, xs) -> None:
    if x and _numeric(xs) and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(x or spec.contrast)
    ax.grid(alpha=0.3)


def write_plots(spec: StudySpec, runs: list[FinalRun], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x_axis(spec)
    metric = spec.objective.test_metric
    made = []

    # Isolation plot: the best tuned config of each cell, retrained, with intervals.
    per_cell = analysis.by_cell(runs, repeated=spec.repeats > 1)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    xs_all = []
    for label, points in _series(spec, x).items():
        pts = [(xv, per_cell[key]) for xv, key in points if key in per_cell]
        if not pts:
            continue
        xs_all += [p[0] for p in pts]
        ax.errorbar(
            [p[0] for p in pts],
            [p[1].mean for p in pts],
            yerr=[p[1].half for p in pts],
            marker="o",
            capsize=3,
            label=label,
        )
    _axes(ax, spec, x, xs_all)
    ax.set_ylabel(f"{metric} (mean ± 95% CI over final seeds)")
    ax.set_title("isolation: each cell's selected config, retrained")
    made.append(_save(fig, ax, out / "isolation.png"))

    # Paired differences against the baseline, per condition.
    differences = analysis.paired_differences(spec, runs)
    if differences:
        fig, ax = plt.subplots(figsize=(7, 4.4))
        labels: dict[str, list[analysis.Difference]] = {}
        for d in differences:
            if x and x not in d.condition:
                continue  # a declared contrast over the x knob itself has no place on that axis
            rest = ", ".join(f"{n}={v}" for n, v in d.condition.items() if n != x)
            labels.setdefault(d.label + (f" ({rest})" if rest else ""), []).append(d)
        xs_all = []
        for label, diffs in labels.items():
            diffs = [d for d in diffs if d.interval.n]
            xs = [d.condition.get(x, 0) if x else 0 for d in diffs]
            xs_all += xs
            ax.errorbar(
                xs,
                [d.interval.mean for d in diffs],
                yerr=[d.interval.half for d in diffs],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        _axes(ax, spec, x, xs_all or [1])
        ax.set_ylabel(f"paired difference in {metric}")
        ax.set_title("paired by seed, 95% CI")
        made.append(_save(fig, ax, out / "paired_differences.png"))

    made.append(_learning_curves(spec, runs, x, out))

    # Gradient norm of the first and the last block against depth (final runs, last epoch).
    if "depth" in spec.compare:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, which, title in (
            (axes[0], "grad_first", "first block (block_01)"),
            (axes[1], "grad_last", "last block"),
        ):
            groups: dict[str, dict] = {}
            for run in runs:
                label = ", ".join(f"{n}={v}" for n, v in run.values.items() if n != "depth") or "all"
                groups.setdefault(label, {}).setdefault(run.values["depth"], []).append(getattr(run, which))
            for label, by_depth in groups.items():
                depths = sorted(by_depth)
                intervals = [analysis.mean_interval(by_depth[d]) for d in depths]
                ax.errorbar(
                    depths,
                    [i.mean for i in intervals],
                    yerr=[i.half for i in intervals],
                    marker="o",
                    capsize=3,
                    label=label,
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("depth")
            ax.set_title(f"gradient norm, {title}")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("epoch-mean gradient norm (last epoch)")
        axes[0].legend(fontsize="small")
        fig.tight_layout()
        _save_png(fig, out / "grad_norm_vs_depth.png")
        plt.close(fig)
        made.append("grad_norm_vs_depth.png")
    return made


def _learning_curves(spec: StudySpec, runs: list[FinalRun], x: str | None, out: Path) -> str:
    """The selection metric per epoch, mean and 95% band over final seeds: one panel per x value."""
    import matplotlib.pyplot as plt

    curves = analysis.learning_curves(runs)
    panels: dict = {}
    for cell in spec.cells():
        if cell.key in curves:
            label = ", ".join(f"{n}={v}" for n, v in cell.values.items() if n != x) or "all"
            panels.setdefault(cell.values[x] if x else "all", []).append((label, curves[cell.key]))
    columns = min(4, len(panels)) or 1
    rows = -(-len(panels) // columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), sharey=True, squeeze=False)
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        for label, intervals in series:
            epochs = range(1, len(intervals) + 1)
            means = [i.mean for i in intervals]
            ax.plot(epochs, means, label=label)
            ax.fill_between(epochs, [i.low for i in intervals], [i.high for i in intervals], alpha=0.2, linewidth=0)
        ax.set_title(f"{x}={panel}" if x else "all cells", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes[0][0].set_ylabel(f"{spec.objective.metric} (mean, 95% band)")
    axes[0][0].legend(fontsize="x-small")
    fig.tight_layout()
    _save_png(fig, out / "learning_curves.png")
    plt.close(fig)
    return "learning_curves.png"


def _save(fig, ax, path: Path) -> str:
    """Adds the legend, saves and closes the figure; returns the file's name."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize="small")
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return path.name


def _save_png(fig, path: Path) -> None:
    """Saves `fig` as `path`, replacing an older plot only once whole (`disk.write_atomically`)."""
    disk.write_atomically(path, lambda temporary: fig.savefig(temporary, dpi=PNG_DPI, format="png"))
