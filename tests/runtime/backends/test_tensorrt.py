"""The TensorRT backend's GPU-free parts: engine selection from the manifest, and clear errors."""
import builtins

import pytest

from icrt.runtime.backends import BackendError
from icrt.runtime.backends.tensorrt import cc_key, select_engine, tensorrt_available, version_key
from icrt.runtime.bundle.manifest import EngineRecord, Manifest
from icrt.runtime.bundle.preprocessing import Preprocessing


def manifest(engines):
    return Manifest(kind="d2s", name="t", preprocessing=Preprocessing(size=64), root="/bundles/d2s",
                    files={"fp32": {"onnxruntime": "model.onnx", "tensorrt": "model.onnx"},
                           "int8": {"onnxruntime": "model.int8.onnx", "tensorrt": "model.int8.qdq.onnx"}},
                    engines=[EngineRecord.from_dict(e) for e in engines])


ENGINES = [
    {"precision": "fp16", "file": "engine.fp16.trt10.3.0.sm87.plan", "tensorrt": "10.3.0.30", "compute_capability": "8.7"},
    {"precision": "fp16", "file": "engine.fp16.trt11.0.0.sm90.plan", "tensorrt": "11.0.0", "compute_capability": "9.0"},
    {"precision": "int8", "file": "engine.int8.trt11.0.0.sm90.plan", "tensorrt": "11.0.0.5", "compute_capability": "90"},
]


def test_version_and_compute_capability_spellings():
    assert version_key("10.3.0.26") == version_key("10.3.0") == (10, 3, 0)
    assert version_key("11.0") == (11, 0, 0)
    assert cc_key("8.7") == cc_key("87") == cc_key("sm87") == cc_key("sm_87") == cc_key((8, 7)) == "8.7"
    assert cc_key("12.0") == cc_key("120") == "12.0"


@pytest.mark.parametrize("prec,trt,cc,file", [
    ("fp16", "10.3.0.26", "8.7", "engine.fp16.trt10.3.0.sm87.plan"),  # Jetson Orin, JetPack 6
    ("fp16", "11.0.0.5", (9, 0), "engine.fp16.trt11.0.0.sm90.plan"),  # H100
    ("int8", "11.0.0", "9.0", "engine.int8.trt11.0.0.sm90.plan"),
])
def test_engine_selected_by_precision_version_and_gpu(prec, trt, cc, file):
    assert select_engine(manifest(ENGINES), prec, trt, cc).file == file


@pytest.mark.parametrize("prec,trt,cc", [("fp16", "10.4.0", "8.7"), ("fp16", "10.3.0", "8.9"), ("fp32", "11.0.0", "9.0")])
def test_mismatched_engine_error_lists_what_exists_and_how_to_rebuild(prec, trt, cc):
    with pytest.raises(BackendError) as e:
        select_engine(manifest(ENGINES), prec, trt, cc)
    msg = str(e.value)
    assert f"no {prec} TensorRT engine for TensorRT {'.'.join(trt.split('.')[:3])}" in msg
    assert f"compute capability {cc}" in msg
    assert "rebuild the engine on this machine: python -m export" in msg and "--trt" in msg
    assert "trtexec --onnx=/bundles/d2s/" in msg and "--backend onnxruntime" in msg
    if prec == "fp16":
        assert "engine.fp16.trt10.3.0.sm87.plan (TensorRT 10.3.0.30, sm 8.7)" in msg
    else:
        assert "(bundle has: none)" in msg


def test_int8_rebuild_hint_names_the_tensorrt_onnx_form():
    with pytest.raises(BackendError, match=r"--int8 --calib-data IMAGES --trt .*model\.int8\.qdq\.onnx"):
        select_engine(manifest([]), "int8", "10.3.0", "8.7")


def test_tensorrt_backend_without_tensorrt_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_trt(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == "tensorrt" or name.startswith("tensorrt.")):
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_trt)
    from icrt.runtime.backends import open_backend
    from icrt.runtime.scoring.options import ScorerOptions

    with pytest.raises(BackendError, match=r"TensorRT is not installed .*use --backend onnxruntime"):
        open_backend(manifest(ENGINES), ScorerOptions(backend="tensorrt", precision="fp16"))


def test_auto_skips_tensorrt_when_absent():
    assert tensorrt_available() is False  # this test machine has no TensorRT; auto must not try it
