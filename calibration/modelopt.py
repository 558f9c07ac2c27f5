"""Optional: the TensorRT-form INT8 model from NVIDIA ModelOpt instead of onnxruntime.quantization.

ModelOpt places Q/DQ by TensorRT's rules (and handles vision transformers' attention well), but it pulls in
onnxruntime-gpu and cupy, and its output (fp16 + Q/DQ) is for TensorRT only: on onnxruntime CPU it ran
slower than fp32 (a probe on an early D2S export). So it is an extra (``[modelopt]``), used only for
``model.int8.qdq.onnx`` when asked for (``--int8-tool modelopt``). Not installed in this project's test
environment: this path has not been run here.
"""
from __future__ import annotations

import numpy as np

from icrt.runtime.base.errors import UnavailableError
from icrt.runtime.bundle.manifest import INPUT_NAME


class ModelOptMissing(UnavailableError):
    pass


def available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_tensorrt_form(src: str, dst: str, calib_inputs: np.ndarray, mo_method: str = "max",
                           input_name: str = INPUT_NAME, exclude_nodes=()) -> dict:  # pragma: no cover - optional
    """Write the TensorRT Q/DQ model with ModelOpt (its calibration method ``mo_method``: max or entropy),
    calibrated on the same preprocessed inputs."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError:
        from icrt.runtime.base.install import extra_hint

        raise ModelOptMissing(f"--int8-tool modelopt needs NVIDIA ModelOpt; {extra_hint('modelopt')}") from None
    quantize(src, quantize_mode="int8", calibration_data={input_name: calib_inputs}, calibration_method=mo_method,
             calibration_eps=["cpu"], nodes_to_exclude=list(exclude_nodes) or None, output_path=dst)
    return {"form": "tensorrt", "tool": "modelopt.onnx.quantization.quantize", "method": mo_method,
            "activations": "int8 symmetric", "weights": "int8 symmetric per-channel", "format": "QDQ"}
