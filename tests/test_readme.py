"""The README and the docs cannot rot: every command in them is run, parsed, or names the test that runs it.

The pages checked are README.md and every docs/*.md page (the MkDocs site). Each ```bash
block (and the walk-through's ```python block) is preceded by a marker
`<!-- readme-test: KIND -->`:

- `walk-through`: run here, in order, in an empty folder, as a user would (README only);
- `run`: each line run here (cheap commands); a ```python block runs as one script;
- `parse`: each `reuse-nets` line parsed by the command's real argument parser;
- `quick-start`: the walk-through's first command behind `uv run`, and CI's test command
  (a docs page may repeat the README's block, word for word);
- `tests/FILE.py[::TEST]`: that test runs the command (the file and test must exist); a
  marked ```python block naming a test is code that test applies, line for line.

The site itself: every page is in mkdocs.yml's `nav`, the README links every page, the
code map names every module that exists (and none that does not), and
`mkdocs build --strict` passes.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import fashion_mnist_manual_dir

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = {f"docs/{path.name}": path.read_text() for path in sorted(DOCS.glob("*.md"))}
TEXTS = {"README.md": README, **PAGES}  # every page whose commands are checked
BLOCK = re.compile(r"<!-- readme-test: (?P<kind>[^>]*?) -->\n\s*```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
MANUAL_DIR = "../shared/tfds_manual/fashion_mnist"  # as the README writes it: shared/ beside the checkout
PLACEHOLDERS = {
    "RUN_ID": "0123456789abcdef0123456789abcdef",
    "DIR": "/tmp",
    "NAME": "smoke",
    "USER": "user",
    "DBHOST": "db",
}
KINDS = {"walk-through", "run", "parse", "quick-start"}
README_ONLY = {"walk-through"}  # run in order in one folder: it lives in one page
PACKAGE = ROOT / "reuse_nets"


def kind_of(match: re.Match) -> str:
    return match["kind"].split(";")[0].split(" ")[0]


def blocks(kind: str, text: str = README) -> list[tuple[str, str]]:
    """(language, body) of every marked block of one page (the README by default) whose marker starts with `kind`."""
    return [(m["lang"], m["body"]) for m in BLOCK.finditer(text) if kind_of(m) == kind]


def all_blocks(kind: str) -> list[tuple[str, str, str]]:
    """(page, language, body) of every marked block of the README and the docs pages of this kind."""
    return [(page, lang, body) for page, text in TEXTS.items() for lang, body in blocks(kind, text)]


def command_lines(body: str) -> list[str]:
    """Commands of a bash block: comments dropped, `\\` continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [
        line.split(" #")[0].strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")
    ]


def console() -> str:
    return str(Path(sys.executable).with_name("reuse-nets"))


def test_the_docs_pages_are_the_ones_the_site_is_made_of():
    assert set(PAGES) >= {
        f"docs/{name}.md"
        for name in (
            "index",
            "study-design",
            "running-sweeps",
            "many-machines",
            "reproducing",
            "performance",
            "layers-and-models",
            "results",
            "code-map",
            "results-residual-depth",
            "results-strategy-depth",
            "benchmark-2026-11-25",
            "benchmark-2026-12-01",
        )
    }


@pytest.mark.parametrize("page", sorted(TEXTS))
def test_every_command_block_is_marked(page):
    text = TEXTS[page]
    for match in re.finditer(r"```bash\n", text):
        before = text[: match.start()].rstrip().splitlines()[-1].strip()
        assert before.startswith("<!-- readme-test: "), f"{page}: unmarked bash block after: {before!r}"
    kinds = {kind_of(m) for m in BLOCK.finditer(text)}
    allowed = KINDS if page == "README.md" else KINDS - README_ONLY
    assert kinds <= allowed | {k for k in kinds if k.startswith("tests/")}, page


def test_blocks_naming_a_test_name_one_that_exists():
    named = [
        (page, word)
        for page, text in TEXTS.items()
        for m in BLOCK.finditer(text)
        for word in m["kind"].split()
        if word.startswith("tests/")
    ]
    assert {page for page, _ in named} >= {
        "README.md",
        "docs/many-machines.md",
        "docs/reproducing.md",
        "docs/performance.md",
    }
    for page, reference in named:
        path, _, test = reference.partition("::")
        source = (ROOT / path).read_text()
        if test:
            assert re.search(rf"^def {re.escape(test)}\(", source, re.M), (page, reference)


def test_code_blocks_naming_a_test_are_the_code_that_test_applies():
    """The docs' "Adding a strategy" edits are, line for line, the edits tests/test_extending.py makes."""
    checked = 0
    for page, text in TEXTS.items():
        for m in BLOCK.finditer(text):
            if m["lang"] != "python" or not kind_of(m).startswith("tests/"):
                continue
            source = (ROOT / kind_of(m).partition("::")[0]).read_text()
            code = [
                line.strip() for line in m["body"].splitlines() if line.strip() and not line.strip().startswith("#")
            ]
            missing = [line for line in code if line not in source]
            assert not missing, (page, missing)
            checked += len(code)
    assert checked >= 14  # the three edits: block class, registry line, config field


def test_every_reuse_nets_command_parses_with_the_real_parser():
    import importlib

    from reuse_nets.commands import command_module

    lines = [
        line
        for text in TEXTS.values()
        for m in BLOCK.finditer(text)
        if m["lang"] == "bash"
        for line in command_lines(m["body"])
    ]
    commands = [line for line in lines if line.startswith("reuse-nets ") and "--help" not in line]
    assert len(commands) >= 18  # every command the README held before the docs split it, at least
    for line in commands:
        words = [PLACEHOLDERS.get(word, word) for word in shlex.split(line)[1:]]
        module = importlib.import_module(command_module(words[0]))
        if hasattr(module, "parse_args"):
            module.parse_args(words[1:])  # a bad flag exits 2 and fails the test


def test_quick_start_is_the_walk_through_under_uv_and_ci_runs_its_test_command():
    [(_, body)] = blocks("quick-start")
    first, second = command_lines(body)
    prefix = "python3 -m pip install -q uv==0.13.9 && python3 -m uv run --locked "
    assert first.startswith(prefix)
    [(_, walk)] = blocks("walk-through")[:1]
    assert first.removeprefix(prefix) == command_lines(walk)[0]
    # The test command is the very script CI runs: it installs what the tests need
    # (uv, Debian's Chromium) on a fresh machine, and requires the browser tests.
    assert second == ".ci/run"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pip install" in ci and "apt-get install -y -qq chromium slurm-wlm" in ci
    assert "REUSE_NETS_REQUIRE_BROWSER=1 REUSE_NETS_REQUIRE_SLURM=1 python3 -m uv run --locked pytest" in ci
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def test_a_quick_start_repeated_in_the_docs_is_the_readmes_word_for_word():
    [(_, body)] = blocks("quick-start")
    repeated = [(page, lang, other) for page, lang, other in all_blocks("quick-start") if page != "README.md"]
    assert repeated, "the docs' overview repeats the set-up commands"
    for page, lang, other in repeated:
        assert (lang, command_lines(other)) == ("bash", command_lines(body)), page


def test_cheap_commands_run(tmp_path):
    runs = [(page, body) for page, lang, body in all_blocks("run") if lang == "bash"]
    assert runs
    for page, body in runs:
        for line in command_lines(body):
            assert line.startswith("reuse-nets "), (page, line)
            done = subprocess.run(
                [console(), *shlex.split(line)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (page, line, done.stderr[-2000:])
            assert done.stdout.strip(), (page, line)
    assert list(tmp_path.iterdir()) == []  # help, list and dry runs write nothing


def test_python_examples_run_as_written(tmp_path):
    """A ```python block marked `run` (the public imports) runs in a fresh interpreter, warnings as errors."""
    examples = [(page, body) for page, lang, body in all_blocks("run") if lang == "python"]
    assert [page for page, _ in examples] == ["docs/layers-and-models.md"]
    for page, body in examples:
        done = subprocess.run(
            [sys.executable, "-W", "error::DeprecationWarning:__main__", "-c", body],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert done.returncode == 0, (page, done.stderr[-2000:])


def test_the_study_file_reference_names_every_field():
    from reuse_nets.design import study_spec as studies
    from reuse_nets.design import trial_config as config

    page = PAGES["docs/study-design.md"]
    reference = page[page.index("## Every field, with its default") :]
    reference = reference.partition("\n## ")[0]
    documented = set(re.findall(r"^\| `([\w.]+)` \|", reference, re.M))

    def fields(model, prefix):
        """(dotted name, is a section of further fields) of every field, recursively."""
        for name, field in model.model_fields.items():
            inner = [
                c
                for c in getattr(field.annotation, "__args__", (field.annotation,))
                if isinstance(c, type)
                and issubclass(c, studies.pydantic.BaseModel)
                and c not in (studies.Choices, studies.Range)
            ]
            yield prefix + name, bool(inner)
            for candidate in inner:
                yield from fields(candidate, f"{prefix}{name}.")

    every = dict(fields(studies.StudySpec, ""))
    leaves = {name for name, section in every.items() if not section}
    assert leaves - documented == set(), "fields missing from docs/study-design.md's reference"
    assert documented - set(every) == set(), "docs/study-design.md documents fields that do not exist"
    assert {f"base.{n}" for n in config.TrialConfig.model_fields} - {"base.dataset"} <= documented


def nav_pages(nav) -> list[str]:
    """Every page file a mkdocs `nav` lists, in order, however deeply nested."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def test_every_docs_page_is_in_the_mkdocs_nav():
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert site["theme"]["name"] == "material"
    assert site["strict"] is True
    listed = nav_pages(site["nav"])
    assert len(listed) == len(set(listed)), "a page is listed twice"
    assert {f"docs/{page}" for page in listed} == set(PAGES), "docs pages and mkdocs.yml's nav differ"
    assert listed[0] == "index.md"


def test_the_readme_links_every_docs_page_and_every_link_resolves():
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)\s]*)?\)", README)
    for link in links:
        assert (ROOT / link).is_file(), link
    assert set(PAGES) <= set(links), "docs pages the README does not link"


def test_the_docs_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, or a page left out of `nav`, fails it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "code-map" / "index.html").is_file()


def code_map_entries() -> set[str]:
    """The paths docs/code-map.md's tree names, e.g. "reuse_nets/sweep/runner.py" and "reuse_nets/sweep"."""
    page = PAGES["docs/code-map.md"]
    tree = re.search(r"```text\n(reuse_nets/.*?)```", page, re.S)[1]
    entries, parents = set(), ["reuse_nets"]
    for line in tree.splitlines()[1:]:
        found = re.match(r"^([│ ]*)[├└]── (\S+)", line)
        assert found, f"not a tree line: {line!r}"
        depth = len(found[1]) // 4 + 1
        name = found[2].rstrip("/")
        parents[depth:] = [name]
        entries.add("/".join(parents[: depth + 1]))
    return entries


def test_the_code_map_names_every_module_and_only_modules_that_exist():
    documented = code_map_entries()
    packages = {str(path.parent.relative_to(ROOT)) for path in PACKAGE.rglob("__init__.py")} - {"reuse_nets"}
    modules = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }
    assert sorted(packages - documented) == [], "packages missing from docs/code-map.md"
    assert sorted(modules - documented) == [], "modules missing from docs/code-map.md"
    assert sorted(path for path in documented if not (ROOT / path).exists()) == [], (
        "docs/code-map.md names files that do not exist"
    )


def test_every_module_path_the_pages_name_exists():
    named = {(page, path) for page, text in TEXTS.items() for path in re.findall(r"\breuse_nets/[\w/]*\w\.py\b", text)}
    assert named
    assert sorted((page, path) for page, path in named if not (ROOT / path).is_file()) == []


@pytest.mark.slow
def test_the_walk_through_runs_as_written(tmp_path):
    """Runs the walk-through's commands in an empty folder, in the README's order."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    run_id = None
    outputs = []
    for lang, body in blocks("walk-through"):
        if lang == "python":
            script = body + '\nprint("RUN_ID=" + run_id)\n'
            done = subprocess.run(
                [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
            )
            assert done.returncode == 0, done.stderr[-3000:]
            run_id = re.search(r"^RUN_ID=(\w+)$", done.stdout, re.M)[1]
            outputs.append(done.stdout)
            continue
        for line in command_lines(body):
            line = line.replace(MANUAL_DIR, fashion_mnist_manual_dir())
            words = shlex.split(line.replace("RUN_ID", run_id or "RUN_ID"))
            assert words[0] == "reuse-nets", line
            done = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
            assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-3000:])
            outputs.append(done.stdout)
    run, report, pandas_out, reproduce_one, reproduce_study = outputs
    # What the README says the run prints, and what the next steps read.
    assert "MLflow: run `mlflow ui` here, then open http://127.0.0.1:5000/#/experiments/" in run
    assert "report: reports/smoke/report.md" in run
    assert (tmp_path / "reports" / "smoke" / "report.html").is_file()
    assert report.rstrip().splitlines()[-1].startswith("report: reports/smoke/report.md")
    assert "plain" in pandas_out and "residual" in pandas_out
    assert "AGREE within tolerance 0" in reproduce_one
    assert len(re.findall(r"\bAGREE\b", reproduce_study)) >= 2 and "DISAGREE" not in reproduce_study
