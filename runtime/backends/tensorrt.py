"""Native TensorRT backend (the name-based API of TensorRT 8.6, 10.x and 11.x).

Not run on hardware in this project's CI (no GPU, no TensorRT): written to the documented API and kept
small. Engine *selection* (precision, TensorRT version, GPU compute capability) is plain Python and tested;
``__init__``, ``run`` and ``close`` run in the tests against a fake ``tensorrt`` and fake CUDA bindings
(tests/fakes) that model the documented behaviour of 8.6, 10.3 and 11.x.

Flow: pick the manifest engine built for this TensorRT version and GPU -> deserialize -> one execution
context, one CUDA stream, pinned host buffers and device buffers sized for the profile's max batch ->
per batch: ``set_input_shape`` (checked: a shape outside the profile is a clear error), copy in,
``execute_async_v3``, copy out, sync; an empty batch runs nothing. ``close()`` drops the execution context
and engine first, then frees the buffers and destroys the stream. CUDA calls go through cuda-python
(``cuda.bindings.runtime``, or the older ``cuda.cudart``) or pycuda; a binding that is missing or fails to
load (cuda-python 13 on a CUDA 12 driver) passes to the next (:func:`open_cuda`, :func:`gpu_info`, also used
by ``runtime.backends.tensorrt_build`` to build engines).

TensorRT is imported only for a bundle that has an engine of the precision asked for (``auto`` passes a bundle
without engines by, TensorRT unloaded); a TensorRT that fails to import in any way is one line (``auto`` goes on).
The engine is deserialized from the bytes whose SHA-256 was checked. One execution context and one set of buffers
serve every call, so :meth:`TensorRTBackend.run` holds a lock: several threads may share a backend, one batch runs
at a time.
"""
from __future__ import annotations

import ctypes
import os
import threading

from icrt.runtime.backends.base import Backend, BackendError, ModelRunError, installed, register_backend
from icrt.runtime.base.errors import one_line
from icrt.runtime.bundle.manifest import BundleError, EngineRecord
from icrt.runtime.bundle.precisions import get_precision


def tensorrt_available() -> bool:
    """TensorRT is installed (found without importing it)."""
    return installed("tensorrt")


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        from icrt.runtime.base.install import pip_line

        raise BackendError(f"TensorRT is not installed ({one_line(e)}); install it ({pip_line('trt')} on a machine "
                           "with an NVIDIA GPU; JetPack ships it on Jetson) or use --backend onnxruntime") from None
    except Exception as e:  # installed, but its libraries (libnvinfer) or CUDA do not load: an OSError, RuntimeError, ...
        raise BackendError(f"TensorRT could not be loaded ({type(e).__name__}: {one_line(e)[:300]}); check the "
                           "TensorRT / CUDA install or use --backend onnxruntime") from None
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


def cc_compact(cc) -> str:
    """Compute capability as in file names: '8.7' -> '87' (``engine.fp16.trt10.3.0.sm87.plan``)."""
    return cc_key(cc).replace(".", "")


def rebuild_hint(manifest, precision: str) -> str:
    flags = get_precision(precision).export_hint()
    onnx = manifest.file_name(precision, "tensorrt") or get_precision("fp32").file("tensorrt")
    root = manifest.root or "BUNDLE"
    return (f"rebuild the engine on this machine: python -m export --checkpoint CHECKPOINT --out {root}"
            f"{' ' + flags if flags else ''} --trt "
            f"(without the checkpoint: icrt build -m {root} --precision {precision}; or: "
            f"trtexec --onnx={os.path.join(root, onnx)} --saveEngine=...), or use --backend onnxruntime")


def select_engine(manifest, precision: str, trt_version, compute_capability) -> EngineRecord:
    """The manifest engine for ``precision`` built with this TensorRT version for this GPU, or a clear error."""
    here_v, here_cc = version_key(trt_version), cc_key(compute_capability)
    candidates = manifest.engines_for(precision)
    for e in candidates:
        if version_key(e.tensorrt or "") == here_v and cc_key(e.compute_capability or "0.0") == here_cc:
            return e
    have = "; ".join(f"{e.file} (TensorRT {e.tensorrt}, sm {e.compute_capability})" for e in candidates) or "none"
    raise BackendError(f"{manifest.root}: no {precision} TensorRT engine for TensorRT {'.'.join(map(str, here_v))} on a "
                       f"GPU with compute capability {here_cc} (bundle has: {have}); {rebuild_hint(manifest, precision)}")


# --- CUDA through cuda-python or pycuda -----------------------------------------------------------


def _cuda_error_name(err) -> str:
    return str(getattr(err, "name", err))


def _cudart():
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (cuda-python 12.6+), else the older ``cuda.cudart``
    (removed in cuda-python 13)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


class _CudaPython:
    """cuda-python runtime API (see :func:`_cudart`)."""

    via = "cuda-python"

    def __init__(self, device_id: int):
        self.rt, self.stream = _cudart(), None
        self._host, self._device = [], []
        self._check(self.rt.cudaSetDevice(device_id), "cudaSetDevice")
        self.stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def _check(self, result, what: str = "CUDA call"):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"{what}: CUDA error {_cuda_error_name(err)}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def compute_capability(self, device_id: int) -> str:
        props = self._check(self.rt.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
        return f"{props.major}.{props.minor}"

    def pinned(self, shape, dtype):
        import numpy as np

        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        ptr = self._check(self.rt.cudaMallocHost(nbytes), "cudaMallocHost")
        self._host.append(ptr)
        buf = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def device(self, nbytes: int) -> int:
        ptr = self._check(self.rt.cudaMalloc(max(1, int(nbytes))), "cudaMalloc")
        self._device.append(ptr)
        return int(ptr)

    def htod(self, dptr: int, host):
        self._check(self.rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
                    "cudaMemcpyAsync")

    def dtoh(self, host, dptr: int):
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream),
                    "cudaMemcpyAsync")

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def sync(self):
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self):
        """Free the device and pinned host buffers, then destroy the stream (call after TensorRT is done with
        them: the execution context must be gone first). Safe to call twice."""
        for p in self._device:
            self.rt.cudaFree(p)
        for p in self._host:
            self.rt.cudaFreeHost(p)
        self._device, self._host = [], []
        if self.stream is not None:
            self.rt.cudaStreamDestroy(self.stream)
            self.stream = None


class _PyCuda:
    """pycuda's driver API, on the device's primary context."""

    via = "pycuda"

    def __init__(self, device_id: int):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda, self.ctx, self.stream = cuda, None, None
        self._device = []
        self.ctx = cuda.Device(device_id).retain_primary_context()
        self.ctx.push()
        try:
            self.stream = cuda.Stream()
        except BaseException:
            self.ctx.pop()
            raise

    def compute_capability(self, device_id: int) -> str:
        major, minor = self.cuda.Device(device_id).compute_capability()
        return f"{major}.{minor}"

    def pinned(self, shape, dtype):
        return self.cuda.pagelocked_empty(shape, dtype)

    def device(self, nbytes: int) -> int:
        mem = self.cuda.mem_alloc(max(1, int(nbytes)))
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
        """Free the device buffers, drop the stream, pop the context (after TensorRT is done). Safe to call twice."""
        for m in self._device:
            m.free()
        self._device = []
        self.stream = None  # pycuda destroys a stream when it is no longer referenced
        if self.ctx is not None:
            self.ctx.pop()
            self.ctx = None


CUDA_HINT = ("pip install 'cuda-python<13' (CUDA 12 drivers: JetPack 6, x86 drivers before 580) or 'cuda-python' "
             "(CUDA 13 drivers), or pip install pycuda (built against the local CUDA)")


def open_cuda(device_id: int = 0):
    """A CUDA stream and memory helper: cuda-python first, then pycuda. A binding that is missing *or fails to
    load* (e.g. cuda-python 13 on a CUDA 12 driver answers cudaErrorInsufficientDriver) passes to the next."""
    errors = []
    for cls in (_CudaPython, _PyCuda):
        try:
            return cls(device_id)
        except Exception as e:  # ImportError, OSError, a CUDA error: try the next binding
            errors.append(f"{cls.via}: {one_line(e)}")
    raise BackendError(f"the TensorRT backend cannot use CUDA ({'; '.join(errors)}); {CUDA_HINT}")


def gpu_info(device_id: int = 0) -> tuple[str, str, str]:
    """(GPU name, compute capability 'major.minor', which binding answered) of CUDA device ``device_id``, from
    cuda-python (``cuda.bindings.runtime``, then ``cuda.cudart``), else pycuda; no torch. BackendError naming
    what each binding said when none sees a GPU."""
    errors = []
    try:
        rt = _cudart()
        err, props = rt.cudaGetDeviceProperties(device_id)
        if int(err) != 0:
            raise BackendError(f"cudaGetDeviceProperties: CUDA error {_cuda_error_name(err)}")
        name = props.name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
        return str(name).strip(), f"{int(props.major)}.{int(props.minor)}", "cuda-python"
    except Exception as e:
        errors.append(f"cuda-python: {one_line(e)}")
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(device_id)
        major, minor = dev.compute_capability()
        return str(dev.name()).strip(), f"{int(major)}.{int(minor)}", "pycuda"
    except Exception as e:
        errors.append(f"pycuda: {one_line(e)}")
    raise BackendError(f"no usable CUDA GPU {device_id} ({'; '.join(errors)}); {CUDA_HINT}")


# --- the backend ----------------------------------------------------------------------------------


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"

    def engine_version(self) -> str | None:
        return str(getattr(self.trt, "__version__", "")) or None

    @classmethod
    def open(cls, manifest, precision: str = "fp32", device_id: int = 0, threads: int | None = None,
             notes=None) -> "TensorRTBackend":
        """The manifest engine for ``precision``, this TensorRT version and this GPU (``threads`` is unused). A bundle
        without an engine of ``precision`` is told before TensorRT is imported."""
        if not tensorrt_available():
            _import_tensorrt()  # BackendError: not installed
        if not manifest.engines_for(precision):
            raise BackendError(f"{manifest.root}: no {precision} TensorRT engine in this bundle; "
                               f"{rebuild_hint(manifest, precision)}")
        trt = _import_tensorrt()
        cuda = open_cuda(device_id)
        try:
            entry = select_engine(manifest, precision, trt.__version__, cuda.compute_capability(device_id))
            backend = cls(manifest, entry, trt, cuda)
        except BaseException:
            cuda.close()  # the backend released its TensorRT objects first (see __init__)
            raise
        backend.notes = list(notes or []) + backend.notes
        return backend

    def __init__(self, manifest, entry: EngineRecord, trt, cuda):
        self.precision, self.cuda, self.trt = entry.precision, cuda, trt
        self.context = self.engine = self.runtime = None
        self.buffers = {}
        self._running = threading.Lock()  # one execution context and one set of buffers: one batch at a time
        self.file = manifest.path(entry.file, "engines.file")  # BundleError unless inside the bundle
        if not os.path.isfile(self.file):
            raise BackendError(f"{self.file}: engine file named in the manifest is missing")
        plan = manifest.read_file(entry.file, "engines.file")  # checked bytes: BundleError unless the recorded file
        try:
            self._load(manifest, entry, trt, cuda, plan)
        except BaseException:
            self._release_tensorrt()  # before the caller frees the CUDA buffers and stream
            raise

    def _load(self, manifest, entry: EngineRecord, trt, cuda, plan: bytes) -> None:
        import numpy as np

        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:  # version or hardware mismatch not caught by the manifest
            raise BackendError(f"{self.file}: TensorRT {trt.__version__} could not deserialize this engine "
                               f"(built for another TensorRT version or GPU); {rebuild_hint(manifest, self.precision)}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.file}: TensorRT could not create an execution context (GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_name, self.score_output = manifest.input_name, manifest.score_output
        if self.input_name not in names or self.score_output not in names:
            raise BackendError(f"{self.file}: engine tensors {names} lack {self.input_name!r} / {self.score_output!r}")
        min_shape, _, max_shape = (tuple(int(d) for d in s)
                                   for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        if tuple(max_shape[1:]) != (3, manifest.input_size, manifest.input_size):
            raise BundleError(f"{self.file}: engine input {self.input_name!r} takes {list(max_shape)}; the manifest "
                              f"expects [N, 3, {manifest.input_size}, {manifest.input_size}]")
        self.min_batch = max(1, min_shape[0])
        self.max_batch = min(int(entry.max_batch), max_shape[0]) if entry.max_batch else max_shape[0]
        self.size = int(max_shape[-1])
        self.profile = (min_shape, max_shape)
        self._set_shape(self.max_batch)  # output shapes for the largest batch: the buffers' sizes
        # Buffers for the largest batch, allocated once: pinned host memory makes the copies truly async.
        for n in names:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
            if is_input[n]:
                shape = (self.max_batch, *max_shape[1:])
            else:
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

    def _set_shape(self, n: int) -> None:
        shape = (n, 3, self.size, self.size)
        if not self.context.set_input_shape(self.input_name, shape):
            (mn, mx) = self.profile
            raise BackendError(f"{self.file}: input shape {list(shape)} is outside the engine's optimization profile "
                               f"({list(mn)} .. {list(mx)}); rebuild the engine for this batch size "
                               f"(icrt build --max-batch N) or use --batch-size within the profile")

    def run(self, batch):
        import numpy as np

        n = len(batch)
        if n == 0:  # nothing to run (TensorRT would refuse a batch of 0 outside the profile)
            return np.zeros((0,), dtype=np.float32)
        if n > self.max_batch:
            return np.concatenate([self.run(batch[i:i + self.max_batch]) for i in range(0, n, self.max_batch)])
        if tuple(batch.shape[1:]) != (3, self.size, self.size):
            raise BackendError(f"{self.file}: input batch {list(batch.shape)} does not match the engine's "
                               f"[N, 3, {self.size}, {self.size}]")
        with self._running:  # the context's input shape and the buffers are shared by every caller
            return self._run(batch, n)

    def _run(self, batch, n: int):
        import numpy as np

        if self.context is None:
            raise BackendError(f"{self.file}: the TensorRT backend is closed")
        self._set_shape(n)
        host, dptr = self.buffers[self.input_name]
        host[:n] = batch  # casts to the engine's input dtype (fp16 for strongly typed fp16 engines)
        self.cuda.htod(dptr, host[:n])  # a leading slice of a C-contiguous buffer is contiguous
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise ModelRunError(f"{self.file}: TensorRT execution failed")
        out_host, out_dptr = self.buffers[self.score_output]
        self.cuda.dtoh(out_host[:n], out_dptr)
        self.cuda.sync()
        return np.asarray(out_host[:n], dtype=np.float32).reshape(n, -1)[:, 0].copy()

    def _release_tensorrt(self) -> None:
        """Drop the TensorRT objects, the execution context first (the Python bindings free each object when its
        last reference goes; the context still points at our buffers and runs on our stream)."""
        self.context = None
        self.engine = None
        self.runtime = None

    def close(self):
        """Release the engine, then the CUDA buffers and stream (after a batch running on another thread). Safe to
        call twice."""
        with self._running:
            self._release_tensorrt()
            self.buffers = {}  # the pinned host arrays view memory freed next
            if self.cuda is not None:
                self.cuda.close()
                self.cuda = None


def _open(manifest, options, *, notes=None) -> TensorRTBackend:
    return TensorRTBackend.open(manifest, options.precision, device_id=options.device_id, notes=notes)


register_backend("tensorrt", open=_open, available=tensorrt_available, auto_order=10, files_key="tensorrt")
