"""fp32 ONNX -> fp16-typed ONNX with the numerically sensitive parts kept in fp32.

Uses onnxruntime's maintained copy of the float16 converter (``onnxruntime.transformers.float16``). The
onnxconverter-common 1.16 original fails on our OpenCLIP ViT exports: with an op block list it crashes in
``remove_unnecessary_cast_node`` ("'list' object has no attribute 'input'"), and without one it leaves the
exporter's own Cast(to=float) nodes feeding fp16 consumers (the model does not load). onnxruntime's copy
handles both (probed on the tiny CM-SSA-like model in tests/test_export.py).

Kept in fp32: normalisation, softmax, reductions, exp/pow/sqrt/div/erf, and the scoring tail (everything
outside the image encoder: D2S's head and sigmoid, CM-SSA's L2 norm, level matmul, softmax and expectation).
Inputs and outputs stay float32 (``keep_io_types``), so the runtime feeds the same arrays to every precision.
"""
from __future__ import annotations

import onnx

FP32_OPS = [
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceLogSumExp", "ReduceSumSquare", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div", "Erf", "Sigmoid",
    "CumSum", "Range", "TopK", "NonMaxSuppression", "RandomUniformLike",
]
# Module scopes treated as the scoring tail (with the top-level nodes). D2S's optional low-level cues
# (``--cues``) are small differences of pixel values (Sobel magnitudes, thresholds, logs): int8 rounding moved
# held-out SRCC vs fp32 to 0.968 on the Savoias default model, so they stay fp32 like the head.
TAIL_SCOPES = ("head", "cues")


def node_scope(node) -> list[str]:
    """Module path of a node, from the TorchScript exporter's names ('/pool/qkv/Gemm' -> ['pool', 'qkv'])."""
    parts = [p for p in node.name.split("/") if p]
    return parts[:-1]


def tail_nodes(model: onnx.ModelProto, tail_scopes=TAIL_SCOPES) -> list[str]:
    """Nodes outside the image encoder: top level of the folded module, or under a tail scope."""
    out = []
    for n in model.graph.node:
        scope = node_scope(n)
        if n.name and (not scope or scope[0] in tail_scopes):
            out.append(n.name)
    return out


def convert_fp16(src: str, dst: str, tail_scopes=TAIL_SCOPES) -> dict:
    """Write the fp16 form of ``src``; returns what was kept in fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(src)
    tail = tail_nodes(model, tail_scopes)
    m16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS, node_block_list=tail)
    # the converter appends the Cast nodes it inserts for fp32 initializers after their consumers; an unsorted
    # graph is invalid ONNX (onnx.checker refuses it, other runtimes may too), so sort it and check it
    sorted_model = OnnxModel(m16)
    sorted_model.topological_sort()
    m16 = sorted_model.model
    onnx.checker.check_model(m16, full_check=True)
    onnx.save(m16, dst)
    kept = sorted({n.op_type for n in model.graph.node if n.op_type in FP32_OPS})
    return {"converter": "onnxruntime.transformers.float16", "fp32_ops": kept, "fp32_tail_nodes": len(tail)}
