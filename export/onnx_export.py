"""PyTorch -> fp32 ONNX with a dynamic batch axis.

The TorchScript exporter (``dynamo=False``) is used by default: it writes the requested opset exactly (17,
where LayerNorm is one LayerNormalization node that TensorRT maps to its normalisation layer), names nodes by
module path (``/head/...``, which the fp16 block list uses) and is ~10x faster here. The dynamo exporter
(``exporter="dynamo"``) cannot write opset 17 in torch 2.14 (it stays at 18).
"""
from __future__ import annotations

import warnings

import onnx
import torch

MIN_OPSET = 17


def output_names(module: torch.nn.Module, example: torch.Tensor) -> list[str]:
    with torch.no_grad():
        out = module(example)
    return ["score", "levels"] if isinstance(out, (tuple, list)) else ["score"]


def export_onnx(module: torch.nn.Module, path: str, size: int, opset: int = MIN_OPSET, input_name: str = "image",
                exporter: str = "torchscript") -> list[str]:
    """Write ``module`` (image batch -> score[, levels]) to ``path``; returns the output names."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}: LayerNorm would not map to one LayerNormalization node")
    module = module.eval()
    example = torch.rand(2, 3, size, size)
    names = output_names(module, example)
    # nn.MultiheadAttention's fused inference fast path (aten::_native_multi_head_attention) has no ONNX
    # export; it is taken in eval mode whenever no parameter needs a gradient (a frozen CLIP), so switch it off.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export(module, example, path, names, opset, input_name, exporter)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    return names


def _export(module, example, path, names, opset, input_name, exporter) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(module, (example,), path, input_names=[input_name], output_names=names,
                              opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},), verbose=False)
        elif exporter == "torchscript":
            torch.onnx.export(module, (example,), path, input_names=[input_name], output_names=names,
                              opset_version=opset, dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in [input_name, *names]})
        else:
            raise ValueError(f"unknown exporter {exporter!r} (torchscript|dynamo)")


def opset_of(path: str) -> int:
    m = onnx.load(path, load_external_data=False)
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
