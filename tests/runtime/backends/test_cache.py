"""The private per-user cache of compiled models, engines and verdicts (runtime/backends/cache.py): used only where
no other user can change it or any folder above it, handed to the engines as the folder that was checked (R2); a
relative ``ICRT_CACHE_DIR`` / ``XDG_CACHE_HOME`` ignored, ``$HOME`` never made, the size bounded (R17); onnxruntime's
TensorRT engines kept there, keyed by the model file, never in the bundle (R18)."""
import os
import shutil

import numpy as np
import pytest

from icrt.runtime.backends.cache import cache_root, enforce_cap, open_folder, usage
from icrt.runtime.bundle.manifest import load_manifest
from tests.runtime.fixtures import needs, reference_images


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ICRT_CACHE_DIR", str(folder))
    return folder


def test_a_folder_above_the_cache_that_others_may_write_or_another_user_owns_means_no_cache(tmp_path, monkeypatch):
    """R2: with the cache under a folder another user could write, he renamed ``openvino`` away and put his own tree
    in its place between the check and the compile (8 of 20 runs scored his model)."""
    parent = tmp_path / "team"
    parent.mkdir()
    monkeypatch.setenv("ICRT_CACHE_DIR", str(parent / "icrt"))
    os.chmod(parent, 0o777)  # writable by others, not sticky
    folder, notes = open_folder("openvino", "k")
    assert folder is None and notes == [f"no model cache: {parent} can be written by other users"]
    assert not (parent / "icrt").exists()  # nothing made below it either
    os.chmod(parent, 0o1777)  # sticky, as /tmp: nobody else can rename or remove what is ours in it
    folder, notes = open_folder("openvino", "k")
    assert folder is not None and notes == [] and folder.shown == str(parent / "icrt" / "openvino" / "k")
    folder.close()
    if os.getuid() == 0:  # root can give the folder away: owned by another user, even if only he may write it
        os.chmod(parent, 0o755)
        os.chown(parent, 65534, 65534)
        folder, notes = open_folder("openvino", "k")
        assert folder is None and notes == [f"no model cache: {parent} belongs to another user (uid 65534), who "
                                            "could swap the cache"]
    os.chmod(parent / "icrt", 0o770)  # the cache's own folders: private
    os.chown(parent, os.getuid(), os.getgid())
    assert open_folder("openvino", "k") == (None, [f"no model cache: {parent / 'icrt'} can be written by other users"])
    os.chmod(parent / "icrt", 0o700)
    shutil.rmtree(parent / "icrt" / "openvino")
    os.symlink(tmp_path, parent / "icrt" / "openvino")  # a link inside the cache is never followed
    assert open_folder("openvino", "k") == (None, [f"no model cache: {parent / 'icrt' / 'openvino'} is a symbolic "
                                                   "link"])


@needs("openvino", "the [openvino] extra")
def test_openvino_uses_the_folder_that_was_checked_even_if_its_name_is_swapped(square_bundle, cache, tmp_path,
                                                                               monkeypatch):
    """R2's race, made deterministic: between the check and the compile the ``openvino`` folder is renamed away and a
    link to another tree, holding the int8 model's blob under the fp32 blob's name, put in its place. OpenVINO trusts
    a blob by its name (shown first), so only handing it the checked folder itself keeps the fp32 model."""
    from icrt.runtime.backends import open_backend
    from icrt.runtime.backends.openvino import OpenVinoBackend
    from icrt.runtime.scoring.options import ScorerOptions
    from icrt.runtime.scoring.preprocess import to_model_input

    m = load_manifest(square_bundle)
    x = np.concatenate([to_model_input(np.asarray(img), m.preprocessing, pixels=True)[0] for img in reference_images()])

    def scores(precision):
        b = open_backend(m, ScorerOptions(backend="openvino", precision=precision))
        return b, b.run(x)

    fp32, want = scores("fp32")  # compiled into the cache (and its verdict kept)
    key_folder = os.path.join(fp32.cache, "")
    blob = next(f for f in os.listdir(key_folder) if f.endswith(".blob"))
    monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "other"))
    int8, int8_scores = scores("int8")
    assert np.abs(int8_scores - want).max() > 1e-4
    evil = tmp_path / "evil" / "openvino" / os.path.basename(fp32.cache)
    evil.mkdir(parents=True)
    shutil.copyfile(os.path.join(int8.cache, next(f for f in os.listdir(int8.cache) if f.endswith(".blob"))),
                    evil / blob)
    monkeypatch.setenv("ICRT_CACHE_DIR", str(cache))
    real = OpenVinoBackend._compile_with

    def swap_then_compile(self, model, folder):
        os.rename(cache / "openvino", cache / "moved")
        os.symlink(tmp_path / "evil" / "openvino", cache / "openvino")
        try:
            return real(self, model, folder)
        finally:
            os.remove(cache / "openvino")
            os.rename(cache / "moved", cache / "openvino")

    # the control: a blob is trusted by its name, so the planted one scores when OpenVINO is handed a path to it
    monkeypatch.setattr(OpenVinoBackend, "_compile_with", lambda self, model, folder: real(self, model, _ByName(evil)))
    np.testing.assert_allclose(scores("fp32")[1], int8_scores, atol=1e-6)
    monkeypatch.setattr(OpenVinoBackend, "_compile_with", swap_then_compile)
    np.testing.assert_allclose(scores("fp32")[1], want, atol=1e-6)  # the checked folder's own blob
    assert os.listdir(evil) == [blob]  # nothing written into the other tree


class _ByName:
    """A cache folder handed to OpenVINO by its path (as before the fix)."""

    def __init__(self, path):
        self.path = self.shown = str(path)
        self.fd = -1

    def close(self):
        pass


def test_relative_cache_variables_are_ignored_and_a_missing_home_is_never_made(tmp_path, monkeypatch):
    """R17: a relative ICRT_CACHE_DIR put relcache/openvino/... into the folder icrt ran in; as root, HOME=/x made
    /x/.cache/icrt/..."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICRT_CACHE_DIR", "relcache")
    monkeypatch.setenv("XDG_CACHE_HOME", "relxdg")
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))
    assert cache_root() == (None, ["ICRT_CACHE_DIR=relcache ignored: not an absolute path",
                                   "XDG_CACHE_HOME=relxdg ignored: not an absolute path",
                                   f"no model cache: the home folder {tmp_path / 'no-such-home'} does not exist "
                                   "(icrt never makes it)"])
    assert open_folder("openvino", "k")[0] is None and os.listdir(tmp_path) == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-such-home" / ".cache"))  # a cache under the missing home
    assert open_folder("openvino", "k") == (None, ["ICRT_CACHE_DIR=relcache ignored: not an absolute path",
                                                   f"no model cache: the home folder {tmp_path / 'no-such-home'} does "
                                                   "not exist (icrt never makes it)"])
    assert os.listdir(tmp_path) == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == (str(tmp_path / "xdg" / "icrt"), ["ICRT_CACHE_DIR=relcache ignored: not an absolute path"])
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("ICRT_CACHE_DIR")
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == (str(tmp_path / "home" / ".cache" / "icrt"), [])
    monkeypatch.setenv("ICRT_CACHE_DIR", "off")
    assert cache_root() == (None, ["no model cache (ICRT_CACHE_DIR=off)"])


def _entry(cache, kind, name, size, when):
    folder, _ = open_folder(kind, name)
    with folder:
        with open(os.path.join(folder.path, "x.blob"), "wb") as f:
            f.write(b"\0" * size)
    os.utime(cache / kind / name, (when, when))


def test_the_cache_is_bounded_least_recently_used_first(cache, monkeypatch):
    """R17: one 15-18 MB blob per model file x form x --threads x OpenVINO version, never removed."""
    mb = 2**20
    for name, when in (("a", 1000), ("b", 2000), ("c", 3000)):
        _entry(cache, "openvino", name, 3 * mb, when)
    _entry(cache, "ort-trt", "d", 2 * mb, 1500)
    assert usage()["bytes"] == 11 * mb and usage()["entries"] == 4
    monkeypatch.setenv("ICRT_CACHE_MAX_MB", "7")
    used, _ = open_folder("openvino", "a")  # the oldest, used now: kept, the next oldest go
    with used:
        assert enforce_cap(keep=used) == ["ort-trt/d", "openvino/b"]
    assert sorted(os.listdir(cache / "openvino")) == ["a", "c"] and os.listdir(cache / "ort-trt") == []
    u = usage()
    assert (u["path"], u["bytes"], u["entries"], u["max_bytes"], u["problem"]) == (str(cache), 6 * mb, 2, 7 * mb, None)


def test_onnxruntime_tensorrt_engines_go_to_the_private_cache_keyed_by_the_model(square_bundle, cache, monkeypatch):
    """R18: the TensorRT provider's engine cache was BUNDLE/ort-trt-cache: engines a downloaded bundle ships were
    loaded as they are, and scoring wrote into the bundle. No GPU here: the provider's options are read as they
    are handed to onnxruntime, and the GPU session then fails (onnxruntime falls back to the CPU)."""
    import icrt.runtime.backends.onnxruntime as ort_backend
    from icrt.runtime.backends import open_backend
    from icrt.runtime.scoring.options import ScorerOptions

    monkeypatch.setattr(ort_backend, "gpu_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    seen = []
    real = ort_backend.open_session

    def gpu_session(model, precision="fp32", threads=None, providers=None, simulate_qdq=False):
        if providers and providers[0][0] == "TensorrtExecutionProvider":
            options = dict(providers[0][1])
            path = options.get("trt_engine_cache_path")
            seen.append((options, os.path.realpath(path) if path else None))
            raise RuntimeError("no CUDA device here")
        return real(model, precision, threads, providers, simulate_qdq)

    monkeypatch.setattr(ort_backend, "open_session", gpu_session)
    m = load_manifest(square_bundle)
    for precision in ("fp32", "int8"):
        b = open_backend(m, ScorerOptions(backend="onnxruntime", precision=precision))
        assert b.device == "cpu" and any(n.startswith("onnxruntime-gpu: ") for n in b.notes)
    (fp32, fp32_folder), (int8, int8_folder) = seen
    assert fp32["trt_engine_cache_enable"] and fp32["trt_engine_cache_path"].startswith("/proc/self/fd/")
    assert os.path.dirname(fp32_folder) == os.path.dirname(int8_folder) == str(cache / "ort-trt")
    assert fp32_folder != int8_folder  # keyed by the model file
    assert not [f for f in os.listdir(square_bundle) if "cache" in f]  # nothing in the bundle
    monkeypatch.setenv("ICRT_CACHE_DIR", "off")
    open_backend(m, ScorerOptions(backend="onnxruntime"))
    assert seen[-1] == ({"device_id": 0, "trt_fp16_enable": False, "trt_int8_enable": False,
                         "trt_engine_cache_enable": False}, None)
