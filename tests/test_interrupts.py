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


def test_a_stop_inside_a_store_write_waits_for_its_commit_and_the_run_closes_at_once(tmp_path):
    # Raised between MLflow's insert and its commit, the stop left that transaction open,
    # and SQLite's write lock held by its own traceback: closing the run then waited out
    # MLflow's 20 s busy timeout and failed with "database is locked".
    done = run(
        f"""
        import os, signal, time
        import mlflow
        from sqlalchemy.engine import default
        from reuse_nets.names import Outcome
        from reuse_nets.runtime import interrupts
        from reuse_nets.store import tracking

        interrupts.stop_on_signals()
        mlflow.set_tracking_uri("sqlite:///{tmp_path}/mlflow.db")
        run_id = mlflow.start_run().info.run_id
        insert = default.DefaultDialect.do_executemany

        def signalled(*args, **kwargs):  # the signal arrives after the rows, before the commit
            insert(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)

        default.DefaultDialect.do_executemany = signalled
        try:
            mlflow.log_metrics({{"loss": 0.5, "accuracy": 0.9}}, step=1)
            time.sleep(10)
            print("not stopped")
        except KeyboardInterrupt:
            default.DefaultDialect.do_executemany = insert
            started = time.monotonic()
            tracking.close_run(mlflow.MlflowClient(), run_id, Outcome.INTERRUPTED, "interrupted")
            print(f"closed in {{time.monotonic() - started:.1f}} s")
        run = mlflow.MlflowClient().get_run(run_id)
        print(run.info.status, sorted(run.data.metrics))
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    closed, stored = done.stdout.strip().splitlines()
    assert float(closed.split()[2]) < 5, closed
    assert stored == "KILLED ['accuracy', 'loss']"  # the write the stop waited for is whole
