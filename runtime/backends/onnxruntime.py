"""onnxruntime backend: CPU, or CUDA / TensorRT execution providers when onnxruntime-gpu is installed.

Session options matter on CPU: full graph optimisation (fusions, constant folding, NCHWc layouts) and one
intra-op thread per physical core. Thread oversubscription (a thread per logical core, or a spinning pool
next to another busy process) is the usual reason a plain export looks slow, so spinning is switched off.

A bundle's model is loaded from the bytes whose SHA-256 was checked (``Manifest.model_bytes``), with external data
refused: from bytes, onnxruntime would look for a model's external data files in the current folder, and they are
not covered by the bundle's checksums. onnxruntime logs nothing (severity fatal): every failure is raised and told
in icrt's one line, so a failed load (``std::bad_alloc``) is not also a red log line. The TensorRT execution
provider's engine cache is the private per-user cache (``runtime.backends.cache``: ``ort-trt/<key>``, keyed by the
model's SHA-256), never the bundle. A session is safe to run from several threads (onnxruntime's ``run`` is).
"""
from __future__ import annotations

import hashlib
import logging
import os
import weakref

from icrt.runtime.backends.base import (
    Backend,
    BackendError,
    ModelRunError,
    NotInBundleError,
    installed,
    register_backend,
)
from icrt.runtime.base.errors import one_line
from icrt.runtime.base.hardware import physical_cores
from icrt.runtime.bundle.manifest import INPUT_NAME, SCORE_OUTPUT, BundleError

log = logging.getLogger("icrt")
_told: set = set()  # warnings given once a process

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def import_onnxruntime():
    """The onnxruntime module, imported with telemetry off (BackendError when it is not installed)."""
    # onnxruntime (1.2x+, Linux too) writes a device id and an event database under ~/.cache/Microsoft/DeveloperTools
    # when it is imported, and warns when it cannot; this variable, read at import, stops that (a user may set it to
    # 0 to allow it). disable_telemetry_events() below turns off the events themselves.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError as e:  # the runtime's one required inference library
        raise BackendError(f"onnxruntime is not installed ({one_line(e)}); pip install onnxruntime") from None
    except Exception as e:  # installed but broken (a library that does not load, an ABI mismatch): said, not a traceback
        raise BackendError(f"onnxruntime could not be loaded ({type(e).__name__}: {one_line(e)}); reinstall it: "
                           "pip install --force-reinstall onnxruntime") from None
    _no_telemetry(onnxruntime)
    return onnxruntime


def warn_if_shadowed() -> None:
    """Once a process: the warning that both onnxruntime builds are installed, so this CPU run may be hiding a GPU
    (``auto`` says it whichever CPU backend it picks)."""
    from icrt.runtime.base.packages import onnxruntime_shadowed

    shadow = onnxruntime_shadowed()
    if shadow and shadow not in _told:
        _told.add(shadow)
        log.warning("icrt: warning: scoring on the CPU: %s", shadow)


_TELEMETRY_OFF = []


def _no_telemetry(ort) -> None:
    """onnxruntime's telemetry events off, once per process (builds without telemetry have the switch too)."""
    if _TELEMETRY_OFF:
        return
    _TELEMETRY_OFF.append(True)
    off = getattr(ort, "disable_telemetry_events", None)
    if off is not None:
        try:
            off()
        except Exception:  # a switch that fails must not stop scoring
            pass


MAX_ERROR_TEXT = 300  # characters of onnxruntime's message kept in a run error


def run_error(path: str, e: Exception) -> ModelRunError:
    """An onnxruntime exception raised while running a batch -> one line naming the model and the cause."""
    import re
    text = one_line(str(e)).replace("[ONNXRuntimeError] : ", "")
    text = re.sub(r"^\d+ : [A-Z_]+ : ", "", text)  # "1 : FAIL : "
    text = re.sub(r"/onnxruntime_src/\S*:\d+ [\w:~<>]+\([^)]*\)\s*", "", text)  # the source line and function
    text = text.replace(" Name:''", "")
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT - 3] + "..."
    err = ModelRunError(f"{path}: onnxruntime failed to run the model ({type(e).__name__}: {text})")
    err.cause = f"onnxruntime {type(e).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"
    return err


def onnxruntime_available() -> bool:
    """onnxruntime is installed (found without importing it)."""
    return installed("onnxruntime")


def gpu_providers() -> list[str]:
    """The GPU execution providers this onnxruntime build offers (empty on the CPU wheel)."""
    try:
        available = import_onnxruntime().get_available_providers()
    except BackendError:
        return []
    return [p for p in GPU_PROVIDERS if p in available]


# onnxruntime 1.32's NCHWc layout transformer crashes (SIGSEGV while the session is created) on some fp16
# graphs, e.g. a CLIP ViT whose fp16 patch-embedding Conv feeds Shape/Reshape; the CPU runs fp16 convolutions
# slowly anyway, so fp16 models are opened without that pass.
FP16_DISABLED_OPTIMIZERS = ["NchwcTransformer"]


def open_session(model, precision: str = "fp32", threads: int | None = None, providers=None,
                 simulate_qdq: bool = False):
    """An onnxruntime session with icrt's settings (every caller opens models through this). ``model``: a path, or
    the model's bytes (then external data is refused: see the module notes).

    ``simulate_qdq``: no graph optimisation, so Q/DQ nodes run as written around float operators: a Q/DQ
    model's exact arithmetic (what TensorRT computes with int32 accumulation), free of the integer kernels of
    this CPU (slow; export uses it to measure the TensorRT int8 form)."""
    ort = import_onnxruntime()
    disabled = FP16_DISABLED_OPTIMIZERS if precision == "fp16" else None
    so = session_options(threads, optimize=not simulate_qdq)
    if isinstance(model, (bytes, bytearray)):
        # external data of a model given as bytes is looked up in this folder, where no file can exist: refused
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", os.devnull)
    return ort.InferenceSession(model, sess_options=so, providers=providers or ["CPUExecutionProvider"],
                                disabled_optimizers=disabled)


def session_options(threads: int | None = None, optimize: bool = True):
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    so.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 4  # fatal only: failures are raised and told in one line, never also logged in red
    return so


def check_shapes(path: str, image, score, size: int | None) -> None:
    """The model's declared input must take N x 3 x size x size and its score output be [N] or [N, 1];
    otherwise the bundle is broken (BundleError). Dynamic dimensions pass (the output is checked again per run)."""
    def fixed(d):
        return d if isinstance(d, int) else None

    shape = list(image.shape or [])
    if len(shape) != 4 or fixed(shape[1]) not in (None, 3) or (size and any(fixed(d) not in (None, size) for d in shape[2:])):
        want = f"[N, 3, {size}, {size}] (preprocessing.size {size})" if size else "[N, 3, S, S]"
        raise BundleError(f"{path}: input {image.name!r} has shape {shape}; the manifest expects {want}")
    shape = list(score.shape or [])
    if len(shape) not in (1, 2) or (len(shape) == 2 and fixed(shape[1]) not in (None, 1)):
        raise BundleError(f"{path}: output {score.name!r} has shape {shape}; the score output must be [batch] or [batch, 1]")
    if score.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
        raise BundleError(f"{path}: output {score.name!r} is a {score.type}; the score output must be a float tensor")


class OrtBackend(Backend):
    """An onnxruntime session over one ONNX file: from a bundle (:meth:`open`) or a plain file (:meth:`from_file`)."""

    name = "onnxruntime"

    def __init__(self, path: str, input_name: str, score_output: str, precision: str, providers: list,
                 threads: int | None = None, notes=None, size: int | None = None, simulate_qdq: bool = False,
                 data: bytes | None = None, trt_cache=None):
        """``data``: the file's bytes, already checked (a bundle's): the session is made from them, not from ``path``
        (which names the file in messages). ``trt_cache``: the open cache folder of the TensorRT provider's engines,
        kept open as long as the session."""
        import numpy as np

        import_onnxruntime()
        try:
            self.session = open_session(path if data is None else data, precision, threads, providers, simulate_qdq)
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            if trt_cache is not None:
                trt_cache.close()
            raise BackendError(f"{path}: onnxruntime cannot load this model ({type(e).__name__}: "
                               f"{load_error(e)})") from None
        if trt_cache is not None:
            weakref.finalize(self, trt_cache.close)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if input_name not in inputs:
            raise BundleError(f"{path}: no input named {input_name!r} (has {', '.join(inputs)})")
        if score_output not in outputs:
            raise BundleError(f"{path}: no output named {score_output!r} (has {', '.join(outputs)})")
        check_shapes(path, inputs[input_name], self.session.get_outputs()[outputs.index(score_output)], size)
        self.input_name, self.score_output = input_name, score_output
        self.input_dtype = np.float16 if inputs[input_name].type == "tensor(float16)" else np.float32
        self.input_shape = list(inputs[input_name].shape or [])
        self.precision, self.file = precision, path
        used = self.session.get_providers()
        self.providers = used
        self.device = "cuda" if any(p in GPU_PROVIDERS for p in used) else "cpu"
        self.threads = threads or physical_cores()
        self.notes = list(notes or [])
        self.run_options = import_onnxruntime().RunOptions()
        self.run_options.log_severity_level = 4  # a failed run is raised (one line), not logged in red as well

    def input_side(self) -> int | None:
        """The model's fixed input side (None: a dynamic one)."""
        side = self.input_shape[-1] if len(self.input_shape) == 4 else None
        return side if isinstance(side, int) and side > 0 else None

    @classmethod
    def from_file(cls, path: str, precision: str = "fp32", threads: int | None = None, gpu: bool = False,
                  device_id: int = 0, input_name: str = INPUT_NAME, score_output: str = SCORE_OUTPUT,
                  size: int | None = None, simulate_qdq: bool = False) -> "OrtBackend":
        """A backend over a plain ONNX file (no bundle): CPU unless ``gpu``; ``size`` checks the input side;
        ``simulate_qdq``: see :func:`open_session`."""
        if not os.path.isfile(path):
            raise BackendError(f"{path}: no such ONNX file")
        notes, cache = [], None
        if gpu:
            from icrt.runtime.bundle.manifest import file_sha256

            cache = trt_cache(file_sha256(path), precision, device_id, notes)
        providers = providers_for(precision, gpu, device_id, cache.path if cache else None)
        return cls(path, input_name, score_output, precision, providers, threads, notes, size=size,
                   simulate_qdq=simulate_qdq, trt_cache=cache)

    @classmethod
    def open(cls, manifest, precision: str = "fp32", gpu: bool | None = None, threads: int | None = None,
             device_id: int = 0, notes=None) -> "OrtBackend":
        """The bundle's onnxruntime file for ``precision``, loaded from the bytes that were checked. ``gpu=None``: GPU
        providers when this onnxruntime has them, else (or when the GPU session fails) CPU, noting why in ``notes``."""
        try:
            path, data, digest = manifest.model_file(precision, "onnxruntime")
        except BundleError as e:
            raise NotInBundleError(str(e)) from None
        if precision == "bf16":
            raise BackendError("onnxruntime does not compute in bf16 (it would run fp32): bf16 runs on OpenVINO on "
                               "CPUs with amx_bf16 or avx512_bf16, and as TensorRT 10 engines; --precision fp32 gives "
                               "the same scores here")
        notes = list(notes or [])
        avail = gpu_providers()
        if not avail:
            from icrt.runtime.base.packages import onnxruntime_shadowed

            if gpu:  # onnxruntime-gpu may be installed, but the CPU build's module is the one here
                raise BackendError(f"onnxruntime has no GPU providers here "
                                   f"({onnxruntime_shadowed() or 'pip install onnxruntime-gpu'})")
            warn_if_shadowed()
        args = (path, manifest.input_name, manifest.score_output, precision)
        if gpu or (gpu is None and avail):
            gpu_notes = []
            cache = trt_cache(digest, precision, device_id, gpu_notes)
            try:
                return cls(*args, providers_for(precision, True, device_id, cache.path if cache else None), threads,
                           notes + gpu_notes, size=manifest.input_size, data=data, trt_cache=cache)
            except (BackendError, BundleError) as e:
                if gpu:
                    raise
                notes.append(f"onnxruntime-gpu: {e}")
        elif gpu is None:
            notes.append("onnxruntime GPU providers: not available")
        return cls(*args, providers_for(precision, False, device_id), threads, notes, size=manifest.input_size,
                   data=data)

    def run(self, batch):
        import numpy as np

        x = batch if batch.dtype == self.input_dtype else batch.astype(self.input_dtype)
        try:
            out = np.asarray(self.session.run([self.score_output], {self.input_name: x}, self.run_options)[0])
        except Exception as e:  # onnxruntime's own exception types (Fail, RuntimeException, InvalidArgument, ...)
            raise run_error(self.file, e) from None
        n = len(batch)
        if out.shape not in ((n,), (n, 1)):  # e.g. [N, 4] would otherwise be cut to its first column
            raise BundleError(f"{self.file}: output {self.score_output!r} has shape {list(out.shape)} for a batch of "
                              f"{n}; the score output must be [batch] or [batch, 1]")
        return out.astype(np.float32).reshape(n)

    def engine_version(self) -> str | None:
        return getattr(import_onnxruntime(), "__version__", None)

    def describe(self) -> dict:
        d = super().describe()
        d.update(providers=self.providers, threads=self.threads)
        return d


def load_error(e: Exception) -> str:
    """onnxruntime's message for a model it cannot load, one line; external data named as the reason."""
    text = one_line(e)
    if "external data" in text.lower():
        return ("the model keeps its weights in external data files, which icrt does not load (they are not covered "
                f"by the bundle's checksums; export the model as one file): {text[:200]}")
    return text


def trt_cache(digest: str, precision: str, device_id: int, notes: list):
    """The private cache folder of the TensorRT provider's engines for this model file (None: none; ``notes`` say
    why). Keyed by the file's SHA-256, the precision, the GPU index and onnxruntime's version, so an engine made for
    another model is never found there."""
    from icrt.runtime.backends.cache import open_folder
    from icrt.runtime.base.packages import version

    ort_version = version("onnxruntime-gpu") or version("onnxruntime")
    key = hashlib.sha256(f"{digest}|{precision}|{device_id}|{ort_version}".encode()).hexdigest()[:32]
    folder, why = open_folder("ort-trt", key)
    notes.extend(why)
    return folder


def providers_for(precision: str, gpu: bool, device_id: int = 0, trt_cache: str | None = None) -> list:
    """onnxruntime providers: with ``gpu``, the TensorRT and CUDA providers this build has; CPU always last.
    ``trt_cache``: the folder of the TensorRT provider's engine cache (None: no engine cache)."""
    providers = []
    if gpu:
        avail = gpu_providers()
        if "TensorrtExecutionProvider" in avail:
            trt = {"device_id": device_id, "trt_fp16_enable": precision == "fp16", "trt_int8_enable": precision == "int8",
                   "trt_engine_cache_enable": trt_cache is not None}
            if trt_cache is not None:
                trt["trt_engine_cache_path"] = trt_cache
            providers.append(("TensorrtExecutionProvider", trt))
        if "CUDAExecutionProvider" in avail:
            providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    providers.append("CPUExecutionProvider")
    return providers


def _open(manifest, options, *, notes=None) -> OrtBackend:
    return OrtBackend.open(manifest, options.precision, threads=options.threads, device_id=options.device_id, notes=notes)


register_backend("onnxruntime", open=_open, available=onnxruntime_available, auto_order=20, files_key="onnxruntime")
