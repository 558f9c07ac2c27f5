"""The bundle contract between ``export`` and ``runtime`` (see docs/bundle.md), in one module.

A bundle is a folder with ``manifest.json`` and the model files it names. This module is the only writer
(:meth:`Manifest.save`, :func:`write_bundle`) and the only reader (:func:`load_manifest`) of that file, and
the one place that names the tensors and files of a bundle (``INPUT_NAME``, ``FILE_NAMES``, ...).

The manifest's sections are typed dataclasses (:class:`Files`, :class:`EngineRecord`, :class:`Parity`,
:class:`ParityFigures`, :class:`Calibration`, :class:`ModelCard`). Each keeps the keys it does not know in
``extra`` (and keys stored as ``null``), so a read / write round trip loses nothing, and each still reads
and writes like the dict it used to be (``manifest.parity["fp32"]["srcc"]``, ``manifest.files.get("int8")``,
``manifest.model_card.update(...)``). Plain dicts and lists handed to :class:`Manifest` are converted.

This module imports no numpy, Pillow or onnxruntime (``icrt`` reads these names at start-up).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .errors import UserInputError
from .files import write_json

FORMAT = "icrt-bundle/1"
MANIFEST_FILE = "manifest.json"

# Tensor names of every model in a bundle (the manifest's input.name / outputs.* name them for the runtime).
INPUT_NAME = "image"  # N x 3 x S x S float32, NCHW, dynamic batch
SCORE_OUTPUT = "score"  # [N] or [N, 1], one score per input
LEVELS_OUTPUT = "levels"  # CM-SSA: level probabilities
INPUT_DTYPE = "float32"
INPUT_LAYOUT = "NCHW"

PRECISIONS = ("fp32", "fp16", "int8")
# File names in a bundle. "int8" is the onnxruntime CPU form, "int8_qdq" the TensorRT form.
FILE_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx",
              "int8_qdq": "model.int8.qdq.onnx"}
TIMING_CACHE = "timing.*.cache"  # glob of TensorRT timing caches, one per TensorRT version / GPU (timing_cache_file_name)
EXPORT_REPORT = "export-report.json"
ORT_TRT_CACHE = "ort-trt-cache"  # engine cache folder of onnxruntime's TensorRT execution provider
DEFAULT_SCORE = {"range": [0.0, 1.0], "meaning": "higher = more complex"}
DEFAULT_OPSET = 17

# Model input side: a 4096 x 4096 input is 200 MB of float32 per image; beyond that is a broken bundle.
MIN_SIZE, MAX_SIZE = 16, 4096
STD_RANGE = (1e-3, 10.0)  # preprocessing.std, as float32
STRIDE_DIVISOR = 8  # patches: stride >= size / 8 (a 500 x 419 image at stride 1 was 4,212 patches of 224 px)


def engine_file_name(precision: str, trt_version, compute_capability) -> str:
    """``engine.<precision>.trt<version>.sm<cc>.plan``: an engine only runs where it was built."""
    return f"engine.{precision}.trt{trt_version}.sm{compute_capability}.plan"


def timing_cache_file_name(trt_version, compute_capability) -> str:
    """``timing.trt<version>.sm<cc>.cache``: TensorRT rejects a timing cache made by another version or GPU, so
    each gets its own, keyed like the engines (matches :data:`TIMING_CACHE`)."""
    return f"timing.trt{trt_version}.sm{compute_capability}.cache"


class BundleError(UserInputError):
    """A missing or malformed bundle; the message names the bundle and the problem."""


# --- typed sections -----------------------------------------------------------------------------


def as_plain(v):
    """Sections, mappings and lists as plain JSON-ready dicts and lists."""
    if isinstance(v, Section):
        return v.to_dict()
    if isinstance(v, Mapping):
        return {k: as_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [as_plain(x) for x in v]
    return v


class Section(MutableMapping):
    """A manifest section: typed fields, unknown keys kept in ``extra``; reads and writes like a dict.

    A field that is ``None`` is absent unless it was stored as ``null`` (``section[key] = None`` or read
    from a manifest). Subclasses are ``@dataclass(eq=False)`` with ``extra`` as their last field;
    ``_nested`` names the fields whose object values become another Section class.
    """

    _nested: ClassVar[dict] = {}
    extra: dict

    def __post_init__(self):
        object.__setattr__(self, "_nulls", set())
        if not isinstance(self.extra, dict):
            self.extra = dict(self.extra or {})

    def __setattr__(self, name, value):
        cls = self._nested.get(name)
        if cls is not None:
            value = cls.coerce(value, none=None)
        object.__setattr__(self, name, value)

    @classmethod
    def _names(cls) -> tuple:
        names = cls.__dict__.get("_field_names")
        if names is None:
            names = tuple(f.name for f in fields(cls) if f.name != "extra")
            setattr(cls, "_field_names", names)
        return names

    @classmethod
    def from_dict(cls, d: Mapping):
        known = {k: d[k] for k in cls._names() if k in d}
        obj = cls(**known, extra={k: v for k, v in d.items() if k not in known})
        obj._nulls.update(k for k, v in known.items() if v is None)
        return obj

    @classmethod
    def coerce(cls, value, none="empty"):
        """``value`` as this section: a mapping is converted, a Section of this class kept, None gives an empty
        section (or None with ``none=None``); anything else is kept as it is, for validation to name."""
        if value is None:
            return cls() if none == "empty" else None
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        return value

    def to_dict(self) -> dict:
        return {k: as_plain(v) for k, v in self.items()}

    # mapping protocol
    def __getitem__(self, key):
        if key in self._names():
            v = getattr(self, key)
            if v is None and key not in self._nulls:
                raise KeyError(key)
            return v
        return self.extra[key]

    def __setitem__(self, key, value):
        if key in self._names():
            setattr(self, key, value)
            (self._nulls.add if value is None else self._nulls.discard)(key)
        else:
            self.extra[key] = value

    def __delitem__(self, key):
        if key in self._names():
            if getattr(self, key) is None and key not in self._nulls:
                raise KeyError(key)
            setattr(self, key, None)
            self._nulls.discard(key)
        else:
            del self.extra[key]

    def __iter__(self):
        for k in self._names():
            if getattr(self, k) is not None or k in self._nulls:
                yield k
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return len(self) > 0


@dataclass(eq=False)
class Files(Section):
    """precision -> {files key of a backend (``onnxruntime``, ``tensorrt``, ...) -> file name in the bundle}."""

    fp32: dict | None = None
    fp16: dict | None = None
    int8: dict | None = None
    extra: dict = field(default_factory=dict)  # unknown precisions (refused by validation)

    def __setattr__(self, name, value):
        if name != "extra" and isinstance(value, Mapping):
            value = dict(value)
        object.__setattr__(self, name, value)

    def precisions(self) -> list[str]:
        return [p for p in PRECISIONS if self.get(p)]

    def name_for(self, precision: str, key: str = "onnxruntime") -> str | None:
        """The file name serving ``precision`` for the backend files key ``key`` (None: not in the bundle)."""
        entry = self.get(precision)
        return entry.get(key) if isinstance(entry, Mapping) else None

    def add(self, precision: str, key: str, name: str) -> None:
        entry = self.get(precision)
        self[precision] = {**(entry if isinstance(entry, Mapping) else {}), key: name}


@dataclass(eq=False)
class EngineRecord(Section):
    """One TensorRT engine: built for one precision, TensorRT version (major.minor.patch) and GPU."""

    precision: str | None = None
    file: str | None = None  # engine.<prec>.trt<ver>.sm<cc>.plan
    onnx: str | None = None  # the ONNX file it was built from
    tensorrt: str | None = None  # TensorRT version
    compute_capability: str | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    strongly_typed: bool | None = None
    builder_flags: list | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class ParityFigures(Section):
    """Agreement of one precision (or form) with its reference on the check images."""

    n: int | None = None
    srcc: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    reference: str | None = None  # "pytorch" (fp32) or "fp32 onnx"
    label_srcc: float | None = None
    label_plcc: float | None = None
    label_srcc_drop: float | None = None
    input_max_abs_diff: float | None = None  # fp32: per model input, vs PyTorch
    tolerance: float | None = None
    passed: bool | None = None
    file: str | None = None
    target_srcc: float | None = None
    meets_target: bool | None = None
    run_on: str | None = None
    tensorrt_form: ParityFigures | None = None  # int8: the TensorRT file, run on onnxruntime CPU
    extra: dict = field(default_factory=dict)


ParityFigures._nested = {"tensorrt_form": ParityFigures}


@dataclass(eq=False)
class Parity(Section):
    """precision -> :class:`ParityFigures`."""

    fp32: ParityFigures | None = None
    fp16: ParityFigures | None = None
    int8: ParityFigures | None = None
    extra: dict = field(default_factory=dict)

    _nested: ClassVar[dict] = {"fp32": ParityFigures, "fp16": ParityFigures, "int8": ParityFigures}


@dataclass(eq=False)
class Calibration(Section):
    """How the int8 files were calibrated."""

    method: str | None = None
    images: int | None = None
    inputs: int | None = None  # model inputs (patches)
    data: str | None = None
    split: str | None = None  # all | train | val
    split_rule: dict | None = None
    tool: str | None = None
    forms: dict | None = None  # backend files key -> activation / weight types, op types, file
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class ModelCard(Section):
    """Free text and figures for ``icrt info``; anything else a card holds stays in ``extra``."""

    summary: Any = None
    training_data: Any = None
    licence: Any = None
    recipe: Any = None
    score_meaning: Any = None
    limits: Any = None
    heldout: Any = None
    config: Any = None
    val_metrics: Any = None
    epoch: Any = None
    parameters: Any = None
    check_data: Any = None
    checkpoint: Any = None
    extra: dict = field(default_factory=dict)


_SECTIONS = {"files": Files, "parity": Parity, "calibration": Calibration, "model_card": ModelCard}


# --- the manifest ---------------------------------------------------------------------------------


@dataclass
class Manifest:
    kind: str  # d2s | cmssa
    name: str
    preprocessing: Any  # runtime.preprocess.Preprocessing (a dict is converted)
    input_name: str = INPUT_NAME
    score_output: str = SCORE_OUTPUT
    level_output: str | None = None  # CM-SSA: level probabilities
    score: dict = field(default_factory=lambda: {**DEFAULT_SCORE, "range": list(DEFAULT_SCORE["range"])})
    files: Files = field(default_factory=Files)
    engines: list = field(default_factory=list)  # [EngineRecord]
    opset: int = DEFAULT_OPSET
    versions: dict = field(default_factory=dict)
    parity: Parity = field(default_factory=Parity)
    calibration: Calibration = field(default_factory=Calibration)
    model_card: ModelCard = field(default_factory=ModelCard)
    root: str = ""  # the bundle folder (not stored)
    extra: dict = field(default_factory=dict)  # top-level keys this version does not know (kept)

    def __setattr__(self, name, value):
        if name in _SECTIONS:
            value = _SECTIONS[name].coerce(value)
        elif name == "engines":
            value = [EngineRecord.coerce(e, none=None) for e in value] if isinstance(value, (list, tuple)) else (
                [] if value is None else value)
        elif name == "preprocessing" and isinstance(value, Mapping):
            from .preprocess import Preprocessing
            value = Preprocessing.from_dict(value)
        object.__setattr__(self, name, value)

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    @property
    def input_shape(self) -> list:
        return [None, 3, self.input_size, self.input_size]

    def precisions(self) -> list[str]:
        return self.files.precisions()

    def engines_for(self, precision: str) -> list[EngineRecord]:
        return [e for e in self.engines if isinstance(e, Mapping) and e.get("precision") == precision]

    def file_for(self, precision: str, backend: str = "onnxruntime") -> str:
        """Path of the file serving ``precision`` for the backend files key ``backend`` (falls back to the
        onnxruntime file); BundleError when the bundle has none or it is missing."""
        if not self.files.get(precision):
            raise BundleError(f"{self.root}: no {precision} model in this bundle (has: {', '.join(self.precisions())})")
        name = self.files.name_for(precision, backend) or self.files.name_for(precision, "onnxruntime")
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
        d = {k: as_plain(v) for k, v in self.extra.items()}
        d.update({
            "format": FORMAT, "kind": self.kind, "name": self.name,
            "input": {"name": self.input_name, "shape": self.input_shape, "dtype": INPUT_DTYPE, "layout": INPUT_LAYOUT},
            "outputs": {"score": self.score_output, "levels": self.level_output},
            "preprocessing": self.preprocessing.to_dict(), "score": as_plain(self.score), "files": as_plain(self.files),
            "engines": as_plain(self.engines), "opset": self.opset, "versions": as_plain(self.versions),
            "parity": as_plain(self.parity), "calibration": as_plain(self.calibration),
            "model_card": as_plain(self.model_card),
        })
        return d

    @classmethod
    def from_dict(cls, d: dict, root: str = "") -> "Manifest":
        """Validate ``d`` (BundleError on the first bad field), then build the manifest."""
        from .preprocess import Preprocessing

        validate(d, root)
        known = {"format", "kind", "name", "input", "outputs", "preprocessing", "score", "files", "engines", "opset",
                 "versions", "parity", "calibration", "model_card"}
        inp, outputs = d.get("input") or {}, d.get("outputs") or {}
        try:
            return cls(
                kind=d["kind"], name=d.get("name", d["kind"]), preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                input_name=inp.get("name", INPUT_NAME), score_output=outputs.get("score", SCORE_OUTPUT),
                level_output=outputs.get("levels"), score=d.get("score") or {}, files=d.get("files"),
                engines=d.get("engines"), opset=d.get("opset", DEFAULT_OPSET), versions=d.get("versions") or {},
                parity=d.get("parity"), calibration=d.get("calibration"), model_card=d.get("model_card"), root=root,
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{root}: malformed manifest ({type(e).__name__}: {e})") from None

    def save(self, root: str | None = None) -> str:
        """Validate, then write ``ROOT/manifest.json`` atomically (the folder is made when missing); its path."""
        root = root or self.root
        validate(self.to_dict(), root)
        os.makedirs(root or os.curdir, exist_ok=True)
        path = os.path.join(root, MANIFEST_FILE)
        write_json(path, self.to_dict())
        self.root = root
        return path


def write_bundle(folder: str, manifest: Manifest) -> str:
    """Write ``manifest`` into the bundle ``folder`` (made when missing; the model files are the caller's);
    the folder. For code that builds bundles outside ``export`` (tests, benchmarks)."""
    manifest.save(folder)
    return folder


def manifest_path(bundle: str) -> str:
    """``bundle``/manifest.json for a folder; a path to a manifest file as it is."""
    return os.path.join(bundle, MANIFEST_FILE) if os.path.isdir(bundle) else bundle


def load_manifest(bundle: str) -> Manifest:
    """Read and validate the manifest of the bundle folder ``bundle`` (or of a manifest.json path)."""
    path = manifest_path(bundle)
    root = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(path):
        raise BundleError(f"{bundle}: not a model bundle (no {MANIFEST_FILE})")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: JSON syntax, or text that is not UTF-8
        raise BundleError(f"{path}: unreadable manifest ({e})") from None
    except RecursionError:
        raise BundleError(f"{path}: unreadable manifest (JSON nested too deeply)") from None
    return Manifest.from_dict(d, root)


# --- validation: a bundle is untrusted input ----------------------------------------------------


def _show(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict, str, int, float, type(None))) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _as_float32(v: float) -> float:
    """``v`` rounded to float32 (inf when it overflows), without numpy (this module imports none)."""
    import struct
    try:
        return struct.unpack("f", struct.pack("f", v))[0]
    except OverflowError:
        return math.inf


def bundle_path(root: str, name, key: str = "file") -> str:
    """``root``/``name``, or BundleError unless ``name`` is a relative name that resolves inside ``root``."""
    where = os.path.join(root, MANIFEST_FILE) if root else MANIFEST_FILE
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
    from .backends import files_keys
    from .preprocess import _FILTERS, Preprocessing

    where = os.path.join(root, MANIFEST_FILE) if root else MANIFEST_FILE

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
    inp = need_dict("input", d.get("input"))
    need_name("input.name", inp.get("name", INPUT_NAME))
    outputs = need_dict("outputs", d.get("outputs"))
    need_name("outputs.score", outputs.get("score", SCORE_OUTPUT))
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
    # checked as the float32 values the runtime computes with: a std of 1e-50 is 0 in float32 (every input
    # infinite), one of 1e300 overflows; a sane normalisation divides pixels in [0, 1] by 0.001 .. 10
    for key, ok, what in (("mean", lambda v: 0 <= v <= 1, "3 numbers in [0, 1]"),
                          ("std", lambda v: STD_RANGE[0] <= v <= STD_RANGE[1],
                           f"3 numbers in [{STD_RANGE[0]:g}, {STD_RANGE[1]:g}]")):
        v = p[key]
        if not (isinstance(v, list) and len(v) == 3 and all(_is_number(x) and ok(_as_float32(x)) for x in v)):
            fail(f"preprocessing.{key}", f"must be {what} (as float32)", v)
    if p["interpolation"] not in _FILTERS:
        fail("preprocessing.interpolation", f"must be one of {', '.join(_FILTERS)}", p["interpolation"])
    stride = p["stride"]
    low = -(-size // STRIDE_DIVISOR) if p["resize"] == "patches" else 1  # stride 1: ~size^2 times the work
    if not _is_int(stride) or stride < low or (p["resize"] == "patches" and stride > size):
        fail("preprocessing.stride", f"must be a whole number in [{low}, size = {size}]"
             + (f" (at least size / {STRIDE_DIVISOR}: patches overlap at most {STRIDE_DIVISOR}-fold each way)"
                if low > 1 else ""), stride)
    cap = p["max_long_side"]
    if cap is not None and (not _is_int(cap) or cap < size):
        fail("preprocessing.max_long_side", f"must be null or a whole number >= size ({size})", cap)
    if p["pool"] != "mean":
        fail("preprocessing.pool", "must be 'mean'", p["pool"])

    # input.shape / dtype / layout: optional (older bundles), but when written they must match preprocessing
    shape = inp.get("shape")
    if shape is not None:
        batch = shape[0] if isinstance(shape, list) and shape else None
        if not (isinstance(shape, list) and len(shape) == 4 and (batch is None or (_is_int(batch) and batch >= 1))
                and all(_is_int(v) for v in shape[1:]) and shape[1:] == [3, size, size]):
            fail("input.shape", f"must be [null or batch, 3, {size}, {size}] (preprocessing.size {size})", shape)
    if "dtype" in inp and inp["dtype"] != INPUT_DTYPE:
        fail("input.dtype", f"must be {INPUT_DTYPE!r}", inp["dtype"])
    if "layout" in inp and inp["layout"] != INPUT_LAYOUT:
        fail("input.layout", f"must be {INPUT_LAYOUT!r}", inp["layout"])

    score = need_dict("score", d.get("score"))
    rng = score.get("range", [0.0, 1.0])
    if not (isinstance(rng, list) and len(rng) == 2 and all(map(_is_number, rng)) and rng[0] < rng[1]):
        fail("score.range", "must be [low, high], two finite numbers with low < high", rng)

    files = need_dict("files", d.get("files"))
    keys = files_keys()
    for prec, entry in files.items():
        if prec not in PRECISIONS:
            fail("files", f"unknown precision {prec!r} (known: {', '.join(PRECISIONS)})", show=False)
        for backend, name in need_dict(f"files.{prec}", entry, optional=False).items():
            if backend not in keys:
                fail(f"files.{prec}", f"unknown backend {backend!r} (known: {', '.join(keys)})", show=False)
            path = bundle_path(root, name, f"files.{prec}.{backend}")
            if root and not os.path.isfile(path):  # a dangling entry: every user of this form would fail later
                fail(f"files.{prec}.{backend}", f"names {_show(name)}, which is not in the bundle", show=False)

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

    opset = d.get("opset", DEFAULT_OPSET)
    if not _is_int(opset):
        fail("opset", "must be a whole number", opset)
    for key in ("versions", "parity", "calibration", "model_card"):
        need_dict(key, d.get(key))
