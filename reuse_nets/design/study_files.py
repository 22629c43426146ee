"""Study files: finding, reading and overriding `experiments/*.yaml`.

Command-line overrides (`--set key=value`) are applied to the raw data before it
is validated, so they go through exactly the checks a file does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from reuse_nets.design.study_spec import StudySpec, first_error
from reuse_nets.errors import StudyError
from reuse_nets.runtime.paths import PROJECT_ROOT

EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"


MAX_STUDY_ARG = 300  # characters of --study: a name or a path, never a document
MAX_STUDY_BYTES = 1_000_000  # a study file is a page of YAML


class _NoAliasLoader(yaml.SafeLoader):
    """`yaml.safe_load` without anchors and aliases: a few hundred bytes of nested
    aliases ("billion laughs") would otherwise expand to gigabytes or hang."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "anchors and aliases (&, *) are not allowed in a study file", event.start_mark
            )
        return super().compose_node(parent, index)


def read_yaml(path: Path):
    """A study file's data: UTF-8, bounded, no aliases. Raises StudyError naming the problem."""
    if path.stat().st_size > MAX_STUDY_BYTES:
        raise StudyError(f"{path}: larger than {MAX_STUDY_BYTES} bytes; a study file is a page of YAML")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise StudyError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(error, "problem", None) or "").splitlines()[:1] or ["unreadable"]
        raise StudyError(f"{path}:{where} invalid YAML: {problem[0][:200]}") from None


def study_path(name_or_path: str) -> Path:
    """`experiments/NAME.yaml` for a bare name; the path itself otherwise."""
    if len(name_or_path) > MAX_STUDY_ARG:
        raise StudyError(f"--study is {len(name_or_path)} characters long; give a study name or a path")
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return Path(name_or_path)
    return EXPERIMENTS_DIR / f"{name_or_path}.yaml"


def list_studies() -> list[tuple[str, str]]:
    """`(name, description)` of every study in `experiments/`."""
    found = []
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        try:
            raw = read_yaml(path) or {}
        except StudyError:
            raw = {"description": "(unreadable study file)"}
        description = str(raw.get("description", "") if isinstance(raw, dict) else "").strip().splitlines()
        found.append((path.stem, description[0] if description else ""))
    return found


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"a.b=value"` -> `(["a", "b"], value)`, the value parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise StudyError(f"--set {text!r}: expected key=value, e.g. --set base.epochs=1")
    if any(not part.strip() for part in key.split(".")):
        raise StudyError(
            f"--set {text!r}: empty part in key {key.strip()!r}; expected dotted keys, e.g. base.dataset.name"
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value  # e.g. "train[:2000]" stays a string
    if isinstance(parsed, str):
        parsed = value  # verbatim: YAML would strip quotes or spaces
    return [part.strip() for part in key.split(".")], parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Applies `--set key=value` overrides to raw study data (nested keys by dots)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise StudyError(f"--set {text!r}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
    return raw


def read_study(name_or_path: str) -> tuple[Path, dict]:
    """A study file's path and its raw data, `name` defaulting to the file's stem.

    Raises:
        StudyError: no such study, or a file that is not a mapping of fields.
    """
    path = study_path(name_or_path)
    if not path.is_file():
        known = ", ".join(name for name, _ in list_studies())
        raise StudyError(f"no study {name_or_path!r} (looked for {path}); known studies: {known}")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study file must be a mapping of fields")
    raw.setdefault("name", path.stem)
    return path, raw


def validate_study(raw: dict, overrides: Sequence[str], source: str | Path) -> StudySpec:
    """Raw study data (a file's, or a stored `study.yaml`'s) with `overrides` applied, validated.

    Raises:
        StudyError: one line naming `source`, the field and what is allowed.
    """
    raw = apply_overrides(raw, list(overrides))
    try:
        return StudySpec.model_validate(raw)
    except pydantic.ValidationError as error:
        raise StudyError(f"{source}: {first_error(error)}") from None


def load_study(name_or_path: str, overrides: Sequence[str] = ()) -> StudySpec:
    """Reads, overrides and validates a study file.

    Raises:
        StudyError: one line naming the file, the field and what is allowed.
    """
    path, raw = read_study(name_or_path)
    return validate_study(raw, overrides, path)
