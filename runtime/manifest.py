"""The bundle contract between ``export`` and ``runtime`` (see docs/bundle.md).

A bundle is a folder with ``manifest.json`` and the model files it names. The runtime reads this
manifest and nothing else of training.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from .files import write_json
from .preprocess import _FILTERS, Preprocessing

FORMAT = "icrt-bundle/1"
PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("onnxruntime", "tensorrt")
# Model input side: a 4096 x 4096 input is 200 MB of float32 per image; beyond that is a broken bundle.
MIN_SIZE, MAX_SIZE = 16, 4096


class BundleError(ValueError):
    """A missing or malformed bundle; the message names the bundle and the problem."""


@dataclass
class Manifest:
    kind: str  # d2s | cmssa
    name: str
    preprocessing: Preprocessing
    input_name: str = "image"
    score_output: str = "score"
    level_output: str | None = None  # CM-SSA: level probabilities
    score: dict = field(default_factory=lambda: {"range": [0.0, 1.0], "meaning": "higher = more complex"})
    # precision -> backend -> file name (relative to the bundle)
    files: dict = field(default_factory=dict)
    engines: list = field(default_factory=list)  # [{precision, file, tensorrt, compute_capability, max_batch, ...}]
    opset: int = 17
    versions: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    model_card: dict = field(default_factory=dict)
    root: str = ""  # the bundle folder (not stored)

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    def precisions(self) -> list[str]:
        return [p for p in PRECISIONS if self.files.get(p)]

    def file_for(self, precision: str, backend: str = "onnxruntime") -> str:
        """Absolute path of the ONNX file serving ``precision`` on ``backend``."""
        entry = self.files.get(precision)
        if not entry:
            raise BundleError(f"{self.root}: no {precision} model in this bundle (has: {', '.join(self.precisions())})")
        name = entry.get(backend) or entry.get("onnxruntime")
        if not name:
            raise BundleError(f"{self.root}: no {precision} model for {backend} in this bundle")
        path = self.path(name, f"files.{precision}.{backend}")
        if not os.path.isfile(path):
            raise BundleError(f"{self.root}: manifest names {name} for {precision}/{backend}, but the file is missing")
        return path

    def path(self, name: str, key: str = "file") -> str:
        """The path of a file the manifest names (root joined); BundleError unless it lies inside the bundle."""
        return bundle_path(self.root, name, key)

    def validate(self) -> None:
        """BundleError naming the field for anything the runtime could not use safely (see :func:`validate`)."""
        validate(self.to_dict(), self.root)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "kind": self.kind, "name": self.name,
            "input": {"name": self.input_name, "shape": [None, 3, self.input_size, self.input_size],
                      "dtype": "float32", "layout": "NCHW"},
            "outputs": {"score": self.score_output, "levels": self.level_output},
            "preprocessing": self.preprocessing.to_dict(), "score": self.score, "files": self.files,
            "engines": self.engines, "opset": self.opset, "versions": self.versions, "parity": self.parity,
            "calibration": self.calibration, "model_card": self.model_card,
        }

    @classmethod
    def from_dict(cls, d: dict, root: str = "") -> "Manifest":
        validate(d, root)
        try:
            return cls(
                kind=d["kind"], name=d.get("name", d["kind"]), preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                input_name=d.get("input", {}).get("name", "image"),
                score_output=d.get("outputs", {}).get("score", "score"), level_output=d.get("outputs", {}).get("levels"),
                score=d.get("score", {}), files=d.get("files", {}), engines=d.get("engines", []),
                opset=d.get("opset", 17), versions=d.get("versions", {}), parity=d.get("parity", {}),
                calibration=d.get("calibration", {}), model_card=d.get("model_card", {}), root=root,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{root}: malformed manifest ({type(e).__name__}: {e})") from None

    def save(self, root: str | None = None) -> str:
        root = root or self.root
        path = os.path.join(root, "manifest.json")
        write_json(path, self.to_dict())
        self.root = root
        return path


def load_manifest(bundle: str) -> Manifest:
    path = os.path.join(bundle, "manifest.json") if os.path.isdir(bundle) else bundle
    root = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(path):
        raise BundleError(f"{bundle}: not a model bundle (no manifest.json)")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: unreadable manifest ({e})") from None
    return Manifest.from_dict(d, root)


# --- validation: a bundle is untrusted input ----------------------------------------------------


def _show(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict, str, int, float, type(None))) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bundle_path(root: str, name, key: str = "file") -> str:
    """``root``/``name``, or BundleError unless ``name`` is a relative name that resolves inside ``root``."""
    where = os.path.join(root, "manifest.json") if root else "manifest.json"
    if not isinstance(name, str) or not name or "\0" in name:
        raise BundleError(f"{where}: {key}: must be a file name, got {_show(name)}")
    if os.path.isabs(name):
        raise BundleError(f"{where}: {key}: {_show(name)} is outside the bundle (an absolute path)")
    if not root:  # no folder to resolve against: refuse names that climb out of it
        if os.path.normpath(name).split(os.sep)[0] == os.pardir:
            raise BundleError(f"{where}: {key}: {_show(name)} points outside the bundle")
        return name
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, name))  # symbolic links resolved
    if real == base or os.path.commonpath([base, real]) != base:
        raise BundleError(f"{where}: {key}: {_show(name)} resolves outside the bundle ({real})")
    return os.path.join(root, name)


def validate(d, root: str = "") -> None:
    """Check every manifest field the runtime uses (types, ranges, file names); BundleError on the first bad one.

    The message is one line: ``BUNDLE/manifest.json: FIELD: problem, got VALUE``.
    """
    where = os.path.join(root, "manifest.json") if root else "manifest.json"

    def fail(key, problem, value=None, show=True):
        raise BundleError(f"{where}: {key}: {problem}" + (f", got {_show(value)}" if show else ""))

    def need_dict(key, v, optional=True):
        if not isinstance(v, dict) and not (optional and v is None):
            fail(key, "must be an object", v)
        return v or {}

    def need_name(key, v, optional=False):
        if not (isinstance(v, str) and v) and not (optional and v is None):
            fail(key, "must be a non-empty string", v)

    if not isinstance(d, dict):
        raise BundleError(f"{where}: must be a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        fail("format", f"must be {FORMAT!r}", d.get("format"))
    if "kind" not in d:
        fail("kind", "missing", show=False)
    need_name("kind", d["kind"])
    need_name("name", d.get("name"), optional=True)
    need_name("input.name", need_dict("input", d.get("input")).get("name", "image"))
    outputs = need_dict("outputs", d.get("outputs"))
    need_name("outputs.score", outputs.get("score", "score"))
    need_name("outputs.levels", outputs.get("levels"), optional=True)

    if "preprocessing" not in d:
        fail("preprocessing", "missing", show=False)
    raw = need_dict("preprocessing", d["preprocessing"], optional=False)
    p = {**Preprocessing().to_dict(), **raw}
    if p["resize"] not in ("square", "patches"):
        fail("preprocessing.resize", "must be 'square' or 'patches'", p["resize"])
    size = p["size"]
    if not _is_int(size) or not MIN_SIZE <= size <= MAX_SIZE:
        fail("preprocessing.size", f"must be a whole number of pixels in [{MIN_SIZE}, {MAX_SIZE}]", size)
    for key, ok, what in (("mean", lambda v: 0 <= v <= 1, "3 numbers in [0, 1]"),
                          ("std", lambda v: v > 0, "3 positive numbers")):
        v = p[key]
        if not (isinstance(v, list) and len(v) == 3 and all(_is_number(x) and ok(x) for x in v)):
            fail(f"preprocessing.{key}", f"must be {what}", v)
    if p["interpolation"] not in _FILTERS:
        fail("preprocessing.interpolation", f"must be one of {', '.join(_FILTERS)}", p["interpolation"])
    stride = p["stride"]
    if not _is_int(stride) or stride < 1 or (p["resize"] == "patches" and stride > size):
        fail("preprocessing.stride", f"must be a whole number in [1, size = {size}]", stride)
    cap = p["max_long_side"]
    if cap is not None and (not _is_int(cap) or cap < size):
        fail("preprocessing.max_long_side", f"must be null or a whole number >= size ({size})", cap)
    if p["pool"] != "mean":
        fail("preprocessing.pool", "must be 'mean'", p["pool"])

    score = need_dict("score", d.get("score"))
    rng = score.get("range", [0.0, 1.0])
    if not (isinstance(rng, list) and len(rng) == 2 and all(map(_is_number, rng)) and rng[0] < rng[1]):
        fail("score.range", "must be [low, high], two finite numbers with low < high", rng)

    files = need_dict("files", d.get("files"))
    for prec, entry in files.items():
        if prec not in PRECISIONS:
            fail("files", f"unknown precision {prec!r} (known: {', '.join(PRECISIONS)})", show=False)
        for backend, name in need_dict(f"files.{prec}", entry, optional=False).items():
            if backend not in BACKENDS:
                fail(f"files.{prec}", f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})", show=False)
            bundle_path(root, name, f"files.{prec}.{backend}")

    engines = d.get("engines") or []
    if not isinstance(engines, list):
        fail("engines", "must be a list", engines)
    for i, e in enumerate(engines):
        key = f"engines[{i}]"
        need_dict(key, e, optional=False)
        if e.get("precision") not in PRECISIONS:
            fail(f"{key}.precision", f"must be one of {', '.join(PRECISIONS)}", e.get("precision"))
        bundle_path(root, e.get("file"), f"{key}.file")
        if "onnx" in e:
            bundle_path(root, e["onnx"], f"{key}.onnx")
        for k in ("tensorrt", "compute_capability"):
            if not (isinstance(e.get(k), str) and e[k]) and not _is_number(e.get(k)):
                fail(f"{key}.{k}", "must be a version string", e.get(k))
        batches = [e.get(k) for k in ("min_batch", "opt_batch", "max_batch") if e.get(k) is not None]
        for k in ("min_batch", "opt_batch", "max_batch"):
            if e.get(k) is not None and not (_is_int(e[k]) and e[k] >= 1):
                fail(f"{key}.{k}", "must be a whole number >= 1", e[k])
        if batches != sorted(batches):
            fail(key, "needs min_batch <= opt_batch <= max_batch", batches)
        if not isinstance(e.get("strongly_typed", False), bool):
            fail(f"{key}.strongly_typed", "must be true or false", e["strongly_typed"])
        flags = e.get("builder_flags", [])
        if not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
            fail(f"{key}.builder_flags", "must be a list of strings", flags)

    opset = d.get("opset", 17)
    if not _is_int(opset):
        fail("opset", "must be a whole number", opset)
    for key in ("versions", "parity", "calibration", "model_card"):
        need_dict(key, d.get(key))
