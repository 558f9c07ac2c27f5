"""PyTorch -> fp32 ONNX with a dynamic batch axis.

The TorchScript exporter (``dynamo=False``) is used by default: it writes the requested opset exactly (17,
where LayerNorm is one LayerNormalization node that TensorRT maps to its normalisation layer), names nodes by
module path (``/head/...``, which the fp16 block list uses) and is ~10x faster here. The dynamo exporter
(``exporter="dynamo"``) cannot write opset 17 in torch 2.14 (it stays at 18).
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import torch

from icrt.runtime.bundle.manifest import INPUT_NAME, LEVELS_OUTPUT, SCORE_OUTPUT

MIN_OPSET = 17


class StaticPadConv(torch.nn.Module):
    """A TF-"same" convolution for one known input size: constant zero padding, then the plain convolution.

    timm's ``Conv2dSame`` computes its padding from the input shape at run time, which exports as
    Shape/Gather/Pad chains per convolution; ONNX Runtime then neither fuses the Pad into the Conv nor
    forms its QDQ int8 Conv patterns. The input size is fixed by the bundle, so the padding is a constant.
    """

    def __init__(self, conv: torch.nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__()
        self.pad = torch.nn.ZeroPad2d(pads)
        self.conv = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                                    conv.dilation, conv.groups, conv.bias is not None)
        self.conv.weight, self.conv.bias = conv.weight, conv.bias

    def forward(self, x):
        return self.conv(self.pad(x))


def static_same_padding(module: torch.nn.Module, size: int) -> torch.nn.Module:
    """A copy of ``module`` with every timm ``Conv2dSame`` replaced by :class:`StaticPadConv` for ``size`` inputs."""
    import copy

    try:
        from timm.layers.conv2d_same import Conv2dSame
        from timm.layers.padding import pad_same_arg
    except ImportError:
        return module
    if not any(isinstance(m, Conv2dSame) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    seen = {}

    def record(m, inp):
        seen[m] = tuple(inp[0].shape[-2:])  # returns None: the input is left as it is

    hooks = [m.register_forward_pre_hook(record) for m in module.modules() if isinstance(m, Conv2dSame)]
    with torch.no_grad():
        module(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2dSame) and child in seen:
                pads = pad_same_arg(list(seen[child]), child.weight.shape[-2:], child.stride, child.dilation)
                setattr(parent, name, StaticPadConv(child, tuple(pads)))
    return module


def output_names(module: torch.nn.Module, example: torch.Tensor) -> list[str]:
    with torch.no_grad():
        out = module(example)
    return [SCORE_OUTPUT, LEVELS_OUTPUT] if isinstance(out, (tuple, list)) else [SCORE_OUTPUT]


def export_onnx(module: torch.nn.Module, path: str, size: int, opset: int = MIN_OPSET, input_name: str = INPUT_NAME,
                exporter: str = "torchscript") -> list[str]:
    """Write ``module`` (image batch -> score[, levels]) to ``path``; returns the output names."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}: LayerNorm would not map to one LayerNormalization node")
    module = static_same_padding(module.eval(), size).eval()
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


COMPACT_MIN_BYTES = 1 << 16  # smaller constants are not worth a node


def int8_form(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``w`` as (int8 codes, one power-of-two scale per slice along ``axis``, ``axis``) when that holds it exactly
    (``train.kernel.int8_columns``, as a kernel head's centres are stored); else None."""
    from icrt.train.kernel import int8_columns

    if not np.isfinite(w).all():
        return None
    for axis in range(w.ndim):
        moved = np.moveaxis(w, axis, -1)
        cols = moved.reshape(-1, w.shape[axis])
        codes, scale = int8_columns(cols)
        if np.array_equal(codes * scale, cols):  # exact products: the scales are powers of two
            return np.moveaxis(codes.reshape(moved.shape), -1, axis), scale, axis
    return None


def _expand_int8_codes(g) -> int:
    """Each ``<name>_dequantized`` node of :func:`store_exact` replaced by its fp32 constant ``<name>``; how many."""
    from onnx import numpy_helper

    inits, count = {i.name: i for i in g.initializer}, 0
    for n in [n for n in g.node if n.op_type == "DequantizeLinear" and n.name == n.output[0] + "_dequantized"]:
        codes, scale = (inits.get(x) for x in n.input[:2])
        if codes is None or scale is None:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        c = numpy_helper.to_array(codes)
        shape = [1] * c.ndim
        shape[axis] = -1
        g.initializer.append(numpy_helper.from_array(c.astype(np.float32) * numpy_helper.to_array(scale).reshape(shape),
                                                     n.output[0]))
        g.node.remove(n)
        g.initializer.remove(codes)
        g.initializer.remove(scale)
        count += 1
    return count


def store_exact(path: str, min_bytes: int = COMPACT_MIN_BYTES) -> int:
    """Rewrite ``path`` with every large fp32 initializer that a smaller type holds exactly stored in it and
    computed back to fp32 in the graph: int8 codes times per-slice power-of-two scales (DequantizeLinear, per axis,
    zero point 0: what TensorRT's dequantize layer takes), else fp16 (Cast). Lossless: the graph computes the same
    values (runtimes fold these nodes once, when they load the model). A kernel head's centres are int8-rounded
    when fitted (train.kernel), but tracing and the quantizer's pre-processing fold them into fp32 constants,
    quadrupling the file. Returns bytes saved.

    A Q/DQ (int8) graph keeps such constants in fp16 instead: OpenVINO 2026.4's low-precision pipeline takes a
    weight DequantizeLinear there as part of the quantized graph and mis-scales it (its scales run along the
    MatMul's reduction axis): the default model's int8 scores moved by up to 0.2 on OpenVINO, none on onnxruntime."""
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    g = model.graph
    quantized = any(n.op_type == "QuantizeLinear" for n in g.node)
    # int8 codes this function stored in the fp32 file, which the quantizer passed through: fp32 again (then fp16)
    expanded = _expand_int8_codes(g) if quantized else 0
    saved, keep, nodes = 0, [], []
    for init in list(g.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims, dtype=np.int64) * 4 < min_bytes:
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        int8 = None if quantized else int8_form(w)
        half = w.astype(np.float16)
        if int8 is not None and int8[1].nbytes < w.nbytes * 3 // 4:  # the scales may outweigh a small tensor's gain
            codes = numpy_helper.from_array(int8[0], init.name + "_int8")
            scale = numpy_helper.from_array(int8[1], init.name + "_scale")
            keep += [codes, scale]
            nodes.append(helper.make_node("DequantizeLinear", [codes.name, scale.name], [init.name], axis=int8[2],
                                          name=init.name + "_dequantized"))
            saved += w.nbytes - int8[0].nbytes - int8[1].nbytes
        elif np.array_equal(half.astype(np.float32), w):
            stored = numpy_helper.from_array(half, init.name + "_fp16")
            keep.append(stored)
            nodes.append(helper.make_node("Cast", [stored.name], [init.name], to=onnx.TensorProto.FLOAT,
                                          name=init.name + "_to_fp32"))
            saved += w.nbytes - half.nbytes
        else:
            keep.append(init)
    if saved or expanded:
        del g.initializer[:]
        g.initializer.extend(keep)
        for node in reversed(nodes):
            g.node.insert(0, node)
        onnx.checker.check_model(model)
        onnx.save(model, path)
    return saved


def opset_of(path: str) -> int:
    m = onnx.load(path, load_external_data=False)
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
