"""OpenVINO backend (the ``[openvino]`` extra): Intel's CPU inference engine, on the bundle's ONNX files as they are.

It reads the file the onnxruntime form of each precision names (fp32 ``model.onnx``, fp16 ``model.fp16.onnx``, int8
``model.int8.onnx``: the Q/DQ form, which OpenVINO's low-precision transformations turn into integer kernels);
nothing is converted or written into the bundle. Of a bundle's two int8 forms, the onnxruntime one is also the
faster on OpenVINO, measured on an AMX Xeon (2026-12-07, ``benchmarks.openvino_probe``): the default model 7.25 vs
7.70 ms, D2S-R18 @512 10.0 vs 10.6 ms at batch 1 (docs/benchmarks.md). Settings, each for a reason:

- ``INFERENCE_PRECISION_HINT`` is ``f32`` for every precision but bf16: on CPUs with AMX or AVX512-BF16 OpenVINO's
  default is bf16, so "fp32" would silently not be fp32 (and int8's float parts, fp16's arithmetic would be bf16).
  Here fp16 is the file's fp16 weights computed in f32, int8 is integer kernels with f32 in between, and bf16 is the
  fp32 file computed in bf16, offered only on CPUs with bf16 units (``hardware.BF16_UNITS``: elsewhere OpenVINO would
  emulate it, slower than fp32).
- One stream, latency mode, one thread per physical core (``--threads``), no CPU pinning: the Scorer runs one batch
  at a time, and on a shared machine pinned threads cannot step aside for the decode thread.
- Pixels in: besides the float N x 3 x S x S input every backend takes, :meth:`run` takes N x S x S x 3 uint8 pixels
  (resized, not normalised), and OpenVINO's preprocessing API normalises them inside the compiled model, with the
  bundle's mean and std (``takes_pixels``): the Scorer then skips numpy's normalisation and hands 4x fewer bytes.
- The compiled models are cached (OpenVINO's ``CACHE_DIR``), so a second start skips most of the compilation: in the
  private per-user cache (``runtime.backends.cache``: ``$ICRT_CACHE_DIR``, else ``$XDG_CACHE_HOME/icrt``, else
  ``~/.cache/icrt``; ``/openvino/<key>``), one folder per SHA-256 of the model file and the settings, used only when
  nobody else can write it or any folder above it, and handed to OpenVINO as the open folder that was checked. Never
  inside the bundle. ``ICRT_CACHE_DIR=off`` compiles without a cache.
- The model is loaded from the bytes whose SHA-256 was checked, and only after onnxruntime has reached the same
  verdict on them (``runtime.backends.verdict``: OpenVINO runs graphs onnxruntime refuses, e.g. an out-of-bounds
  Gather); the verdict is cached, so that probe runs once per model file.
- Safe to use from several threads: each compiled form is compiled once (under a lock) and its one infer request is
  used by one thread at a time (a second thread waits; with one stream OpenVINO would run them one after the other
  anyway); without the lock, concurrent calls failed ("Infer Request is busy") or, worse, scored another thread's
  inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading

from icrt.runtime.backends.base import (
    Backend,
    BackendError,
    ModelRunError,
    NotInBundleError,
    installed,
    register_backend,
)
from icrt.runtime.base.errors import one_line
from icrt.runtime.bundle.manifest import INPUT_NAME, SCORE_OUTPUT, BundleError

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
    with _IMPORTING:  # the telemetry stub is process-wide: one thread at a time
        hide = "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules
        if hide:
            sys.modules["openvino_telemetry"] = None  # an ImportError for whoever imports it now
        try:
            import openvino
        except ImportError as e:
            raise BackendError(f"OpenVINO is not installed ({one_line(e)}); {install_hint()}, or use --backend "
                               "onnxruntime") from None
        except Exception as e:  # installed but its libraries do not load, or it fails (an ABI mismatch): said, no traceback
            raise BackendError(f"OpenVINO could not be loaded ({type(e).__name__}: {one_line(e)[:300]}); reinstall it "
                               "or use --backend onnxruntime") from None
        finally:
            if hide and sys.modules.get("openvino_telemetry", 0) is None:
                del sys.modules["openvino_telemetry"]
    return openvino


_IMPORTING = threading.Lock()
_CORE = []
_CORE_LOCK = threading.Lock()


def shared_core(ov):
    """One ``openvino.Core`` for the process, kept until it exits. OpenVINO's CPU plugin sets its own alternate signal
    stack on the thread that creates it and puts back the one it found when it is unloaded: two Cores unloaded out
    of order leave a freed stack in place, and the next signal (SIGTERM, Ctrl+C) crashes the process (seen with two
    Scorers in one test session). One Core loads the plugin once (made under a lock: two threads would make two)."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(ov.Core())
        return _CORE[0]


def _message(e: Exception) -> str:
    """OpenVINO's multi-line exception text -> its last meaningful line(s), one line, without source locations."""
    text = one_line(str(e))
    text = re.sub(r"Exception from \S+:\d+:\s*", "", text)
    text = re.sub(r"Check '[^']*' failed at \S+:\d+:\s*", "", text)
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 3] + "..."


def check_bf16() -> None:
    """BackendError unless this CPU computes bf16 at speed (AMX-BF16 or AVX512-BF16): elsewhere OpenVINO would emulate
    it, slower than fp32, for no gain."""
    from icrt.runtime.base.hardware import BF16_UNITS, bf16_units, cpu_features

    if not bf16_units():
        have = " ".join(cpu_features()) or "none of the features icrt knows"
        raise BackendError(f"bf16 needs a CPU with {' or '.join(BF16_UNITS)} (this one has: {have}); --precision fp32 "
                           "gives the same scores at fp32 speed, int8 is the fast CPU form")


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


def _empty(folder) -> bool:
    """The checked cache folder holds nothing yet (unreadable: taken as empty, so the cap is enforced)."""
    try:
        return not os.listdir(folder.fd)
    except OSError:
        return True


class OpenVinoBackend(Backend):
    """One ONNX file compiled by OpenVINO for this CPU: the float model, and (with a bundle's mean and std) the same
    model taking uint8 pixels. The one not asked for first is compiled when first needed."""

    name = "openvino"

    def __init__(self, path: str, input_name: str = INPUT_NAME, score_output: str = SCORE_OUTPUT,
                 precision: str = "fp32", threads: int | None = None, notes=None, size: int | None = None,
                 norm: tuple | None = None, data: bytes | None = None, score_scale: float = 1.0,
                 digest: str | None = None):
        """``data``: the file's bytes, already read and checked (a bundle's SHA-256), else read here: the model is
        loaded from these bytes. ``score_scale``: the width of the model's score range (the verdict's tolerance is a
        fraction of it). ``digest``: the SHA-256 of ``data`` when the caller has it (else computed here)."""
        import icrt.runtime.backends.verdict as verdict
        from icrt.runtime.base.hardware import physical_cores

        if precision == "bf16":
            check_bf16()
        ov = import_openvino()
        self.ov, self.file, self.precision, self.device = ov, path, precision, "cpu"
        self.input_name, self.score_output, self.size = input_name, score_output, size
        self.notes = list(notes or [])
        self.threads = threads or physical_cores()
        self.norm = None if norm is None else (tuple(map(float, norm[0])), tuple(map(float, norm[1])))
        self.core = shared_core(ov)
        self.version = ov.get_version().split("-")[0]
        self._compiled = {}  # "float" | "pixels" -> (compiled model, infer request, score output port, its lock)
        self._compiling = threading.Lock()
        if data is None:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BackendError(f"{path}: cannot read the model ({e.strerror or e})") from None
        digest = digest or hashlib.sha256(data).hexdigest()  # given: the bundle's, checked as the bytes were read
        # onnxruntime's side of the verdict first: a model it refuses never reaches OpenVINO (see runtime.backends.verdict)
        verdict_key = verdict.key(digest, precision, ov.get_version(), (size, self.norm, float(score_scale)))
        known = verdict.known(verdict_key)
        probe = None
        if known is not None:
            verdict.refuse(path, known)
        else:
            probe = verdict.onnxruntime_side(path, data, precision, input_name, score_output, size, self.norm,
                                             self.threads)
            if isinstance(probe, dict):
                verdict.keep(verdict_key, probe)
                verdict.refuse(path, probe)
        try:
            self.model = self.core.read_model(data)
        except Exception as e:  # OpenVINO raises RuntimeError (and its own types) for models it cannot read
            raise BackendError(f"{path}: OpenVINO cannot load this model ({_message(e)})") from None
        _check_model(path, self.model, input_name, score_output, size)
        self.config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": int(self.threads), "ENABLE_CPU_PINNING": False}
        settings = {"openvino": ov.get_version(), "config": self.config, "norm": self.norm}
        self.cache_key = hashlib.sha256((digest + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:32]
        self.cache = None  # the cache folder used, for people (None: none)
        self._compile("pixels" if self.norm else "float")
        if probe is not None:
            pixels, ort_scores = probe
            outcome = self._verdict(pixels, ort_scores, score_scale)
            verdict.keep(verdict_key, outcome)
            verdict.refuse(path, outcome)

    def _verdict(self, pixels, ort_scores, score_scale: float) -> dict:
        """OpenVINO's scores of the probe batch held to onnxruntime's."""
        import numpy as np

        import icrt.runtime.backends.verdict as verdict

        x = pixels if self.norm else verdict.as_floats(pixels, None)
        try:
            scores = np.concatenate([self.run(x[i:i + 1]) for i in range(len(x))])
        except (ModelRunError, BundleError) as e:
            return {"verdict": "refused", "reason": f"OpenVINO fails to run it on a probe batch ({e})"}
        return verdict.compare(self.precision, scores, ort_scores, score_scale)

    @classmethod
    def open(cls, manifest, precision: str = "fp32", threads: int | None = None, notes=None) -> "OpenVinoBackend":
        """The bundle's ONNX file of ``precision`` (the onnxruntime form), with its preprocessing's normalisation,
        loaded from the bytes whose SHA-256 was checked."""
        try:
            path, data, digest = manifest.model_file(precision, "onnxruntime")
        except BundleError as e:
            raise NotInBundleError(str(e)) from None
        prep = manifest.preprocessing
        low, high = manifest.score_range
        return cls(path, manifest.input_name, manifest.score_output, precision, threads, notes,
                   size=manifest.input_size, norm=(prep.mean, prep.std), data=data, score_scale=high - low,
                   digest=digest)

    def _compile(self, form: str):
        compiled = self._compiled.get(form)
        if compiled is not None:
            return compiled
        with self._compiling:  # each form once, whichever thread asks first
            if form not in self._compiled:
                self._compiled[form] = self._compile_now(form)
        return self._compiled[form]

    def _compile_now(self, form: str):
        from icrt.runtime.backends.cache import enforce_cap, open_folder

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
        folder, why = open_folder("openvino", self.cache_key)
        self._note(why)
        fresh = folder is not None and _empty(folder)  # nothing compiled there yet: this compile adds a blob
        try:
            compiled = self._compile_with(model, folder)
        except Exception as e:
            if folder is None:
                raise BackendError(f"{self.file}: OpenVINO cannot compile this model ({_message(e)})") from None
            self._note([f"no model cache: OpenVINO could not use it ({_message(e)[:120]})"])
            folder.close()
            folder = None
            try:
                compiled = self._compile_with(model, None)
            except Exception as e:
                raise BackendError(f"{self.file}: OpenVINO cannot compile this model ({_message(e)})") from None
        if folder is not None:
            self.cache = folder.shown
            if fresh:  # the cache grew: evict down to its cap (a cache hit adds nothing, so no walk of the cache)
                enforce_cap(keep=folder)
            folder.close()
        port = next(o for o in compiled.outputs if self.score_output in o.get_names())
        return compiled, compiled.create_infer_request(), port, threading.Lock()

    def _compile_with(self, model, folder):
        config = dict(self.config)
        if folder is not None:
            config["CACHE_DIR"] = folder.path  # the open folder that was checked (/proc/self/fd/N)
        return self.core.compile_model(model, "CPU", config)

    def _note(self, notes) -> None:
        self.notes.extend(n for n in notes if n not in self.notes)

    def takes_pixels(self, prep) -> bool:
        """``run`` also takes uint8 pixels for a Scorer with this preprocessing (the normalisation is in the model)."""
        return self.norm is not None and (tuple(prep.mean), tuple(prep.std)) == self.norm

    def run(self, batch):
        import numpy as np

        n = len(batch)
        if batch.dtype == np.uint8:
            if self.norm is None:
                raise ValueError("this OpenVINO backend has no preprocessing: it takes float inputs only")
            _, request, port, lock = self._compile("pixels")
        else:
            _, request, port, lock = self._compile("float")
            if batch.dtype != np.float32:
                batch = batch.astype(np.float32)
        with lock:  # one infer request per form: one thread at a time (inputs are shared, outputs copied out)
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

    def engine_version(self) -> str | None:
        return self.version

    def describe(self) -> dict:
        d = super().describe()
        compiled = list(self._compiled.values())[0][0]
        d.update(threads=self.threads, openvino=self.version, model_cache=self.cache,
                 inference_precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())  # as compiled
        return d


# CPU features (runtime.base.hardware names) where OpenVINO was measured faster than onnxruntime (a 2-core Xeon with
# AVX-512 VNNI and AMX, 2026-12-07: int8 1.34x on the default model, 2.9x on D2S-R18, fp32 0.95-1.04x, and bf16, which
# onnxruntime lacks; docs/benchmarks.md); on an AVX2-only CPU the two were within ~15% either way and
# `icrt score` ran 0.90x end to end with OpenVINO (docs/benchmarks.md), so auto keeps onnxruntime there.
FASTER_WITH = ("avx512", "avx512_vnni", "amx_int8")


def _open(manifest, options, *, notes=None):
    """``notes`` is given only by ``auto``, which takes OpenVINO after TensorRT and before onnxruntime where it was
    measured faster (an x86 CPU with AVX-512 or AMX: :data:`FASTER_WITH`), except where onnxruntime has GPU
    providers: a GPU comes before a CPU engine."""
    if notes is not None:
        import icrt.runtime.base.hardware as cpu
        from icrt.runtime.backends.onnxruntime import gpu_providers, warn_if_shadowed

        if gpu_providers():
            raise BackendError("onnxruntime has GPU providers here, which come first")
        if not set(FASTER_WITH) & set(cpu.cpu_features()):
            raise BackendError("this CPU has no AVX-512 or AMX, where OpenVINO was measured faster than onnxruntime "
                               "(--backend openvino still runs it)")
        warn_if_shadowed()  # both onnxruntime builds installed: a GPU may be hidden, whichever CPU engine runs
    return OpenVinoBackend.open(manifest, options.precision, threads=options.threads, notes=notes)


# auto: between TensorRT (10) and onnxruntime (20), on CPUs of FASTER_WITH. Only installed by the [openvino] extra.
register_backend("openvino", open=_open, available=openvino_available, auto_order=15, files_key="onnxruntime",
                 unavailable="not installed (install the [openvino] extra)")
