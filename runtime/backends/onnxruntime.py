"""onnxruntime backend: CPU, or CUDA / TensorRT execution providers when onnxruntime-gpu is installed.

Session options matter on CPU: full graph optimisation (fusions, constant folding, NCHWc layouts) and one
intra-op thread per physical core. Thread oversubscription (a thread per logical core, or a spinning pool
next to another busy process) is the usual reason a plain export looks slow, so spinning is switched off.
"""
from __future__ import annotations

import logging
import os

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
from icrt.runtime.bundle.manifest import INPUT_NAME, ORT_TRT_CACHE, SCORE_OUTPUT, BundleError

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
        raise BackendError(f"onnxruntime is not installed ({e}); pip install onnxruntime") from None
    _no_telemetry(onnxruntime)
    return onnxruntime


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


def open_session(path: str, precision: str = "fp32", threads: int | None = None, providers=None,
                 simulate_qdq: bool = False):
    """An onnxruntime session with icrt's settings (every caller opens models through this).

    ``simulate_qdq``: no graph optimisation, so Q/DQ nodes run as written around float operators: a Q/DQ
    model's exact arithmetic (what TensorRT computes with int32 accumulation), free of the integer kernels of
    this CPU (slow; export uses it to measure the TensorRT int8 form)."""
    ort = import_onnxruntime()
    disabled = FP16_DISABLED_OPTIMIZERS if precision == "fp16" else None
    return ort.InferenceSession(path, sess_options=session_options(threads, optimize=not simulate_qdq),
                                providers=providers or ["CPUExecutionProvider"], disabled_optimizers=disabled)


def session_options(threads: int | None = None, optimize: bool = True):
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    so.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
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
                 threads: int | None = None, notes=None, size: int | None = None, simulate_qdq: bool = False):
        import numpy as np

        import_onnxruntime()
        try:
            self.session = open_session(path, precision, threads, providers, simulate_qdq)
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            raise BackendError(f"{path}: onnxruntime cannot load this model ({type(e).__name__}: {e})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if input_name not in inputs:
            raise BundleError(f"{path}: no input named {input_name!r} (has {', '.join(inputs)})")
        if score_output not in outputs:
            raise BundleError(f"{path}: no output named {score_output!r} (has {', '.join(outputs)})")
        check_shapes(path, inputs[input_name], self.session.get_outputs()[outputs.index(score_output)], size)
        self.input_name, self.score_output = input_name, score_output
        self.input_dtype = np.float16 if inputs[input_name].type == "tensor(float16)" else np.float32
        self.precision, self.file = precision, path
        used = self.session.get_providers()
        self.providers = used
        self.device = "cuda" if any(p in GPU_PROVIDERS for p in used) else "cpu"
        self.threads = threads or physical_cores()
        self.notes = list(notes or [])
        self.run_options = import_onnxruntime().RunOptions()
        self.run_options.log_severity_level = 4  # a failed run is raised (one line), not logged in red as well

    @classmethod
    def from_file(cls, path: str, precision: str = "fp32", threads: int | None = None, gpu: bool = False,
                  device_id: int = 0, input_name: str = INPUT_NAME, score_output: str = SCORE_OUTPUT,
                  size: int | None = None, simulate_qdq: bool = False) -> "OrtBackend":
        """A backend over a plain ONNX file (no bundle): CPU unless ``gpu``; ``size`` checks the input side;
        ``simulate_qdq``: see :func:`open_session`."""
        if not os.path.isfile(path):
            raise BackendError(f"{path}: no such ONNX file")
        providers = providers_for(precision, gpu, device_id, os.path.join(os.path.dirname(os.path.abspath(path)),
                                                                          ORT_TRT_CACHE))
        return cls(path, input_name, score_output, precision, providers, threads, size=size, simulate_qdq=simulate_qdq)

    @classmethod
    def open(cls, manifest, precision: str = "fp32", gpu: bool | None = None, threads: int | None = None,
             device_id: int = 0, notes=None) -> "OrtBackend":
        """The bundle's onnxruntime file for ``precision``. ``gpu=None``: GPU providers when this onnxruntime
        has them, else (or when the GPU session fails) CPU, noting why in ``notes``."""
        try:
            path = manifest.file_for(precision, "onnxruntime")
        except BundleError as e:
            raise NotInBundleError(str(e)) from None
        notes = list(notes or [])
        avail = gpu_providers()
        if not avail:
            from icrt.runtime.base.packages import onnxruntime_shadowed

            shadow = onnxruntime_shadowed()  # onnxruntime-gpu is installed, but the CPU build's module is the one here
            if gpu:
                raise BackendError(f"onnxruntime has no GPU providers here ({shadow or 'pip install onnxruntime-gpu'})")
            if shadow and shadow not in _told:
                _told.add(shadow)
                log.warning("icrt: warning: scoring on the CPU: %s", shadow)
        cache = os.path.join(manifest.root, ORT_TRT_CACHE)
        args = (path, manifest.input_name, manifest.score_output, precision)
        if gpu or (gpu is None and avail):
            try:
                return cls(*args, providers_for(precision, True, device_id, cache), threads, notes,
                           size=manifest.input_size)
            except (BackendError, BundleError) as e:
                if gpu:
                    raise
                notes.append(f"onnxruntime-gpu: {e}")
        elif gpu is None:
            notes.append("onnxruntime GPU providers: not available")
        return cls(*args, providers_for(precision, False, device_id, cache), threads, notes, size=manifest.input_size)

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

    def describe(self) -> dict:
        d = super().describe()
        d.update(providers=self.providers, threads=self.threads)
        return d


def providers_for(precision: str, gpu: bool, device_id: int = 0, trt_cache: str = ORT_TRT_CACHE) -> list:
    """onnxruntime providers: with ``gpu``, the TensorRT and CUDA providers this build has; CPU always last."""
    providers = []
    if gpu:
        avail = gpu_providers()
        if "TensorrtExecutionProvider" in avail:
            providers.append(("TensorrtExecutionProvider", {
                "device_id": device_id, "trt_fp16_enable": precision == "fp16", "trt_int8_enable": precision == "int8",
                "trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache}))
        if "CUDAExecutionProvider" in avail:
            providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    providers.append("CPUExecutionProvider")
    return providers


def _open(manifest, options, *, notes=None) -> OrtBackend:
    return OrtBackend.open(manifest, options.precision, threads=options.threads, device_id=options.device_id, notes=notes)


register_backend("onnxruntime", open=_open, available=onnxruntime_available, auto_order=20, files_key="onnxruntime")
