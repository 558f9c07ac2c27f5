"""Native TensorRT backend (TensorRT 10 / 11 name-based API).

Not run on hardware in this project's CI (no GPU, no TensorRT): written to the documented API and kept
small. Engine *selection* (precision, TensorRT version, GPU compute capability) is plain Python and tested.

Flow: pick the manifest engine built for this TensorRT version and GPU -> deserialize -> one execution
context, one CUDA stream, pinned host buffers and device buffers sized for the profile's max batch ->
per batch: copy in, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``, copy out, sync.
CUDA calls go through cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``) or pycuda.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Mapping

from ..manifest import FILE_NAMES, BundleError, EngineRecord
from . import Backend, BackendError, register_backend


def tensorrt_available() -> bool:
    """TensorRT is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise BackendError(f"TensorRT is not installed ({e}); install it (pip install 'icrt[trt]' on a machine "
                           "with an NVIDIA GPU; JetPack ships it on Jetson) or use --backend onnxruntime") from None
    return tensorrt


# --- engine selection (no GPU needed) ------------------------------------------------------------


def version_key(version) -> tuple:
    """'10.3.0.26' -> (10, 3, 0): serialized engines are tied to major.minor.patch."""
    parts = []
    for p in str(version).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def cc_key(cc) -> str:
    """Compute capability in one spelling: 8.7, '8.7', '87', 'sm87', (8, 7) -> '8.7'."""
    if isinstance(cc, (tuple, list)):
        return f"{int(cc[0])}.{int(cc[1])}"
    s = str(cc).lower().removeprefix("sm_").removeprefix("sm")
    if "." in s:
        major, minor = s.split(".", 1)
        return f"{int(major)}.{int(minor)}"
    return f"{int(s[:-1])}.{int(s[-1])}" if len(s) >= 2 else f"{int(s)}.0"


def rebuild_hint(manifest, precision: str) -> str:
    flag = {"fp16": " --fp16", "int8": " --int8 --calib-data IMAGES"}.get(precision, "")
    onnx = manifest.files.name_for(precision, "tensorrt") or FILE_NAMES["fp32"]
    return (f"rebuild the engine on this machine: python -m export --checkpoint CHECKPOINT --out {manifest.root or 'BUNDLE'}"
            f"{flag} --trt (or: trtexec --onnx={os.path.join(manifest.root or 'BUNDLE', onnx)} --saveEngine=...), "
            "or use --backend onnxruntime")


def select_engine(manifest, precision: str, trt_version, compute_capability) -> EngineRecord:
    """The manifest engine for ``precision`` built with this TensorRT version for this GPU, or a clear error."""
    here_v, here_cc = version_key(trt_version), cc_key(compute_capability)
    candidates = [EngineRecord.coerce(e) for e in manifest.engines
                  if isinstance(e, Mapping) and e.get("precision") == precision]
    for e in candidates:
        if version_key(e.tensorrt or "") == here_v and cc_key(e.compute_capability or "0.0") == here_cc:
            return e
    have = "; ".join(f"{e.file} (TensorRT {e.tensorrt}, sm {e.compute_capability})" for e in candidates) or "none"
    raise BackendError(f"{manifest.root}: no {precision} TensorRT engine for TensorRT {'.'.join(map(str, here_v))} on a "
                       f"GPU with compute capability {here_cc} (bundle has: {have}); {rebuild_hint(manifest, precision)}")


# --- CUDA through cuda-python or pycuda -----------------------------------------------------------


class _CudaPython:
    """cuda-python runtime API: ``cuda.bindings.runtime`` (12.6+), else the older ``cuda.cudart``."""

    def __init__(self, device_id: int):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.rt = cudart
        self._check(cudart.cudaSetDevice(device_id))
        self.stream = self._check(cudart.cudaStreamCreate())
        self._host, self._device = [], []

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def compute_capability(self, device_id: int) -> str:
        props = self._check(self.rt.cudaGetDeviceProperties(device_id))
        return f"{props.major}.{props.minor}"

    def pinned(self, shape, dtype):
        import numpy as np

        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._check(self.rt.cudaMallocHost(nbytes))
        self._host.append(ptr)
        buf = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def device(self, nbytes: int) -> int:
        ptr = self._check(self.rt.cudaMalloc(nbytes))
        self._device.append(ptr)
        return int(ptr)

    def htod(self, dptr: int, host):
        self._check(self.rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def dtoh(self, host, dptr: int):
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def sync(self):
        self._check(self.rt.cudaStreamSynchronize(self.stream))

    def close(self):
        for p in self._device:
            self.rt.cudaFree(p)
        for p in self._host:
            self.rt.cudaFreeHost(p)
        self._device, self._host = [], []


class _PyCuda:
    def __init__(self, device_id: int):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.ctx = cuda.Device(device_id).retain_primary_context()
        self.ctx.push()
        self.stream = cuda.Stream()
        self._device = []

    def compute_capability(self, device_id: int) -> str:
        major, minor = self.cuda.Device(device_id).compute_capability()
        return f"{major}.{minor}"

    def pinned(self, shape, dtype):
        return self.cuda.pagelocked_empty(shape, dtype)

    def device(self, nbytes: int) -> int:
        mem = self.cuda.mem_alloc(nbytes)
        self._device.append(mem)
        return int(mem)

    def htod(self, dptr, host):
        self.cuda.memcpy_htod_async(dptr, host, self.stream)

    def dtoh(self, host, dptr):
        self.cuda.memcpy_dtoh_async(host, dptr, self.stream)

    @property
    def stream_handle(self) -> int:
        return self.stream.handle

    def sync(self):
        self.stream.synchronize()

    def close(self):
        for m in self._device:
            m.free()
        self._device = []
        self.ctx.pop()


def open_cuda(device_id: int = 0):
    errors = []
    for cls in (_CudaPython, _PyCuda):
        try:
            return cls(device_id)
        except ImportError as e:
            errors.append(str(e))
    raise BackendError("the TensorRT backend needs cuda-python (pip install cuda-python) or pycuda "
                       f"({'; '.join(errors)})")


# --- the backend ----------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"

    @classmethod
    def open(cls, manifest, precision: str = "fp32", device_id: int = 0, threads: int | None = None,
             notes=None) -> "TensorRTBackend":
        """The manifest engine for ``precision``, this TensorRT version and this GPU (``threads`` is unused)."""
        trt = _import_tensorrt()
        cuda = open_cuda(device_id)
        try:
            entry = select_engine(manifest, precision, trt.__version__, cuda.compute_capability(device_id))
            backend = cls(manifest, entry, trt, cuda)
        except BaseException:
            cuda.close()
            raise
        backend.notes = list(notes or []) + backend.notes
        return backend

    def __init__(self, manifest, entry: EngineRecord, trt, cuda):
        import numpy as np

        entry = EngineRecord.coerce(entry)
        self.precision, self.cuda, self.trt = entry.precision, cuda, trt
        self.file = manifest.path(entry.file, "engines.file")  # BundleError unless inside the bundle
        if not os.path.isfile(self.file):
            raise BackendError(f"{self.file}: engine file named in the manifest is missing")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(self.file, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:  # version or hardware mismatch not caught by the manifest
            raise BackendError(f"{self.file}: TensorRT {trt.__version__} could not deserialize this engine "
                               f"(built for another TensorRT version or GPU); {rebuild_hint(manifest, self.precision)}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_name, self.score_output = manifest.input_name, manifest.score_output
        if self.input_name not in names or self.score_output not in names:
            raise BackendError(f"{self.file}: engine tensors {names} lack {self.input_name!r} / {self.score_output!r}")
        _, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.max_batch = int(entry.max_batch or max_shape[0])
        self.size = int(max_shape[-1])
        if tuple(max_shape[1:]) != (3, manifest.input_size, manifest.input_size):
            raise BundleError(f"{self.file}: engine input {self.input_name!r} takes {list(max_shape)}; the manifest "
                              f"expects [N, 3, {manifest.input_size}, {manifest.input_size}]")
        # Buffers for the largest batch, allocated once: pinned host memory makes the copies truly async.
        self.buffers = {}
        for n in names:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
            if is_input[n]:
                shape = (self.max_batch, *max_shape[1:])
            else:
                self.context.set_input_shape(self.input_name, (self.max_batch, 3, self.size, self.size))
                shape = tuple(max(1, int(d)) for d in self.context.get_tensor_shape(n))
                if n == self.score_output and shape not in ((self.max_batch,), (self.max_batch, 1)):
                    raise BundleError(f"{self.file}: output {n!r} has shape {list(shape)} for a batch of {self.max_batch}; "
                                      "the score output must be [batch] or [batch, 1]")
            host = cuda.pinned(shape, dtype)
            dptr = cuda.device(host.nbytes)
            self.buffers[n] = (host, dptr)
            self.context.set_tensor_address(n, dptr)
        self.outputs = [n for n in names if not is_input[n]]
        self.notes = [f"engine {entry.file} (TensorRT {entry.tensorrt}, sm {entry.compute_capability})"]

    def run(self, batch):
        import numpy as np

        n = len(batch)
        if n > self.max_batch:
            return np.concatenate([self.run(batch[i:i + self.max_batch]) for i in range(0, n, self.max_batch)])
        host, dptr = self.buffers[self.input_name]
        host[:n] = batch  # casts to the engine's input dtype (fp16 for strongly typed fp16 engines)
        self.cuda.htod(dptr, host[:n])  # a leading slice of a C-contiguous buffer is contiguous
        self.context.set_input_shape(self.input_name, (n, *batch.shape[1:]))
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise BackendError(f"{self.file}: TensorRT execution failed")
        out_host, out_dptr = self.buffers[self.score_output]
        self.cuda.dtoh(out_host[:n], out_dptr)
        self.cuda.sync()
        return np.asarray(out_host[:n], dtype=np.float32).reshape(n, -1)[:, 0].copy()

    def close(self):
        self.cuda.close()


def _open(manifest, precision: str, *, threads: int | None = None, device_id: int = 0, notes=None) -> TensorRTBackend:
    return TensorRTBackend.open(manifest, precision, device_id=device_id, notes=notes)


register_backend("tensorrt", open=_open, available=tensorrt_available, auto_order=10, files_key="tensorrt")
