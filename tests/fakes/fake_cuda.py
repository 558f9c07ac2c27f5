"""Fake CUDA bindings for tests without a GPU: cuda-python's runtime API (``cuda.bindings.runtime`` and the older
``cuda.cudart``) and pycuda's driver API, with the calls icrt makes.

"Device" memory is ordinary host memory (ctypes buffers), so copies are real ``memmove``s and the fake TensorRT
(:mod:`tests.fakes.fake_tensorrt`) can compute on what was copied in. Every call is recorded in
``CudaState.calls`` (in order; the fake TensorRT adds its object destructions), so tests can check what was freed
and when. ``CudaState(error=35)`` makes every cuda-python call fail with ``cudaErrorInsufficientDriver``, as
cuda-python 13 does on a CUDA 12 driver (and as the real cuda-bindings 13 does on a machine without a GPU).

Shapes of the real APIs modelled here (cuda-python: every call returns a tuple whose first item is a
``cudaError_t``; pycuda: exceptions, objects with ``handle`` / ``int()``)::

    cudaSetDevice(d) -> (err,)              cudaStreamCreate() -> (err, stream)
    cudaGetDeviceProperties(d) -> (err, prop: .name bytes, .major, .minor)
    cudaMallocHost(n) / cudaMalloc(n) -> (err, ptr)
    cudaMemcpyAsync(dst, src, n, kind, stream) -> (err,)    cudaStreamSynchronize(s) -> (err,)
    cudaFree(p) / cudaFreeHost(p) / cudaStreamDestroy(s) -> (err,)
"""
from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import sys
import types

import numpy as np


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class CudaState:
    """One fake GPU: its name and compute capability, its memory, its streams, and the log of calls."""

    def __init__(self, name: str = "Orin", cc=(8, 7), error: int | None = None):
        self.name, self.cc, self.error = name, tuple(cc), error
        self.calls: list[tuple] = []
        self.memory: dict[int, tuple[str, object]] = {}  # ptr -> (kind, ctypes buffer)
        self.streams: set[int] = set()

    def log(self, *event) -> None:
        self.calls.append(event)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def alloc(self, nbytes: int, kind: str) -> int:
        buf = ctypes.create_string_buffer(max(1, int(nbytes)))
        ptr = ctypes.addressof(buf)
        self.memory[ptr] = (kind, buf)
        return ptr

    def free(self, ptr: int, kind: str) -> None:
        assert int(ptr) in self.memory, f"free of unknown pointer {ptr}"
        assert self.memory[int(ptr)][0] == kind, f"{kind} free of {self.memory[int(ptr)][0]} memory"
        del self.memory[int(ptr)]

    def check(self, ptr: int, nbytes: int) -> None:
        """``ptr .. ptr + nbytes`` lies in one allocation (device memory or pinned host memory)."""
        for base, (_, buf) in self.memory.items():
            if base <= int(ptr) and int(ptr) + nbytes <= base + ctypes.sizeof(buf):
                return
        raise AssertionError(f"access outside any allocation: {ptr} + {nbytes}")

    def live(self, kind: str) -> int:
        return sum(1 for k, _ in self.memory.values() if k == kind)


# --- cuda-python ----------------------------------------------------------------------------------------------


class cudaStream_t:  # noqa: N801
    _next = 1

    def __init__(self):
        self.handle = 0x5000 + cudaStream_t._next
        cudaStream_t._next += 1

    def __int__(self):
        return self.handle


def make_cuda_runtime(state: CudaState, name: str = "cuda.bindings.runtime") -> types.ModuleType:
    """A module with the cuda-python runtime calls icrt uses, on ``state``."""
    rt = types.ModuleType(name)
    rt.__spec__ = importlib.machinery.ModuleSpec(name, None)
    rt.cudaError_t, rt.cudaMemcpyKind, rt.cudaStream_t = cudaError_t, cudaMemcpyKind, cudaStream_t

    def failed():
        return cudaError_t(state.error) if state.error else None

    def cudaSetDevice(device):
        state.log("cudaSetDevice", device)
        return (failed() or cudaError_t.cudaSuccess,)

    def cudaGetDeviceProperties(device):
        state.log("cudaGetDeviceProperties", device)
        if failed():
            return failed(), None
        props = types.SimpleNamespace(name=state.name.encode() + b"\0" * 8, major=state.cc[0], minor=state.cc[1])
        return cudaError_t.cudaSuccess, props

    def cudaStreamCreate():
        state.log("cudaStreamCreate")
        if failed():
            return failed(), None
        s = cudaStream_t()
        state.streams.add(int(s))
        return cudaError_t.cudaSuccess, s

    def cudaStreamDestroy(stream):
        state.log("cudaStreamDestroy", int(stream))
        state.streams.discard(int(stream))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(stream):
        state.log("cudaStreamSynchronize", int(stream))
        assert int(stream) in state.streams
        return (cudaError_t.cudaSuccess,)

    def cudaMallocHost(nbytes):
        state.log("cudaMallocHost", nbytes)
        return (failed(), None) if failed() else (cudaError_t.cudaSuccess, state.alloc(nbytes, "host"))

    def cudaMalloc(nbytes):
        state.log("cudaMalloc", nbytes)
        return (failed(), None) if failed() else (cudaError_t.cudaSuccess, state.alloc(nbytes, "device"))

    def cudaFree(ptr):
        state.log("cudaFree", int(ptr))
        state.free(ptr, "device")
        return (cudaError_t.cudaSuccess,)

    def cudaFreeHost(ptr):
        state.log("cudaFreeHost", int(ptr))
        state.free(ptr, "host")
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(dst, src, nbytes, kind, stream):
        state.log("cudaMemcpyAsync", cudaMemcpyKind(kind).name, nbytes)
        assert int(stream) in state.streams, "copy on a destroyed stream"
        state.check(dst if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else src, nbytes)
        ctypes.memmove(int(dst), int(src), int(nbytes))
        return (cudaError_t.cudaSuccess,)

    for f in (cudaSetDevice, cudaGetDeviceProperties, cudaStreamCreate, cudaStreamDestroy, cudaStreamSynchronize,
              cudaMallocHost, cudaMalloc, cudaFree, cudaFreeHost, cudaMemcpyAsync):
        setattr(rt, f.__name__, f)
    return rt


# --- pycuda -----------------------------------------------------------------------------------------------------


def make_pycuda(state: CudaState) -> tuple[types.ModuleType, types.ModuleType]:
    """(``pycuda``, ``pycuda.driver``) with the calls icrt uses, on ``state``."""
    drv = types.ModuleType("pycuda.driver")
    drv.__spec__ = importlib.machinery.ModuleSpec("pycuda.driver", None)

    class Context:
        def push(self):
            state.log("pycuda.Context.push")

        def pop(self):
            state.log("pycuda.Context.pop")

    class Device:
        def __init__(self, index):
            self.index = index

        def name(self):
            return state.name

        def compute_capability(self):
            return state.cc

        def retain_primary_context(self):
            return Context()

    class Stream:
        def __init__(self):
            self.handle = int(cudaStream_t())
            state.streams.add(self.handle)
            state.log("pycuda.Stream")

        def synchronize(self):
            state.log("pycuda.Stream.synchronize")

        def __del__(self):
            state.log("pycuda.Stream.__del__")
            state.streams.discard(self.handle)

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.ptr = state.alloc(nbytes, "device")

        def __int__(self):
            return self.ptr

        def free(self):
            state.log("pycuda.free", self.ptr)
            state.free(self.ptr, "device")

    def init():
        state.log("pycuda.init")

    def pagelocked_empty(shape, dtype):
        return np.empty(shape, dtype)

    def mem_alloc(nbytes):
        state.log("pycuda.mem_alloc", nbytes)
        return DeviceAllocation(nbytes)

    def memcpy_htod_async(dptr, host, stream):
        state.check(int(dptr), host.nbytes)
        ctypes.memmove(int(dptr), host.ctypes.data, host.nbytes)

    def memcpy_dtoh_async(host, dptr, stream):
        state.check(int(dptr), host.nbytes)
        ctypes.memmove(host.ctypes.data, int(dptr), host.nbytes)

    for obj in (Context, Device, Stream, DeviceAllocation, init, pagelocked_empty, mem_alloc, memcpy_htod_async,
                memcpy_dtoh_async):
        setattr(drv, obj.__name__, obj)
    pkg = types.ModuleType("pycuda")
    pkg.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pkg.__path__ = []
    pkg.driver = drv
    return pkg, drv


# --- installing them --------------------------------------------------------------------------------------------


def install_cuda(monkeypatch, state: CudaState, cuda_python: str | None = "bindings", pycuda: bool = False) -> None:
    """Put fake CUDA bindings in ``sys.modules`` for one test (a real cuda-python or pycuda is hidden).

    ``cuda_python``: ``"bindings"`` (``cuda.bindings.runtime``, cuda-python 12.6+), ``"cudart"`` (only the older
    ``cuda.cudart``), or None (no cuda-python). ``pycuda``: whether pycuda is importable.
    """
    pkg = types.ModuleType("cuda")
    pkg.__spec__ = importlib.machinery.ModuleSpec("cuda", None, is_package=True)
    pkg.__path__ = []
    bindings = types.ModuleType("cuda.bindings")
    bindings.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings", None, is_package=True)
    bindings.__path__ = []
    modules = {"cuda": pkg if cuda_python else None, "cuda.bindings": None, "cuda.bindings.runtime": None,
               "cuda.cudart": None}
    if cuda_python == "bindings":
        bindings.runtime = make_cuda_runtime(state)
        pkg.bindings = bindings
        modules.update({"cuda.bindings": bindings, "cuda.bindings.runtime": bindings.runtime})
    elif cuda_python == "cudart":
        pkg.cudart = make_cuda_runtime(state, "cuda.cudart")
        modules["cuda.cudart"] = pkg.cudart
    if pycuda:
        modules["pycuda"], modules["pycuda.driver"] = make_pycuda(state)
    else:
        modules["pycuda"] = modules["pycuda.driver"] = None
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
