"""``icrt build`` and runtime.backends.tensorrt_build, run end to end against the fake tensorrt / CUDA (tests/fakes), which model
the documented differences between TensorRT 8.6, 10.3 and 11.x. Torch-free. No real TensorRT or GPU is involved:
these tests show that the code does what the documented APIs ask for, not that the real libraries agree."""
from __future__ import annotations

import contextlib
import json
import os

import pytest

import icrt.runtime.backends.tensorrt_build as tensorrt_build
from icrt.runtime.backends.tensorrt import cc_compact
from icrt.runtime.bundle.manifest import engine_file_name, load_manifest, timing_cache_file_name
from icrt.runtime.cli import main
from tests.fakes.bundle import fake_bundle, snapshot
from tests.fakes.fake_cuda import CudaState, install_cuda
from tests.fakes.fake_tensorrt import CACHE_MAGIC, PLAN_MAGIC, VERSIONS, install_tensorrt

V86, V10, V11 = VERSIONS["8.6"], VERSIONS["10.3"], VERSIONS["11.1"]


@pytest.fixture(autouse=True)
def only_build_command(monkeypatch):
    """`icrt` with the build command only: other command modules (being written elsewhere) cannot break these."""
    import icrt.runtime.cli.commands as commands

    assert "build" in commands.COMMANDS  # registered
    monkeypatch.setattr(commands, "COMMANDS", ("build",))


@pytest.fixture
def gpu(monkeypatch):
    """A fake Jetson Orin (sm 8.7) behind cuda-python's cuda.bindings.runtime."""
    state = CudaState("Orin", (8, 7))
    install_cuda(monkeypatch, state, cuda_python="bindings")
    return state


def trt(monkeypatch, version, state):
    return install_tensorrt(monkeypatch, version, state).fake


def build(bundle, *args):
    return main(["build", "-m", bundle, *args])


# What each TensorRT version gets, per precision: (source ONNX, builder flags, strongly typed, network flags,
# cleared builder flags). 8.6: explicit batch, weak typing; 10.x: fp32 strongly typed, fp16/int8 with builder
# flags; 11.x: strongly typed, typed ONNX files, no FP16/INT8 flags. TF32 cleared for fp32 everywhere.
EXPECTED = {
    V86: {"fp32": ("model.onnx", [], False, ["EXPLICIT_BATCH"], ["TF32"]),
          "fp16": ("model.onnx", ["FP16"], False, ["EXPLICIT_BATCH"], []),
          "int8": ("model.int8.qdq.onnx", ["INT8", "FP16"], False, ["EXPLICIT_BATCH"], [])},
    V10: {"fp32": ("model.onnx", [], True, ["STRONGLY_TYPED"], ["TF32"]),
          "fp16": ("model.onnx", ["FP16"], False, [], []),
          "int8": ("model.int8.qdq.onnx", ["INT8", "FP16"], False, [], [])},
    V11: {"fp32": ("model.onnx", [], True, [], ["TF32"]),
          "fp16": ("model.fp16.onnx", [], True, [], []),
          "int8": ("model.int8.qdq.onnx", [], True, [], [])},
}


@pytest.mark.parametrize("version", [V86, V10, V11])
def test_icrt_build_end_to_end(tmp_path, monkeypatch, gpu, capsys, version):
    fake = trt(monkeypatch, version, gpu)
    b = fake_bundle(str(tmp_path / "b"))
    assert build(b, "--precision", "fp32,fp16,int8", "--max-batch", "8", "--workspace", "512") == 0
    out = capsys.readouterr().out
    m = load_manifest(b)
    assert [e.precision for e in m.engines] == ["fp32", "fp16", "int8"]
    for e, made in zip(m.engines, fake.builds):
        onnx, flags, strongly, network, cleared = EXPECTED[version][e.precision]
        assert e.file == f"engine.{e.precision}.trt{version}.sm87.plan"
        assert (e.onnx, e.builder_flags, e.strongly_typed) == (onnx, flags, strongly)
        assert (e.network_flags, e.cleared_builder_flags) == (network, cleared)
        assert (e.tensorrt, e.compute_capability, e.gpu) == (version, "8.7", "Orin")
        assert (e.min_batch, e.opt_batch, e.max_batch, e.workspace_mb) == (1, 1, 8, 512)
        assert e.timing_cache == f"timing.trt{version}.sm87.cache"
        # what the (fake) TensorRT was really asked for
        assert made["onnx"] == onnx and made["strongly_typed"] == strongly and made["explicit_batch"]
        assert made["network_flags"] == network
        assert ("TF32" in made["builder_flags"]) == (e.precision != "fp32")  # on by default, cleared for fp32
        assert set(made["builder_flags"]) - {"TF32"} == set(flags)
        assert made["profile"] == {"image": [[1, 3, 64, 64], [1, 3, 64, 64], [8, 3, 64, 64]]}
        assert made["workspace"] == 512 << 20
        with open(os.path.join(b, e.file), "rb") as f:
            assert f.read().startswith(PLAN_MAGIC)
        assert f"trtexec --onnx={os.path.join(b, onnx)}" in out
    with open(os.path.join(b, timing_cache_file_name(version, "87")), "rb") as f:
        assert f.read().startswith(CACHE_MAGIC)
    assert f"TensorRT {version}, GPU Orin (sm 8.7, via cuda-python)" in out
    assert not [n for n in os.listdir(b) if n.startswith(".tmp-")]


@pytest.mark.parametrize("version", [V86, V10, V11])
def test_the_default_bundle_builds_in_every_precision(tmp_path, monkeypatch, gpu, version):
    """The README's `icrt build` line on the shipped default model: every check of icrt's own passes, each
    precision is built from the file that TensorRT version needs (only the fake TensorRT stands in)."""
    from icrt.runtime.bundle.defaults import PACKAGE_BUNDLE
    from icrt.runtime.bundle.staging import copy_bundle

    fake = trt(monkeypatch, version, gpu)
    b = str(tmp_path / "default")
    copy_bundle(PACKAGE_BUNDLE, b)
    assert build(b, "--precision", "fp32,fp16,int8") == 0
    m = load_manifest(b)
    assert [e.precision for e in m.engines] == ["fp32", "fp16", "int8"]
    assert [e.onnx for e in m.engines] == [EXPECTED[version][p][0] for p in ("fp32", "fp16", "int8")]
    assert [made["onnx"] for made in fake.builds] == [e.onnx for e in m.engines]
    assert all(os.path.isfile(os.path.join(b, e.file)) for e in m.engines)


def test_8_6_needs_the_explicit_batch_flag(monkeypatch, gpu, tmp_path):
    """8.6's create_network(0) is implicit batch, which the ONNX parser refuses (what the old code did), and 8.6
    has no STRONGLY_TYPED flag (the old code's AttributeError)."""
    module = install_tensorrt(monkeypatch, V86, gpu)
    assert not hasattr(module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    no_flags = tensorrt_build.Recipe("fp32", "model.onnx")
    with pytest.raises(tensorrt_build.TensorRTError, match="could not parse the ONNX file: .*explicit batch"):
        tensorrt_build.build_engine(module, os.path.join(b, "model.onnx"), "image", tensorrt_build.profile_shapes(64, 1, 4),
                             no_flags, 64)
    with pytest.raises(tensorrt_build.TensorRTError, match="has no network flag STRONGLY_TYPED"):
        tensorrt_build.build_engine(module, os.path.join(b, "model.onnx"), "image", tensorrt_build.profile_shapes(64, 1, 4),
                             tensorrt_build.Recipe("fp32", "model.onnx", network_flags=("STRONGLY_TYPED",)), 64)


def test_11_has_no_weak_typing_flags_and_10_refuses_them_on_strongly_typed_networks(monkeypatch, gpu, tmp_path):
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    shapes = tensorrt_build.profile_shapes(64, 1, 4)
    m11 = install_tensorrt(monkeypatch, V11, gpu)
    assert not hasattr(m11.BuilderFlag, "FP16") and hasattr(m11.BuilderFlag, "TF32")
    with pytest.raises(tensorrt_build.TensorRTError, match="has no builder flag FP16"):
        tensorrt_build.build_engine(m11, os.path.join(b, "model.onnx"), "image", shapes,
                             tensorrt_build.Recipe("fp16", "model.onnx", builder_flags=("FP16",)), 64)
    m10 = install_tensorrt(monkeypatch, V10, gpu)
    with pytest.raises(tensorrt_build.TensorRTError, match="could not build the fp16 engine"):
        tensorrt_build.build_engine(m10, os.path.join(b, "model.onnx"), "image", shapes,
                             tensorrt_build.Recipe("fp16", "model.onnx", builder_flags=("FP16",),
                                            network_flags=("STRONGLY_TYPED",)), 64)


def test_trtexec_lines_match_each_version(monkeypatch, gpu, tmp_path, capsys):
    lines = {}
    for version in (V86, V10, V11):
        trt(monkeypatch, version, gpu)
        b = fake_bundle(str(tmp_path / version))
        assert build(b, "--max-batch", "16") == 0
        lines[version] = [ln.split("trtexec: ", 1)[1] for ln in capsys.readouterr().out.splitlines()
                          if "trtexec: " in ln]
    fp32, fp16, int8 = lines[V10]
    b10 = str(tmp_path / V10)
    assert fp16 == (f"trtexec --onnx={b10}/model.onnx --saveEngine={b10}/engine.fp16.trt{V10}.sm87.plan "
                    "--minShapes=image:1x3x64x64 --optShapes=image:1x3x64x64 --maxShapes=image:16x3x64x64 "
                    f"--memPoolSize=workspace:4096 --timingCacheFile={b10}/timing.trt{V10}.sm87.cache --fp16 "
                    "--skipInference")
    assert fp32.endswith("--stronglyTyped --noTF32 --skipInference") and "--int8 --fp16" in int8
    assert lines[V86][0].endswith("--noTF32 --skipInference") and "--stronglyTyped" not in " ".join(lines[V86])
    assert "--int8 --fp16" in lines[V86][2]
    assert not any(f in " ".join(lines[V11]) for f in ("--stronglyTyped", "--fp16", "--int8"))  # 11: defaults
    assert "model.fp16.onnx" in lines[V11][1] and lines[V11][0].endswith("--noTF32 --skipInference")


def test_patch_models_get_the_usual_patch_count_as_opt_batch(monkeypatch, gpu, tmp_path):
    fake = trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",), resize="patches")
    from icrt.runtime.bundle.preprocessing import patch_count

    usual = patch_count(480, 640, load_manifest(b).preprocessing)
    assert usual == 35
    assert build(b, "--max-batch", "64") == 0
    e = load_manifest(b).engines[0]
    assert (e.opt_batch, e.max_batch) == (35, 64)
    assert build(b) == 0  # default --max-batch 32: opt never exceeds max
    e = load_manifest(b).engines[0]
    assert (e.opt_batch, e.max_batch, fake.builds[-1]["profile"]["image"][1][0]) == (32, 32, 32)


# --- timing cache -------------------------------------------------------------------------------------------


def test_timing_cache_is_keyed_by_version_and_gpu_and_reused(monkeypatch, gpu, tmp_path):
    fake = trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32", "fp16"))
    assert build(b) == 0
    assert [x["timing_cache_entries"] for x in fake.builds] == [0, 1]  # the second engine reuses the first's
    assert build(b, "--precision", "fp16") == 0
    assert fake.builds[-1]["timing_cache_entries"] == 2  # read back from timing.trt10.3.0.30.sm87.cache
    assert all(ok for kind, *rest in fake.timing_cache_calls if kind == "set" for ok in rest[-1:])
    # another GPU (sm 9.0) and another TensorRT get caches of their own, next to this one
    trt(monkeypatch, V11, CudaState("H100", (9, 0)))
    install_cuda(monkeypatch, CudaState("H100", (9, 0)))
    assert build(b, "--precision", "fp32") == 0
    caches = sorted(n for n in os.listdir(b) if n.startswith("timing."))
    assert caches == [f"timing.trt{V10}.sm87.cache", f"timing.trt{V11}.sm90.cache"]


@pytest.mark.parametrize("stored", [b"garbage, not a cache",
                                    CACHE_MAGIC + json.dumps({"key": "10.3.0.30|Jetson AGX Orin|8.7",
                                                              "entries": 7}).encode()])
def test_rejected_timing_cache_starts_empty_and_says_so(monkeypatch, gpu, tmp_path, capsys, stored):
    """A cache made on another GPU of the same sm (AGX Orin vs Orin Nano), or a corrupt file: set_timing_cache
    returns False (or create_timing_cache None) -> an empty cache, a warning, and the build goes on."""
    fake = trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32", "fp16"))
    cache = os.path.join(b, timing_cache_file_name(V10, "87"))
    with open(cache, "wb") as f:
        f.write(stored)
    assert build(b) == 0
    captured = capsys.readouterr()
    assert captured.err.count("TensorRT rejected this timing cache") == 1  # once, not once per engine
    assert "starting with an empty one" in captured.out
    assert [x["timing_cache_entries"] for x in fake.builds] == [0, 1]
    with open(cache, "rb") as f:
        assert json.loads(f.read()[len(CACHE_MAGIC):])["key"] == fake.gpu_key  # replaced by this GPU's cache


def test_get_timing_cache_may_return_none(monkeypatch, gpu, tmp_path, capsys):
    fake = trt(monkeypatch, V11, gpu)
    fake.no_timing_cache = True
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    cache = os.path.join(b, timing_cache_file_name(V11, "87"))
    with open(cache, "wb") as f:
        f.write(CACHE_MAGIC + json.dumps({"key": fake.gpu_key, "entries": 3}).encode())
    before = snapshot(b)[os.path.basename(cache)]
    assert build(b) == 0
    out = capsys.readouterr().out
    assert "TensorRT returned no timing cache to save" in out and "(unchanged)" in out
    assert snapshot(b)[os.path.basename(cache)] == before
    assert load_manifest(b).engines[0].file in os.listdir(b)


# --- atomic writes, the manifest --------------------------------------------------------------------------------


def test_failed_build_leaves_the_bundle_as_it_was(monkeypatch, gpu, tmp_path, capsys):
    fake = trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"))
    before = snapshot(b)
    fake.fail_build = lambda made: made["onnx"] == "model.int8.qdq.onnx"  # fp32, fp16 built, then int8 fails
    assert build(b) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]  # progress lines aside
    assert len(err) == 1 and err[0].startswith("icrt: error: ") and "could not build the int8 engine" in err[0]
    assert len(fake.builds) == 3 and snapshot(b) == before


def test_unparsable_onnx_leaves_the_bundle_as_it_was(monkeypatch, gpu, tmp_path, capsys):
    trt(monkeypatch, V86, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    with open(os.path.join(b, "model.onnx"), "wb") as f:
        f.write(b"BROKEN model")
    before = snapshot(b)
    assert build(b) == 2
    assert "could not parse the ONNX file" in capsys.readouterr().err
    assert snapshot(b) == before


def test_a_failed_write_leaves_the_bundle_as_it_was(monkeypatch, gpu, tmp_path):
    trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32", "fp16"))
    before = snapshot(b)
    real = tensorrt_build.atomic_path
    calls = []

    def fails_second(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", path)
        return real(path)

    monkeypatch.setattr(tensorrt_build, "atomic_path", fails_second)
    with pytest.raises(OSError, match="No space left"):
        tensorrt_build.build_bundle(b)
    assert snapshot(b) == before  # the first engine's temporary file is gone, nothing was renamed


def test_a_failed_manifest_write_removes_the_new_files(monkeypatch, gpu, tmp_path):
    trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    before = snapshot(b)
    from icrt.runtime.bundle.manifest import Manifest

    def no_space(self, root=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Manifest, "save", no_space)
    with pytest.raises(OSError):
        tensorrt_build.build_bundle(b)
    assert snapshot(b) == before


def test_rebuild_replaces_the_same_target_and_keeps_the_others(monkeypatch, gpu, tmp_path):
    older = {"precision": "fp16", "file": "engine.fp16.trt10.3.0.26.sm87.plan", "tensorrt": "10.3.0.26",
             "compute_capability": "8.7", "min_batch": 1, "opt_batch": 1, "max_batch": 8}
    other_gpu = {"precision": "fp16", "file": "engine.fp16.trt10.3.0.30.sm90.plan", "tensorrt": "10.3.0.30",
                 "compute_capability": "9.0", "min_batch": 1, "opt_batch": 1, "max_batch": 64, "strongly_typed": False,
                 "builder_flags": ["FP16"], "note": "kept as it was"}
    trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32", "fp16"), engines=[older, other_gpu])
    for _ in range(2):
        assert build(b, "--precision", "fp16") == 0
        es = load_manifest(b).engines
        assert [(e.file, e.tensorrt) for e in es] == [(other_gpu["file"], "10.3.0.30"),
                                                            (f"engine.fp16.trt{V10}.sm87.plan", V10)]
        assert es[0].to_dict() == other_gpu  # untouched, unknown keys included
    files = os.listdir(b)
    assert older["file"] not in files and other_gpu["file"] in files  # the replaced engine's file went with it
    assert build(b, "--precision", "fp32") == 0
    assert [e.precision for e in load_manifest(b).engines] == ["fp16", "fp16", "fp32"]


def test_a_build_leaves_a_table_of_digests_that_covers_every_named_file(monkeypatch, gpu, tmp_path):
    """A table with any digest must cover every named file (R14): a build records the new engines' digests, and in a
    bundle that had none, every file's (else the model files would then be refused)."""
    trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32", "fp16"))
    assert load_manifest(b).sha256 == {}
    assert build(b, "--precision", "fp16") == 0
    m = load_manifest(b)
    assert sorted(m.sha256) == sorted(m.named_files()) and m.verify_files() is None
    kept = dict(m.sha256)
    assert build(b, "--precision", "fp32") == 0
    m = load_manifest(b)
    assert {k: v for k, v in m.sha256.items() if k in kept} == kept and sorted(m.sha256) == sorted(m.named_files())


def test_a_tensorrt_that_fails_to_import_in_any_way_is_one_line(monkeypatch, tmp_path, capsys):
    """R7: only ImportError and OSError were caught; a RuntimeError (a CUDA or ABI mismatch) was a traceback."""
    import builtins

    real = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "tensorrt":
            raise RuntimeError("CUDA initialization failure with error 35")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    assert build(b) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("icrt: error: the tensorrt Python package is installed but does not "
                                               "load (RuntimeError: CUDA initialization failure with error 35)")


# --- errors -----------------------------------------------------------------------------------------------------


def test_without_tensorrt_one_line_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    assert build(b) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("icrt: error: building TensorRT engines needs the tensorrt Python")
    from icrt.runtime.base.install import pip_line

    assert "JetPack" in err[0] and "--system-site-packages" in err[0] and pip_line("trt") in err[0]


def test_tensorrt_older_than_8_6_is_refused(monkeypatch, gpu, tmp_path, capsys):
    trt(monkeypatch, "8.5.2.2", gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    assert build(b) == 2
    assert "TensorRT 8.5.2.2 is too old: icrt builds engines with TensorRT 8.6 (JetPack 6.0) or newer" in \
        capsys.readouterr().err


def test_no_usable_gpu_names_what_each_binding_said(monkeypatch, tmp_path, capsys):
    """cuda-python 13 on a CUDA 12 driver answers cudaErrorInsufficientDriver; without pycuda there is no GPU."""
    state = CudaState(error=35)
    install_cuda(monkeypatch, state, cuda_python="bindings", pycuda=False)
    trt(monkeypatch, V10, state)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    before = snapshot(b)
    assert build(b) == 2
    err = capsys.readouterr().err
    assert "needs an NVIDIA GPU" in err and "cudaErrorInsufficientDriver" in err and "pycuda:" in err
    assert snapshot(b) == before


@pytest.mark.parametrize("cuda_python,pycuda,via", [("bindings", False, "cuda-python"), ("cudart", False, "cuda-python"),
                                                     (None, True, "pycuda")])
def test_gpu_name_and_compute_capability_without_torch(monkeypatch, cuda_python, pycuda, via):
    from icrt.runtime.backends.tensorrt import gpu_info

    install_cuda(monkeypatch, CudaState("NVIDIA H100 80GB HBM3", (9, 0)), cuda_python=cuda_python, pycuda=pycuda)
    assert gpu_info() == ("NVIDIA H100 80GB HBM3", "9.0", via)


def test_gpu_info_falls_back_to_pycuda_when_cuda_python_fails_to_load(monkeypatch):
    from icrt.runtime.backends.tensorrt import gpu_info

    state = CudaState("Orin", (8, 7), error=35)  # cuda-python imports, its calls fail ...
    install_cuda(monkeypatch, state, cuda_python="bindings", pycuda=True)
    assert gpu_info() == ("Orin", "8.7", "pycuda")  # ... pycuda answers
    assert state.names()[:2] == ["cudaGetDeviceProperties", "pycuda.init"]


def test_real_cuda_python_without_a_gpu_is_a_clear_error(monkeypatch):
    """The cuda-bindings installed here (13.x, no driver) answer cudaErrorInsufficientDriver: the real library's
    load failure, which must pass to pycuda and then end in one clear error."""
    pytest.importorskip("cuda.bindings.runtime")
    import sys

    from icrt.runtime.backends import BackendError
    from icrt.runtime.backends.tensorrt import gpu_info

    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    try:
        name, cc, via = gpu_info()
    except BackendError as e:
        assert "cuda-python: cudaGetDeviceProperties: CUDA error" in str(e) and "pycuda:" in str(e)
    else:  # a machine with a GPU and a matching driver
        assert via == "cuda-python" and name and "." in cc


def test_int8_needs_the_qdq_form(monkeypatch, gpu, tmp_path, capsys):
    trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32", "int8"), qdq=False)
    assert build(b) == 0  # by default: the precisions that can be built (not int8 without its Q/DQ form)
    assert [e.precision for e in load_manifest(b).engines] == ["fp32"]
    capsys.readouterr()
    assert build(b, "--precision", "int8") == 2
    assert "needs the bundle's Q/DQ int8 model" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [(["--precision", "fp64"], "unknown precision fp64"),
                                          (["--precision", "fp16"], "no fp16 model in this bundle"),
                                          (["--max-batch", "0"], "expected a positive integer")])
def test_usage_errors(monkeypatch, gpu, tmp_path, capsys, args, message):
    trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    with pytest.raises(SystemExit) if "positive" in message else contextlib.nullcontext():  # argparse exits 2
        assert build(b, *args) == 2
    assert message in capsys.readouterr().err



# --- icrt bench on a Jetson: power mode and clocks in the report ----------------------------------------------


def test_bench_reports_jetson_power_mode_and_clocks(monkeypatch):
    import glob
    import shutil
    import subprocess
    import types

    import icrt.runtime.base.hardware as hardware
    import icrt.runtime.tools.bench as bench

    gpu_dir = "/sys/class/devfreq/17000000.ga10b"
    files = {"/etc/nv_tegra_release": "# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64",
             "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\0",
             f"{gpu_dir}/cur_freq": "1300500000", f"{gpu_dir}/min_freq": "1300500000",
             f"{gpu_dir}/max_freq": "1300500000",
             "/sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq": "2201600",
             "/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq": "2201600"}
    monkeypatch.setattr(hardware, "_read", lambda p: files[p].strip("\0") if p in files else None)
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/sys/class/devfreq/3d00000.host1x", gpu_dir])
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/sbin/nvpmodel" if name == "nvpmodel" else None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: types.SimpleNamespace(stdout="NV Power Mode: MAXN\n0\n"))
    j = hardware.jetson_info()
    assert j == {"board": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": files["/etc/nv_tegra_release"],
                 "power_mode": "MAXN (mode 0)", "gpu_clock_mhz": 1300, "gpu_clock_max_mhz": 1300,
                 "clocks_pinned": True}
    assert "power mode MAXN (mode 0) (nvpmodel -q); clocks pinned (sudo jetson_clocks), GPU clock 1300 of 1300 MHz" \
        in bench._jetson_line(j)
    files[f"{gpu_dir}/min_freq"] = "306000000"  # clocks scaling: jetson_clocks not run
    assert hardware.jetson_info()["clocks_pinned"] is False
    monkeypatch.undo()  # glob, which and subprocess as they are (psutil and py-cpuinfo use them)
    monkeypatch.setattr(hardware, "_read", lambda p: None)  # not a Jetson
    assert hardware.jetson_info() is None and "jetson" not in bench.machine()


def test_links_named_like_outputs_are_refused(monkeypatch, gpu, tmp_path, capsys):
    """A bundle is untrusted: a timing cache or engine name linking elsewhere must not make icrt write there."""
    trt(monkeypatch, V10, gpu)
    b = fake_bundle(str(tmp_path / "b"), precisions=("fp32",))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, os.path.join(b, timing_cache_file_name(V10, "87")))
    before = sorted(os.listdir(b))
    assert build(b) == 2
    assert "a symbolic link or not a regular file" in capsys.readouterr().err
    assert victim.read_text() == "keep me" and sorted(os.listdir(b)) == before


FILES = {"fp32": {"onnxruntime": "model.onnx", "tensorrt": "model.onnx"},
         "fp16": {"onnxruntime": "model.fp16.onnx", "tensorrt": "model.fp16.onnx"},
         "int8": {"onnxruntime": "model.int8.onnx", "tensorrt": "model.int8.qdq.onnx"}}


def test_tensorrt_profile_names_and_sources():
    assert tensorrt_build.profile_shapes(224, 6, 64) == ((1, 3, 224, 224), (6, 3, 224, 224), (64, 3, 224, 224))
    assert tensorrt_build.profile_shapes(224, 100, 8)[1][0] == 8  # opt never exceeds max
    assert engine_file_name("int8", "10.3.0", cc_compact("87")) == "engine.int8.trt10.3.0.sm87.plan"
    # TensorRT 11: strongly typed from the typed ONNX files, no builder flags
    assert tensorrt_build.source_onnx("fp16", "11.4.0", FILES) == ("model.fp16.onnx", [])
    assert tensorrt_build.source_onnx("int8", "11.4.0", FILES) == ("model.int8.qdq.onnx", [])
    # TensorRT 10 (JetPack 6): weak typing with builder flags; int8 from the Q/DQ model
    assert tensorrt_build.source_onnx("fp16", "10.3.0", FILES) == ("model.onnx", ["FP16"])
    assert tensorrt_build.source_onnx("int8", "10.3.0", FILES) == ("model.int8.qdq.onnx", ["INT8", "FP16"])
    with pytest.raises(tensorrt_build.TensorRTError, match="no int8 ONNX"):
        tensorrt_build.source_onnx("int8", "11.0", {"fp32": FILES["fp32"]})
    e = tensorrt_build.engine_entry("fp16", "engine.fp16.trt11.4.0.sm90.plan", "11.4.0", "90",
                            tensorrt_build.profile_shapes(224, 1, 32), "model.fp16.onnx", [])
    assert (e.min_batch, e.opt_batch, e.max_batch, e.strongly_typed) == (1, 1, 32, True)
