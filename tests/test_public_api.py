"""The public surface: the documented names exist where the docs say, and imports from before the split are handled."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import reuse_nets
import reuse_nets.nn
from reuse_nets.nn import capacity, layers, models

DOCS = Path(__file__).resolve().parents[1] / "docs" / "layers-and-models.md"


def test_the_public_names_are_the_documented_objects():
    expected = {
        "PlainBlock": layers.PlainBlock,
        "FeatureAugmentationLayer": layers.FeatureAugmentationLayer,
        "ResidualBlock": layers.ResidualBlock,
        "MaskedInputLayer": layers.MaskedInputLayer,
        "MaskedReuseBlock": layers.MaskedReuseBlock,
        "UnitInterval": layers.UnitInterval,
        "build_model": models.build_model,
        "block_names": models.block_names,
        "STRATEGIES": models.STRATEGIES,
        "count_capacity": capacity.count,
        "Capacity": capacity.Capacity,
    }
    assert sorted(reuse_nets.nn.__all__) == sorted(expected)
    for name, obj in expected.items():
        assert getattr(reuse_nets.nn, name) is obj, name
        assert getattr(reuse_nets, name) is obj, name  # the root re-exports them
    with pytest.raises(AttributeError, match="no attribute 'not_public'"):
        reuse_nets.nn.not_public  # noqa: B018


def test_the_docs_name_every_public_name():
    section = DOCS.read_text().split("## Public imports", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)`", section))
    assert set(reuse_nets.nn.__all__) <= named, set(reuse_nets.nn.__all__) - named
    assert "from reuse_nets.nn import" in section  # the example (run by tests/test_readme.py)


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_the_package_or_nn_imports_no_tensorflow():
    done = run(
        "import sys, reuse_nets, reuse_nets.nn\n"
        "from reuse_nets.nn import models\n"  # design/ reads its tables: still no TensorFlow
        "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted(m for m in sys.modules if 'tensorflow' in m)[:3]\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(("old", "new"), [("layers", "nn.layers"), ("models", "nn.models")])
def test_an_import_from_the_flat_layout_still_works_with_a_deprecation_warning(old, new):
    sys.modules.pop(f"reuse_nets.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"reuse_nets\.{old} moved to reuse_nets\.{re.escape(new)}"):
        moved = __import__(f"reuse_nets.{old}", fromlist=["_"])
    current = sys.modules[f"reuse_nets.{new}"]
    assert current.__spec__.name == current.__name__ == f"reuse_nets.{new}"  # the new module keeps its identity
    public = [name for name in vars(current) if not name.startswith("_")]
    assert public and all(getattr(moved, name) is getattr(current, name) for name in public)


@pytest.mark.parametrize(("old", "new"), [("training", "train.training"), ("tracking", "store.tracking")])
def test_an_internal_module_of_the_flat_layout_fails_naming_its_new_home(old, new):
    with pytest.raises(ModuleNotFoundError, match=rf"^reuse_nets\.{old} moved to reuse_nets\.{re.escape(new)} "):
        __import__(f"reuse_nets.{old}")


def test_an_unknown_module_is_still_not_found():
    with pytest.raises(ModuleNotFoundError, match=r"No module named 'reuse_nets\.nonexistent'"):
        __import__("reuse_nets.nonexistent")
