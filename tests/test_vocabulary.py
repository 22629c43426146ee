"""One vocabulary: tag names, attributes and status words are spelled only in `reuse_nets/names.py`.

Scans every module's string constants (docstrings aside): a literal equal to a
tag name, an Optuna attribute, an outcome, phase, kind or verdict, an MLflow run
status or Optuna trial state, or a `reuse_nets.`-prefixed string that is not a
module path, is a second spelling that could drift from the first.
"""

import ast
from pathlib import Path

from reuse_nets import names

PACKAGE = Path(__file__).resolve().parents[1] / "reuse_nets"
TAGS = {
    value
    for key, value in vars(names).items()
    if isinstance(value, str) and (key.endswith(("_TAG", "_TAG_PREFIX")) or (key.endswith("_ATTR") and "_" in value))
}
# Kinds ("study", "trial") and one-word attributes ("phase", "slot") double as table columns and
# fault points; the status words below never do.
STATUS_ENUMS = (names.Outcome, names.Phase, names.Verdict, names.RunStatus, names.TrialState)
WORDS = {str(member) for enum in STATUS_ENUMS for member in enum}
MODULE_PATHS = {
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
}


def docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def field_names(tree) -> set[int]:
    """Constants used as dict keys or subscripts (JSON fields, table columns), not as values."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            ids.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            ids.add(id(node.slice))
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            ids.add(id(node.left))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            ids.update(id(arg) for arg in node.args[:1])  # mapping.get("key"): a key, as mapping["key"] is
    return ids


def second_spellings(source: str) -> list[str]:
    tree = ast.parse(source)
    skip = docstrings(tree)
    keys = field_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
            continue
        text = node.value
        if (
            text in TAGS
            or (text in WORDS and id(node) not in keys)
            or (text.startswith(names.TAG_PREFIX) and text.split(":")[0].rstrip(".") not in MODULE_PATHS)
        ):
            found.append(text)
    return found


def test_no_tag_attribute_or_status_literal_outside_names():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "names.py" and path.parent == PACKAGE:
            continue
        found = second_spellings(path.read_text())
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert offenders == {}


def test_the_scan_finds_a_second_spelling():
    # The check must be able to fail: each kind of literal it looks for is caught.
    source = 'x = {"reuse_nets.outcome": "completed"}\ny = f"{a}" + "final"\nz = "reuse_nets.made_up_tag"\n'
    assert sorted(second_spellings(source)) == ["completed", "final", "reuse_nets.made_up_tag", "reuse_nets.outcome"]
    # MLflow's and Optuna's status words, verdicts and Optuna attributes too.
    source = 'a = run.info.status == "FINISHED"\nb = t.state.name == "WAITING"\nc = "inconclusive"\nd = t.user_attrs.get("mlflow_run_id")\n'
    assert sorted(second_spellings(source)) == ["FINISHED", "WAITING", "inconclusive", "mlflow_run_id"]
    # A JSON field or table column that happens to share a word is not an outcome.
    assert second_spellings('counts = {"pruned": 0}\ncounts["died"] += 1\nok = "error" in answer\n') == []
    assert second_spellings('spec = identity.get("tune")\n') == []
    assert second_spellings('"""A docstring may say "completed"."""\nimport reuse_nets.nn.layers\n') == []


def test_outcomes_phases_and_kinds_are_strings_as_stored():
    # Stored tags and attributes are plain strings: the enums compare equal to them.
    assert names.Outcome.COMPLETED == "completed" and names.Phase.TUNE == "tune" and names.Kind.STUDY == "study"
    assert set(names.RUN_END) <= set(names.Outcome)
    assert set(names.FAILED_WITH_RESULT) < set(names.RESULT_OUTCOMES) <= set(names.RUN_END)
