"""The bundle contract between ``export`` and ``runtime`` (see docs/bundle.md).

A bundle is a folder with ``manifest.json`` and the model files it names. The runtime reads this
manifest and nothing else of training.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .files import write_json
from .preprocess import Preprocessing

FORMAT = "icrt-bundle/1"
PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("onnxruntime", "tensorrt")


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
        path = os.path.join(self.root, name)
        if not os.path.isfile(path):
            raise BundleError(f"{self.root}: manifest names {name} for {precision}/{backend}, but the file is missing")
        return path

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
        if d.get("format") != FORMAT:
            raise BundleError(f"{root}: manifest format {d.get('format')!r} is not {FORMAT!r}")
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
