"""TensorRT engines from the bundle's ONNX files (written to the TensorRT 10 / 11 Python APIs).

NOT RUN ON HARDWARE: this project's test machines have no GPU and no TensorRT. The pure parts (profile
shapes, engine names, manifest entries, the error without tensorrt) are tested; :func:`build_engine` follows
the documented API and has never been executed.

- TensorRT >= 11: every network is strongly typed (weak-typing builder flags were removed), so precision
  comes from the ONNX file itself: fp16 from ``model.fp16.onnx``, int8 from the Q/DQ ``model.int8.qdq.onnx``.
- TensorRT 10.x (Jetson JetPack 6): the network is built from the fp32 ONNX with BuilderFlag.FP16 for fp16,
  and from the Q/DQ model with BuilderFlag.INT8 (+ FP16 for the float parts) for int8.
One optimization profile over the batch: min 1, opt the usual patches per image, max ``--max-batch``.
"""
from __future__ import annotations

import os

from runtime.errors import UnavailableError
from runtime.manifest import TIMING_CACHE, engine_file_name


class TensorRTError(UnavailableError):
    """TensorRT missing, no GPU, or a failed parse/build; the message says which."""


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTError("--trt needs the tensorrt Python package and an NVIDIA GPU "
                            "(pip install 'icrt[trt]' on a CUDA machine); it is not installed here") from None
    return trt


def major(version: str) -> int:
    return int(str(version).split(".")[0])


def compute_capability() -> str:
    """'sm86'-style string of GPU 0; TensorRTError without a CUDA GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            a, b = torch.cuda.get_device_capability(0)
            return f"{a}{b}"
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart  # cuda-python

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            return f"{props.major}{props.minor}"
    except ImportError:
        pass
    raise TensorRTError("--trt needs an NVIDIA GPU (none found: torch.cuda / cuda-python see no device)")


def engine_name(precision: str, trt_version: str, cc: str) -> str:
    """engine.<precision>.trt<version>.sm<cc>.plan (docs/bundle.md): an engine only runs where it was built."""
    return engine_file_name(precision, trt_version, cc)


def profile_shapes(size: int, opt_batch: int, max_batch: int) -> tuple[tuple, tuple, tuple]:
    """(min, opt, max) input shapes of the one optimization profile."""
    max_batch = max(1, int(max_batch))
    opt_batch = min(max(1, int(opt_batch)), max_batch)
    return (1, 3, size, size), (opt_batch, 3, size, size), (max_batch, 3, size, size)


def source_onnx(precision: str, trt_version: str, files: dict) -> tuple[str, list[str]]:
    """Which ONNX file builds the ``precision`` engine, and which builder flags (TensorRT 10 only)."""
    if precision not in files:
        raise TensorRTError(f"no {precision} ONNX file in the bundle to build a TensorRT engine from")
    name = files[precision]["tensorrt"]
    if major(trt_version) >= 11:
        return name, []
    if precision == "fp16":
        return files["fp32"]["tensorrt"], ["FP16"]  # weak typing: let TensorRT choose fp16 kernels
    if precision == "int8":
        return name, ["INT8", "FP16"]
    return name, []


def engine_entry(precision: str, file: str, trt_version: str, cc: str, shapes, onnx_file: str, flags) -> dict:
    (mn, opt, mx) = shapes
    return {"precision": precision, "file": file, "onnx": onnx_file, "tensorrt": trt_version,
            "compute_capability": cc, "min_batch": mn[0], "opt_batch": opt[0], "max_batch": mx[0],
            "strongly_typed": major(trt_version) >= 11, "builder_flags": list(flags)}


def build_engine(onnx_path: str, engine_path: str, input_name: str, shapes, flags, workspace_mb: int,
                 timing_cache: str, strongly_typed: bool) -> None:  # pragma: no cover - needs a GPU
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    net_flags = 0
    if strongly_typed and major(trt.__version__) < 11:
        net_flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # 11: always strongly typed
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT could not parse the ONNX file: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for f in flags:
        config.set_flag(getattr(trt.BuilderFlag, f))
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    blob = b""
    if os.path.isfile(timing_cache):
        with open(timing_cache, "rb") as f:
            blob = f.read()
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    with open(engine_path, "wb") as f:
        f.write(plan)
    with open(timing_cache, "wb") as f:
        f.write(config.get_timing_cache().serialize())


def build_engines(bundle: str, files: dict, precisions, input_name: str, size: int, opt_batch: int,
                  max_batch: int = 64, workspace_mb: int = 4096) -> list[dict]:
    """Build one engine per precision into ``bundle``; returns the manifest ``engines`` entries."""
    trt = require_tensorrt()
    cc = compute_capability()
    version = trt.__version__
    shapes = profile_shapes(size, opt_batch, max_batch)
    cache = os.path.join(bundle, TIMING_CACHE)
    entries = []
    for precision in precisions:
        onnx_file, flags = source_onnx(precision, version, files)
        name = engine_name(precision, version, cc)
        build_engine(os.path.join(bundle, onnx_file), os.path.join(bundle, name), input_name, shapes, flags,
                     workspace_mb, cache, strongly_typed=not flags)
        entries.append(engine_entry(precision, name, version, cc, shapes, onnx_file, flags))
    return entries
