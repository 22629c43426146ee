"""The project's exceptions, and the one-line form every user-facing error takes.

`UserError` marks a problem the user can fix (a bad study file, missing data, an
unusable store): commands print its message as one line and exit 2. Everything
else is a bug and keeps its traceback. Nothing here imports a third-party library.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """A problem the user can fix; the message is one line saying what and how."""


class StudyError(UserError):
    """A study file or override the user can fix."""


class DataError(UserError):
    """A data problem the user can fix (unknown dataset, missing data offline, ...)."""


class ExecutionError(UserError):
    """Execution settings this process cannot take any more (TensorFlow already started)."""


class SweepError(UserError):
    """A sweep problem the user can fix: storage, tracking store, workers, identity."""


class ReproduceError(UserError):
    """A run or study that cannot be reproduced as asked."""


class SettingsUnavailable(ReproduceError):
    """This process already runs TensorFlow with other execution settings."""


class DiskFull(UserError):
    """A disk the study writes to is full: the study stops, like an interrupt, and resumes
    once space is freed. The message names what could not be written and its filesystem
    (`runtime.disk.describe`)."""


class TrialFailed(Exception):
    """A trial that ended without a value (diverged, raised, or had no slot)."""


def first_line(error: BaseException, default: str | None = None) -> str:
    """The first non-empty line of an error's message (its class name if it has none)."""
    lines = str(error).strip().splitlines()
    if lines:
        return lines[0]
    return type(error).__name__ if default is None else default


# The password of a URL, e.g. `postgresql+psycopg://user:secret@host/db` or `http://user:secret@host`:
# up to the last `@` before the host (a password may hold an unencoded `@`), and a
# `password=` query parameter.
URL_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/\s]*@")
QUERY_PASSWORD = re.compile(r"((?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every URL password replaced by `***`: for anything printed or logged."""
    return QUERY_PASSWORD.sub(r"\1***", URL_PASSWORD.sub(r"\1:***@", text))


# Characters with Markdown meaning that both CommonMark and the MLflow UI's renderer
# take backslash-escaped; `<`, `>` and `&` become entities, which every renderer reads.
MARKDOWN_SPECIAL = set("\\`*_{}[]()#+-.!|~")
MARKDOWN_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def plain_text(text: str) -> str:
    """User text (a study's description) made one Markdown paragraph that renders as written.

    Line breaks become spaces, Markdown's special characters are escaped, so the text
    can add no heading, list, table, link, image or HTML to a report or to the MLflow
    UI's Markdown.
    """
    flat = " ".join(text.split())
    return "".join(MARKDOWN_ENTITIES.get(ch) or ("\\" + ch if ch in MARKDOWN_SPECIAL else ch) for ch in flat)
