"""A fake ``tensorrt`` module for tests without a GPU: the calls icrt makes, with the documented differences
between TensorRT 8.6, 10.3 and 11.x (read from each release's Python bindings, python/src/infer/pyCore.cpp, and
NvInfer.h in github.com/NVIDIA/TensorRT at tags v8.6.1, v10.3.0, v11.1):

- ``NetworkDefinitionCreationFlag``: 8.6 has ``EXPLICIT_BATCH`` (and no ``STRONGLY_TYPED``); 10.x has both
  (``EXPLICIT_BATCH`` deprecated and ignored: networks are always explicit batch); 11.x has ``STRONGLY_TYPED``
  only (deprecated and ignored: networks are always strongly typed; its value moved from 1 to 0).
- ``create_network(0)``: implicit batch on 8.6, which the ONNX parser refuses; explicit batch on 10.x and 11.x;
  strongly typed on 11.x, and on 10.x only with ``STRONGLY_TYPED``.
- ``BuilderFlag``: ``FP16``, ``INT8`` and ``TF32`` on 8.6 and 10.x; 11.x has ``TF32`` but no ``FP16`` / ``INT8``.
  ``TF32`` is set in a new builder config. A strongly typed network built with ``FP16`` / ``INT8`` fails (None).
- Timing cache: ``create_timing_cache(blob)`` (None for bytes that are no cache), ``set_timing_cache(cache,
  ignore_mismatch)`` returns False for a cache made by another TensorRT build or GPU, ``get_timing_cache()``
  returns the attached cache, or None (always None with ``fake.no_timing_cache``).
- ``build_serialized_network`` returns a "plan" (bytes: a JSON description of what was asked for) or None;
  ``Runtime.deserialize_cuda_engine`` reads it back (None for another version or GPU); the engine's execution
  context has the name-based API (``set_input_shape`` -> False outside the profile, ``get_tensor_shape``,
  ``set_tensor_address``, ``execute_async_v3``), and "runs" the model: score = sigmoid(mean of each input),
  read from and written to the fake CUDA memory (:mod:`tests.fakes.fake_cuda`).

``module.fake`` holds the knobs and records: ``builds`` (one dict per build call), ``no_timing_cache``,
``fail_build`` (a predicate on the build dict), ``input_names`` (the parsed model's inputs).
"""
from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import math
import os
import types

import numpy as np

from tests.fakes.fake_cuda import CudaState

PLAN_MAGIC = b"FAKEPLAN"
CACHE_MAGIC = b"FAKECACHE"
VERSIONS = {"8.6": "8.6.2.3", "10.3": "10.3.0.30", "11.1": "11.1.0.8"}  # JetPack 6.0, JetPack 6.1/6.2, 11.x


class Fake:
    """Knobs and records of one fake tensorrt module."""

    def __init__(self, version: str, cuda: CudaState):
        self.version, self.cuda = version, cuda
        self.major = int(version.split(".")[0])
        self.builds: list[dict] = []
        self.no_timing_cache = False
        self.fail_build = None  # callable(build dict) -> bool
        self.input_names = ["image"]
        self.timing_cache_calls: list[tuple] = []  # ("create" | "set", ...) in order

    @property
    def gpu_key(self) -> str:
        """What a timing cache is checked against: the TensorRT build and the GPU's properties."""
        return f"{self.version}|{self.cuda.name}|{self.cuda.cc[0]}.{self.cuda.cc[1]}"


def make_tensorrt(version: str, cuda: CudaState) -> types.ModuleType:
    """A fake tensorrt module of ``version`` ('8.6.2.3', '10.3.0.30', '11.1.0.8', ...) on the fake GPU ``cuda``."""
    fake = Fake(version, cuda)
    m = types.ModuleType("tensorrt")
    m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    m.__version__ = version
    m.fake = fake

    if fake.major >= 11:
        net_flags = {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2}
        builder_flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                         "SPARSE_WEIGHTS": 7}
    elif fake.major >= 10:
        net_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        builder_flags = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5,
                         "TF32": 6, "SPARSE_WEIGHTS": 7, "FP8": 15, "BF16": 17}
    else:
        net_flags = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}
        builder_flags = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5,
                         "TF32": 6, "SPARSE_WEIGHTS": 7}
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags)
    BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3})

    def nptype(dtype):
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                DataType.INT32: np.int32}[dtype]

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, min_severity=WARNING):
            self.min_severity = min_severity

    # --- building ---------------------------------------------------------------------------------------

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Network:
        def __init__(self, flags: int):
            known = sum(1 << int(f) for f in NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise TypeError(f"unknown network creation flags {flags:#x}")
            on = {f.name for f in NetworkDefinitionCreationFlag if flags & (1 << int(f))}
            self.flags = sorted(on)
            self.explicit_batch = fake.major >= 10 or "EXPLICIT_BATCH" in on
            self.strongly_typed = fake.major >= 11 or (fake.major >= 10 and "STRONGLY_TYPED" in on)
            self.inputs: list = []
            self.onnx = None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        def __init__(self, desc):
            self._desc = desc

        def desc(self):
            return self._desc

        def __str__(self):
            return f"In node -1 (importModel): {self._desc}"

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            if not self.network.explicit_batch:
                self.errors.append(ParserError(
                    "INVALID_VALUE: Assertion failed: !mImporterCtx.network()->hasImplicitBatchDimension() && "
                    "\"This version of the ONNX parser only supports TensorRT INetworkDefinitions with an explicit "
                    "batch dimension. Please ensure the network was initialized with the explicit batch flag.\""))
                return False
            if not os.path.isfile(path):
                self.errors.append(ParserError(f"Failed to open file: {path}"))
                return False
            with open(path, "rb") as f:
                head = f.read(16)
            if head.startswith(b"BROKEN"):
                self.errors.append(ParserError("Failed to parse ONNX model (protobuf parsing failed)"))
                return False
            self.network.inputs = [Tensor(n) for n in fake.input_names]
            self.network.onnx = os.path.basename(path)
            return True

    class OptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's argument names
            self.shapes[input] = [list(min), list(opt), list(max)]

    class TimingCache:
        def __init__(self, key: str, entries: int = 0):
            self.key, self.entries = key, entries

        def serialize(self):
            return CACHE_MAGIC + json.dumps({"key": self.key, "entries": self.entries}).encode()

    class BuilderConfig:
        def __init__(self):
            self.flags = {BuilderFlag.TF32}  # TF32 is enabled by default
            self.pools, self.profiles = {}, []
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            self.pools[MemoryPoolType(pool).name] = int(size)

        def set_flag(self, flag):
            self.flags.add(BuilderFlag(flag))

        def clear_flag(self, flag):
            self.flags.discard(BuilderFlag(flag))

        def get_flag(self, flag):
            return BuilderFlag(flag) in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            blob = bytes(serialized_timing_cache)
            fake.timing_cache_calls.append(("create", len(blob)))
            if not blob:
                return TimingCache(fake.gpu_key)
            if not blob.startswith(CACHE_MAGIC):
                return None  # not a timing cache
            d = json.loads(blob[len(CACHE_MAGIC):])
            return TimingCache(d["key"], d["entries"])

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = bool(ignore_mismatch) or cache.key == fake.gpu_key
            fake.timing_cache_calls.append(("set", cache.key, bool(ignore_mismatch), ok))
            if ok:
                self.cache = cache
            return ok

        def get_timing_cache(self):
            return None if fake.no_timing_cache else self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return Network(int(flags))

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            flags = sorted(f.name for f in config.flags)
            build = {"onnx": network.onnx, "network_flags": network.flags, "explicit_batch": network.explicit_batch,
                     "strongly_typed": network.strongly_typed, "builder_flags": flags,
                     "workspace": config.pools.get("WORKSPACE"),
                     "profile": config.profiles[0].shapes if len(config.profiles) == 1 else None,
                     "timing_cache_entries": None if config.cache is None else config.cache.entries,
                     "version": fake.version, "gpu": fake.gpu_key}
            fake.builds.append(build)
            if network.onnx is None or build["profile"] is None:
                return None  # nothing parsed, or no (or several) profiles
            if set(build["profile"]) != {t.name for t in network.inputs}:
                return None  # a profile for an input the network does not have
            if network.strongly_typed and {"FP16", "INT8", "BF16", "FP8"} & set(flags):
                return None  # TensorRT 10: weak-typing flags are an error on a strongly typed network
            if fake.fail_build is not None and fake.fail_build(build):
                return None
            if config.cache is not None:
                config.cache.entries += 1
            return PLAN_MAGIC + json.dumps(build).encode()

    # --- running ----------------------------------------------------------------------------------------

    class ExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            self.shape = None
            self.addresses = {}

        def set_input_shape(self, name, shape):
            shape = [int(d) for d in shape]
            mn, _, mx = self.engine.profile
            if name != self.engine.input or len(shape) != 4 or any(not a <= s <= b for a, s, b in zip(mn, shape, mx)):
                return False
            self.shape = shape
            return True

        def get_tensor_shape(self, name):
            if name == self.engine.input:
                return tuple(self.shape) if self.shape else (-1, *self.engine.profile[2][1:])
            return (self.shape[0] if self.shape else -1,)

        def set_tensor_address(self, name, ptr):
            if name not in (self.engine.input, self.engine.output):
                return False
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle):
            cuda.log("execute_async_v3", self.shape[0] if self.shape else None)
            if self.shape is None or set(self.addresses) != {self.engine.input, self.engine.output}:
                return False
            if int(stream_handle) not in cuda.streams:
                return False
            n, count = self.shape[0], int(np.prod(self.shape))
            cuda.check(self.addresses[self.engine.input], count * 4)
            cuda.check(self.addresses[self.engine.output], n * 4)
            x = np.frombuffer((ctypes.c_float * count).from_address(self.addresses[self.engine.input]),
                              dtype=np.float32).reshape(self.shape)
            scores = (1.0 / (1.0 + np.exp(-x.reshape(n, -1).astype(np.float64).mean(axis=1)))).astype(np.float32)
            ctypes.memmove(self.addresses[self.engine.output], scores.ctypes.data, scores.nbytes)
            return True

        def __del__(self):
            cuda.log("context.__del__")

    class Engine:
        def __init__(self, build):
            self.build = build
            self.input = next(iter(build["profile"]))
            self.output = "score"
            self.profile = [tuple(s) for s in build["profile"][self.input]]

        @property
        def num_io_tensors(self):
            return 2

        def get_tensor_name(self, i):
            return (self.input, self.output)[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == self.input else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType.FLOAT  # icrt's models keep fp32 inputs and outputs in every precision

        def get_tensor_profile_shape(self, name, profile_index):
            assert profile_index == 0 and name == self.input
            return self.profile

        def create_execution_context(self):
            cuda.log("create_execution_context")
            return ExecutionContext(self)

        def __del__(self):
            cuda.log("engine.__del__")

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if not data.startswith(PLAN_MAGIC):
                return None
            build = json.loads(data[len(PLAN_MAGIC):])
            if build["version"] != fake.version or build["gpu"].split("|")[2] != fake.gpu_key.split("|")[2]:
                return None  # serialized engines are tied to the TensorRT version and the GPU
            return Engine(build)

    for obj in (NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType, TensorIOMode, DataType, nptype, Logger,
                Builder, OnnxParser, Runtime):
        setattr(m, obj.__name__, obj)
    m.IBuilderConfig, m.ITimingCache, m.IExecutionContext, m.ICudaEngine = (BuilderConfig, TimingCache,
                                                                           ExecutionContext, Engine)
    return m


def sigmoid_mean(batch) -> np.ndarray:
    """What a fake engine computes for ``batch`` (N x 3 x S x S): sigmoid of each input's mean."""
    x = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1).astype(np.float64).mean(axis=1)
    return np.array([1.0 / (1.0 + math.exp(-v)) for v in x], dtype=np.float32)


def install_tensorrt(monkeypatch, version: str, cuda: CudaState) -> types.ModuleType:
    """Put a fake tensorrt of ``version`` in ``sys.modules`` for one test; the module (``.fake``: knobs, records)."""
    import sys

    module = make_tensorrt(version, cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module
