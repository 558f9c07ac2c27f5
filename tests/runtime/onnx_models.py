"""Hostile ONNX models, made with ``onnx.helper`` by tests/runtime/data/make_tiny_models.py and committed in
tests/runtime/data/hostile/ (so that the torch- and onnx-free test run has them; tests/export/test_tiny_models.py
checks them against a fresh run): models that load in one engine and misbehave in another. Each takes ``image``
N x 3 x S x S and gives ``score`` [N], as a bundle's model must. Tests take them with :func:`copy_hostile`."""
from __future__ import annotations

import os
import shutil

import numpy as np

from icrt.runtime.bundle.manifest import INPUT_NAME, SCORE_OUTPUT

OPSET = 17


def _model(nodes, initializers, size: int, name: str = "hostile"):
    from onnx import TensorProto, checker, helper

    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, size, size])
    score = helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["N"])
    graph = helper.make_graph(nodes, name, [image], [score], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    checker.check_model(model)
    return model


def _mean(out: str = "mean"):
    from onnx import helper

    return helper.make_node("ReduceMean", [INPUT_NAME], [out], axes=[1, 2, 3], keepdims=0)


def out_of_bounds_gather(path: str, size: int = 32) -> str:
    """sigmoid(Gather(mean as [N, 1], index 5, axis 1)): index 5 of a dimension of 1. onnxruntime refuses to run
    it; OpenVINO returns a number (whatever it reads)."""
    import onnx
    from onnx import helper, numpy_helper

    nodes = [_mean(), helper.make_node("Unsqueeze", ["mean", "axis1"], ["column"]),
             helper.make_node("Gather", ["column", "index"], ["picked"], axis=1),
             helper.make_node("Sigmoid", ["picked"], [SCORE_OUTPUT], name="gather_out_of_bounds")]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(5, np.int64), "index")]
    onnx.save(_model(nodes, inits, size), path)
    return path


def bad_resize(path: str, size: int = 32, node_name: str = "resize") -> str:
    """A Resize with mode "bogus": onnxruntime fails while it makes the session ("Exception during initialization",
    the path a std::bad_alloc takes too), and logs that in red unless told not to."""
    import onnx
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Resize", [INPUT_NAME, "", "scales"], ["big"], mode="bogus", name=node_name),
             helper.make_node("ReduceMean", ["big"], [SCORE_OUTPUT], axes=[1, 2, 3], keepdims=0)]
    onnx.save(_model(nodes, [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")], size), path)
    return path


def external_data(path: str, data_name: str = "weights.bin", size: int = 32) -> str:
    """mean(image) + mean(w), ``w`` kept in the external data file ``data_name`` beside ``path``."""
    import os

    import onnx
    from onnx import helper, numpy_helper

    nodes = [_mean(), helper.make_node("ReduceMean", ["w"], ["wmean"], keepdims=0),
             helper.make_node("Add", ["mean", "wmean"], [SCORE_OUTPUT])]
    model = _model(nodes, [numpy_helper.from_array(np.full((1000,), 0.25, np.float32), "w")], size)
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name,
              size_threshold=0)
    assert os.path.isfile(os.path.join(os.path.dirname(path), data_name))
    return path


def reshape_for_one(path: str, node_name: str, size: int = 32) -> str:
    """mean over a Reshape to [1, 3 * size * size]: runs for a batch of one input, fails (onnxruntime names the node)
    for a batch of two."""
    import onnx
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Reshape", [INPUT_NAME, "shape"], ["flat"], name=node_name),
             helper.make_node("ReduceMean", ["flat"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Sigmoid", ["m"], [SCORE_OUTPUT])]
    onnx.save(_model(nodes, [numpy_helper.from_array(np.array([1, 3 * size * size], np.int64), "shape")], size), path)
    return path


EVIL = "reshape\x1b]0;PWNED-TITLE\x07\x1b[31mRED\x9b2J"  # a node name that would drive a terminal
EXTERNAL_DATA = "weights.bin"
# committed file (in tests/runtime/data/hostile) -> how it is made
HOSTILE = {
    "gather_out_of_bounds.onnx": out_of_bounds_gather,
    "bad_resize.onnx": bad_resize,
    "reshape_for_one_evil.onnx": lambda path: reshape_for_one(path, EVIL),
    "external_data.onnx": lambda path: external_data(path, EXTERNAL_DATA),
}
HOSTILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "hostile")


def copy_hostile(name: str, path: str) -> str:
    """The committed hostile model ``name`` copied to ``path`` (its external data file beside it, when it has one)."""
    shutil.copyfile(os.path.join(HOSTILE_DIR, name), path)
    if name == "external_data.onnx":
        shutil.copyfile(os.path.join(HOSTILE_DIR, EXTERNAL_DATA), os.path.join(os.path.dirname(path), EXTERNAL_DATA))
    return path
