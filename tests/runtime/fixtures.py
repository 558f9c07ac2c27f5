"""Test bundles for the runtime's tests, torch-free: committed ONNX files (tests/runtime/data, written by
data/make_tiny_models.py) in bundles written through the bundle contract (``runtime.bundle.manifest``: its names,
``Manifest``, ``write_bundle``), never as hand-written manifest dicts; and awkward or broken input files.

Two kinds of model:
- the tiny conv net (``tiny.onnx`` + its int8 form ``tiny.int8.onnx``): N x 3 x 64 x 64 -> [N] scores spread over
  (0, 1), for scoring, CLI, bench and heatmap tests (:func:`build_bundle`);
- models of a few ONNX nodes with chosen misbehaviour (``data/nodes``; :data:`NODE_MODELS`), for validation tests
  (:func:`make_bundle`, :func:`node_model`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from icrt.runtime.bundle.manifest import (
    MANIFEST_FILE,
    EngineRecord,
    Manifest,
    ModelCard,
    ParityFigures,
    ScoreSpec,
    engine_file_name,
    write_bundle,
)
from icrt.runtime.bundle.precisions import get_precision
from icrt.runtime.bundle.preprocessing import Preprocessing
from tests.images import textured

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
from tests import ROOT  # noqa: E402,F401 (the repository; importable from here as before)

TINY_FILES = {"fp32": "tiny.onnx", "int8": "tiny.int8.onnx"}  # in DATA
REFERENCE_FILE = "tiny_reference.json"  # in DATA: the PyTorch model's scores on reference_images()
TINY_SIZE = 64  # input side of the tiny conv net
PARITY_TOL = 1e-4  # the fp32 parity tolerance of the export contract


# --- optional libraries ----------------------------------------------------------------------------------------


def needs(module: str, feature: str):
    """Skip where ``module`` is not installed. The runtime imports it lazily for one feature, and it is not among the
    runtime's dependencies in pyproject.toml, so an environment with the runtime's dependencies only lacks it."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed ({feature}; not a declared runtime dependency)")


needs_matplotlib = needs("matplotlib", "bench plots")


# --- the tiny conv net -----------------------------------------------------------------------------------------


def tiny_preprocessing(resize: str = "square") -> Preprocessing:
    """The tiny bundles' preprocessing: 64 x 64 (square), or 64 px patches at stride 32, long side capped at 256."""
    if resize == "square":
        return Preprocessing(resize="square", size=TINY_SIZE)
    return Preprocessing(resize="patches", size=TINY_SIZE, stride=32, max_long_side=256)


def reference_images() -> list[Image.Image]:
    """Eight 64 x 64 images of rising noise: square-policy inputs without any resize, so that the stored PyTorch
    scores (tiny_reference.json) depend on the model and the normalisation only."""
    return [textured(TINY_SIZE, TINY_SIZE, seed=i, level=i / 7) for i in range(8)]


def reference_scores() -> dict:
    with open(os.path.join(DATA, REFERENCE_FILE)) as f:
        return json.load(f)


def sample_images(folder) -> list[str]:
    """Five PNGs of several sizes and noise levels (img0.png .. img4.png; img2 is 300 x 110) in ``folder``."""
    paths = []
    for i, (w, h) in enumerate([(120, 90), (64, 64), (300, 110), (50, 200), (200, 150)]):
        p = os.path.join(str(folder), f"img{i}.png")
        textured(w, h, seed=i, level=i / 4).save(p)
        paths.append(p)
    return paths


def build_bundle(folder: str, resize: str = "square", int8: bool = False) -> str:
    """A bundle folder with model.onnx (+ model.int8.onnx) from the committed tiny conv net and a manifest for
    ``resize`` (square|patches)."""
    os.makedirs(folder, exist_ok=True)
    fp32, int8_file = get_precision("fp32").file(), get_precision("int8").file()
    shutil.copyfile(os.path.join(DATA, TINY_FILES["fp32"]), os.path.join(folder, fp32))
    files = {"fp32": {"onnxruntime": fp32, "tensorrt": fp32}}
    if int8:
        shutil.copyfile(os.path.join(DATA, TINY_FILES["int8"]), os.path.join(folder, int8_file))
        files["int8"] = {"onnxruntime": int8_file}
    engine = EngineRecord(precision="fp16", file=engine_file_name("fp16", "10.3.0", "8.7"), tensorrt="10.3.0",
                          compute_capability="8.7", min_batch=1, opt_batch=8, max_batch=32)
    m = Manifest(kind="d2s", name=f"tiny-d2s-{resize}", preprocessing=tiny_preprocessing(resize), files=files,
                 engines=[engine], parity={"fp32": ParityFigures(max_abs_diff=0.0)},
                 model_card=ModelCard(extra={"training data": "none (random weights, tests)"}))
    return write_bundle(folder, m)


# --- models of a few ONNX nodes --------------------------------------------------------------------------------


SIZE = 32  # input side of the few-node models
NODE_SHAPE = ("N", 3, SIZE, SIZE)
# (variant, input shape) of every committed few-node model, image -> score. sigmoid: sigmoid(mean pixel) in
# (0, 1); sqrt: sqrt(mean), NaN for dark images; const:V: V for every image; column: [N, 1]; wide: [N, 3]
# declared; flat: [3N] (declared [M]); fails-bright: sigmoid, but onnxruntime fails to run a batch whose mean input
# is > 0.9 (a white image alone in a batch): a model that loads and passes the checks, then fails at run time.
NODE_MODELS = [
    ("sigmoid", NODE_SHAPE), ("sqrt", NODE_SHAPE), ("column", NODE_SHAPE), ("wide", NODE_SHAPE), ("flat", NODE_SHAPE),
    ("fails-bright", NODE_SHAPE),
    *[(f"const:{v}", NODE_SHAPE) for v in ("nan", "inf", "1e30", "-1e30", "1.5", "1.0005", "7", "12")],
    ("sigmoid", ("N", 3, 64, 64)), ("sigmoid", ("N", 4, SIZE, SIZE)), ("sigmoid", ("N", 3, SIZE)),
    ("sigmoid", ("N", 3, "H", "W")),
]


def node_file(variant: str, in_shape=NODE_SHAPE) -> str:
    """File name in data/nodes: ``const:1.5`` -> ``const_1.5.onnx``; another input shape is appended
    (``sigmoid_Nx3xHxW.onnx``)."""
    name = variant.replace(":", "_")
    if tuple(in_shape) != NODE_SHAPE:
        name += "_" + "x".join(map(str, in_shape))
    return name + ".onnx"


def node_model(path, variant: str = "sigmoid", in_shape=NODE_SHAPE) -> str:
    """The committed few-node model ``variant`` with input shape ``in_shape``, copied to ``path``."""
    src = os.path.join(DATA, "nodes", node_file(variant, in_shape))
    if (variant, tuple(in_shape)) not in NODE_MODELS or not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no committed model for {variant} {tuple(in_shape)}: add it to NODE_MODELS "
                                "and run tests/runtime/data/make_tiny_models.py")
    shutil.copyfile(src, str(path))
    return str(path)


def make_bundle(folder, variant="sigmoid", in_shape=NODE_SHAPE, files=None, score=None, **prep):
    """A bundle around :func:`node_model` (fp32 only), written through runtime.bundle.manifest."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    fp32 = get_precision("fp32").file()
    node_model(os.path.join(folder, fp32), variant, in_shape)
    prep = {"size": SIZE, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), **prep}
    m = Manifest(kind="d2s", name=f"tiny-{variant}", preprocessing=Preprocessing(**prep),
                 files=files or {"fp32": {"onnxruntime": fp32, "tensorrt": fp32}})
    if score is not None:
        m.score = ScoreSpec.from_dict(score)
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


# --- the CLI in process ----------------------------------------------------------------------------------------


# the line `icrt score` ends with (what ran, how many, how fast): tests/runtime/cli/test_cli.py checks it; the helpers
# below leave it out of the stderr they return, so that tests of other things compare their own lines
RAN_LINE = re.compile(r"^icrt: \d+ scored, \d+ failed in [\d.]+ s \([\d.]+ images/s\) by .*$", re.M)


def without_ran_line(err: str) -> str:
    return RAN_LINE.sub("", err).replace("\n\n", "\n").lstrip("\n") if err else err


def icrt_lines(*argv):
    """``python -m icrt.runtime.cli ARGV`` in a subprocess: (exit code, stdout, stderr lines, the closing line of
    `icrt score` left out)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", *map(str, argv)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    return r.returncode, r.stdout, [ln for ln in r.stderr.strip().splitlines() if not RAN_LINE.match(ln)]


def run_cli(capsys, *argv):
    """``icrt`` in process: (exit code, stdout, stderr without the closing line of `icrt score`)."""
    from icrt.runtime.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, without_ran_line(err)


# --- awkward but valid inputs: (file written, the plain RGB array it must score as) ---------------


def _png_with_exif_orientation(path, stored: Image.Image, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif)


def awkward_inputs(folder) -> dict:
    """name -> (path, expected RGB array). Each must score exactly as its expected array."""
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
