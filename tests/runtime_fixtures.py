"""Tiny test bundles built here (tiny D2S -> torch.onnx.export -> runtime.manifest), independent of ``export``.

Bundles are written through the bundle contract (``runtime.manifest``: its names, ``Manifest``, ``write_bundle``),
never as hand-written manifest dicts."""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from runtime.manifest import (FILE_NAMES, INPUT_NAME, MANIFEST_FILE, SCORE_OUTPUT, EngineRecord, Manifest,
                              engine_file_name, write_bundle)

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
    torch.onnx.export(model, (x,), path, input_names=[INPUT_NAME], output_names=[SCORE_OUTPUT], opset_version=17,
                      dynamic_axes={INPUT_NAME: {0: "batch"}, SCORE_OUTPUT: {0: "batch"}}, dynamo=False)
    return path


def quantize_int8(src: str, dst: str, size: int) -> str:
    """The CPU int8 form (QDQ, uint8 activations, int8 per-channel weights), calibrated on random inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.data = iter([{INPUT_NAME: rng.standard_normal((1, 3, size, size), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return dst


def build_bundle(folder: str, resize: str = "square", int8: bool = False, model=None) -> str:
    """A bundle folder with model.onnx (+ model.int8.onnx) and a manifest for ``resize`` (square|patches)."""
    from runtime.preprocess import Preprocessing

    os.makedirs(folder, exist_ok=True)
    model = model or tiny_model()
    size = 64
    prep = (Preprocessing(resize="square", size=size) if resize == "square"
            else Preprocessing(resize="patches", size=size, stride=32, max_long_side=256))
    fp32, int8_file = FILE_NAMES["fp32"], FILE_NAMES["int8"]
    export_onnx(model, os.path.join(folder, fp32), size)
    files = {"fp32": {"onnxruntime": fp32, "tensorrt": fp32}}
    if int8:
        quantize_int8(os.path.join(folder, fp32), os.path.join(folder, int8_file), size)
        files["int8"] = {"onnxruntime": int8_file}
    engine = EngineRecord(precision="fp16", file=engine_file_name("fp16", "10.3.0", "8.7"), tensorrt="10.3.0",
                          compute_capability="8.7", min_batch=1, opt_batch=8, max_batch=32)
    m = Manifest(kind="d2s", name=f"tiny-d2s-{resize}", preprocessing=prep, files=files, engines=[engine],
                 parity={"fp32": {"max_abs_diff": 0.0}}, model_card={"training data": "none (random weights, tests)"})
    return write_bundle(folder, m)


# --- ONNX models of a few nodes (onnx.helper, no torch) and bundles around them -------------------------------


SIZE = 32  # input side of the few-node models


def _const(name, value):
    from onnx import TensorProto, helper

    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def tiny_onnx(path, variant="sigmoid", in_shape=("N", 3, SIZE, SIZE)):
    """image -> score. sigmoid: sigmoid(mean pixel) in (0, 1); sqrt: sqrt(mean), NaN for dark images;
    const:V: V for every image; column: [N, 1]; wide: [N, 3] declared; flat: [3N] (declared [M])."""
    import onnx
    from onnx import TensorProto, helper

    all_axes = list(range(1, len(in_shape)))
    mean = lambda axes, keep=0: helper.make_node("ReduceMean", [INPUT_NAME], ["m"], axes=axes, keepdims=keep)
    inits, out_shape = [], ["N"]
    if variant == "sigmoid":
        nodes = [mean(all_axes), helper.make_node("Sigmoid", ["m"], [SCORE_OUTPUT])]
    elif variant == "sqrt":
        nodes = [mean([1, 2, 3]), helper.make_node("Sqrt", ["m"], [SCORE_OUTPUT])]
    elif variant.startswith("const:"):
        inits = [_const("zero", 0.0), _const("v", float(variant[6:]))]
        nodes = [mean([1, 2, 3]), helper.make_node("Mul", ["m", "zero"], ["z"]), helper.make_node("Add", ["z", "v"], [SCORE_OUTPUT])]
    elif variant == "column":
        inits = [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])]
        nodes = [mean([1, 2, 3], 1), helper.make_node("Sigmoid", ["m"], ["s"]), helper.make_node("Reshape", ["s", "shape"], [SCORE_OUTPUT])]
        out_shape = ["N", 1]
    elif variant == "wide":
        nodes = [mean([2, 3]), helper.make_node("Sigmoid", ["m"], [SCORE_OUTPUT])]
        out_shape = ["N", 3]
    elif variant == "flat":
        inits = [helper.make_tensor("shape", TensorProto.INT64, [1], [-1])]
        nodes = [mean([2, 3]), helper.make_node("Sigmoid", ["m"], ["s"]), helper.make_node("Reshape", ["s", "shape"], [SCORE_OUTPUT])]
        out_shape = ["M"]
    else:
        raise ValueError(variant)
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def make_bundle(folder, variant="sigmoid", in_shape=("N", 3, SIZE, SIZE), files=None, score=None, **prep):
    """A bundle around :func:`tiny_onnx` (fp32 only), written through runtime.manifest."""
    from runtime.preprocess import Preprocessing

    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    tiny_onnx(os.path.join(folder, FILE_NAMES["fp32"]), variant, in_shape)
    prep = {"size": SIZE, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), **prep}
    m = Manifest(kind="d2s", name=f"tiny-{variant}", preprocessing=Preprocessing(**prep),
                 files=files or {"fp32": {"onnxruntime": FILE_NAMES["fp32"], "tensorrt": FILE_NAMES["fp32"]}})
    if score is not None:
        m.score = score
    return write_bundle(folder, m)


def edit_manifest(folder, change):
    """Change a bundle's manifest.json as raw JSON, past the manifest module: how a bad or foreign manifest
    is made (``change(d)`` edits the dict in place)."""
    path = os.path.join(folder, MANIFEST_FILE)
    with open(path) as f:
        d = json.load(f)
    change(d)
    with open(path, "w") as f:
        json.dump(d, f)
    return folder


def textured(w: int, h: int, seed: int = 0, level: float = 0.5) -> Image.Image:
    """Grey image with a share ``level`` of random-coloured pixels: more noise, more 'complex'."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    mask = rng.random((h, w)) < level
    img[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return Image.fromarray(img)


# --- bundles shared across test modules (built once per session) ----------------------------------

_BUILT: dict = {}


def run_cli(capsys, *argv):
    """``icrt`` in process: (exit code, stdout, stderr)."""
    from runtime.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cached_bundle(tmp_path_factory, resize: str) -> str:
    if resize not in _BUILT:
        _BUILT[resize] = build_bundle(str(tmp_path_factory.mktemp(f"bundle-{resize}")), resize, int8=resize == "square")
    return _BUILT[resize]


# --- awkward but valid inputs: (file written, the plain RGB array it must score as) ---------------


def _png_with_exif_orientation(path, stored: Image.Image, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif)


def awkward_inputs(folder) -> dict:
    """name -> (path, expected RGB array). Each must score exactly as its expected array."""
    import os

    base = textured(97, 61, seed=3, level=0.6)
    out = {}

    def put(name, img_or_writer, expected):
        path = os.path.join(folder, name)
        if callable(img_or_writer):
            img_or_writer(path)
        else:
            img_or_writer.save(path)
        out[name] = (path, np.asarray(expected, dtype=np.uint8))

    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    put("palette.png", pal, pal.convert("RGB"))
    pal_t = pal.copy()
    pal_t.info["transparency"] = 0
    rgba_of_pal = pal_t.convert("RGBA")
    put("palette-transparent.png", lambda p: pal_t.save(p, transparency=0),
        Image.alpha_composite(Image.new("RGBA", base.size, (255, 255, 255, 255)), rgba_of_pal).convert("RGB"))
    rgba = base.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, base.width, dtype=np.uint8), (base.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    put("alpha.png", rgba, Image.alpha_composite(Image.new("RGBA", base.size, (255, 255, 255, 255)), rgba).convert("RGB"))
    gray = base.convert("L")
    put("gray.png", gray, gray.convert("RGB"))
    la = gray.convert("LA")
    la.putalpha(Image.fromarray(alpha))
    put("gray-alpha.png", la, Image.alpha_composite(Image.new("RGBA", base.size, (255, 255, 255, 255)),
                                                    la.convert("RGBA")).convert("RGB"))
    bw = base.convert("1")
    put("bilevel.png", bw, bw.convert("RGB"))
    g8 = np.asarray(gray, dtype=np.uint16)
    put("gray16.png", Image.fromarray((g8 * 257).astype("<u2")), gray.convert("RGB"))  # 8-bit value v stored as v * 257
    cmyk = base.convert("CMYK")
    put("cmyk.tif", cmyk, cmyk.convert("RGB"))
    stored = base.transpose(Image.Transpose.ROTATE_90)  # orientation 6: display = rotate the stored image 270
    put("exif-rotated.png", lambda p: _png_with_exif_orientation(p, stored, 6), base)
    put("one-pixel.png", Image.new("RGB", (1, 1), (200, 30, 90)), Image.new("RGB", (1, 1), (200, 30, 90)))
    thin = textured(3, 150, seed=5)
    put("very-thin.png", thin, thin)
    put("png-named.jpg", lambda p: base.save(p, format="PNG"), base)
    put("Ünïcode name with spaces.PNG", base, base)
    frames = [base, textured(97, 61, seed=9)]
    put("animated.gif", lambda p: frames[0].save(p, save_all=True, append_images=frames[1:], duration=50),
        Image.open(_gif_bytes(frames)).convert("RGB"))
    return out


def _gif_bytes(frames):
    import io

    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    buf.seek(0)
    return buf


# --- broken inputs: name -> (path, words the error must contain) -----------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: str, side: int = 100_000):
    """A few hundred bytes claiming side x side pixels: beyond Pillow's decompression-bomb limit."""
    import struct
    import zlib

    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    data += _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def broken_inputs(folder) -> dict:
    import io
    import os

    os.makedirs(folder, exist_ok=True)
    out = {}
    base = textured(80, 60, seed=1)

    def put(name, data, words):
        path = os.path.join(folder, name)
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
        out[name] = (path, words)

    put("empty.jpg", b"", "empty")
    jpg = io.BytesIO()
    base.save(jpg, format="JPEG")
    put("truncated.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 2], "truncated")
    put("text.jpg", b"hello, I am not an image\n" * 10, "not a recognised image")
    put("page.png", b"<!doctype html><html><body>404</body></html>", "not a recognised image")
    import struct

    garbage = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 10, 8, 2, 0, 0, 0))
               + _png_chunk(b"IDAT", b"this is not zlib data" * 4) + _png_chunk(b"IEND", b""))
    put("corrupt.png", garbage, "")  # wording comes from Pillow/zlib; the file name and a reason must be there
    bomb_png(os.path.join(folder, "bomb.png"))
    out["bomb.png"] = (os.path.join(folder, "bomb.png"), "decompression-bomb")
    out["missing.png"] = (os.path.join(folder, "missing.png"), "no such file")
    os.mkdir(os.path.join(folder, "folder.jpg"))
    out["folder.jpg"] = (os.path.join(folder, "folder.jpg"), "is a directory")
    os.symlink(os.path.join(folder, "gone.png"), os.path.join(folder, "dangling.png"))
    out["dangling.png"] = (os.path.join(folder, "dangling.png"), "broken symbolic link")
    os.mkfifo(os.path.join(folder, "fifo.png"))
    out["fifo.png"] = (os.path.join(folder, "fifo.png"), "not a regular file")
    return out
