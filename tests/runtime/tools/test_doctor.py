"""``icrt doctor`` with installed-but-broken libraries (R7): an inference library whose import raises or never
returns is a problem line (imported in a child process with a time limit), OpenVINO is listed with its version,
what ``auto`` picks for the default model and why is said, a raising or hanging NVML never breaks it, and the model
cache's place and size are shown (R17). The broken packages are files on ``PYTHONPATH`` (tests/fakes)."""
import json
import subprocess
import sys
import time

import pytest

from tests.fakes.broken_imports import broken_packages, env_with
from tests.runtime.fixtures import ROOT

pytestmark = pytest.mark.slow  # child processes


def doctor(env, *argv, timeout=300):
    """``icrt doctor --json ARGV``: (exit code, facts, seconds taken)."""
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "doctor", "--json", *argv], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout), time.monotonic() - start


def test_a_library_that_raises_on_import_is_a_problem_and_auto_says_what_it_picks_instead(tmp_path):
    env = env_with(broken_packages(tmp_path / "fakes", tensorrt="raises", openvino="raises"), ROOT,
                   ICRT_CACHE_DIR=str(tmp_path / "cache"))
    code, f, _ = doctor(env)
    assert code == 1
    for module, name in (("tensorrt", "TensorRT"), ("openvino", "OpenVINO")):
        assert f["libraries"][module]["installed"] and "RuntimeError: CUDA initialization failure" in \
            f["libraries"][module]["problem"]
        assert any(p.startswith(f"{name} is installed but importing it fails: {name} could not be loaded "
                                "(RuntimeError") for p in f["problems"])
    assert f["auto"]["backend"] == "onnxruntime" and f["auto"]["precision"] == "fp32"
    assert any(n.startswith("openvino: ") or n.startswith("tensorrt: ") for n in f["auto"]["notes"])
    text = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "doctor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300).stdout
    assert "TensorRT     installed, does not load (see the problems)" in text
    assert "auto         onnxruntime fp32 on cpu for the default model" in text


def test_a_library_whose_import_hangs_is_a_problem_and_doctor_still_answers(tmp_path):
    env = env_with(broken_packages(tmp_path / "fakes", tensorrt="hangs"), ROOT, ICRT_CACHE_DIR=str(tmp_path / "cache"))
    code, f, took = doctor(env, "--timeout", "20")
    assert code == 1 and f["libraries"]["tensorrt"]["hung"]
    assert any(p.startswith("importing TensorRT did not finish in 20 s (it hangs)") for p in f["problems"])
    assert f["auto"]["backend"] in ("onnxruntime", "openvino")  # the default bundle has no engine: TensorRT not imported
    assert took < 280


@pytest.mark.parametrize("kind", ["nvml-raises", "nvml-hangs"])
def test_nvml_that_raises_or_hangs_never_breaks_doctor(tmp_path, kind):
    env = env_with(broken_packages(tmp_path / "fakes", pynvml=kind), ROOT, ICRT_CACHE_DIR=str(tmp_path / "cache"))
    code, f, _ = doctor(env, "--timeout", "5")
    assert f["gpus"] == [] and code == (1 if f["problems"] else 0)


def test_openvino_is_listed_with_its_version_and_auto_says_its_pick_and_why(tmp_path):
    pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
    import icrt.runtime.base.hardware as hardware
    from icrt.runtime.backends.openvino import FASTER_WITH

    env = env_with(tmp_path / "none", ROOT, ICRT_CACHE_DIR=str(tmp_path / "cache"))
    _, f, _ = doctor(env)
    assert f["packages"]["openvino"] and f["libraries"]["openvino"]["version"].startswith(f["packages"]["openvino"][:6])
    faster = bool(set(FASTER_WITH) & set(hardware.cpu_features()))
    assert f["auto"]["backend"] == ("openvino" if faster else "onnxruntime") and f["auto"]["precision"] == "fp32"
    assert "tensorrt: not installed" in f["auto"]["notes"] or f["packages"]["tensorrt"]
    if not faster:
        assert any(n.startswith("openvino: this CPU has no AVX-512 or AMX") for n in f["auto"]["notes"])
    c = f["cache"]
    assert c["path"] == str(tmp_path / "cache") and c["max_bytes"] == 2048 * 2**20 and c["problem"] is None
    if faster:  # auto compiled the default model into the cache
        assert c["entries"] >= 1 and c["bytes"] > 2**20


def test_doctor_names_the_int8_and_bf16_units_and_what_bf16_means_here():
    from icrt.runtime.tools.doctor import bf16_facts

    units, text = bf16_facts(["avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"], True)
    assert units == {"int8": ["amx_int8", "avx512_vnni"], "bf16": ["amx_bf16", "avx512_bf16"]}
    assert text.startswith("bf16 units (amx_bf16, avx512_bf16): --precision bf16 runs at speed through OpenVINO")
    units, text = bf16_facts(["avx2"], True)
    assert units == {"int8": [], "bf16": []} and "refused on this CPU" in text
    assert "[openvino] extra" in bf16_facts(["amx_bf16"], False)[1]
