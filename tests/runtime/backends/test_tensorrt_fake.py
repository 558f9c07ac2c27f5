"""The TensorRT backend's ``__init__`` / ``run`` / ``close`` run against the fake tensorrt and CUDA bindings
(tests/fakes) for TensorRT 8.6, 10.3 and 11.x, on engines that ``runtime.backends.tensorrt_build`` built with the same fakes.
Torch-free. The fake engine computes sigmoid(mean of each input), read from and written to the fake CUDA memory,
so the numbers show that the copies, shapes and addresses are right; the real TensorRT has never run this."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import icrt.runtime.backends.tensorrt_build as tensorrt_build
from icrt.runtime.backends import BackendError, open_backend
from icrt.runtime.backends.tensorrt import TensorRTBackend, open_cuda
from icrt.runtime.bundle.manifest import BundleError, load_manifest
from icrt.runtime.scoring.options import ScorerOptions
from tests.fakes.bundle import fake_bundle
from tests.fakes.fake_cuda import CudaState, install_cuda
from tests.fakes.fake_tensorrt import PLAN_MAGIC, VERSIONS, install_tensorrt, sigmoid_mean

ALL = [VERSIONS["8.6"], VERSIONS["10.3"], VERSIONS["11.1"]]


def setup(monkeypatch, tmp_path, version, max_batch=8, cuda_python="bindings", pycuda=False, error=None,
          precisions=("fp32", "fp16")):
    """A bundle with engines built by runtime.backends.tensorrt_build on the fake GPU; (bundle, fake tensorrt module,
    CUDA state)."""
    state = CudaState("Orin", (8, 7))
    install_cuda(monkeypatch, state, cuda_python="bindings")
    trt = install_tensorrt(monkeypatch, version, state)
    b = fake_bundle(str(tmp_path / "b"))
    tensorrt_build.build_bundle(b, precisions=list(precisions), max_batch=max_batch)
    state.error = error  # from here on, as the runtime machine's bindings behave
    install_cuda(monkeypatch, state, cuda_python=cuda_python, pycuda=pycuda)
    return b, trt, state


def batch(n, size=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_open_run_close(monkeypatch, tmp_path, version, precision):
    b, trt, cuda = setup(monkeypatch, tmp_path, version)
    backend = open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision=precision))
    assert isinstance(backend, TensorRTBackend) and backend.precision == precision
    assert (backend.max_batch, backend.min_batch, backend.size) == (8, 1, 64)
    assert backend.file.endswith(f"engine.{precision}.trt{version}.sm87.plan")
    x = batch(5)
    np.testing.assert_allclose(backend.run(x), sigmoid_mean(x), rtol=1e-6)
    big = batch(19, seed=1)  # more than the profile's max batch: run in slices of 8
    np.testing.assert_allclose(backend.run(big), sigmoid_mean(big), rtol=1e-6)
    assert [c[1] for c in cuda.calls if c[0] == "execute_async_v3"] == [5, 8, 8, 3]
    assert backend.describe()["notes"][-1].startswith(f"engine engine.{precision}.trt{version}.sm87.plan")
    backend.close()


@pytest.mark.parametrize("version", ALL)
def test_empty_batch_runs_nothing(monkeypatch, tmp_path, version):
    b, _, cuda = setup(monkeypatch, tmp_path, version)
    backend = open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision="fp32"))
    out = backend.run(np.zeros((0, 3, 64, 64), np.float32))
    assert out.shape == (0,) and out.dtype == np.float32
    assert "execute_async_v3" not in cuda.names()
    backend.close()


@pytest.mark.parametrize("version", ALL)
def test_close_releases_tensorrt_before_the_cuda_buffers_and_stream(monkeypatch, tmp_path, version):
    b, _, cuda = setup(monkeypatch, tmp_path, version)
    backend = open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision="fp32"))
    backend.run(batch(2))
    start = len(cuda.calls)
    backend.close()
    names = cuda.names()[start:]
    assert names.index("context.__del__") < names.index("engine.__del__") < names.index("cudaFree")
    assert names[-1] == "cudaStreamDestroy" and names.count("cudaFree") == 2 and names.count("cudaFreeHost") == 2
    assert cuda.memory == {} and cuda.streams == set()  # every buffer freed, the stream destroyed
    backend.close()  # twice is fine
    assert cuda.names()[start:] == names


def test_shape_outside_the_profile_is_a_clear_error(monkeypatch, tmp_path):
    b, _, _ = setup(monkeypatch, tmp_path, VERSIONS["10.3"], max_batch=4)
    backend = open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision="fp32"))
    with pytest.raises(BackendError, match=r"input shape \[5, 3, 64, 64\] is outside the engine's optimization "
                                           r"profile \(\[1, 3, 64, 64\] \.\. \[4, 3, 64, 64\]\)"):
        backend._set_shape(5)  # what set_input_shape's False means; run() itself slices to the profile
    with pytest.raises(BackendError, match=r"input batch \[2, 3, 32, 32\] does not match"):
        backend.run(batch(2, size=32))
    backend.close()


def test_engine_profile_wins_over_a_larger_manifest_max_batch(monkeypatch, tmp_path):
    b, _, cuda = setup(monkeypatch, tmp_path, VERSIONS["11.1"], max_batch=4)
    m = load_manifest(b)
    m.engines[0].max_batch = 64  # a manifest that claims more than the engine's profile holds
    backend = open_backend(m, ScorerOptions(backend="tensorrt", precision="fp32"))
    assert backend.max_batch == 4
    x = batch(9)
    np.testing.assert_allclose(backend.run(x), sigmoid_mean(x), rtol=1e-6)
    backend.close()


def test_undeserializable_engine_frees_what_was_allocated(monkeypatch, tmp_path):
    b, _, cuda = setup(monkeypatch, tmp_path, VERSIONS["10.3"])
    m = load_manifest(b)
    with open(m.path(m.engines_for("fp32")[0].file), "wb") as f:
        f.write(b"not a plan")
    with pytest.raises(BundleError, match="SHA-256 .* is not the manifest's"):  # a changed file is refused first
        open_backend(m, ScorerOptions(backend="tensorrt", precision="fp32"))
    m.record_checksums()  # as if it had been built that way
    with pytest.raises(BackendError, match="could not deserialize this engine .*icrt build -m"):
        open_backend(m, ScorerOptions(backend="tensorrt", precision="fp32"))
    assert cuda.memory == {} and cuda.streams == set()


def test_engine_for_another_input_size_is_a_bundle_error(monkeypatch, tmp_path):
    b, _, cuda = setup(monkeypatch, tmp_path, VERSIONS["8.6"])
    m = load_manifest(b)
    path = m.path(m.engines_for("fp32")[0].file)
    with open(path, "rb") as f:
        plan = json.loads(f.read()[len(PLAN_MAGIC):])
    plan["profile"]["image"] = [[1, 3, 32, 32], [1, 3, 32, 32], [8, 3, 32, 32]]
    with open(path, "wb") as f:
        f.write(PLAN_MAGIC + json.dumps(plan).encode())
    m.record_checksums()
    with pytest.raises(BundleError, match=r"takes \[8, 3, 32, 32\]; the manifest expects \[N, 3, 64, 64\]"):
        open_backend(m, ScorerOptions(backend="tensorrt", precision="fp32"))
    names = cuda.names()
    assert names.index("context.__del__") < names.index("cudaStreamDestroy")  # released before the stream went
    assert cuda.memory == {} and cuda.streams == set()


def test_cuda_python_load_failure_falls_back_to_pycuda(monkeypatch, tmp_path):
    """cuda-python 13 on a CUDA 12 driver (JetPack 6) imports, then every call answers
    cudaErrorInsufficientDriver: the backend goes on with pycuda."""
    b, _, cuda = setup(monkeypatch, tmp_path, VERSIONS["10.3"], pycuda=True, error=35)
    backend = open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision="fp16"))
    x = batch(3)
    np.testing.assert_allclose(backend.run(x), sigmoid_mean(x), rtol=1e-6)
    assert "pycuda.init" in cuda.names()
    start = len(cuda.calls)
    backend.close()
    names = cuda.names()[start:]
    assert names.index("context.__del__") < names.index("pycuda.free") and names[-1] == "pycuda.Context.pop"
    assert cuda.memory == {} and cuda.streams == set()


def test_older_cuda_cudart_module_works(monkeypatch, tmp_path):
    b, _, _ = setup(monkeypatch, tmp_path, VERSIONS["8.6"], cuda_python="cudart")
    backend = open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision="fp32"))
    x = batch(2)
    np.testing.assert_allclose(backend.run(x), sigmoid_mean(x), rtol=1e-6)
    backend.close()


def test_no_cuda_binding_is_one_clear_error(monkeypatch, tmp_path):
    b, _, _ = setup(monkeypatch, tmp_path, VERSIONS["10.3"], error=35, pycuda=False)
    with pytest.raises(BackendError) as e:
        open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision="fp32"))
    msg = str(e.value)
    assert "cuda-python: cudaSetDevice: CUDA error cudaErrorInsufficientDriver" in msg and "pycuda:" in msg
    assert "pip install 'cuda-python<13'" in msg


def test_open_cuda_cleans_up_a_half_opened_pycuda(monkeypatch):
    state = CudaState()
    install_cuda(monkeypatch, state, cuda_python=None, pycuda=True)
    cuda = open_cuda(0)
    assert cuda.via == "pycuda"
    cuda.close()
    cuda.close()
    assert state.names().count("pycuda.Context.pop") == 1


def test_auto_picks_tensorrt_and_the_scorer_scores_through_it(monkeypatch, tmp_path):
    from PIL import Image

    from icrt.runtime import Scorer

    b, _, _ = setup(monkeypatch, tmp_path, VERSIONS["11.1"])
    img = tmp_path / "x.png"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(img)
    scorer = Scorer.load(b, backend="auto", precision="fp16")
    assert scorer.info()["backend"] == "tensorrt"
    rec = scorer.score(str(img))
    assert 0.0 < rec["score"] < 1.0 and rec["patches"] == 1


def test_engine_for_another_gpu_is_not_picked(monkeypatch, tmp_path):
    b, _, _ = setup(monkeypatch, tmp_path, VERSIONS["10.3"])
    install_cuda(monkeypatch, CudaState("NVIDIA A100", (8, 0)))  # the bundle copied to another machine
    with pytest.raises(BackendError, match=r"no fp32 TensorRT engine for TensorRT 10\.3\.0 on a GPU with compute "
                                           r"capability 8\.0 .*icrt build -m .* --precision fp32"):
        open_backend(load_manifest(b), ScorerOptions(backend="tensorrt", precision="fp32"))


def test_files_written_by_build_are_the_ones_the_backend_reads(monkeypatch, tmp_path):
    b, _, _ = setup(monkeypatch, tmp_path, VERSIONS["8.6"])
    m = load_manifest(b)
    for e in m.engines:
        assert os.path.isfile(m.path(e.file))
