"""Inference libraries that are installed but broken (R7): an import that raises anything (RuntimeError: a CUDA or
ABI mismatch) is one line naming the package, and ``auto`` goes on to the next backend; TensorRT is imported only for
a bundle with an engine of the precision, so one whose import never returns cannot hang scoring a bundle without
engines. The broken packages are files on ``PYTHONPATH`` (tests/fakes/broken_imports.py) in a child process."""
import subprocess
import sys

import pytest
from PIL import Image

from icrt.runtime.bundle.manifest import EngineRecord, engine_file_name, load_manifest
from tests.fakes.broken_imports import broken_packages, env_with
from tests.runtime.fixtures import ROOT, build_bundle

pytestmark = pytest.mark.slow  # child processes


def icrt(env, *argv, timeout=240):
    return subprocess.run([sys.executable, "-m", "icrt.runtime.cli", *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(path)
    return path


@pytest.fixture
def engine_bundle(tmp_path):
    """The tiny conv net with an fp32 TensorRT engine named in its manifest (auto tries TensorRT first)."""
    b = build_bundle(str(tmp_path / "b"))
    m = load_manifest(b)
    m.engines = [EngineRecord(precision="fp32", file=engine_file_name("fp32", "10.3.0", "8.7"), tensorrt="10.3.0",
                              compute_capability="8.7", max_batch=8)]
    m.save()
    return b


def test_a_tensorrt_that_raises_on_import_is_one_line_and_auto_goes_on(tmp_path, image, engine_bundle):
    env = env_with(broken_packages(tmp_path / "fakes", tensorrt="raises"), ROOT, ICRT_CACHE_DIR=str(tmp_path / "c"))
    r = icrt(env, "score", image, "-m", engine_bundle, "--format", "csv")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.splitlines()[1].startswith(str(image) + ",")
    r = icrt(env, "score", image, "-m", engine_bundle, "--backend", "tensorrt")
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("icrt: error: TensorRT could not be loaded (RuntimeError: CUDA initialization failure")


def test_tensorrt_is_not_imported_for_a_bundle_without_engines(tmp_path, image, monkeypatch):
    """The default bundle has no engines: a TensorRT whose import never returns is never imported (it hung every
    icrt score)."""
    env = env_with(broken_packages(tmp_path / "fakes", tensorrt="hangs"), ROOT, ICRT_CACHE_DIR=str(tmp_path / "c"))
    r = icrt(env, "score", image, "--format", "json", timeout=240)
    assert r.returncode == 0 and '"score"' in r.stdout, r.stderr
    import icrt.runtime.backends.tensorrt as tensorrt
    from icrt.runtime.backends import BackendError
    from icrt.runtime.bundle.defaults import default_bundle

    def imported():
        raise AssertionError("tensorrt was imported")

    monkeypatch.setattr(tensorrt, "tensorrt_available", lambda: True)
    monkeypatch.setattr(tensorrt, "_import_tensorrt", imported)
    assert load_manifest(default_bundle()).engines == []
    with pytest.raises(BackendError, match="no fp32 TensorRT engine in this bundle; rebuild the engine"):
        tensorrt.TensorRTBackend.open(load_manifest(default_bundle()), "fp32")


@pytest.mark.parametrize("module, words", [
    ("openvino", "icrt: error: OpenVINO could not be loaded (RuntimeError: CUDA initialization failure"),
    ("onnxruntime", "icrt: error: onnxruntime could not be loaded (RuntimeError: CUDA initialization failure"),
])
def test_openvino_or_onnxruntime_that_raise_on_import_are_one_line(tmp_path, image, module, words):
    env = env_with(broken_packages(tmp_path / "fakes", **{module: "raises"}), ROOT, ICRT_CACHE_DIR=str(tmp_path / "c"))
    r = icrt(env, "score", image, "--backend", module)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(words)
    if module == "openvino":  # auto picks OpenVINO on AVX-512 / AMX CPUs: it goes on to onnxruntime
        r = icrt(env, "score", image, "--format", "json")
        assert r.returncode == 0 and '"score"' in r.stdout and "Traceback" not in r.stderr, r.stderr
