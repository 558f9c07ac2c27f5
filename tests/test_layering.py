"""Imports follow the layering of docs/architecture.md: no cycles, nothing against the arrows (between the packages and
between the runtime's layers), no plug-in importing its own package, no torch in the runtime (tests/layering.py reads
the import graph from the source: function-level imports and modules named in strings included)."""
import os
import textwrap

from tests import ROOT  # noqa: E402
from tests.layering import problems


def test_the_project_has_no_import_cycle_and_no_import_against_the_layers():
    assert problems(ROOT) == []


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_icrt_imports_train_and_export_only_inside_functions_and_nothing_imports_icrt(tmp_path):
    _write(tmp_path, {
        "icrt/__init__.py": "import icrt.runtime\nfrom icrt.train import cli\n\n\ndef f():\n    from icrt.export import x\n",
        "runtime/__init__.py": "",
        "runtime/base/__init__.py": "", "runtime/base/a.py": "def f():\n    import icrt\n",
        "train/__init__.py": "", "train/cli.py": "", "export/__init__.py": "",
    })
    found = problems(str(tmp_path))
    assert "lazy: icrt imports train at module level (only inside a function)" in found
    assert any(p.startswith("layering: runtime.base.a imports icrt") for p in found)
    assert len(found) == 2


def test_the_check_finds_a_reversed_import_a_cycle_and_torch_in_the_runtime(tmp_path):
    _write(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/base/__init__.py": "",
        "runtime/base/a.py": "def f():\n    from icrt.train import b  # a function-level import counts\n",
        "runtime/base/c.py": "import torch\n",
        "train/__init__.py": "",
        "train/b.py": "import icrt.train.d as d\n",
        "train/d.py": "from icrt.train.b import x\n",
        "calibration/__init__.py": "from icrt.train.b import x\n",
        "export/__init__.py": "from icrt.runtime.base import a\nfrom icrt.train import b\nfrom icrt.calibration import x\n",
    })
    found = problems(str(tmp_path))
    assert "cycle: train.b <-> train.d" in found
    assert any(p.startswith("layering: runtime.base.a imports train.b") for p in found)
    assert any(p.startswith("layering: calibration imports train.b") for p in found)
    assert "torch-free: runtime.base.c imports torch" in found
    assert any(p.startswith("layering: runtime.base.a imports train (") for p in found)  # from train import b: train too
    assert not any(p.startswith("layering: export") for p in found)  # export may use all three
    assert len(found) == 5


def test_a_module_named_in_a_string_is_an_import(tmp_path):
    """A registry entry (``"icrt.export.int8:build"``) or an importlib name counts like an import statement."""
    _write(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/bundle/__init__.py": "",
        "runtime/bundle/precisions.py": 'BUILD = "icrt.export.int8:build"\n',
        "export/__init__.py": "", "export/int8.py": "from icrt.runtime.bundle.precisions import BUILD\n",
        "train/__init__.py": "", "train/data.py": 'NAME = "train.txt" if True else "train"\n',
    })
    found = problems(str(tmp_path))
    assert any(p.startswith("layering: runtime.bundle.precisions imports export.int8") for p in found)
    assert "cycle: export.int8 <-> runtime.bundle.precisions" in found
    # "train.txt" reads as the package train: its own __init__, which a module of it must not import
    assert any(p.startswith("package: train.data imports train,") for p in found)


def test_the_runtime_layers_point_down_and_every_runtime_module_is_in_one(tmp_path):
    _write(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/base/__init__.py": "", "runtime/base/files.py": "",
        "runtime/bundle/__init__.py": "", "runtime/bundle/manifest.py": "import icrt.runtime.backends.base\n",
        "runtime/backends/__init__.py": "", "runtime/backends/base.py": "import icrt.runtime.base.files\n",
        "runtime/backends/onnx.py": "from icrt.runtime.backends import base\n",
        "runtime/scoring/__init__.py": "", "runtime/scoring/scorer.py": "import icrt.runtime.cli.app\n",
        "runtime/cli/__init__.py": "", "runtime/cli/app.py": "import icrt.runtime.scoring.scorer\n",
        "runtime/stray.py": "",
    })
    found = problems(str(tmp_path))
    assert any(p.startswith("layering: runtime.bundle.manifest imports runtime.backends.base (runtime.bundle may "
                            "import base)") for p in found)
    assert any(p.startswith("layering: runtime.scoring.scorer imports runtime.cli.app") for p in found)
    assert any(p.startswith("layering: runtime.stray is in no runtime layer") for p in found)
    # a plug-in imports its registry's base module, never its package (here: through `from package import base`)
    assert any(p.startswith("package: runtime.backends.onnx imports runtime.backends,") for p in found)
    assert "cycle: runtime.cli.app <-> runtime.scoring.scorer" in found
    assert not any("runtime.backends.base imports" in p or "runtime.cli.app imports" in p for p in found)


def test_no_test_module_imports_another_test_module():
    """Helpers shared by tests live in helpers modules or conftest.py fixtures, never in a test module."""
    import ast

    found = []
    for folder, dirs, files in os.walk(os.path.join(ROOT, "tests")):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "data")]
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                found += [f"{os.path.relpath(path, ROOT)} imports {n}" for n in names
                          if n.startswith("tests.") and n.rpartition(".")[2].startswith("test_")]
    assert found == []
