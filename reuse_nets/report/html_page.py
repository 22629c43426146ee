"""The report as a standalone HTML page: report.md rendered, plus interactive tuning plots.

The page works from a copied folder, offline (file://): the PNG plots are linked by
relative paths and plotly's JavaScript is a file beside it, never a CDN. The tuning
figures show whether every cell's search was equally good: its progress per trial
and where the selected value lies in the searched range.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import TYPE_CHECKING

from reuse_nets.design import plan
from reuse_nets.design.selection import Selection
from reuse_nets.design.study_spec import Range, StudySpec
from reuse_nets.errors import first_line
from reuse_nets.names import TrialState
from reuse_nets.runtime import disk
from reuse_nets.store import optuna_store

if TYPE_CHECKING:
    import optuna

HTML_FILE = "report.html"
PLOTLY_JS = "plotly.min.js"  # plotly's bundle, written beside the page when it has figures
MAX_PARAM_FIGURES = 4  # one "objective vs knob" figure per tuned knob, at most this many
FIGURE_HEIGHT = 420  # pixels
SELECTED_MARKER_SIZE = 14  # the selected trial of each cell, drawn over its cell's trials

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; color: #222; max-width: 980px; margin: 2em auto; padding: 0 1em; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
code { background: #f4f4f4; padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; margin: 1em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid #bbb; padding: .3em .6em; text-align: left; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
blockquote { border-left: 4px solid #e0a000; background: #fff8e5; margin: 1em 0; padding: .3em 1em; }
img { display: block; max-width: 100%; margin: 1em 0; }
.figure { margin: 1em 0 2em; }
.note { color: #666; font-style: italic; }
"""


def render_markdown(markdown: str) -> str:
    """CommonMark with tables; raw HTML in the text (e.g. a study description) stays escaped."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(markdown)
    for token in tokens:
        for child in token.children or ():
            # The page works offline and loads nothing: an image that is not a file
            # beside the report (a URL, scheme or protocol-relative) becomes its alt text.
            if child.type == "image" and not _local(str(child.attrGet("src") or "")):
                child.type, child.tag, child.attrs = "text", "", {}
                child.content = child.content or "(image)"
                child.children = None
    return parser.renderer.render(tokens, parser.options, {})


def _local(src: str) -> bool:
    """A relative path beside the report: no scheme (`http:`, `data:`), no `//host`, no absolute path."""
    import urllib.parse

    parts = urllib.parse.urlsplit(src)
    return not parts.scheme and not parts.netloc and not src.startswith(("/", "\\"))


def document(title: str, body: str, with_plotly: bool) -> str:
    """A whole HTML page around `body`; loads the local plotly bundle if it has figures."""
    script = f'<script src="{PLOTLY_JS}" charset="utf-8"></script>\n' if with_plotly else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n{script}</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def _tune_studies(spec: StudySpec, storage) -> dict[str, optuna.Study]:
    """Unit key (cell, and repeat) -> its Optuna tuning study, for those with at least one COMPLETE trial."""
    studies: dict[str, optuna.Study] = {}
    for cell, repeat in plan.units(spec) if spec.tune else ():
        study = optuna_store.load_existing(storage, plan.tune_study_name(spec, cell, repeat))
        if study is not None and optuna_store.trials_in(study, TrialState.COMPLETE):
            studies[plan.unit_key(spec, cell, repeat)] = study
    return studies


def history_figure(spec: StudySpec, studies: dict[str, optuna.Study]):
    """Optuna's optimization history of every cell in one figure, traces named by cell."""
    from optuna.visualization import plot_optimization_history

    figure = plot_optimization_history(list(studies.values()), target_name=spec.objective.metric)
    names = {study.study_name: key for key, study in studies.items()}
    for trace in figure.data:
        for study_name, key in names.items():
            if trace.name and study_name in trace.name:
                trace.name = trace.name.replace(study_name, key)
    figure.update_layout(title=f"Search progress per cell: {spec.objective.metric} by tuning trial")
    return figure


def knob_figure(spec: StudySpec, studies: dict[str, optuna.Study], name: str, selection: Selection):
    """The objective of every COMPLETE tuning trial against one tuned knob, by cell.

    Shows whether the cells were searched over the same range and whether the
    selected value (large marker) sits inside it or at an edge.
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    for index, (key, study) in enumerate(studies.items()):
        trials = optuna_store.trials_in(study, TrialState.COMPLETE)
        color = qualitative.Plotly[index % len(qualitative.Plotly)]  # the cell's trials and its star alike
        figure.add_trace(
            go.Scatter(
                x=[t.params.get(name) for t in trials],
                y=[t.value for t in trials],
                mode="markers",
                name=key,
                legendgroup=key,
                marker={"color": color},
                text=[f"trial {t.number}" for t in trials],
            )
        )
        chosen = selection.get(key)
        if chosen and name in chosen.params:
            figure.add_trace(
                go.Scatter(
                    x=[chosen.params[name]],
                    y=[chosen.value],
                    mode="markers",
                    name=f"{key} (selected)",
                    legendgroup=key,
                    showlegend=False,
                    marker={"size": SELECTED_MARKER_SIZE, "symbol": "star", "color": color},
                    text=[f"selected: trial {chosen.trial}"],
                )
            )
    if spec.tune is None:  # tuning studies come from a study's `tune` section
        raise ValueError(f"study {spec.name!r} has no tune section, so no tuned knob {name!r}")
    param = spec.tune.search_space[name]
    figure.update_xaxes(title=name, type="log" if isinstance(param, Range) and param.log else None)
    figure.update_yaxes(title=spec.objective.metric)
    figure.update_layout(title=f"{spec.objective.metric} vs {name}, every complete tuning trial (star: selected)")
    return figure


def tuning_figures(spec: StudySpec, storage, selection: Selection) -> tuple[list, list[str]]:
    """The interactive tuning figures, and one note per figure that could not be drawn.

    A plain grid, or a study whose tuning trials none completed, has none.
    """
    studies = _tune_studies(spec, storage)
    if not studies or spec.tune is None:  # no `tune` section: no tuning studies either
        return [], []
    builders = [("search progress", lambda: history_figure(spec, studies))]
    builders += [
        (f"{spec.objective.metric} vs {name}", functools.partial(knob_figure, spec, studies, name, selection))
        for name in list(spec.tune.search_space)[:MAX_PARAM_FIGURES]
    ]
    figures, notes = [], []
    for label, build in builders:
        try:
            figures.append(build())
        except (ValueError, KeyError, TypeError) as error:  # Optuna's refusals; a report never fails on a plot
            notes.append(f"figure '{label}' skipped: {first_line(error)}")
    return figures, notes


def figures_html(figures: list, notes: list[str]) -> str:
    """The figures as plotly divs (the bundle is loaded once, by the page), then the notes."""
    parts = []
    for index, figure in enumerate(figures):
        figure.update_layout(template="plotly_white", height=FIGURE_HEIGHT)
        div = figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"tuning-figure-{index}",
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f'<div class="figure">{div}</div>')
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in notes]
    return "\n".join(parts)


def write_html(spec: StudySpec, storage, markdown: str, selection: Selection, out: Path) -> list[str]:
    """Writes `out/report.html` (and `out/plotly.min.js` when it has figures).

    Returns:
        The names of the files written, relative to `out`.
    """
    body = render_markdown(markdown)
    figures, notes = tuning_figures(spec, storage, selection)
    if figures or notes:
        intro = (
            "Every cell was tuned with the same budget and sampler; these show how its search went. "
            "Hover for values; drag to zoom; double-click to reset."
        )
        body += f'<h2 id="tuning-figures">Tuning, interactive</h2>\n<p>{intro}</p>\n{figures_html(figures, notes)}\n'
    written = [HTML_FILE]
    if figures:
        from plotly.offline import get_plotlyjs

        disk.write_text(out / PLOTLY_JS, get_plotlyjs())
        written.append(PLOTLY_JS)
    page = document(f"Study {spec.name}: reuse-nets report", body, bool(figures))
    disk.write_text(out / HTML_FILE, page, point="html", context=spec.name)  # whole or not at all
    return written
