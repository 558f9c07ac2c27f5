"""The ``icrt`` package: the public API (``icrt.score``, ``icrt.Scorer``, ``icrt.__version__``) and the console
script's extras (``--version``, ``icrt train`` / ``icrt export`` without torch, ``doctor``, ``completion``).
Torch-free."""
import json
import os
import subprocess
import sys

import pytest

import icrt
import icrt.runtime as runtime
from tests.images import textured
from tests.runtime.fixtures import ROOT


def script(*argv, cwd=ROOT, block=(), timeout=120):
    """``icrt ARGV`` as the console script runs it: the working folder is not on sys.path (``python -m`` would put
    it first); ``block``: modules made unimportable."""
    code = ("import sys, importlib.abc\n"
            "class B(importlib.abc.MetaPathFinder):\n"
            f"    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {list(block)!r}: raise ImportError(name + ' blocked')\n"
            "sys.meta_path.insert(0, B())\n"
            "sys.path = [p for p in sys.path if p not in ('', '.')]\n"
            f"sys.path.insert(0, {ROOT!r})\n"
            "from icrt.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_score_one_many_a_folder_and_an_image_object(tmp_path, square_bundle):
    for i in range(3):
        textured(60 + 10 * i, 50, seed=i, level=i / 3).save(tmp_path / f"a{i}.png")
    one = icrt.score(str(tmp_path / "a0.png"), model=square_bundle)
    assert one["image"].endswith("a0.png") and 0 <= one["score"] <= 1
    many = icrt.score([tmp_path / "a1.png", tmp_path / "nope.png"], model=square_bundle)
    assert [("score" in r, "error" in r) for r in many] == [(True, False), (False, True)]
    folder = icrt.score(tmp_path, model=square_bundle)
    assert [os.path.basename(r["image"]) for r in folder] == ["a0.png", "a1.png", "a2.png"]
    assert folder[0]["score"] == pytest.approx(one["score"], abs=1e-6)
    from PIL import Image

    with Image.open(tmp_path / "a0.png") as im:
        assert icrt.score(im, model=square_bundle)["score"] == pytest.approx(one["score"], abs=1e-6)
    with pytest.raises(icrt.ImageError):
        icrt.score(str(tmp_path / "nope.png"), model=square_bundle)
    assert isinstance(icrt.Scorer.load(square_bundle), runtime.Scorer)


def test_import_icrt_and_icrt_help_load_neither_numpy_nor_torch():
    code = ("import sys, icrt, icrt.cli, icrt.runtime.cli.app\n"
            "icrt.runtime.cli.app.build_parser(list(icrt.cli.TORCH_COMMANDS.values()))\n"
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'PIL', 'torch', 'icrt.train', 'icrt.export') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_version_is_one_number_everywhere():
    r = script("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"icrt {runtime.__version__}" == f"icrt {icrt.__version__}"
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert 'version = {attr = "icrt.runtime.base.version.__version__"}' in f.read()


@pytest.mark.parametrize("command", ["train", "export"])
def test_train_and_export_without_torch_say_which_extra_in_one_line(command):
    r = script(command, "--help", block=("torch",))
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"icrt: error: icrt {command} needs PyTorch") and "[train]" in r.stderr
    assert "pip install" in r.stderr


def test_help_lists_train_export_doctor_and_completion_with_examples():
    r = script("--help")
    assert r.returncode == 0
    for words in ("train", "export", "doctor", "completion", "examples:", "icrt score examples/*.jpg"):
        assert words in r.stdout


def test_doctor_reports_facts_as_text_and_json():
    r = script("doctor", "--json", timeout=180)
    facts = json.loads(r.stdout)
    assert r.returncode == (1 if facts["problems"] else 0)
    assert facts["icrt"]["version"] == runtime.__version__ and facts["packages"]["numpy"]
    assert "CPUExecutionProvider" in facts["onnxruntime"]["providers"] and isinstance(facts["cpu"]["features"], list)
    text = script("doctor", timeout=180).stdout
    for words in ("python", "onnxruntime", "CPU", "GPU", "TensorRT", "serving", "scale"):
        assert words in text


def test_doctor_says_when_both_onnxruntime_builds_are_installed(monkeypatch):
    import icrt.runtime.base.packages as packages
    from icrt.runtime.tools.doctor import facts, render

    real = packages.version
    monkeypatch.setattr(packages, "version", lambda d: "1.20.0" if d == "onnxruntime-gpu" else real(d))
    import icrt.runtime.tools.doctor as doctor

    monkeypatch.setattr(doctor, "version", packages.version)
    f = facts()
    assert f["onnxruntime"]["both_builds_installed"] and any("onnxruntime-gpu" in p for p in f["problems"])
    assert "both onnxruntime and onnxruntime-gpu are installed" in render(f)


def test_completion_scripts_come_from_the_parser():
    r = script("completion", "bash")
    assert r.returncode == 0 and "--precision" in r.stdout and "doctor" in r.stdout and "export" in r.stdout
    assert script("completion", "zsh").returncode == 0


def test_every_option_of_every_command_has_help_and_every_command_an_example():
    import argparse

    from icrt.cli import TORCH_COMMANDS
    from icrt.runtime.cli.app import build_parser

    parser, _ = build_parser(list(TORCH_COMMANDS.values()))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert p.epilog and "icrt " in p.epilog, f"icrt {name} --help has no example"
        for a in p._actions:
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction):
                assert a.help, f"icrt {name} {'/'.join(a.option_strings) or a.dest} has no help text"


def test_scoring_says_again_when_the_cpu_build_hides_an_installed_onnxruntime_gpu(square_bundle, capsys, monkeypatch):
    import icrt.runtime.backends.onnxruntime as ort
    import icrt.runtime.base.packages as packages
    from icrt.runtime.base.errors import setup_logging
    from icrt.runtime.bundle.manifest import load_manifest

    real = packages.version
    monkeypatch.setattr(packages, "version", lambda d: "1.20.0" if d == "onnxruntime-gpu" else real(d))
    monkeypatch.setattr(ort, "gpu_providers", lambda: [])
    monkeypatch.setattr(ort, "_told", set())
    setup_logging()
    backend = ort.OrtBackend.open(load_manifest(square_bundle), "fp32")
    assert backend.device == "cpu"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scoring on the CPU: both onnxruntime and onnxruntime-gpu are installed" in err
    with pytest.raises(runtime.BackendError, match="onnxruntime has no GPU providers here \\(both onnxruntime and"):
        ort.OrtBackend.open(load_manifest(square_bundle), "fp32", gpu=True)


@pytest.mark.parametrize("thing", [None, 5, 1.5, {"a.png": 1}])
def test_score_of_something_that_is_no_image_is_a_type_error(square_bundle, thing):
    """R12: None and numbers said "image arrays must be uint8 RGB (got object)"; a dict scored its keys."""
    with pytest.raises(TypeError, match="not an image"):
        icrt.score(thing, model=square_bundle)


def test_score_of_a_memoryview_is_one_encoded_image(tmp_path, square_bundle):
    textured(40, 30, seed=4).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    rec = icrt.score(memoryview(data), model=square_bundle)
    assert isinstance(rec, dict) and rec["score"] == pytest.approx(icrt.score(data, model=square_bundle)["score"])


def test_score_of_a_folder_that_cannot_be_listed_says_so(tmp_path, square_bundle, monkeypatch):
    """R12: icrt.score('lockeddir') said "is a directory, not an image"; it is the folder's error record, as on the
    command line (os.scandir refused as for another user: root may list any folder)."""
    locked = tmp_path / "lockeddir"
    locked.mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    assert icrt.score(str(locked), model=square_bundle) == [
        {"image": str(locked), "error": "cannot list this folder (permission denied)"}]
