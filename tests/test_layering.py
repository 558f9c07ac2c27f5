"""Imports follow the layering of docs/architecture.md: no cycles, nothing against the arrows, no torch in the
runtime (tests/layering.py reads the import graph from the source, function-level imports included)."""
import os
import textwrap

from tests.layering import problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_project_has_no_import_cycle_and_no_import_against_the_layers():
    assert problems(ROOT) == []


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_check_finds_a_reversed_import_a_cycle_and_torch_in_the_runtime(tmp_path):
    _write(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/a.py": "def f():\n    from train import b  # a function-level import counts\n",
        "runtime/c.py": "import torch\n",
        "train/__init__.py": "",
        "train/b.py": "from . import d\n",
        "train/d.py": "from .b import x\n",
        "calibration/__init__.py": "from train.b import x\n",
        "export/__init__.py": "from runtime import a\nfrom train import b\nfrom calibration import x\n",
    })
    found = problems(str(tmp_path))
    assert "cycle: train.b <-> train.d" in found
    assert any(p.startswith("layering: runtime.a imports train.b") for p in found)
    assert any(p.startswith("layering: calibration imports train.b") for p in found)
    assert "torch-free: runtime.c imports torch" in found
    assert not any(p.startswith("layering: export") for p in found)  # export may use all three
    assert len(found) == 4
