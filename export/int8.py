"""Static INT8 quantization (onnxruntime.quantization), in the two forms the targets want.

- ``tensorrt`` (model.int8.qdq.onnx): symmetric int8 activations and weights, per-channel weights, QDQ on
  the inputs of Conv/MatMul/Gemm only, biases left in float (TensorRT's explicit quantization takes int8
  Q/DQ, not int32 bias DQ).
- ``onnxruntime`` (model.int8.onnx): uint8 activations, int8 per-channel weights on 7 bits (``reduce_range``),
  QDQ, for onnxruntime's CPU kernels (U8S8 with VNNI; 3.2x faster than fp32 in an early probe on a VNNI CPU,
  S8S8 only 1.1x). 7-bit weights because onnxruntime's U8S8 GEMM kernels on x86 CPUs without VNNI (AVX2,
  VPMADDUBSW) add pairs of u8 x s8 products in 16 bits, which saturates with full-range weights: on the
  previous default model that took int8-vs-fp32 SRCC to 0.969 on an AVX2 CPU while the same file gave 0.997
  where nothing saturates (VNNI, or Q/DQ simulated in fp32); on the current one 0.949 against 0.995. With 7-bit
  weights no pair can saturate (255 x 64 x 2 < 2^15), so the file gives the same scores on every CPU, and its
  parity measured on one machine holds on all (onnxruntime's own advice for non-VNNI CPUs). Depthwise
  convolutions keep 8-bit weights: their kernels widen to 16 bits before adding (no pairs to saturate), and
  with 9 or 25 taps their weights' precision matters most (int8-vs-fp32 SRCC of the default model on its
  held-out images: 0.991 with every weight on 7 bits, 0.995 with the depthwise ones on 8; the same on this
  AVX2 CPU as with Q/DQ simulated in fp32).

Both are calibrated once, on the same preprocessed inputs, decoded batch by batch (calibration.reader), with the
calibrators' memory bounded (:func:`calibration_batch`). In transformer graphs (any
LayerNormalization) only the inputs of Conv/MatMul/Gemm are quantized (their outputs stay float), so
LayerNorm, Softmax and GELU (exported as Erf/Mul/Add) see float values (they lose most accuracy when quantized);
the onnxruntime form of CNN graphs uses onnxruntime's QDQ op set minus the same sensitive ops. The scoring tail
(nodes outside the image encoder) is never quantized.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile

import onnx

from icrt.export.precisions import Built, register_builder

FORMS = ("onnxruntime", "tensorrt")
FLOAT_OPS = {"LayerNormalization", "Softmax", "Gelu", "Erf", "Sigmoid", "Tanh", "Div", "Pow", "Sqrt", "Exp",
             "ReduceMean", "ReduceL2", "ReduceSum", "Resize"}
LINEAR_OPS = ["Conv", "MatMul", "Gemm"]

log = logging.getLogger("export")

# onnxruntime's calibrators run the model with every calibrated tensor of a batch alive until the batch ends (MinMax
# reduces each in the graph, yet they stayed allocated; entropy and percentile take them all back as outputs). A batch
# of 16 EfficientNet-Lite0 inputs at 384 px held 5 GB that way (315 MB per input: 1.8x the sum of its intermediate
# tensors, 172 MB), most of an int8 export's 6.5 GB peak. So the batch is sized from the model's own tensor shapes to
# stay within CALIBRATION_MEMORY, and the calibrators get one batch per part (CalibStridedMinMax), so that the
# histogram ones hold one batch's tensors instead of the whole set's.
CALIBRATION_MEMORY = 768 << 20  # about what one calibration batch may take
ARENA_FACTOR = 2  # onnxruntime's memory per input over the sum of the model's intermediate tensors (measured 1.8)


def is_transformer(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "LayerNormalization" for n in model.graph.node)


def ops_to_quantize(model: onnx.ModelProto) -> list[str]:
    if is_transformer(model):
        return list(LINEAR_OPS)
    from onnxruntime.quantization.registry import QDQRegistry

    return sorted(set(QDQRegistry) - FLOAT_OPS)


def calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if name not in table:
        raise ValueError(f"unknown calibration method {name!r} ({'|'.join(table)})")
    return table[name]


def preprocess(src: str, dst: str) -> None:
    """onnxruntime's recommended pre-quantization pass: shape inference and graph optimisation (BN folding)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(src, dst, skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference asserts on some ViT exports (dynamic token slicing)
        quant_pre_process(src, dst, skip_symbolic_shape=True)


def depthwise_weights(model: onnx.ModelProto) -> list[str]:
    """Weight initializers of the depthwise convolutions (group == channels, one input channel per group)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = inits.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        if w is not None and group > 1 and len(w.dims) == 4 and w.dims[1] == 1 and w.dims[0] == group:
            out.append(w.name)
    return out


def activation_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all the intermediate tensors of one model input (the first dimension is the batch), from onnx shape
    inference; a dimension it leaves open counts as 1."""
    from onnx.helper import tensor_dtype_to_np_dtype

    inferred = onnx.shape_inference.infer_shapes(model)
    total = 0
    for vi in inferred.graph.value_info:
        t = vi.type.tensor_type
        if not t.HasField("shape") or not t.elem_type:
            continue
        n = 1
        for d in t.shape.dim[1:]:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        total += n * tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return total


def calibration_batch(model: onnx.ModelProto, budget: int = CALIBRATION_MEMORY, largest: int = 16) -> int:
    """Model inputs per calibration batch: as many as fit ``budget`` (1 to ``largest``); 2 for EfficientNet-Lite0 at
    384 px."""
    per_input = ARENA_FACTOR * max(1, activation_bytes(model))
    return max(1, min(largest, budget // per_input))


def quantize(src: str, dst: str, reader, form: str, method: str = "minmax", exclude_nodes=(),
             cache: str | None = None, reduce_range: bool | None = None) -> dict:
    """Quantize the (pre-processed) fp32 ``src`` into ``dst`` in ``form``; returns the settings used.
    ``reduce_range`` (7-bit weights): default on for the onnxruntime form, off for the TensorRT form (GPUs
    accumulate int8 products in 32 bits)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if form not in FORMS:
        raise ValueError(f"unknown int8 form {form!r} ({'|'.join(FORMS)})")
    model = onnx.load(src)
    trt = form == "tensorrt"
    reduce_range = not trt if reduce_range is None else reduce_range
    # TensorRT form: Q/DQ on the inputs of Conv/MatMul/Gemm only (TensorRT's placement rule; it fuses the
    # rest). On the Savoias D2S this took the form's SRCC vs fp32 from 0.987 to 0.999 (docs/export.md).
    linear_only = trt or is_transformer(model)
    ops = list(LINEAR_OPS) if linear_only else ops_to_quantize(model)
    # onnxruntime's pre-processing renames the nodes it fuses "<first node>/<fusion>" (a kernel head's MatMul + Add
    # became "/head/MatMul_1/MatMulAddFusion", a Gemm the quantizer would otherwise turn to int8)
    excluded = set(exclude_nodes)
    exclude = [n.name for n in model.graph.node if n.name in excluded or n.name.rsplit("/", 1)[0] in excluded]
    extra = {"ActivationSymmetric": trt, "WeightSymmetric": True, "QuantizeBias": not trt}
    full_range = depthwise_weights(model) if reduce_range else []
    if full_range:  # per channel (axis 0), on 8 bits
        extra["TensorQuantOverrides"] = {w: [{"axis": 0, "reduce_range": False}] for w in full_range}
    if linear_only:  # GEMM inputs only: softmax / LayerNorm / GELU see float outputs, not Q/DQ'd ones
        extra["OpTypesToExcludeOutputQuantization"] = list(LINEAR_OPS)
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    # one batch per part (the reader's len() and set_range count batches): each part's ranges (MinMax) or
    # histograms (entropy, percentile) are merged into the running ones and its tensors dropped. Not
    # CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the outputs it flushes without merging them (onnxruntime issue
    # #18893), and raises "No data is collected" when the batches are a multiple of it.
    extra["CalibStridedMinMax"] = 1
    reader.rewind()
    # the histogram collector prints two lines to stdout per part: kept off export's output
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if trt else QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range, op_types_to_quantize=ops, nodes_to_exclude=exclude,
                        calibrate_method=calibration_method(method), extra_options=extra,
                        calibration_cache_path=cache)
    rewired = tail_reads_inputs(dst, exclude)
    return {"form": form, "activations": "int8 symmetric" if trt else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel" + (" (7-bit range; depthwise convolutions 8-bit)" if reduce_range
                                                       else ""), "format": "QDQ",
            "method": method, "op_types": ops, "excluded_nodes": len(exclude), "bias": "float" if trt else "int32",
            **({"tail_inputs_unquantized": rewired} if rewired else {})}


def tail_reads_inputs(path: str, tail) -> int:
    """Excluded (fp32 tail) nodes that read a model input through its Q/DQ pair read the input itself; returns how
    many inputs. The quantizer gives every consumer of a quantized tensor the dequantized one; for the input, whose
    scale comes from calibration, that would move the pixels the colour counts recover (``ColourCounts``)."""
    model = onnx.load(path)
    g = model.graph
    inputs = {i.name for i in g.input}
    quantized = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in inputs}
    dequantized = {n.output[0]: quantized[n.input[0]] for n in g.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in quantized}
    tail, count = set(tail), 0
    for n in g.node:
        if n.name in tail:
            for i, name in enumerate(n.input):
                if name in dequantized:
                    n.input[i] = dequantized[name]
                    count += 1
    if count:
        onnx.save(model, path)
    return count


def quantize_both(fp32: str, out_dir: str, reader, method: str = "minmax", exclude_nodes=(),
                  names=None) -> dict:
    """Write both INT8 forms next to each other (``names``: form -> file name, default the int8 precision's),
    calibrated once on ``reader`` in batches of :func:`calibration_batch` inputs; returns form -> settings (with the
    file name)."""
    from icrt.runtime.bundle.precisions import get_precision

    names = names or dict(get_precision("int8").files)
    fp32, out_dir = os.path.abspath(fp32), os.path.abspath(out_dir)
    out = {}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's quantization tools write scratch files (sym_shape_infer_temp.onnx, <uuid>.data) into
        # the working directory and leave some behind: keep them in the temporary folder
        os.chdir(tmp)
        try:
            pre = os.path.join(tmp, "model.pre.onnx")
            preprocess(fp32, pre)
            # sized from the pre-processed graph, whose shapes are all known (before its first pass: len() and the
            # batches follow it)
            reader.batch_size = calibration_batch(onnx.load(pre))
            log.info(f"int8: calibrating on {len(reader)} batches of up to {reader.batch_size} inputs")
            cache = os.path.join(tmp, "ranges.json")  # calibrate once; both forms quantize from the same ranges
            for form in FORMS:
                info = quantize(pre, os.path.join(out_dir, names[form]), reader, form, method, exclude_nodes, cache)
                out[form] = {**info, "file": names[form]}
        finally:
            os.chdir(cwd)
    return out


# --- the int8 precision's builder (runtime.bundle.precisions) -------------------------------------------------------------

MODELOPT_METHODS = {"minmax": "max", "entropy": "entropy"}  # ModelOpt's names of the calibration methods it has


def check(o) -> None:
    """ExportError for int8 options that cannot work: ModelOpt without ModelOpt installed, or with a calibration
    method it does not have (percentile)."""
    from icrt.export.errors import ExportError

    if o.int8 and o.int8_tool == "modelopt":
        if o.calib_method not in MODELOPT_METHODS:
            raise ExportError(f"--int8-tool modelopt calibrates with {' or '.join(MODELOPT_METHODS)}, not "
                              f"{o.calib_method}: choose another --calib-method, or --int8-tool ort")
        import icrt.calibration.modelopt as modelopt

        if not modelopt.available():
            from icrt.runtime.base.install import extra_hint

            raise ExportError(f"--int8-tool modelopt needs NVIDIA ModelOpt; {extra_hint('modelopt')}")


def build(inp):
    """Both int8 forms, calibrated once on the calibration images through the runtime's own preprocessing."""
    import onnx

    from icrt.calibration.reader import ImageBatchReader, calibration_errors, load_inputs
    from icrt.export.checks import data_name
    from icrt.export.errors import ExportError
    from icrt.export.fp16 import tail_nodes
    from icrt.runtime.bundle.manifest import INPUT_NAME
    from icrt.runtime.bundle.precisions import get_precision

    o = inp.options
    if not inp.calib_items:
        raise ExportError("--int8 needs --calib-data (images to calibrate on)")
    paths = [s.path for s in inp.calib_items]
    fp32 = onnx.load(inp.fp32_path)
    reader = ImageBatchReader(paths, inp.prep, INPUT_NAME)  # decodes batch by batch; quantize_both sizes them
    inputs = reader.inputs  # every image decoded once: a bad one stops the export here, before calibrating
    names = dict(get_precision("int8").files)
    forms = quantize_both(inp.fp32_path, inp.folder, reader, o.calib_method,
                          exclude_nodes=tail_nodes(fp32, kind=inp.kind), names=names)
    if o.int8_tool == "modelopt":  # the TensorRT form from ModelOpt instead (optional extra, see calibration/)
        from icrt.calibration.modelopt import quantize_tensorrt_form

        with calibration_errors():  # ModelOpt takes the inputs as one array
            calib_x = load_inputs(paths, inp.prep)
        forms["tensorrt"] = {**quantize_tensorrt_form(inp.fp32_path, os.path.join(inp.folder, names["tensorrt"]),
                                                      calib_x, MODELOPT_METHODS[o.calib_method], INPUT_NAME),
                             "file": names["tensorrt"]}
    calibration = {"method": o.calib_method, "images": len(inp.calib_items), "inputs": int(inputs),
                   "data": data_name(o.calib_data), "split": o.calib_split,
                   "split_rule": {"val_fraction": o.val_fraction, "seed": o.split_seed, "stratify": True}
                   if o.calib_split != "all" else None,
                   "tool": "onnxruntime.quantization.quantize_static", "forms": forms}
    return Built(names, {"forms": forms}, calibration)


register_builder("int8", build, check)
