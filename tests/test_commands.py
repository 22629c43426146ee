"""The `reuse-nets` command and its `sweeps/*.py` twins, and what a running study prints.

The command-line tests run real processes (each well under a second or two: no
TensorFlow is imported for help, listing, dry runs or errors); the progress tests
drive `reuse_nets.sweep.progress` with a fake clock and in-memory streams.
"""

import concurrent.futures
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reuse_nets.sweep import progress

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"
COMMANDS = ("run", "report", "reproduce", "register", "list", "benchmark")


def console_script() -> list[str]:
    """`reuse-nets` as installed beside this Python, else the same entry point by module."""
    script = Path(sys.executable).with_name("reuse-nets")
    if script.exists():
        return [str(script)]
    found = shutil.which("reuse-nets")
    return (
        [found]
        if found
        else [sys.executable, "-c", "import sys; from reuse_nets.commands import main; sys.exit(main())"]
    )


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def reuse_nets(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([*console_script(), *args], cwd)


def sweep(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, str(SWEEPS / script), *args], cwd)


# --- the command line -----------------------------------------------------------------------


def test_help_lists_every_command_with_a_description(tmp_path):
    result = reuse_nets("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {
        line.split()[0]: line.split(None, 1)[1]
        for line in result.stdout.split("commands:\n")[1].splitlines()
        if line.strip()
    }
    assert set(listed) == set(COMMANDS), result.stdout
    assert all(description.strip() for description in listed.values())


def test_run_help_shows_the_run_flags(tmp_path):
    result = reuse_nets("run", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: reuse-nets run")
    for option in ("--study", "--set", "--workers", "--dry-run", "--quiet", "--tracking-uri", "--manual-dir"):
        assert option in result.stdout


@pytest.mark.parametrize("argv", [["bogus"], ["run", "--bogus"], []], ids=["command", "flag", "nothing"])
def test_a_bad_command_line_is_one_line_and_exit_2(tmp_path, argv):
    result = reuse_nets(*argv, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "reuse-nets" in lines[0]  # names the program to ask for --help


def test_list_is_run_dash_dash_list(tmp_path):
    listed = reuse_nets("list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "smoke " in listed.stdout
    assert listed.stdout == sweep("run.py", "--list", cwd=tmp_path).stdout


def test_dry_run_is_the_same_from_both_entry_points(tmp_path):
    args = ("--study", "smoke", "--dry-run", "--set", "base.epochs=1 compare.depth=[1]")
    # Side by side: each imports TensorFlow (for the thread count it prints).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        command = pool.submit(reuse_nets, "run", *args, cwd=tmp_path)
        script = pool.submit(sweep, "run.py", *args, cwd=tmp_path)
        command, script = command.result(), script.result()
    assert command.returncode == 0, command.stderr
    assert "study smoke: 4 cells" in command.stdout
    assert command.stdout == script.stdout
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_help_and_errors_import_no_heavy_library(tmp_path):
    probe = (
        "import sys; from reuse_nets.commands import main\n"
        "for argv in (['--help'], ['run', '--help'], ['list'], ['run', '--workers', '0']):\n"
        "    try: main(argv)\n"
        "    except SystemExit: pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'optuna') if m in sys.modules)\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
    )
    result = run([sys.executable, "-c", probe], tmp_path)
    assert "heavy: []" in result.stderr, result.stderr  # what made --help take seconds; timing itself is noise


# --- progress --------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_duration_reads_like_a_clock():
    assert [progress.duration(s) for s in (0, 45.4, 130, 3725)] == ["0s", "45s", "2m10s", "1h02m"]


def test_plain_lines_off_a_terminal_count_trials_with_an_eta():
    clock, out = Clock(), io.StringIO()
    shown = progress.Progress(stream=io.StringIO(), out=out, clock=clock)
    shown.phase("tune", 12)
    shown.update(0)  # where this run starts: no line
    shown.trial("trial 0", 2)
    shown.epoch(1, "  trial 0 epoch 1/2: loss=1", "loss=1")
    clock.now += 10
    shown.update(1)
    shown.update(1)  # no change, no line
    clock.now += 20
    shown.update(3)
    clock.now += 5
    shown.update(12)
    assert out.getvalue().splitlines() == [
        "  trial 0 epoch 1/2: loss=1",
        "tune 1/12 trials, ETA 1m50s",  # 10 s a trial, 11 to go
        "tune 3/12 trials, ETA 1m30s",
        "tune 12/12 trials, done in 35s",
    ]
    assert "\r" not in out.getvalue()


def test_a_resumed_phase_estimates_from_this_runs_pace():
    clock, out = Clock(), io.StringIO()
    shown = progress.Progress(stream=io.StringIO(), out=out, clock=clock)
    shown.phase("final", 8)
    shown.update(6)  # six were done by an earlier run
    clock.now += 30
    shown.update(7)
    assert out.getvalue() == "final 7/8 trials, ETA 30s\n"


def test_quiet_prints_nothing():
    out, bars = io.StringIO(), Terminal()
    shown = progress.Progress(enabled=False, stream=bars, out=out)
    shown.say("hello")
    shown.phase("tune", 2)
    shown.update(1)
    shown.epoch(1, "line", "short")
    shown.close()
    assert out.getvalue() == bars.getvalue() == ""


def test_a_terminal_gets_tqdm_bars_for_trials_and_epochs():
    clock, screen = Clock(), Terminal()
    shown = progress.Progress(stream=screen, out=screen, clock=clock)
    shown.phase("tune", 12)
    shown.update(0)
    shown.trial("trial 4", 3)
    shown.epoch(2, "  trial 4 epoch 2/3: loss=0.5", "loss=0.5 val_accuracy=0.8")
    clock.now += 10
    shown.update(1)
    shown.say("an event line")
    shown.close()
    text = screen.getvalue()
    assert "\r" in text  # redrawn in place
    assert "tune 1/12 trials, ETA 1m50s |" in text
    assert "  trial 4 epoch 2/3, loss=0.5 val_accuracy=0.8 |" in text
    assert "an event line\n" in text
    assert "  trial 4 epoch 2/3: loss=0.5" not in text  # the bar replaces the epoch line


def test_worker_lines_are_prefixed_and_wipe_a_bar_only_on_a_terminal():
    plain, screen = io.StringIO(), Terminal()
    progress.WorkerLines(2, out=plain).say("started")
    progress.WorkerLines(2, out=screen).epoch(1, "  trial 3 epoch 1/2", "short")
    assert plain.getvalue() == "[worker 2] started\n"
    assert screen.getvalue() == "\r\x1b[K[worker 2]   trial 3 epoch 1/2\n"


def test_dry_run_prints_per_cell_capacity_within_five_percent():
    """`reuse-nets run --study strategy_depth --dry-run`: per-cell counts, within 5% at each depth."""
    result = subprocess.run(
        [*console_script(), "run", "--study", "strategy_depth", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(
        r": (strategy=\w+,depth=\d+) .*width (\d+), ([\d.]+[kM]?) params.*?(?:, ([+-][\d.]+)% trainable_params vs strategy=plain)?\)$",
        result.stdout,
        re.M,
    )
    assert len(rows) == 16, result.stdout
    for key, width, _params, gap in rows:
        if key.startswith("strategy=plain"):
            assert width == "128" and gap == ""
        else:
            assert abs(float(gap)) <= 5.0, (key, gap)
    assert "match: width solved per cell so that trainable_params is within 5%" in result.stdout
