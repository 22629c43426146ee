"""What a running study prints: event lines, trial counts with an ETA, epoch progress.

On a terminal, `Progress` draws two tqdm bars under the event lines: the phase's
trials ("tune 3/12 trials, ETA 2m10s |###    |") and the running trial's epochs.
Anywhere else (CI logs, pipes, pytest capture) it prints plain lines instead, one
per finished trial ("tune 3/12 trials, ETA 2m10s"), and never a carriage return.

The runner feeds it counts (`phase`, `update`) from the Optuna storage, so the
count is right whoever ran the trials: this process, or `--workers` processes,
which print their own event lines (`WorkerLines`) and draw no bars.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from reuse_nets.errors import redact

ERASE_LINE = "\r\x1b[K"  # a worker's line first wipes the parent's bar; the parent redraws it


def duration(seconds: float) -> str:
    """'45s', '2m10s', '1h05m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress of one study run in this process.

    Args:
        enabled: False prints nothing at all (`--quiet`).
        stream: where bars go (default stderr); bars only if it is a terminal.
        out: where lines go (default stdout).
        clock: seconds, monotonic; a fake one in tests.
    """

    def __init__(self, enabled: bool = True, stream=None, out=None, clock: Callable[[], float] = time.monotonic):
        self.enabled, self.clock = enabled, clock
        self.stream = stream if stream is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.bars = enabled and bool(isatty and isatty())
        self.name, self.total, self.start_done, self.start = "", 0, 0, 0.0
        self.done: int | None = None  # None until the phase's first `update`
        self._trials = self._epochs = None

    # --- event lines -------------------------------------------------------------------

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        message = redact(message)  # store URLs in lines may carry passwords
        if self.bars:
            from tqdm import tqdm

            tqdm.write(message, file=self.out)  # above the bars, which are redrawn below
        else:
            print(message, file=self.out, flush=True)

    # --- trial counts --------------------------------------------------------------------

    def phase(self, name: str, total: int) -> None:
        """A phase of `total` trials starts (or resumes: the first `update` says how far it got)."""
        self._close_bars()
        self.name, self.total, self.done = name, total, None

    def eta(self) -> str:
        """'ETA 2m10s' from this run's pace; 'ETA ?' before its first finished trial."""
        elapsed = self.clock() - self.start
        done = self.done
        if done is None:  # no count yet in this phase
            return "ETA ?"
        if done >= self.total:
            return f"done in {duration(elapsed)}"
        finished_here = done - self.start_done
        if finished_here <= 0:
            return "ETA ?"
        return f"ETA {duration(elapsed / finished_here * (self.total - done))}"

    def status(self) -> str:
        return f"{self.name} {self.done}/{self.total} trials, {self.eta()}"

    def update(self, done: int) -> None:
        """`done` trials of the phase have a result now; a line per change, or the bar.

        The first count of a phase is where this run starts: the ETA is this run's pace.
        """
        if not self.enabled:
            return
        if self.done is None:
            self.done, self.start_done, self.start = done, done, self.clock()
            if self.bars:
                from tqdm import tqdm

                self._trials = tqdm(
                    total=self.total,
                    initial=done,
                    desc=self.name,
                    file=self.stream,
                    position=0,
                    dynamic_ncols=True,
                    bar_format="{desc} {n_fmt}/{total_fmt} trials{postfix} |{bar}|",  # tqdm puts ", " before a postfix
                )
        changed, self.done = done != self.done, done
        if self._trials is not None:
            self._trials.n = done
            self._trials.set_postfix_str(self.eta(), refresh=False)
            self._trials.refresh()  # also redraws a bar that a worker's line wiped
        elif changed:
            self.say(self.status())

    # --- epochs of the running trial -------------------------------------------------------

    def trial(self, label: str, epochs: int) -> None:
        """A trial starts training for `epochs` epochs."""
        if self.bars:
            from tqdm import tqdm

            if self._epochs is not None:
                self._epochs.close()
            self._epochs = tqdm(
                total=epochs,
                desc=f"  {label}",
                file=self.stream,
                position=1,
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc} epoch {n_fmt}/{total_fmt}{postfix} |{bar}|",
            )

    def epoch(self, epoch: int, line: str, short: str) -> None:
        """Epoch `epoch` ended: `line` in plain output, `short` beside the epoch bar."""
        if not self.enabled:
            return
        if self._epochs is not None:
            self._epochs.n = epoch
            self._epochs.set_postfix_str(short, refresh=True)
        else:
            self.say(line)

    def close(self) -> None:
        self._close_bars()

    def _close_bars(self) -> None:
        for bar in (self._epochs, self._trials):
            if bar is not None:
                bar.close()
        self._trials = self._epochs = None


class WorkerLines:
    """A `--workers` process's output: its event and epoch lines, prefixed, no bars."""

    def __init__(self, index: int, enabled: bool = True, out=None):
        self.index, self.enabled = index, enabled
        self.out = out if out is not None else sys.stdout
        # On a terminal the parent's bar may stand on the current line: wipe it first.
        isatty = getattr(self.out, "isatty", None)
        self.prefix = (ERASE_LINE if isatty and isatty() else "") + f"[worker {index}] "

    def say(self, message: str) -> None:
        if self.enabled:
            print(self.prefix + redact(message), file=self.out, flush=True)

    def trial(self, label: str, epochs: int) -> None:
        pass

    def epoch(self, epoch: int, line: str, short: str) -> None:
        self.say(line)
