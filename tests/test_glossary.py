"""The glossary (docs/glossary.md) names one definition per word, and the code has it.

Every row's third column names a module attribute; each must import. And no two
classes of the package share a name: one class per concept.
"""

import ast
import importlib
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (?P<word>[^|]+?) \| [^|]+ \| `(?P<name>reuse_nets\.[\w.]+)` \|$", re.M)
WORDS = {
    "study file", "study", "Optuna study", "study run", "cell", "unit", "repeat", "job", "slot",
    "trial", "trial run", "final run", "selection", "verdict", "reproduction",
}  # fmt: skip


def rows() -> dict[str, str]:
    return {m["word"]: m["name"] for m in ROW.finditer((ROOT / "docs" / "glossary.md").read_text())}


def resolve(dotted: str):
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def test_the_glossary_defines_every_word_the_issue_names_once():
    found = rows()
    assert WORDS <= set(found), sorted(WORDS - set(found))


def test_every_glossary_definition_exists_in_the_code():
    missing = []
    for word, name in rows().items():
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{word}: {name} ({error})")
    assert missing == []


def test_the_check_fails_on_a_name_that_does_not_exist():
    for name in ("reuse_nets.design.plan.NoSuchThing", "reuse_nets.no_such_module.Job"):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            continue
        raise AssertionError(f"{name} resolved")


def test_no_two_classes_of_the_package_share_a_name():
    names = Counter(
        node.name
        for path in (ROOT / "reuse_nets").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    )
    assert [name for name, count in names.items() if count > 1] == []
