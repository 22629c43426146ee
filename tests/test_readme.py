"""The README cannot rot: every command in it is run, parsed, or names the test that runs it.

Each ```bash block (and the walk-through's ```python block) is preceded by a marker
`<!-- readme-test: KIND -->`:

- `walk-through`: run here, in order, in an empty folder, as a user would;
- `run`: each line run here (cheap commands);
- `parse`: each `reuse-nets` line parsed by the command's real argument parser;
- `quick-start`: the walk-through's first command behind `uv run`, and CI's test command;
- `tests/FILE.py[::TEST]`: that test runs the command (the file and test must exist).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fashion_mnist_manual_dir

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"<!-- readme-test: (?P<kind>[^>]*?) -->\n\s*```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
MANUAL_DIR = "../shared/tfds_manual/fashion_mnist"  # as the README writes it: shared/ beside the checkout
PLACEHOLDERS = {"RUN_ID": "0123456789abcdef0123456789abcdef", "DIR": "/tmp", "NAME": "smoke", "USER": "user", "DBHOST": "db"}


def blocks(kind: str) -> list[tuple[str, str]]:
    """(language, body) of every marked block whose marker starts with `kind`."""
    return [(m["lang"], m["body"]) for m in BLOCK.finditer(README) if m["kind"].split(";")[0].split(" ")[0] == kind]


def command_lines(body: str) -> list[str]:
    """Commands of a bash block: comments dropped, `\\` continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def console() -> str:
    return str(Path(sys.executable).with_name("reuse-nets"))


def test_every_command_block_is_marked():
    for match in re.finditer(r"```bash\n", README):
        before = README[: match.start()].rstrip().splitlines()[-1].strip()
        assert before.startswith("<!-- readme-test: "), f"unmarked bash block after: {before!r}"
    kinds = {m["kind"].split(";")[0].split(" ")[0] for m in BLOCK.finditer(README)}
    assert kinds <= {"walk-through", "run", "parse", "quick-start"} | {k for k in kinds if k.startswith("tests/")}


def test_blocks_naming_a_test_name_one_that_exists():
    named = [word for m in BLOCK.finditer(README) for word in m["kind"].split() if word.startswith("tests/")]
    assert named
    for reference in named:
        path, _, test = reference.partition("::")
        source = (ROOT / path).read_text()
        if test:
            assert re.search(rf"^def {re.escape(test)}\(", source, re.M), reference


def test_every_reuse_nets_command_parses_with_the_real_parser():
    import importlib

    from reuse_nets.commands import MODULES

    lines = [line for m in BLOCK.finditer(README) if m["lang"] == "bash" for line in command_lines(m["body"])]
    commands = [line for line in lines if line.startswith("reuse-nets ") and "--help" not in line]
    assert len(commands) >= 15
    for line in commands:
        words = [PLACEHOLDERS.get(word, word) for word in shlex.split(line)[1:]]
        module = importlib.import_module(f"reuse_nets.commands.{MODULES.get(words[0], words[0])}")
        if hasattr(module, "parse_args"):
            module.parse_args(words[1:])  # a bad flag exits 2 and fails the test


def test_quick_start_is_the_walk_through_under_uv_and_ci_runs_its_test_command():
    [(_, body)] = blocks("quick-start")
    first, second = command_lines(body)
    prefix = "python3 -m pip install -q uv==0.13.9 && python3 -m uv run --locked "
    assert first.startswith(prefix) and second.startswith(prefix)
    [(_, walk)] = blocks("walk-through")[:1]
    assert first.removeprefix(prefix) == command_lines(walk)[0]
    assert second.removeprefix(prefix) == "pytest"
    assert "python3 -m uv run --locked pytest" in (ROOT / ".ci" / "run").read_text()


def test_cheap_commands_run(tmp_path):
    [(_, body)] = blocks("run")
    for line in command_lines(body):
        done = subprocess.run([console(), *shlex.split(line)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (line, done.stderr[-2000:])
        assert done.stdout.strip(), line
    assert list(tmp_path.iterdir()) == []  # help, list and dry runs write nothing


def test_the_study_file_reference_names_every_field():
    from reuse_nets import config, studies

    reference = README[README.index("### Every field, with its default"):]
    reference = reference[: reference.index("\n## ")]
    documented = set(re.findall(r"^\| `([\w.]+)` \|", reference, re.M))

    def fields(model, prefix):
        """(dotted name, is a section of further fields) of every field, recursively."""
        for name, field in model.model_fields.items():
            inner = [c for c in getattr(field.annotation, "__args__", (field.annotation,))
                     if isinstance(c, type) and issubclass(c, studies.pydantic.BaseModel) and c not in (studies.Choices, studies.Range)]
            yield prefix + name, bool(inner)
            for candidate in inner:
                yield from fields(candidate, f"{prefix}{name}.")

    every = dict(fields(studies.StudySpec, ""))
    leaves = {name for name, section in every.items() if not section}
    assert leaves - documented == set(), "fields missing from the README's reference"
    assert documented - set(every) == set(), "README documents fields that do not exist"
    assert {f"base.{n}" for n in config.TrialConfig.model_fields} - {"base.dataset"} <= documented


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
            done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
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
    assert "# Study `smoke`" in report or "Study `smoke`" in report
    assert "plain" in pandas_out and "residual" in pandas_out
    assert "AGREE within tolerance 0" in reproduce_one
    assert len(re.findall(r"\bAGREE\b", reproduce_study)) >= 2 and "DISAGREE" not in reproduce_study
