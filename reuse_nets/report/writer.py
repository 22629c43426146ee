"""A study's report, computed from what the Optuna and MLflow stores hold.

Its numbers are test metrics of the final runs: each cell's best tuning config
(selected on validation) retrained with the final seeds. Contents: the design,
the tuning budget per cell (with range-edge warnings), mean test metric per cell
with 95% intervals, paired differences against the baseline, the verdict in
words, and plots (isolation, paired differences, gradient norm vs depth).
"""

from __future__ import annotations

import dataclasses
import math
import urllib.parse
from pathlib import Path

from reuse_nets.design import datasets, plan
from reuse_nets.design.selection import Selection
from reuse_nets.design.study_spec import REPEAT_SEED_STRIDE, StudySpec
from reuse_nets.design.trial_config import TrialConfig
from reuse_nets.errors import SweepError, plain_text
from reuse_nets.names import (
    CAPACITY_METRICS,
    CELL_TAG,
    EPOCHS_TRAINED_METRIC,
    GRAD_NORM_PREFIX,
    NOTE_TAG,
    OUTCOME_ATTR,
    PLATEAU_METRIC,
    REPEAT_TAG,
    SELECTED_PREFIX,
    TrialState,
    Verdict,
)
from reuse_nets.nn import capacity
from reuse_nets.report import analysis
from reuse_nets.report import html_page as report_html
from reuse_nets.report.analysis import FinalRun
from reuse_nets.runtime import disk
from reuse_nets.store import optuna_store, readback

REPORT_ROOT = Path("reports")  # beside mlflow.db, in the working directory
NOTE_LIMIT = 7800  # characters of the report kept as the parent run's description (MLflow: 8000)


def collect_final_runs(spec: StudySpec, parent_run_id: str, storage=None) -> list[FinalRun]:
    """The study's COMPLETE final-phase runs, read back from MLflow.

    With `storage`, only the runs of the final study's COMPLETE trials count (one
    per slot): a run another storage made under the same name, or a duplicate of a
    trial judged dead while it still ran, is left out.
    """
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    cells = {cell.key: cell for cell in spec.cells()}
    found = []
    for run in readback.completed_final_runs(client, experiment_id, parent_run_id, spec, storage):
        cell_tag = run.data.tags.get(CELL_TAG)
        cell = cells.get(cell_tag) if cell_tag is not None else None
        metrics = run.data.metrics
        if cell is None or spec.objective.test_metric not in metrics:
            continue
        depth = int(run.data.params["depth"])
        curve = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, spec.objective.metric))
        counts = {measure: _count(metrics, key) for measure, key in CAPACITY_METRICS.items()}
        if None in counts.values():  # logged before this count existed: counted from the run's own config
            from reuse_nets.store import tracking

            config = TrialConfig.model_validate(tracking.read_config(run.info.run_id))
            counted = capacity.of_config(config, *datasets.features(config.dataset.name))
            counts = {
                measure: counts[measure] if counts[measure] is not None else counted.of(measure) for measure in counts
            }
        found.append(
            FinalRun(
                run_id=run.info.run_id,
                cell=cell.key,
                values=cell.values,
                seed=int(run.data.params["seed"]),
                repeat=int(run.data.tags.get(REPEAT_TAG, 0)),
                test=metrics[spec.objective.test_metric],
                # The validation metric of the weights it ended with (logged since early stopping existed).
                val=metrics.get(SELECTED_PREFIX + spec.objective.metric, metrics[spec.objective.metric]),
                patience=None
                if run.data.params.get("patience", "None") == "None"
                else int(run.data.params["patience"]),
                epochs_trained=int(metrics[EPOCHS_TRAINED_METRIC]) if EPOCHS_TRAINED_METRIC in metrics else None,
                plateaued=bool(metrics[PLATEAU_METRIC]) if PLATEAU_METRIC in metrics else None,
                grad_first=metrics.get(f"{GRAD_NORM_PREFIX}block_01", float("nan")),
                grad_last=metrics.get(f"{GRAD_NORM_PREFIX}block_{depth:02d}", float("nan")),
                curve=tuple(value for _, value in curve),
                width=int(run.data.params["width"]),
                trainable_params=counts["trainable_params"],
                effective_params=counts["effective_params"],
                flops=counts["flops"],
            )
        )
    return sorted(found, key=lambda r: (list(cells).index(r.cell), r.repeat, r.seed))


def _count(metrics: dict, key: str) -> int | None:
    return int(metrics[key]) if key in metrics else None


def final_status(spec: StudySpec, storage) -> dict[str, dict[str, int]]:
    """Per cell: final slots complete, failed (diverged, error, or died past max_retry) and not yet run."""
    study = optuna_store.load_existing(storage, plan.final_study_name(spec))
    selection = optuna_store.stored_selection(study) if study is not None else None
    status = {cell.key: {"complete": 0, "failed": 0, "pending": 0} for cell in spec.cells()}
    if selection is None:
        return status
    by_slot = optuna_store.slot_trials(study)
    for slot, (cell, _) in enumerate(plan.final_job(spec, selection).slots):
        trials = by_slot.get(slot, [])
        if any(t.state.name == TrialState.COMPLETE for t in trials):
            status[cell.key]["complete"] += 1
        elif any(optuna_store.is_finished(t) for t in trials) or optuna_store.deaths(trials) > spec.execution.max_retry:
            status[cell.key]["failed"] += 1  # diverged, raised, or died more often than retried
        else:
            status[cell.key]["pending"] += 1
    return status


def budget_rows(spec: StudySpec, storage) -> list[dict]:
    """Per cell (and tuning repeat): tuning trials by how they ended (slots, so retries count once),
    and each pruned or failed one in words (`stopped`)."""
    rows = []
    for cell, repeat in plan.units(spec):
        counts = {"complete": 0, "pruned": 0, "failed": 0, "died": 0}
        stopped = []
        name = plan.tune_study_name(spec, cell, repeat)
        study = optuna_store.load_existing(storage, name) if spec.tune else None
        for trials in optuna_store.slot_trials(study).values() if study else ():
            ended = [t for t in trials if optuna_store.is_finished(t)]
            counts["died"] += optuna_store.deaths(trials)
            if ended:
                state = ended[0].state.name
                counts[state.lower() if state in (TrialState.COMPLETE, TrialState.PRUNED) else "failed"] += 1
                if state != TrialState.COMPLETE:
                    stopped.append(_stopped_trial(ended[0]))
        rows.append({"cell": plan.unit_key(spec, cell, repeat), **counts, "stopped": stopped})
    return rows


def _stopped_trial(trial) -> str:
    """`trial 3 (learning_rate=0.01): pruned after epoch 4`, or its outcome when it failed."""
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    if trial.state.name == TrialState.PRUNED:
        how = f"pruned after epoch {max(trial.intermediate_values, default=0)}"
    else:
        how = str(trial.user_attrs.get(OUTCOME_ATTR, "failed"))
    return f"trial {trial.number} ({params}): {how}"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _fixed_knobs(spec: StudySpec) -> str:
    varied = set(spec.compare) | set(spec.tune.search_space if spec.tune else ()) | {"dataset", "seed"}
    if spec.match is not None:
        varied.add(spec.match.solve)
    return ", ".join(
        f"{name} {_fmt(getattr(spec.base, name))}" for name in spec.base.model_fields if name not in varied
    )


def _interval(i: analysis.Interval, sign: str = "", unit: str = "seed") -> str:
    if i.n < 2:
        return f"{i.mean:{sign}.4f} ({analysis.no_interval(unit)})"
    return f"{i.mean:{sign}.4f} ± {i.half:.4f}"


def build_markdown(
    spec: StudySpec,
    runs: list[FinalRun],
    budget: list[dict],
    selection: Selection,
    status: dict[str, dict[str, int]],
    images: list[str],
) -> str:
    metric, test_metric = spec.objective.metric, spec.objective.test_metric
    cells = spec.cells()
    dataset = spec.base.dataset
    lines = [f"# Study `{spec.name}`", "", plain_text(spec.description), ""]
    lines += [
        "## Design",
        f"- Compared: {'; '.join(f'{n} {v}' for n, v in spec.compare.items())} ({len(cells)} cells).",
        (
            f"- Tuned per cell: {', '.join(spec.tune.search_space)} with {spec.tune.trials_per_cell} trials per cell, "
            f"{plan.sampler_text(spec.tune.sampler)} sampler, {spec.tune.pruner.type} pruner within the cell, "
            f"tuning seed {spec.base.seed}; selected on final-epoch {metric}."
            + (
                f" Repeated {spec.repeats} times independently (repeat r shifts every seed by "
                f"r x {REPEAT_SEED_STRIDE}): intervals and verdicts rest on the repeats' means, so they include "
                "the variance between tuning runs."
                if spec.repeats > 1
                else ""
            )
            if spec.tune
            else "- Tuned: nothing (a plain grid; every cell runs the base config)."
        ),
        f"- Final: the selected config of each cell{' and repeat' if spec.repeats > 1 else ''} retrained with seeds "
        f"{spec.all_final_seeds()}; "
        f"numbers below are {test_metric} on `{dataset.test_split}`.",
        *_match_lines(spec),
        f"- Fixed: dataset `{dataset.name}` (train `{dataset.train_split}`, validation `{dataset.validation_split}`); "
        f"{_fixed_knobs(spec)}.",
        "",
    ]
    differences = analysis.paired_differences(spec, runs)
    assessed = analysis.assess(spec, differences)
    lines += ["## Verdict", "", f"How decided: {analysis.family_text(spec, assessed)}", ""]
    pending = sum(s["pending"] for s in status.values())
    if pending:
        lines.append(
            f"- **Incomplete:** {pending} final run(s) have not run yet; the numbers are over those that have."
        )
    for key, counts in status.items():
        if counts["failed"]:
            total = counts["complete"] + counts["failed"] + counts["pending"]
            lines.append(
                f"- **Warning:** {key}: {counts['failed']} of {total} final runs failed (diverged, error, or their process died past execution.max_retry); "
                "its numbers are over the others, and the pairs with those seeds are left out."
            )
    if runs:
        edges = analysis.edge_notes(spec, selection)
        lines += [f"- {analysis.verdict(spec, a, test_metric, edges)}" for a in assessed] or [
            "- Only one compared value: nothing to contrast."
        ]
    else:
        lines.append("- No final runs have finished yet: no verdict.")
    lines.append("")
    if spec.tune:
        warnings = analysis.edge_warnings(spec, selection)
        lines += [
            "## Tuning budget and selection",
            "",
            f"| cell | complete | pruned | failed | died (retried) | selected | {metric} | pruned and failed trials |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in budget:
            chosen = selection.get(row["cell"]) if selection else None
            picked = ", ".join(f"{k}={_fmt(v)}" for k, v in chosen.params.items()) if chosen else "none"
            value = f"{chosen.value:.4f}" if chosen else ""
            lines.append(
                f"| {row['cell']} | {row['complete']} | {row['pruned']} | {row['failed']} | {row['died']} | {picked} "
                f"| {value} | {'; '.join(row['stopped'])} |"
            )
        lines += [""] + [f"> warning: {w}" for w in warnings] + ([""] if warnings else [])
    per_cell = analysis.by_cell(runs, repeated=spec.repeats > 1)
    val_cell = analysis.by_cell(runs, "val", repeated=spec.repeats > 1)
    over = f"the {spec.repeats} tuning repeats' means (n: repeats)" if spec.repeats > 1 else "the final seeds"
    unit = "tuning repeat" if spec.repeats > 1 else "seed"
    lines += [
        f"## Final {test_metric} per cell",
        f"Mean ± {int(analysis.CONFIDENCE * 100)}% Student-t interval over {over} "
        "(no interval for one); failed: final runs that diverged, raised, or died past max_retry.",
        "",
        f"| cell | {test_metric} | n | failed | {metric} |",
        "|---|---|---|---|---|",
    ]
    for cell in cells:
        i, failed = per_cell.get(cell.key), status.get(cell.key, {}).get("failed", 0)
        if i is None:
            lines.append(f"| {cell.key} | no finished final run | 0 | {failed} | |")
        else:
            lines.append(
                f"| {cell.key} | {_interval(i, unit=unit)} | {i.n} | {failed} | {val_cell[cell.key].mean:.4f} |"
            )
    lines.append("")
    if differences:
        against = "the other value" if spec.report.pairs == "all" else str(spec.baseline)
        lines += [
            f"## Paired differences ({spec.contrast} value − {against}, {'same repeat and seed; tests over repeat means' if spec.repeats > 1 else 'same seed'})",
            f"p: two-sided, unadjusted; adjusted: {spec.report.adjust.capitalize()} over the {len(assessed)} comparisons "
            f"within the direction of the difference, for the {'t-test' if spec.report.test == 't' else 'sign-flip test'}; "
            f"verdict CI: the interval the verdict is read from, the simultaneous {100 * (1 - spec.report.alpha):.4g}% "
            "interval compatible with the adjusted tests (0 bounds a claimed side), or for an equivalent comparison "
            "TOST's interval (its confidence beside it), which lies inside ±min_effect exactly then; "
            "bootstrap: percentile, 95%, which under-covers below about 10 seeds (a check; no verdict rests on it).",
            *_declared_contrasts(spec),
            "",
            f"| condition | {spec.contrast} | mean diff | 95% CI | verdict CI | bootstrap CI | p (t) | p (sign-flip) "
            f"| adjusted p | verdict | wins | per-{'repeat' if spec.repeats > 1 else 'seed'} |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for a in assessed:
            d = a.difference
            where = ", ".join(f"{n}={v}" for n, v in d.condition.items()) or "all"
            label = d.value if spec.report.pairs == "baseline" and not d.declared else d.label
            i = d.interval
            if not i.n:
                lines.append(f"| {where} | {label} | no paired runs | | | | | | | | | |")
                continue
            ci = _pair(i.low, i.high) if i.n >= 2 else analysis.no_interval(d.unit)
            lines.append(
                f"| {where} | {label} | {i.mean:+.4f} | {ci} | {_verdict_interval(a)} "
                f"| {_pair(*a.bootstrap)} | {_p(a.p_t)} | {_p(a.p_sign_flip)} | {_p(a.p_adjusted)} | {a.verdict} "
                f"| {d.wins}/{i.n} | {', '.join(f'{x:+.4f}' for x in d.diffs)} |"
            )
        lines.append("")
    lines += _tuning_variance(spec, runs, differences)
    lines += _capacity_and_convergence(spec, runs, selection)
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def _declared_contrasts(spec: StudySpec) -> list[str]:
    """What each declared contrast (`report.contrasts`) computes per seed, in words."""
    lines = []
    for c in spec.report.contrasts:
        factors = " × ".join(f"({knob}={spec.compare[knob][1]} − {knob}={spec.compare[knob][0]})" for knob in c.of)
        averaged = f", averaged over {', '.join(c.average)}" if c.average else ""
        kind = "interaction" if len(c.of) > 1 else "effect"
        lines.append(f"Declared contrast **{c.name}**: the {kind} {factors}{averaged}, per seed; in the family above.")
    return [""] + lines if lines else []


def findings(
    spec: StudySpec, runs: list[FinalRun], selection: Selection, status: dict[str, dict[str, int]]
) -> list[str]:
    """The verdict for a terminal, in plain text: one line per comparison, then the warnings that matter."""
    assessed = analysis.assess(spec, analysis.paired_differences(spec, runs))
    if runs:
        edges = analysis.edge_notes(spec, selection)
        lines = [analysis.verdict_line(spec, a, spec.objective.test_metric, edges) for a in assessed] or [
            "only one compared value: nothing to contrast"
        ]
    else:
        lines = ["no final runs have finished yet: no verdict"]
    pending = sum(counts["pending"] for counts in status.values())
    if pending:
        lines.append(f"incomplete: {pending} final run(s) have not run yet; the numbers are over those that have")
    lines += [
        f"warning: {key}: {counts['failed']} of {sum(counts.values())} final runs failed"
        for key, counts in status.items()
        if counts["failed"]
    ]
    lines += [f"warning: {warning}" for warning in analysis.edge_warnings(spec, selection)]
    rising = [key for key, c in analysis.convergence(spec, runs).items() if c.rising]
    if rising:
        lines.append(f"warning: {len(rising)} cell(s) still rising at the last epoch: {', '.join(rising)}")
    return lines


def _verdict_interval(a: analysis.Assessed) -> str:
    """The verdict's interval; an equivalent one's is TOST's, at the confidence of the step that decided it."""
    shown = _pair(*a.verdict_interval)
    return f"{shown} ({a.interval_label})" if a.verdict == Verdict.EQUIVALENT else shown


def _pair(low: float, high: float) -> str:
    return "n/a" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3g}"


def _match_lines(spec: StudySpec) -> list[str]:
    if spec.match is None:
        return []
    knob, value = spec.match_reference
    return [
        f"- Matched: each cell's {spec.match.solve} solved so that its {spec.match.measure} is within "
        f"{spec.match.tolerance:.0%} of the {knob}={value} cell with the same other values "
        f"(solved: {', '.join(f'{c.key} {v}' for c in spec.cells() for v in spec.matched(c).values())})."
    ]


def _capacity_and_convergence(spec: StudySpec, runs: list[FinalRun], selection: Selection) -> list[str]:
    """Per cell: what it trained (width, parameters, FLOPs, selected values) and whether it had plateaued."""
    if not runs:
        return []
    metric = spec.objective.metric
    converged = analysis.convergence(spec, runs)
    stopped = analysis.stopping(runs)
    first: dict[str, FinalRun] = {}
    for r in runs:
        first.setdefault(r.cell, r)
    lines = [
        "## Capacity and convergence per cell",
        "What each cell trained (read back from its final runs), and whether its final runs were still improving. "
        "Effective parameters leave out those that can never learn (kernel rows behind a fixed mask); a run "
        "logged before a count existed is counted from its logged config. "
        f"Gain: {metric} at the last epoch minus k epochs before (the last quarter), paired by run, mean and 95% "
        "interval. Still rising: **yes** when the whole interval shows improvement (a longer budget could change "
        "the comparison), *falling* when it shows a decline (overfitting), *no evidence* otherwise: with few "
        "seeds that is not proof of a plateau. Learning curves: `learning_curves.png`, and "
        "`learning_curves.csv` per epoch. With early stopping (`patience`) the gain test does not apply: "
        "epochs trained (mean, fewest-most) and how many final runs a plateau stopped versus the epoch cap "
        "stand in its place, and the metric is the best epoch's, whose weights the run kept.",
        "",
        f"| cell | width | trainable params | effective params | FLOPs/example | selected | {metric} (last epoch) "
        "| gain over last k epochs | k | still rising | epochs trained | plateau / cap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in spec.cells():
        run = first.get(cell.key)
        if run is None:
            continue
        picked = _selected_text(spec, selection, cell) if spec.tune else "base"
        params = f"{run.trainable_params:,}" if run.trainable_params is not None else "not logged"
        effective = f"{run.effective_params:,}" if run.effective_params is not None else "not logged"
        flops = f"{run.flops:,}" if run.flops is not None else "not logged"
        c = converged.get(cell.key)
        last = _interval(c.last) if c else ""
        gain = _interval(c.gain, "+") if c else ""
        flag = _rising_flag(c)
        window = c.window if c else ""
        s = stopped.get(cell.key)
        if s is not None:
            last = _interval(analysis.mean_interval([r.val for r in runs if r.cell == cell.key]))
            gain, window, flag = "early stopping", "", ""
        epochs = f"{s.epochs.mean:.1f} ({s.fewest}-{s.most})" if s else "fixed budget"
        ends = f"{s.plateaued} / {s.capped}" if s else ""
        lines.append(
            f"| {cell.key} | {run.width} | {params} | {effective} | {flops} | {picked} | {last} | {gain} | {window} "
            f"| {flag} | {epochs} | {ends} |"
        )
    rising = [key for key, c in converged.items() if c.rising]
    if rising:
        lines += ["", f"> warning: {len(rising)} cell(s) still rising at the last epoch: {', '.join(rising)}"]
    capped = [f"{key} ({s.capped}/{s.plateaued + s.capped})" for key, s in stopped.items() if s.capped]
    if capped:
        lines += [
            "",
            f"> warning: final runs reached the epoch cap before a plateau in {len(capped)} cell(s): "
            f"{', '.join(capped)}; a higher cap could change the comparison",
        ]
    return lines + [""]


def _tuning_variance(spec: StudySpec, runs: list[FinalRun], differences: list[analysis.Difference]) -> list[str]:
    """With tuning repeated: how much of each result's spread is the tuning's, and the widened intervals."""
    if spec.repeats < 2 or not runs:
        return []
    test_metric = spec.objective.test_metric
    lines = [
        "## Tuning variance",
        f"Every cell was tuned, selected and retrained {spec.repeats} times independently. Variance of one run's "
        f"{test_metric} split into between tuning repeats and between seeds of one repeat (one-way random-effects "
        "ANOVA, method of moments, between part truncated at 0). 95% t intervals three ways: over repeat 0's seeds "
        "alone (what a study that tunes once reports), over every run as if independent (ignores the tuning), and "
        "over the repeats' means (what the verdicts use). Widened: the last interval's width over the second's "
        "(the same runs, with and without the tuning's variance).",
        "",
        "| what | SD between tuning | SD between seeds | tuning share | one tuning run | all runs as independent "
        "| over repeat means | widened |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [(key, analysis.variance_split(groups)) for key, groups in analysis.by_repeat(runs).items()]
    for d in differences:
        where = ", ".join(f"{n}={v}" for n, v in d.condition.items())
        label = (d.label if d.declared else f"{d.value} − {spec.baseline if d.reference is None else d.reference}") + (
            f" ({where})" if where else ""
        )
        rows.append((label, analysis.variance_split(d.by_repeat)))
    for label, split in rows:
        if split is None:
            lines.append(f"| {label} | one repeat finished | | | | | | |")
            continue
        widened = split.clustered.half / split.pooled.half if split.pooled.half > 0 else math.nan
        lines.append(
            f"| {label} | {_sd(split.between_tuning)} | {_sd(split.between_seed)} | {_share(split.tuning_share)} "
            f"| {_interval(split.single, '+')} | {_interval(split.pooled, '+')} "
            f"| {_interval(split.clustered, '+', 'tuning repeat')} "
            f"| {'n/a' if math.isnan(widened) else f'{widened:.2f}x'} |"
        )
    return lines + [""]


def _sd(variance: float) -> str:
    return "n/a" if math.isnan(variance) else f"{math.sqrt(variance):.4f}"


def _share(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{share:.0%}"


def _selected_text(spec: StudySpec, selection: Selection, cell) -> str:
    """The cell's selected tuned values; one group per tuning repeat when there are several."""
    picks = []
    for repeat in range(spec.repeats):
        chosen = selection.get(plan.unit_key(spec, cell, repeat))
        picked = ", ".join(f"{k}={_fmt(v)}" for k, v in chosen.params.items()) if chosen else "none"
        picks.append(picked if spec.repeats == 1 else f"r{repeat}: {picked}")
    return "; ".join(picks)


def _rising_flag(c: analysis.Convergence | None) -> str:
    if c is None or c.gain.n < 2:
        return "n/a (one seed)" if c else "n/a"
    if c.rising:
        return "**yes**"
    return "*falling*" if c.gain.high < 0 else "*no evidence*"


def learning_curves_csv(spec: StudySpec, runs: list[FinalRun]) -> str:
    """Per cell and epoch (from 1, as logged and plotted): mean, interval half-width and n over final seeds."""
    rows = ["cell,epoch,mean,half_width_95,n"]
    curves = analysis.learning_curves(runs)
    for cell in spec.cells():
        for epoch, i in enumerate(curves.get(cell.key, [])):
            rows.append(f'"{cell.key}",{epoch + 1},{i.mean:.6f},{i.half:.6f},{i.n}')
    return "\n".join(rows) + "\n"


def artifact_link(run_id: str, path: str) -> str:
    """A link to a run's artifact, relative to the MLflow UI's server (its `get-artifact` route)."""
    return "get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})


@dataclasses.dataclass(frozen=True)
class Written:
    """A report written to its folder, with its verdict in plain text for a terminal (`findings`)."""

    folder: str
    findings: list[str]


def report_paths(folder: str) -> str:
    """Where a written report is, for a terminal."""
    return f"{folder}/report.md, {folder}/report.html"


def write_report(spec: StudySpec, storage, parent_run_id: str, root: Path = REPORT_ROOT) -> Written:
    """Writes `reports/<study>/report.{md,html}` and PNGs (see `report_html`); logs them to the parent run.

    Each file is replaced only once whole: a full disk leaves the previous report's
    files as they were (`runtime.disk.write_atomically`).

    Returns:
        The report folder and the verdict's plain-text lines (`findings`).

    Raises:
        DiskFull: no space left for the report folder, the parent run's artifacts or its stores.
    """
    import mlflow
    from mlflow.entities import RunTag

    from reuse_nets.report import plots as report_plots

    client = mlflow.MlflowClient()
    out = root / spec.name
    out.mkdir(parents=True, exist_ok=True)
    runs = collect_final_runs(spec, parent_run_id, storage)
    final = optuna_store.load_existing(storage, plan.final_study_name(spec))
    selection = (optuna_store.stored_selection(final) if final is not None else None) or {}
    with disk.guard(f"the report folder {out.absolute()}", out):
        images = report_plots.write_plots(spec, runs, out) if runs else []
        status = final_status(spec, storage)
        markdown = build_markdown(spec, runs, budget_rows(spec, storage), selection, status, images)
        disk.write_text(out / "report.md", markdown, point="report", context=spec.name)
        disk.write_text(out / "learning_curves.csv", learning_curves_csv(spec, runs))
        report_html.write_html(spec, storage, markdown, selection, out)
    with disk.guard(f"the artifacts of MLflow run {parent_run_id} (the report)"):
        client.log_artifacts(parent_run_id, str(out), artifact_path="report")
    # The parent run's description in the UI; MLflow keeps at most 8000 characters of a tag.
    # Its plots point at the logged copies, served by the UI's own server.
    for name in images:
        markdown = markdown.replace(f"]({name})", f"]({artifact_link(parent_run_id, 'report/' + name)})")
    note = (
        markdown
        if len(markdown) <= NOTE_LIMIT
        else markdown[:NOTE_LIMIT] + "\n\n… (cut here: the whole report is in report/report.md)"
    )
    # Through log_batch: runners on several machines finishing together set it at once,
    # and MLflow's SQL store retries that conflict only there.
    client.log_batch(parent_run_id, tags=[RunTag(NOTE_TAG, note)])
    return Written(str(out), findings(spec, runs, selection, status))


def check_report_root(root: Path = REPORT_ROOT) -> None:
    """Refuses, before any training, a reports folder that could not be written at the end."""
    import os

    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise SweepError(f"--reports {root}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SweepError(f"--reports {root}: folder {existing} is not writable")


def rebuild_report(
    spec: StudySpec, storage_url: str, tracking_uri: str | None, root: Path = REPORT_ROOT
) -> tuple[Written, str]:
    """Rebuilds a run study's report from the stores; returns (the written report, parent run id).

    Raises:
        SweepError: the study has no final runs or no parent run in these stores,
            or it was run from a different spec (other overrides).
    """
    storage, parent_run_id = readback.open_finished(spec, storage_url, tracking_uri)
    return write_report(spec, storage, parent_run_id, root), parent_run_id


def final_runs_of(spec: StudySpec, storage_url: str, tracking_uri: str | None) -> list[FinalRun]:
    """A run study's complete final runs, read from its stores (as the report reads them)."""
    storage, parent_run_id = readback.open_finished(spec, storage_url, tracking_uri)
    return collect_final_runs(spec, parent_run_id, storage)
