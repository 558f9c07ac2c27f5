"""TensorRT engines for ``python -m export --trt``: a thin wrapper over :mod:`runtime.engines`.

The builder lives in the runtime (torch-free) so that ``icrt build`` can build engines on the target machine
(a Jetson, a server) from a bundle alone; export builds its engines into the staging folder with the same code.
See runtime/engines.py for what each TensorRT version gets (8.6: explicit batch; 10.x: builder flags, fp32
strongly typed; 11.x: strongly typed only), the TF32 and timing-cache handling, and what has never run on
hardware.
"""
from __future__ import annotations

from runtime.engines import (Recipe, TensorRTError, build_engine, build_engines, engine_entry, engine_name,
                             major, profile_shapes, recipe, require_tensorrt, source_onnx, timing_cache_name,
                             trtexec_command)


def compute_capability() -> str:
    """'sm86'-style digits ('86') of GPU 0, from cuda-python or pycuda (no torch); TensorRTError without a GPU."""
    from runtime.engines import cc_compact, gpu

    return cc_compact(gpu()[1])


__all__ = ["Recipe", "TensorRTError", "build_engine", "build_engines", "compute_capability", "engine_entry",
           "engine_name", "major", "profile_shapes", "recipe", "require_tensorrt", "source_onnx",
           "timing_cache_name", "trtexec_command"]
