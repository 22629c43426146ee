"""One signal stops a process cleanly, even when it lands inside a finalizer."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_stop_raised_inside_a_finalizer_is_delivered_again_and_not_printed():
    done = run(
        """
        import signal, time
        from reuse_nets.runtime import interrupts

        interrupts.stop_on_signals()

        class Finalized:
            def __del__(self):  # as a garbage-collector callback the signal landed in
                interrupts._stop(signal.SIGTERM, None)

        try:
            Finalized()
            time.sleep(10)
            print("not stopped")
        except KeyboardInterrupt as stop:
            print(f"stopped: {stop}")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped: stopped by SIGTERM"
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr


def test_a_second_signal_is_ignored_while_the_first_is_handled():
    done = run(
        """
        import os, signal, time
        from reuse_nets.runtime import interrupts

        interrupts.stop_on_signals()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: the clean-up goes on
            time.sleep(0.5)
            print("cleaned up")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cleaned up"
