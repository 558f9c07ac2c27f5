"""OpenVINO backend (the ``[openvino]`` extra): Intel's CPU inference engine, on the bundle's ONNX files as they are.

It reads the file the onnxruntime form of each precision names (fp32 ``model.onnx``, fp16 ``model.fp16.onnx``, int8
``model.int8.onnx``: the Q/DQ form, which OpenVINO's low-precision transformations turn into integer kernels);
nothing is converted or written into the bundle. Settings, each for a reason:

- ``INFERENCE_PRECISION_HINT`` is ``f32`` for every precision: on CPUs with AMX or AVX512-BF16 OpenVINO's default is
  bf16, so "fp32" would silently not be fp32 (and int8's float parts, fp16's arithmetic would be bf16). Here fp16 is
  the file's fp16 weights computed in f32, int8 is integer kernels with f32 in between. bf16 is not offered: no CPU
  this project measured on has it (docs/runtime.md).
- One stream, latency mode, one thread per physical core (``--threads``), no CPU pinning: the Scorer runs one batch
  at a time, and on a shared machine pinned threads cannot step aside for the decode thread.
- Pixels in: besides the float N x 3 x S x S input every backend takes, :meth:`run` takes N x S x S x 3 uint8 pixels
  (resized, not normalised), and OpenVINO's preprocessing API normalises them inside the compiled model, with the
  bundle's mean and std (``takes_pixels``): the Scorer then skips numpy's normalisation and hands 4x fewer bytes.
- The compiled models are cached (OpenVINO's ``CACHE_DIR``), so a second start skips most of the compilation: in a
  per-user folder (``$ICRT_CACHE_DIR``, else ``$XDG_CACHE_HOME/icrt``, else ``~/.cache/icrt``; ``/openvino``), one
  sub-folder per SHA-256 of the model file and the settings, private (0700) and refused when another user could
  write it. Never inside the bundle: a bundle is untrusted input, may be read-only or shared, and a compiled blob
  planted there would be loaded as is. ``ICRT_CACHE_DIR=off`` compiles without a cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys

from icrt.runtime.backends.base import (
    Backend,
    BackendError,
    ModelRunError,
    NotInBundleError,
    installed,
    register_backend,
)
from icrt.runtime.base.errors import one_line
from icrt.runtime.bundle.manifest import INPUT_NAME, SCORE_OUTPUT, BundleError, file_sha256

CACHE_ENV = "ICRT_CACHE_DIR"
CACHE_OFF = ("off", "none", "0")
MAX_ERROR_TEXT = 300  # characters of OpenVINO's message kept in a run error


def install_hint() -> str:
    from icrt.runtime.base.install import extra_hint

    return extra_hint("openvino")


def openvino_available() -> bool:
    """OpenVINO is installed (found without importing it)."""
    return installed("openvino")


def import_openvino():
    """The openvino module, imported without its telemetry (BackendError when it is not installed).

    ``import openvino`` imports its model converter, which (with the ``openvino-telemetry`` package that the wheel
    depends on, and no opt-out file) writes a client id under ``~/intel`` and sends a "general_import" event to Google
    Analytics. icrt hides that package while openvino is imported, so the converter takes its own no-op stub; nothing
    else in the process is changed (the package can be imported again afterwards)."""
    hide = "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # an ImportError for whoever imports it now
    try:
        import openvino
    except ImportError as e:
        raise BackendError(f"OpenVINO is not installed ({e}); {install_hint()}, or use --backend onnxruntime") from None
    except OSError as e:  # the package is there but its libraries do not load
        raise BackendError(f"OpenVINO could not be loaded ({one_line(e)}); use --backend onnxruntime") from None
    finally:
        if hide and sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]
    return openvino


_CORE = []


def shared_core(ov):
    """One ``openvino.Core`` for the process, kept until it exits. OpenVINO's CPU plugin sets its own alternate signal
    stack on the thread that creates it and puts back the one it found when it is unloaded: two Cores unloaded out
    of order leave a freed stack in place, and the next signal (SIGTERM, Ctrl+C) crashes the process (seen with two
    Scorers in one test session). One Core loads the plugin once."""
    if not _CORE:
        _CORE.append(ov.Core())
    return _CORE[0]


def _message(e: Exception) -> str:
    """OpenVINO's multi-line exception text -> its last meaningful line(s), one line, without source locations."""
    text = one_line(str(e))
    text = re.sub(r"Exception from \S+:\d+:\s*", "", text)
    text = re.sub(r"Check '[^']*' failed at \S+:\d+:\s*", "", text)
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 3] + "..."


# --- the model cache -------------------------------------------------------------------------------------------


def cache_root() -> str | None:
    """Where compiled models are kept (None: no cache, ``ICRT_CACHE_DIR=off``)."""
    base = os.environ.get(CACHE_ENV)
    if base is not None and base.strip().lower() in CACHE_OFF:
        return None
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "icrt")
    return os.path.join(base, "openvino")


def private_folder(path: str) -> str | None:
    """``path`` made (0700) when missing; the reason it cannot serve as a private cache folder, or None when it can:
    it must be a real folder (not a link), owned by this user, writable by nobody else."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        return f"cannot make {path} ({e.strerror or e})"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"{path} belongs to another user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} can be written by other users"
    return None


def cache_folder(digest: str, settings: dict) -> tuple[str | None, str | None]:
    """(the cache folder for the model file of SHA-256 ``digest`` compiled with ``settings``, None) or (None, why
    not)."""
    root = cache_root()
    if root is None:
        return None, f"no model cache ({CACHE_ENV}=off)"
    key = hashlib.sha256((digest + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    problem = private_folder(root)
    folder = os.path.join(root, key[:32])
    problem = problem or private_folder(folder)
    if problem:
        return None, f"no model cache: {problem}"
    return folder, None


# --- the backend -----------------------------------------------------------------------------------------------


def _check_model(path: str, model, input_name: str, score_output: str, size: int | None):
    """The model's input and score output as the bundle contract wants them (BundleError otherwise)."""
    inputs = {n: p for p in model.inputs for n in p.get_names()}
    outputs = {n: p for p in model.outputs for n in p.get_names()}
    if input_name not in inputs:
        raise BundleError(f"{path}: no input named {input_name!r} (has {', '.join(sorted(inputs))})")
    if score_output not in outputs:
        raise BundleError(f"{path}: no output named {score_output!r} (has {', '.join(sorted(outputs))})")
    shape = inputs[input_name].get_partial_shape()

    def dim(i):
        d = shape[i]
        return d.get_length() if d.is_static else None

    rank = shape.rank.get_length() if shape.rank.is_static else None
    if rank != 4 or dim(1) not in (None, 3) or (size and any(dim(i) not in (None, size) for i in (2, 3))):
        want = f"[N, 3, {size}, {size}] (preprocessing.size {size})" if size else "[N, 3, S, S]"
        raise BundleError(f"{path}: input {input_name!r} has shape {shape}; the manifest expects {want}")
    out = outputs[score_output].get_partial_shape()
    out_rank = out.rank.get_length() if out.rank.is_static else None
    if out_rank not in (1, 2) or (out_rank == 2 and out[1].is_static and out[1].get_length() != 1):
        raise BundleError(f"{path}: output {score_output!r} has shape {out}; the score output must be [batch] or "
                          "[batch, 1]")
    if not outputs[score_output].get_element_type().is_real():
        raise BundleError(f"{path}: output {score_output!r} is {outputs[score_output].get_element_type()}; the score "
                          "output must be a float tensor")
    return inputs[input_name], outputs[score_output]


class OpenVinoBackend(Backend):
    """One ONNX file compiled by OpenVINO for this CPU: the float model, and (with a bundle's mean and std) the same
    model taking uint8 pixels. The one not asked for first is compiled when first needed."""

    name = "openvino"

    def __init__(self, path: str, input_name: str = INPUT_NAME, score_output: str = SCORE_OUTPUT,
                 precision: str = "fp32", threads: int | None = None, notes=None, size: int | None = None,
                 norm: tuple | None = None, digest: str | None = None):
        """``digest``: the file's SHA-256 when already known (a bundle's checked checksum), else it is hashed here."""
        from icrt.runtime.base.hardware import physical_cores

        ov = import_openvino()
        self.ov, self.file, self.precision, self.device = ov, path, precision, "cpu"
        self.input_name, self.score_output, self.size = input_name, score_output, size
        self.notes = list(notes or [])
        self.threads = threads or physical_cores()
        self.norm = None if norm is None else (tuple(map(float, norm[0])), tuple(map(float, norm[1])))
        self.core = shared_core(ov)
        try:
            digest = digest or file_sha256(path)
            self.model = self.core.read_model(path)
        except OSError as e:
            raise BackendError(f"{path}: cannot read the model ({e.strerror or e})") from None
        except Exception as e:  # OpenVINO raises RuntimeError (and its own types) for models it cannot read
            raise BackendError(f"{path}: OpenVINO cannot load this model ({_message(e)})") from None
        _check_model(path, self.model, input_name, score_output, size)
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": int(self.threads), "ENABLE_CPU_PINNING": False}
        settings = {"openvino": ov.get_version(), "config": self.config, "norm": self.norm}
        self.cache, why = cache_folder(digest, settings)
        if why:
            self.notes.append(why)
        self.version = ov.get_version().split("-")[0]
        self._compiled = {}  # "float" | "pixels" -> (compiled model, infer request, score output port)
        self._compile("pixels" if self.norm else "float")

    @classmethod
    def open(cls, manifest, precision: str = "fp32", threads: int | None = None, notes=None) -> "OpenVinoBackend":
        """The bundle's ONNX file of ``precision`` (the onnxruntime form), with its preprocessing's normalisation."""
        try:
            path = manifest.file_for(precision, "onnxruntime")
        except BundleError as e:
            raise NotInBundleError(str(e)) from None
        prep = manifest.preprocessing
        name = manifest.file_name(precision, "onnxruntime")
        return cls(path, manifest.input_name, manifest.score_output, precision, threads, notes,
                   size=manifest.input_size, norm=(prep.mean, prep.std), digest=manifest.sha256.get(name))

    def _compile(self, form: str):
        if form in self._compiled:
            return self._compiled[form]
        ov = self.ov
        model = self.model
        if form == "pixels":  # uint8 N x S x S x 3 in; to float, channels first and (x/255 - mean) / std in the graph
            from openvino.preprocess import PrePostProcessor

            mean, std = self.norm
            ppp = PrePostProcessor(model.clone())
            inp = ppp.input(self.input_name)
            inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
            inp.model().set_layout(ov.Layout("NCHW"))
            inp.preprocess().convert_element_type(ov.Type.f32).mean([255.0 * m for m in mean]).scale(
                [255.0 * s for s in std])
            model = ppp.build()
        config = dict(self.config)
        if self.cache:
            config["CACHE_DIR"] = self.cache
        try:
            compiled = self.core.compile_model(model, "CPU", config)
        except Exception as e:
            raise BackendError(f"{self.file}: OpenVINO cannot compile this model ({_message(e)})") from None
        port = next(o for o in compiled.outputs if self.score_output in o.get_names())
        self._compiled[form] = (compiled, compiled.create_infer_request(), port)
        return self._compiled[form]

    def takes_pixels(self, prep) -> bool:
        """``run`` also takes uint8 pixels for a Scorer with this preprocessing (the normalisation is in the model)."""
        return self.norm is not None and (tuple(prep.mean), tuple(prep.std)) == self.norm

    def run(self, batch):
        import numpy as np

        n = len(batch)
        if batch.dtype == np.uint8:
            if self.norm is None:
                raise ValueError("this OpenVINO backend has no preprocessing: it takes float inputs only")
            _, request, port = self._compile("pixels")
        else:
            _, request, port = self._compile("float")
            if batch.dtype != np.float32:
                batch = batch.astype(np.float32)
        try:
            request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
            out = np.array(request.get_tensor(port).data, dtype=np.float32)
        except Exception as e:  # OpenVINO raises RuntimeError for a model that fails on this input
            err = ModelRunError(f"{self.file}: OpenVINO failed to run the model ({_message(e)})")
            err.cause = f"OpenVINO: {_message(e)[:160]}"
            raise err from None
        if out.shape not in ((n,), (n, 1)):
            raise BundleError(f"{self.file}: output {self.score_output!r} has shape {list(out.shape)} for a batch of "
                              f"{n}; the score output must be [batch] or [batch, 1]")
        return out.reshape(n)

    def describe(self) -> dict:
        d = super().describe()
        compiled = next(iter(self._compiled.values()))[0]
        d.update(threads=self.threads, openvino=self.version, model_cache=self.cache,
                 inference_precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())  # as compiled
        return d


# CPU features (runtime.base.hardware names) where OpenVINO was measured faster than onnxruntime (the Intel CPU with
# AVX-512 VNNI and AMX: 1.2-5x per precision); on an AVX2-only CPU the two were within ~15% either way and
# `icrt score` ran 0.90x end to end with OpenVINO (docs/benchmarks.md), so auto keeps onnxruntime there.
FASTER_WITH = ("avx512", "avx512_vnni", "amx_int8")


def _open(manifest, options, *, notes=None):
    """``notes`` is given only by ``auto``, which takes OpenVINO after TensorRT and before onnxruntime where it was
    measured faster (an x86 CPU with AVX-512 or AMX: :data:`FASTER_WITH`), except where onnxruntime has GPU
    providers: a GPU comes before a CPU engine."""
    if notes is not None:
        import icrt.runtime.base.hardware as cpu
        from icrt.runtime.backends.onnxruntime import gpu_providers

        if gpu_providers():
            raise BackendError("onnxruntime has GPU providers here, which come first")
        if not set(FASTER_WITH) & set(cpu.cpu_features()):
            raise BackendError("this CPU has no AVX-512 or AMX, where OpenVINO was measured faster than onnxruntime "
                               "(--backend openvino still runs it)")
    return OpenVinoBackend.open(manifest, options.precision, threads=options.threads, notes=notes)


# auto: between TensorRT (10) and onnxruntime (20), on CPUs of FASTER_WITH. Only installed by the [openvino] extra.
register_backend("openvino", open=_open, available=openvino_available, auto_order=15, files_key="onnxruntime",
                 unavailable="not installed (install the [openvino] extra)")
