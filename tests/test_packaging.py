"""One installed package: pyproject.toml maps the repository's folders into the ``icrt`` namespace, the wheel's top
level is ``icrt/`` alone, and a user's own ``train.py``, ``export.py`` or ``runtime.py`` shadows nothing of icrt's."""
import os
import re
import subprocess
import sys
import zipfile

import pytest
import tomllib

from tests import ROOT

FOLDERS = {"icrt": "icrt", "icrt.runtime": "runtime", "icrt.calibration": "calibration", "icrt.train": "train",
           "icrt.export": "export", "icrt.benchmarks": "benchmarks", "icrt.docs": "docs"}
# a user's own modules named like icrt's folders: importing any of them would be a bug
SHADOWS = {name: f'raise SystemExit("the user\'s own {name} was imported")\n'
           for name in ("train.py", "export.py", "runtime.py", "calibration.py", "benchmarks.py")}


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_pyproject_maps_every_package_folder_into_the_icrt_namespace():
    tool = _pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == FOLDERS
    found = set()
    for package, folder in FOLDERS.items():
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in files:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, folder))
                found.add(package if rel == "." else package + "." + rel.replace(os.sep, "."))
    assert sorted(tool["packages"]) == sorted(found | {"icrt.docs"})  # docs/: data only, shipped for messages
    assert tool["package-data"]["icrt.docs"] == ["*.md", "img/*"]
    assert _pyproject()["project"]["license"] == "Apache-2.0"  # the SPDX string (setuptools >= 77)


def test_python_m_train_and_export_work_from_the_clones_root():
    for name in ("train", "export"):
        r = subprocess.run([sys.executable, "-m", name, "--help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and f"usage: python -m {name}" in r.stdout, r.stderr


@pytest.mark.slow
def test_the_wheel_installs_icrt_alone_and_no_users_module_shadows_it(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(wheels), ROOT], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("icrt-*.whl")
    with zipfile.ZipFile(wheel) as z:
        top = {n.split("/")[0] for n in z.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"icrt"}, top
    assert {t for t in top if t.endswith(".dist-info")} == {re.sub(r"-py3-none-any\.whl$", ".dist-info", wheel.name)}

    # a fresh venv that sees this machine's torch (the training extras), with the wheel on top
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py, icrt_script = venv / "bin" / "python", venv / "bin" / "icrt"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "my-project"  # a user's folder with a train.py, an export.py and a runtime.py of its own
    work.mkdir()
    for name, text in SHADOWS.items():
        (work / name).write_text(text)
    image = os.path.join(ROOT, "examples", "savoias_art_371.jpg")

    def run(*argv):
        r = subprocess.run([str(a) for a in argv], cwd=work, capture_output=True, text=True, timeout=600,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
        return r.stdout

    out = run(py, "-c", "import icrt, icrt.runtime; print(icrt.__file__, icrt.runtime.__file__)")
    assert all(str(venv) in p for p in out.split()), out  # the installed icrt, never the clone's
    assert "savoias_art_371.jpg" in run(icrt_script, "score", image)
    assert "--checkpoint" in run(icrt_script, "export", "--help")
    assert "--checkpoint" in run(py, "-m", "icrt.export", "--help")
    assert "d2s" in run(py, "-m", "icrt.train", "--help")
    assert "d2s" in run(icrt_script, "train", "--help")
