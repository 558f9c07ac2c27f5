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


def test_icrt_imports_train_and_export_only_inside_functions_and_nothing_imports_icrt(tmp_path):
    _write(tmp_path, {
        "icrt/__init__.py": "import runtime\nfrom train import cli\n\n\ndef f():\n    from export import x\n",
        "runtime/__init__.py": "",
        "runtime/a.py": "def f():\n    import icrt\n",
        "train/__init__.py": "", "train/cli.py": "", "export/__init__.py": "",
    })
    found = problems(str(tmp_path))
    assert "lazy: icrt imports train at module level (only inside a function)" in found
    assert any(p.startswith("layering: runtime.a imports icrt") for p in found)
    assert len(found) == 2


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
