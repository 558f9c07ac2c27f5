"""fp32 ONNX -> fp16-typed ONNX with the numerically sensitive parts kept in fp32.

Uses onnxruntime's maintained copy of the float16 converter (``onnxruntime.transformers.float16``). The
onnxconverter-common 1.16 original fails on our OpenCLIP ViT exports: with an op block list it crashes in
``remove_unnecessary_cast_node`` ("'list' object has no attribute 'input'"), and without one it leaves the
exporter's own Cast(to=float) nodes feeding fp16 consumers (the model does not load). onnxruntime's copy
handles both (probed on the tiny CM-SSA-like model in tests/export/test_export.py).

Kept in fp32: normalisation, softmax, reductions, exp/pow/sqrt/div/erf, and the scoring tail: the folded
module's own top-level operations plus the submodules its kind names as ``tail`` in the registry
(``train.kinds``): D2S's head (and sigmoid) and low-level cues, CM-SSA's L2 norm, level matmul, softmax and
expectation. The int8 quantizer leaves the same nodes out (``tail_nodes``).
Inputs and outputs stay float32 (``keep_io_types``), so the runtime feeds the same arrays to every precision.
"""
from __future__ import annotations

import onnx

from icrt.export.precisions import Built, register_builder

FP32_OPS = [
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceLogSumExp", "ReduceSumSquare", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div", "Erf", "Sigmoid",
    "CumSum", "Range", "TopK", "NonMaxSuppression", "RandomUniformLike",
]


def registered_tail_scopes(kind: str | None = None) -> tuple[str, ...]:
    """The submodule names treated as the scoring tail (with the top-level nodes): those registered for
    ``kind``, or for every registered kind when None."""
    from icrt.train.kinds import tail_names

    return tail_names(kind)


def node_scope(node) -> list[str]:
    """Module path of a node, from the TorchScript exporter's names ('/pool/qkv/Gemm' -> ['pool', 'qkv'])."""
    parts = [p for p in node.name.split("/") if p]
    return parts[:-1]


def tail_nodes(model: onnx.ModelProto, tail_scopes=None, kind: str | None = None) -> list[str]:
    """Nodes outside the image encoder: top level of the folded module, or under a tail scope (``tail_scopes``;
    default: those registered for ``kind``, or for every registered kind)."""
    scopes = tuple(tail_scopes) if tail_scopes is not None else registered_tail_scopes(kind)
    out = []
    for n in model.graph.node:
        scope = node_scope(n)
        if n.name and (not scope or scope[0] in scopes):
            out.append(n.name)
    return out


def convert_fp16(src: str, dst: str, tail_scopes=None, kind: str | None = None) -> dict:
    """Write the fp16 form of ``src``; returns what was kept in fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(src)
    tail = tail_nodes(model, tail_scopes, kind)
    m16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS, node_block_list=tail)
    # the converter wraps every blocked node in Casts (fp32 -> fp16 -> fp32 between two tail nodes), which would
    # round the tail's intermediates to fp16 (a kernel head's squared distances overflow it: inf - inf = NaN);
    # merge each Cast -> Cast pair and drop the identity Casts left, so the tail runs in fp32 end to end.
    # The converter appends the Cast nodes it inserts for fp32 initializers after their consumers; an unsorted
    # graph is invalid ONNX (onnx.checker refuses it, other runtimes may too), so sort it and check it
    tidy = OnnxModel(m16)
    tidy.remove_cascaded_cast_nodes()
    tidy.remove_useless_cast_nodes()
    rewired = tail_reads_fp32(tidy.model, tail)
    tidy.prune_graph()
    tidy.topological_sort()
    m16 = tidy.model
    onnx.checker.check_model(m16, full_check=True)
    onnx.save(m16, dst)
    kept = sorted({n.op_type for n in model.graph.node if n.op_type in FP32_OPS})
    return {"converter": "onnxruntime.transformers.float16", "fp32_ops": kept, "fp32_tail_nodes": len(tail),
            "tail_inputs_kept_fp32": rewired}


def tail_reads_fp32(model: onnx.ModelProto, tail) -> int:
    """Tail nodes fed through a Cast to fp16 of an fp32 tensor (and back) read that tensor instead; returns how many
    inputs.
    The converter leaves such Casts where a tail node reads the (fp16-cast) model input, and before a tail Cast to
    an integer type: colour codes up to 32767 lose their low bits in fp16 (``ColourCounts``)."""
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in g.input}
    types.update({i.name: i.data_type for i in g.initializer})
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.value_info})

    def casts(to):
        return {n.output[0]: n.input[0] for n in g.node if n.op_type == "Cast" and any(
            a.name == "to" and a.i == to for a in n.attribute)}

    fp16_casts, fp32_casts = casts(onnx.TensorProto.FLOAT16), casts(onnx.TensorProto.FLOAT)
    tail, count = set(tail), 0
    for n in g.node:
        if n.name not in tail:
            continue
        for i, name in enumerate(n.input):
            src = fp16_casts.get(fp32_casts.get(name, name))  # fp32 -> fp16 (-> fp32) -> this node
            if src is not None and types.get(src) == onnx.TensorProto.FLOAT:
                n.input[i] = src
                count += 1
    return count


def build(inp):
    """The fp16 precision's builder (``runtime.bundle.precisions``): model.fp16.onnx for every backend form."""
    import os

    from icrt.runtime.bundle.precisions import get_precision

    files = dict(get_precision("fp16").files)
    name = files["onnxruntime"]
    details = convert_fp16(inp.fp32_path, os.path.join(inp.folder, name), kind=inp.kind)
    return Built(files, details)


register_builder("fp16", build)
