"""Tiny test bundles built here (tiny D2S -> torch.onnx.export -> runtime.manifest), independent of ``export``."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

TINY_D2S = {"backbone": "resnet10t", "pretrained": "none", "image_size": 64, "head_hidden": 32, "head_dropout": 0.0}
PARITY_TOL = 1e-4  # the fp32 parity tolerance of the export contract


def tiny_model(seed: int = 0):
    import torch
    from train.models.d2s import D2S, D2SConfig

    torch.manual_seed(seed)
    model = D2S(D2SConfig(**TINY_D2S), load_pretrained=False).eval()
    # Random heads sit near sigmoid(0) = 0.5 for every input; a larger last layer spreads the scores so that
    # tests comparing images see real differences.
    with torch.no_grad():
        model.head[-1].weight.mul_(20.0)
    return model


def export_onnx(model, path: str, size: int) -> str:
    import torch

    x = torch.randn(2, 3, size, size)
    torch.onnx.export(model, (x,), path, input_names=["image"], output_names=["score"], opset_version=17,
                      dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}}, dynamo=False)
    return path


def quantize_int8(src: str, dst: str, size: int) -> str:
    """The CPU int8 form (QDQ, uint8 activations, int8 per-channel weights), calibrated on random inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.data = iter([{"image": rng.standard_normal((1, 3, size, size), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return dst


def build_bundle(folder: str, resize: str = "square", int8: bool = False, model=None) -> str:
    """A bundle folder with model.onnx (+ model.int8.onnx) and a manifest for ``resize`` (square|patches)."""
    from runtime.manifest import Manifest
    from runtime.preprocess import Preprocessing

    os.makedirs(folder, exist_ok=True)
    model = model or tiny_model()
    size = 64
    prep = (Preprocessing(resize="square", size=size) if resize == "square"
            else Preprocessing(resize="patches", size=size, stride=32, max_long_side=256))
    export_onnx(model, os.path.join(folder, "model.onnx"), size)
    files = {"fp32": {"onnxruntime": "model.onnx", "tensorrt": "model.onnx"}}
    if int8:
        quantize_int8(os.path.join(folder, "model.onnx"), os.path.join(folder, "model.int8.onnx"), size)
        files["int8"] = {"onnxruntime": "model.int8.onnx"}
    m = Manifest(kind="d2s", name=f"tiny-d2s-{resize}", preprocessing=prep, files=files,
                 engines=[{"precision": "fp16", "file": "engine.fp16.trt10.3.0.sm8.7.plan", "tensorrt": "10.3.0",
                           "compute_capability": "8.7", "min_batch": 1, "opt_batch": 8, "max_batch": 32}],
                 parity={"fp32": {"max_abs_diff": 0.0}}, model_card={"training data": "none (random weights, tests)"})
    m.save(folder)
    return folder


def textured(w: int, h: int, seed: int = 0, level: float = 0.5) -> Image.Image:
    """Grey image with a share ``level`` of random-coloured pixels: more noise, more 'complex'."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    mask = rng.random((h, w)) < level
    img[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return Image.fromarray(img)
