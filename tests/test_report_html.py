"""Tests of the HTML report: real HTML from report.md, local images, offline plotly figures.

Unit tests render hand-written Markdown and a hand-made Optuna storage; the end-to-end
tests read the report.html of a real tiny tuned study (see `tiny_study`), parsed
with the standard library's HTML parser.
"""

from html.parser import HTMLParser
from pathlib import Path

import mlflow
import optuna
import pytest
import tiny_study

from reuse_nets.design import plan, study_files
from reuse_nets.design.selection import Chosen
from reuse_nets.errors import plain_text
from reuse_nets.report import html_page as report_html

VOID_TAGS = {"meta", "img", "br", "hr", "link", "input", "col", "source"}
RAW_TEXT_TAGS = {"script", "style"}  # their content is code, not text a reader sees


class Page(HTMLParser):
    """A parsed page: start tags with attributes, visible text lines, table rows, and nesting errors."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self.errors: list[str] = []
        self._open: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()
        if self._open:
            self.errors.append(f"unclosed: {self._open}")

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID_TAGS:
            self._open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            return
        if not self._open or self._open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self._open[-1] if self._open else 'nothing'}")
            return
        self._open.pop()
        if tag in ("td", "th"):
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._open and self._open[-1] in RAW_TEXT_TAGS:
            return
        if self._cell is not None:
            self._cell.append(data)
        self.text += [line.strip() for line in data.splitlines() if line.strip()]

    def all(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]


def markdown_rows(markdown: str) -> list[list[str]]:
    """The cells of every Markdown table row (separator rows left out)."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def assert_no_raw_markdown(page: Page) -> None:
    for line in page.text:
        assert not line.startswith(("# ", "## ", "|", "![")), line


SAMPLE = """# Study `demo`

A <b>description</b> with markup that must stay text.

## Results

| cell | value |
|---|---|
| strategy=plain,depth=1 | 0.5000 |
| strategy=residual,depth=1 | 0.6000 |

> warning: a range edge

![isolation.png](isolation.png)
"""


# --- Unit tests: the renderer on hand-written input ------------------------------------


def test_markdown_becomes_headings_tables_and_relative_images():
    page = Page(report_html.document("demo", report_html.render_markdown(SAMPLE), with_plotly=False))

    assert not page.errors
    assert len(page.all("h1")) == 1 and len(page.all("h2")) == 1
    assert page.rows == markdown_rows(SAMPLE)
    assert page.all("img") == [{"src": "isolation.png", "alt": "isolation.png"}]
    assert page.all("blockquote")
    assert page.all("title") and "demo" in page.text
    assert_no_raw_markdown(page)


def test_raw_html_in_the_text_is_escaped_not_rendered():
    page = Page(report_html.render_markdown(SAMPLE))

    assert not page.all("b")
    assert "A <b>description</b> with markup that must stay text." in page.text


HOSTILE_DESCRIPTION = (
    "Looks harmless.\n\n## Verdict\n\n- residual is better\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "![tracker](https://evil.example/pixel.png) [click](http://evil.example) <img src=x onerror=alert(1)>"
)


def test_a_description_adds_no_structure_and_loads_nothing_remote():
    """User text in the report stays one paragraph of text, whatever Markdown or HTML it holds."""
    markdown = f"# Study `demo`\n\n{plain_text(HOSTILE_DESCRIPTION)}\n\n## Verdict\n\n- the real one\n"
    page = Page(report_html.document("demo", report_html.render_markdown(markdown), with_plotly=False))

    assert len(page.all("h2")) == 1  # only the real verdict heading
    assert not page.all("img") and not page.all("a") and not page.all("table") and len(page.all("li")) == 1
    assert " ".join(HOSTILE_DESCRIPTION.split()) in page.text  # shown as written, on one line
    # Defence in depth: an image the report itself names must be a file beside it.
    remote = report_html.render_markdown(
        "![x](https://evil.example/x.png)\n\n![y](//evil.example/y.png)\n\n![z](z.png)"
    )
    assert Page(remote).all("img") == [{"src": "z.png", "alt": "z"}]


def test_a_page_without_figures_loads_no_script():
    page = Page(report_html.document("demo", "<p>x</p>", with_plotly=False))

    assert not page.all("script")
    assert page.all("style")


def tiny_spec():
    return study_files.load_study(str(tiny_study.STUDY_FILE))


def add_tuning_trials(storage: str, spec, cell, values: list[tuple[float, float | None]]):
    """A cell's tuning study holding trials of (learning rate, value); value None: FAIL."""
    study = optuna.create_study(storage=storage, study_name=plan.tune_study_name(spec, cell), direction="maximize")
    distribution = optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)
    for rate, value in values:
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": rate},
                distributions={"learning_rate": distribution},
                value=value,
                state=state,
            )
        )


def test_tuning_figures_cover_cells_with_complete_trials_and_skip_the_rest(tmp_path):
    spec = tiny_spec()
    storage = f"sqlite:///{tmp_path}/optuna.db"
    plain, residual = spec.cells()
    add_tuning_trials(storage, spec, plain, [(0.002, 0.4), (0.01, 0.5)])
    add_tuning_trials(storage, spec, residual, [(0.004, None)])  # no COMPLETE trial: not drawn
    selection = {plain.key: Chosen(trial=1, value=0.5, params={"learning_rate": 0.01}), residual.key: None}

    figures, notes = report_html.tuning_figures(spec, storage, selection)

    assert not notes
    assert len(figures) == 1 + len(spec.tune.search_space)  # history + one per tuned knob
    names = {trace.name for figure in figures for trace in figure.data if trace.name}
    assert any(plain.key in name for name in names)
    assert not any(residual.key in name for name in names)
    assert not any(plan.tune_study_name(spec, plain) in name for name in names)  # renamed to the cell
    star = next(t for t in figures[1].data if t.name == f"{plain.key} (selected)")
    assert (tuple(star.x), tuple(star.y)) == ((0.01,), (0.5,))
    assert figures[1].layout.xaxis.type == "log"


def test_a_figure_that_fails_becomes_a_note_not_an_error(tmp_path, monkeypatch):
    spec = tiny_spec()
    storage = f"sqlite:///{tmp_path}/optuna.db"
    add_tuning_trials(storage, spec, spec.cells()[0], [(0.002, 0.4)])

    def refuse(*args):
        raise ValueError("Cannot evaluate parameter importances with only a single trial.")

    monkeypatch.setattr(report_html, "history_figure", refuse)
    figures, notes = report_html.tuning_figures(spec, storage, {})

    assert len(figures) == len(spec.tune.search_space)
    assert notes == [
        "figure 'search progress' skipped: Cannot evaluate parameter importances with only a single trial."
    ]


def test_a_plain_grid_has_no_tuning_figures_and_reads_no_storage():
    spec = study_files.load_study("smoke")

    assert report_html.tuning_figures(spec, storage=None, selection={}) == ([], [])


# --- End to end: the report of a real tiny tuned study ----------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study.finished_study(tmp_path_factory)


@pytest.fixture(scope="module")
def page(study):
    return Page((study.report_dir / "report.html").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_the_report_page_is_well_formed_html_with_headings_and_no_raw_markdown(study, page):
    assert not page.errors
    assert len(page.all("h1")) == 1
    assert len(page.all("h2")) >= 5  # design, verdict, budget, per cell, differences, plots, tuning
    assert page.all("title") and f"Study {study.spec.name}: reuse-nets report" in page.text
    assert_no_raw_markdown(page)


@pytest.mark.slow
def test_the_report_tables_hold_the_markdown_reports_rows(study, page):
    markdown = (study.report_dir / "report.md").read_text()

    assert len(page.all("table")) == markdown.count("\n|---")
    assert page.rows == markdown_rows(markdown)
    assert {cell.key for cell in study.spec.cells()} <= {row[0] for row in page.rows}


@pytest.mark.slow
def test_the_report_images_are_relative_and_beside_it(study, page):
    sources = [attrs["src"] for attrs in page.all("img")]

    assert sources
    assert sorted(sources) == sorted(path.name for path in study.report_dir.glob("*.png"))
    for source in sources:
        assert "/" not in source and ":" not in source, source
        assert (study.report_dir / source).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_the_plotly_figures_load_the_bundle_beside_the_page_once_and_no_cdn(study, page):
    text = (study.report_dir / "report.html").read_text(encoding="utf-8")
    scripts = [attrs["src"] for attrs in page.all("script") if "src" in attrs]
    figures = [attrs for attrs in page.all("div") if "plotly-graph-div" in attrs.get("class", "")]

    assert scripts == [report_html.PLOTLY_JS]
    bundle = study.report_dir / report_html.PLOTLY_JS
    assert bundle.stat().st_size > 1_000_000 and "plotly" in bundle.read_text(encoding="utf-8")[:2000].lower()
    assert len(figures) == 1 + len(study.spec.tune.search_space)
    assert "https://cdn" not in text and "cdn.plot.ly" not in text
    for cell in study.spec.cells():
        assert f"{study.spec.objective.metric} of {cell.key}" in text  # history traces named by cell


@pytest.mark.slow
def test_the_page_and_bundle_are_logged_to_the_parent_run(study):
    client = mlflow.MlflowClient(tracking_uri=study.tracking_uri)
    experiment = client.get_experiment_by_name(study.spec.name)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`reuse_nets.kind` = 'study'")
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}

    assert {"report.md", "report.html", report_html.PLOTLY_JS} <= logged
    assert {path.name for path in study.report_dir.iterdir()} == logged
