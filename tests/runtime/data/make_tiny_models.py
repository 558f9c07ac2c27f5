"""Writes the model files of the runtime's tests (this folder). Run by developers when they change, never by the
runtime's tests (which need neither torch nor onnx):

    python tests/runtime/data/make_tiny_models.py             # rewrite the committed files here
    python tests/runtime/data/make_tiny_models.py --out DIR   # write them elsewhere

Needs torch and onnx (``pip install -e ".[train]"``). Seeded: a rerun writes the same models. To regenerate after a
change (to this script, ``tests.tiny.CONVNET``, ``NODE_MODELS`` or the reference images in
``tests/runtime/fixtures.py``, or the runtime's normalisation), run the first command from the repository root,
then ``python -m pytest -q tests/export/test_tiny_models.py tests/runtime`` and commit the files.
``tests/export/test_tiny_models.py`` runs this script into a temporary folder and checks that the committed files still
give what it makes, so they cannot drift silently.

What it writes:

- ``tiny.onnx``: a small random conv net (``tests.tiny.CONVNET``: three stride-2 3x3 convolutions with ReLU, global
  mean, 32 -> 16 -> 1 MLP, sigmoid; ~7k parameters), ``torch.onnx.export`` at opset 17: input ``image``
  N x 3 x 64 x 64 float32 with a dynamic batch, output ``score`` [N] in (0, 1). Its last layer is rescaled so that
  scores spread over the range (a random head sits near 0.5 for every input): the reference images' logits span
  logit(0.8) - logit(0.2), centred on 0 (they score 0.15 to 0.73).
- ``tiny.int8.onnx``: its onnxruntime CPU int8 form (``quantize_static``: QDQ, uint8 activations, int8
  per-channel weights), calibrated on the reference images.
- ``tiny_reference.json``: the PyTorch model's scores on ``fixtures.reference_images()`` under the square
  preprocessing, which tests/runtime checks the runtime's scores against.
- ``nodes/*.onnx``: models of a few ONNX nodes (``onnx.helper``), one per ``fixtures.NODE_MODELS`` entry.
- ``hostile/*.onnx``: models that load in one engine and misbehave in another (``tests.runtime.onnx_models``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from icrt.runtime.bundle.manifest import INPUT_NAME, SCORE_OUTPUT  # noqa: E402
from icrt.runtime.scoring.preprocess import to_model_input  # noqa: E402
from tests.runtime.fixtures import (  # noqa: E402
    NODE_MODELS,
    NODE_SHAPE,
    REFERENCE_FILE,
    TINY_FILES,
    node_file,
    reference_images,
    tiny_preprocessing,
)
from tests.tiny import CONVNET  # noqa: E402

OPSET = 17
SEED = 0


# --- the tiny conv net -------------------------------------------------------------------------------------------


def reference_inputs() -> np.ndarray:
    """Model inputs of the reference images (square preprocessing: 64 x 64, no resize)."""
    prep = tiny_preprocessing("square")
    return np.concatenate([to_model_input(np.asarray(img), prep)[0] for img in reference_images()])


def tiny_model():
    """The PyTorch model behind tiny.onnx (seeded; the same module on every call)."""
    import torch
    from torch import nn

    class TinyConvNet(nn.Module):
        def __init__(self, widths, hidden):
            super().__init__()
            layers, c = [], 3
            for w in widths:
                layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.ReLU()]
                c = w
            self.features = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x):
            return torch.sigmoid(self.head(self.features(x).mean(dim=(2, 3)))).squeeze(-1)

    torch.manual_seed(SEED)
    model = TinyConvNet(CONVNET["widths"], CONVNET["hidden"]).eval()
    # Spread the scores: rescale the last layer so that the reference images' logits span logit(0.8) - logit(0.2).
    last = model.head[-1]
    with torch.no_grad():
        z = model.head(model.features(torch.from_numpy(reference_inputs())).mean(dim=(2, 3))).squeeze(-1).double()
        k = 2 * np.log(4.0) / max(float(z.max() - z.min()), 1e-6)
        last.bias.sub_(float(z.mean())).mul_(k)  # new logit = k * (old logit - mean)
        last.weight.mul_(k)
    return model


def export_onnx(model, path: str) -> str:
    import warnings

    import torch

    size = CONVNET["image_size"]
    with warnings.catch_warnings():  # the TorchScript exporter (dynamo=False) is deprecated, and what the tests need
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(2, 3, size, size),), path, input_names=[INPUT_NAME],
                          output_names=[SCORE_OUTPUT], opset_version=OPSET,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, SCORE_OUTPUT: {0: "batch"}}, dynamo=False)
    return path


def quantize_int8(src: str, dst: str) -> str:
    """The CPU int8 form (QDQ, uint8 activations, int8 per-channel weights), calibrated on the reference images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{INPUT_NAME: x[None]} for x in reference_inputs()])

        def get_next(self):
            return next(self.data, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return dst


def reference(model) -> dict:
    import torch

    with torch.no_grad():
        scores = model(torch.from_numpy(reference_inputs())).double().numpy()
    return {"about": "PyTorch scores of tests.runtime.fixtures.reference_images() under "
                     "tiny_preprocessing('square'), written by make_tiny_models.py",
            "fp32": [float(s) for s in scores]}


# --- models of a few ONNX nodes ------------------------------------------------------------------------------------


def node_onnx(path, variant="sigmoid", in_shape=NODE_SHAPE) -> str:
    """image -> score, a few nodes (see fixtures.NODE_MODELS for the variants)."""
    import onnx
    from onnx import TensorProto, helper

    def const(name, value):
        return helper.make_tensor(name, TensorProto.FLOAT, [], [value])

    all_axes = list(range(1, len(in_shape)))
    def mean(axes, keep=0):
        return helper.make_node("ReduceMean", [INPUT_NAME], ["m"], axes=axes, keepdims=keep)

    inits, out_shape = [], ["N"]
    if variant == "sigmoid":
        nodes = [mean(all_axes), helper.make_node("Sigmoid", ["m"], [SCORE_OUTPUT])]
    elif variant == "sqrt":
        nodes = [mean([1, 2, 3]), helper.make_node("Sqrt", ["m"], [SCORE_OUTPUT])]
    elif variant.startswith("const:"):
        inits = [const("zero", 0.0), const("v", float(variant[6:]))]
        nodes = [mean([1, 2, 3]), helper.make_node("Mul", ["m", "zero"], ["z"]),
                 helper.make_node("Add", ["z", "v"], [SCORE_OUTPUT])]
    elif variant == "column":
        inits = [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])]
        nodes = [mean([1, 2, 3], 1), helper.make_node("Sigmoid", ["m"], ["s"]),
                 helper.make_node("Reshape", ["s", "shape"], [SCORE_OUTPUT])]
        out_shape = ["N", 1]
    elif variant == "wide":
        nodes = [mean([2, 3]), helper.make_node("Sigmoid", ["m"], [SCORE_OUTPUT])]
        out_shape = ["N", 3]
    elif variant == "fails-bright":  # sigmoid, but the run fails when a batch's mean input is > 0.9 (a Reshape
        # to [-1, 7] of N x 3 x 32 x 32 values, which 7 does not divide unless 7 divides N): a run-time error only
        inits = [helper.make_tensor("thr", TensorProto.FLOAT, [], [0.9]),
                 helper.make_tensor("seven", TensorProto.INT64, [1], [7]),
                 helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                 helper.make_tensor("minus1", TensorProto.INT64, [1], [-1]), const("zero", 0.0)]
        nodes = [mean(all_axes), helper.make_node("Sigmoid", ["m"], ["s"]),
                 helper.make_node("ReduceMean", [INPUT_NAME], ["all"], keepdims=0),
                 helper.make_node("Greater", ["all", "thr"], ["bright"]),
                 helper.make_node("Where", ["bright", "seven", "one"], ["k"]),
                 helper.make_node("Concat", ["minus1", "k"], ["shape"], axis=0),
                 helper.make_node("Reshape", [INPUT_NAME, "shape"], ["r"]),
                 helper.make_node("ReduceSum", ["r"], ["rs"], keepdims=0),
                 helper.make_node("Mul", ["rs", "zero"], ["z"]),
                 helper.make_node("Add", ["s", "z"], [SCORE_OUTPUT])]
    elif variant == "flat":
        inits = [helper.make_tensor("shape", TensorProto.INT64, [1], [-1])]
        nodes = [mean([2, 3]), helper.make_node("Sigmoid", ["m"], ["s"]),
                 helper.make_node("Reshape", ["s", "shape"], [SCORE_OUTPUT])]
        out_shape = ["M"]
    else:
        raise ValueError(variant)
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, out_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


# --- all of it ---------------------------------------------------------------------------------------------------


def write_all(out: str = HERE) -> list[str]:
    """Write every file into ``out``; returns their paths relative to ``out``."""
    os.makedirs(os.path.join(out, "nodes"), exist_ok=True)
    model = tiny_model()
    fp32 = export_onnx(model, os.path.join(out, TINY_FILES["fp32"]))
    quantize_int8(fp32, os.path.join(out, TINY_FILES["int8"]))
    with open(os.path.join(out, REFERENCE_FILE), "w") as f:
        json.dump(reference(model), f, indent=1)
        f.write("\n")
    nodes = [os.path.join("nodes", node_file(v, s)) for v, s in NODE_MODELS]
    for (variant, in_shape), name in zip(NODE_MODELS, nodes):
        node_onnx(os.path.join(out, name), variant, in_shape)
    from tests.runtime.onnx_models import HOSTILE

    os.makedirs(os.path.join(out, "hostile"), exist_ok=True)
    hostile = [os.path.join("hostile", name) for name in HOSTILE]
    for name, make in HOSTILE.items():
        make(os.path.join(out, "hostile", name))
    return [*TINY_FILES.values(), REFERENCE_FILE, *nodes, *hostile]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=HERE, help="folder to write into (default: this script's folder)")
    args = p.parse_args(argv)
    for name in write_all(args.out):
        print(os.path.join(args.out, name), os.path.getsize(os.path.join(args.out, name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
