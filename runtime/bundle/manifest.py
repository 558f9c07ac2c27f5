"""The bundle contract between ``export`` and ``runtime`` (see docs/bundle.md), in one module.

A bundle is a folder with ``manifest.json`` and the model files it names. This module is the only writer
(:meth:`Manifest.save`, :func:`write_bundle`) and the only reader (:func:`load_manifest`) of that file, and
the one place that names the tensors of a bundle (``INPUT_NAME``, ...); which precisions a bundle may hold and
their file names are the precision table's (``runtime.bundle.precisions``).

The manifest and its sections are plain typed objects (:class:`Manifest`, :class:`ScoreSpec`,
:class:`EngineRecord`, :class:`ParityFigures`, :class:`Calibration`, :class:`ModelCard`), read by attribute.
Each is built from JSON by its ``from_dict``, which checks every field as it reads it (a bundle is untrusted
input: the first bad field is a :class:`BundleError` naming it, ``BUNDLE/manifest.json: FIELD: problem, got
VALUE``); ``to_dict`` writes it back. Keys a section does not know, and known keys stored as ``null``, are kept
in its ``extra``, so a read / write round trip loses nothing. ``files`` maps a precision to ``{backend form:
file name}`` and ``parity`` a precision to its :class:`ParityFigures`. A manifest built in code is checked when
it is saved (:meth:`Manifest.save` reads it back through ``from_dict``).

``sha256`` maps every file the manifest names (model files, engines) to its SHA-256 (:meth:`Manifest.record_checksums`,
called by export and ``icrt build``). The runtime checks a file when it opens it: only that file, each time a bundle is
loaded, and a mismatch (a broken copy to a board, a file replaced by hand) is one ``BundleError`` line. The backends
and ``icrt triton`` read a file once (:meth:`Manifest.read_file`, :meth:`Manifest.model_bytes`), check those bytes and
load or copy the same bytes, so the file checked is the file used even if it is swapped meanwhile. When a manifest has
any ``sha256`` entry it must have one for every file it names: a named file without one is refused (otherwise
deleting one entry would let any file through). Hashing runs at ~1 GB/s here (SHA extensions): 18 ms for the default
model's 16 MB fp32 file against 226 ms to open it in onnxruntime (int8: 13 of 104 ms; all four files 55 ms), so only
the file opened is hashed and no cache of earlier checks (which would have to trust sizes and times that a broken copy
can keep) is kept. A bundle without ``sha256`` entries (older exports) is not checked.

This module imports no numpy, Pillow or onnxruntime (``icrt`` reads these names at start-up).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from icrt.runtime.base.errors import BundleError
from icrt.runtime.base.files import write_json

FORMAT = "icrt-bundle/1"
MANIFEST_FILE = "manifest.json"

# Tensor names of every model in a bundle (the manifest's input.name / outputs.* name them for the runtime).
INPUT_NAME = "image"  # N x 3 x S x S float32, NCHW, dynamic batch
SCORE_OUTPUT = "score"  # [N] or [N, 1], one score per input
LEVELS_OUTPUT = "levels"  # CM-SSA: level probabilities
INPUT_DTYPE = "float32"
INPUT_LAYOUT = "NCHW"

TIMING_CACHE = "timing.*.cache"  # glob of TensorRT timing caches, one per TensorRT version / GPU (timing_cache_file_name)
EXPORT_REPORT = "export-report.json"
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


# --- reading JSON field by field ----------------------------------------------------------------------------------


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


_NO_VALUE = object()


@dataclass
class Where:
    """Where a manifest is read from: the bundle folder (file names resolve inside it) and the file, for messages."""

    root: str = ""

    @property
    def file(self) -> str:
        return os.path.join(self.root, MANIFEST_FILE) if self.root else MANIFEST_FILE

    def fail(self, key: str, problem: str, value=_NO_VALUE):
        raise BundleError(f"{self.file}: {key}: {problem}" + ("" if value is _NO_VALUE else f", got {_show(value)}"))


class Fields:
    """One JSON object of a manifest, read field by field: each read checks the value and names the field
    (``key.name``) when it is wrong. :meth:`extra` is what was not read (and what was stored as ``null``)."""

    def __init__(self, data, key: str, where: Where, optional: bool = True):
        if data is None and optional:
            data = {}
        if not isinstance(data, dict):
            where.fail(key, "must be an object", data)
        self.data, self.key, self.where, self.read = data, key, where, set()

    def name(self, k: str) -> str:
        return f"{self.key}.{k}" if self.key else k

    def fail(self, k: str, problem: str, value=_NO_VALUE):
        self.where.fail(self.name(k), problem, value)

    def get(self, k: str, ok, what: str, default=None, required: bool = False):
        """``data[k]`` when ``ok(value)``; None and absent give ``default`` (or a "missing" error)."""
        self.read.add(k)
        v = self.data.get(k)
        if v is None:
            if required:
                self.fail(k, "missing")
            return default
        if not ok(v):
            self.fail(k, f"must be {what}", v)
        return v

    def text(self, k, default=None, required=False) -> str | None:
        return self.get(k, lambda v: isinstance(v, str) and v != "", "a non-empty string", default, required)

    def whole(self, k, low: int | None = None, default=None) -> int | None:
        what = "a whole number" + (f" >= {low}" if low is not None else "")
        return self.get(k, lambda v: _is_int(v) and (low is None or v >= low), what, default)

    def number(self, k, default=None) -> float | None:
        return self.get(k, _is_number, "a finite number", default)

    def flag(self, k, default=None) -> bool | None:
        return self.get(k, lambda v: isinstance(v, bool), "true or false", default)

    def strings(self, k, default=None) -> list | None:
        v = self.get(k, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings",
                     default)
        return list(v) if v is not None else None

    def object(self, k, default=None) -> dict | None:
        return self.get(k, lambda v: isinstance(v, dict), "an object", default)

    def anything(self, k, default=None):
        """Free-form (a model card's text and figures: shown as they are, never walked into)."""
        self.read.add(k)
        v = self.data.get(k)
        return default if v is None else v

    def file(self, k, required: bool = True) -> str | None:
        """A file name that must resolve inside the bundle (the name, as written)."""
        self.read.add(k)
        if k not in self.data and not required:
            return None
        check_name(self.where.root, self.data.get(k), self.name(k))
        return self.data[k]

    def extra(self) -> dict:
        return {k: v for k, v in self.data.items() if k not in self.read or v is None}


def _plain(v):
    """Sections, dicts and lists as JSON-ready dicts and lists."""
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


class Section:
    """A typed section: its fields (``None``: absent), then ``extra`` (keys it does not know, and nulls)."""

    extra: dict

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "extra")

    def to_dict(self) -> dict:
        d = {k: _plain(v) for k, v in self.extra.items()}
        d.update({k: _plain(getattr(self, k)) for k in self.names() if getattr(self, k) is not None})
        return d


# --- the sections -------------------------------------------------------------------------------------------------


@dataclass
class ScoreSpec(Section):
    """What a score means: its range (scores outside are refused) and its direction, in words."""

    range: tuple = (0.0, 1.0)
    meaning: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d, key: str = "score", where: Where | None = None) -> "ScoreSpec":
        f = Fields(d, key, where or Where())
        rng = f.get("range", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v))
                    and v[0] < v[1], "[low, high], two finite numbers with low < high", [0.0, 1.0])
        meaning = f.get("meaning", lambda v: isinstance(v, str), "a string")
        return cls(tuple(float(v) for v in rng), meaning, f.extra())

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["range"] = list(self.range)
        return d


@dataclass
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
    cleared_builder_flags: list | None = None
    network_flags: list | None = None
    gpu: str | None = None
    timing_cache: str | None = None
    workspace_mb: int | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d, key: str = "engine", where: Where | None = None) -> "EngineRecord":
        from icrt.runtime.bundle.precisions import precision_names

        where = where or Where()
        f = Fields(d, key, where, optional=False)
        names = precision_names()
        precision = f.get("precision", lambda v: v in names, f"one of {', '.join(names)}", required=False)
        if precision is None:
            f.fail("precision", f"must be one of {', '.join(names)}", None)
        file, onnx = f.file("file"), f.file("onnx", required=False)
        version = {}
        for k in ("tensorrt", "compute_capability"):
            v = f.get(k, lambda v: (isinstance(v, str) and v) or _is_number(v), "a version string")
            if v is None:
                f.fail(k, "must be a version string", None)
            version[k] = v
        batches = {k: f.whole(k, low=1) for k in ("min_batch", "opt_batch", "max_batch")}
        given = [v for v in batches.values() if v is not None]
        if given != sorted(given):
            where.fail(key, "needs min_batch <= opt_batch <= max_batch", given)
        return cls(precision, file, onnx, version["tensorrt"], version["compute_capability"], **batches,
                   strongly_typed=f.flag("strongly_typed"), builder_flags=f.strings("builder_flags"),
                   cleared_builder_flags=f.strings("cleared_builder_flags"), network_flags=f.strings("network_flags"),
                   gpu=f.text("gpu"), timing_cache=f.text("timing_cache"), workspace_mb=f.whole("workspace_mb", low=1),
                   extra=f.extra())


FORM_SUFFIX = "_form"  # parity figures of one more file of a precision: "<backend form>_form"


@dataclass
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
    target_max_diff: float | None = None  # the largest per-image |diff| allowed (bf16), when the precision sets one
    meets_target: bool | None = None
    run_on: str | None = None  # how the file was run to measure these figures
    cpu: str | None = None  # the CPU's int8 features then (runtime.base.hardware.describe)
    forms: dict = field(default_factory=dict)  # backend form -> ParityFigures of that form's own file
    extra: dict = field(default_factory=dict)

    NUMBERS = ("srcc", "max_abs_diff", "mean_abs_diff", "label_srcc", "label_plcc", "label_srcc_drop",
               "input_max_abs_diff", "tolerance", "target_srcc", "target_max_diff")

    @classmethod
    def from_dict(cls, d, key: str = "parity", where: Where | None = None) -> "ParityFigures":
        where = where or Where()
        f = Fields(d, key, where, optional=False)
        forms = {}
        for k, v in f.data.items():
            if k.endswith(FORM_SUFFIX) and isinstance(v, dict):
                f.read.add(k)
                forms[k[:-len(FORM_SUFFIX)]] = cls.from_dict(v, f.name(k), where)
        return cls(n=f.whole("n", low=0), **{k: f.number(k) for k in cls.NUMBERS},
                   reference=f.text("reference"), passed=f.flag("passed"), file=f.text("file"),
                   meets_target=f.flag("meets_target"), run_on=f.text("run_on"), cpu=f.text("cpu"), forms=forms,
                   extra=f.extra())

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.pop("forms", None)
        d.update({f"{form}{FORM_SUFFIX}": figs.to_dict() for form, figs in self.forms.items()})
        return d


@dataclass
class Calibration(Section):
    """How the int8 files were calibrated."""

    method: str | None = None
    images: int | None = None
    inputs: int | None = None  # model inputs (patches)
    data: str | None = None
    split: str | None = None  # all | train | val
    split_rule: dict | None = None
    tool: str | None = None
    forms: dict | None = None  # backend form -> activation / weight types, op types, file
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d, key: str = "calibration", where: Where | None = None) -> "Calibration":
        f = Fields(d, key, where or Where())
        return cls(f.text("method"), f.whole("images", low=0), f.whole("inputs", low=0), f.text("data"),
                   f.text("split"), f.object("split_rule"), f.text("tool"), f.object("forms"), f.extra())


@dataclass
class ModelCard(Section):
    """Free text and figures for ``icrt info`` (shown as they are, whatever their shape); anything else a card
    holds stays in ``extra``."""

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

    @classmethod
    def from_dict(cls, d, key: str = "model_card", where: Where | None = None) -> "ModelCard":
        f = Fields(d, key, where or Where())
        return cls(**{k: f.anything(k) for k in cls.names()}, extra=f.extra())

    def update(self, values: dict) -> None:
        """Set the card's fields named in ``values``; other names go to ``extra`` (a card may hold any text)."""
        for k, v in values.items():
            if k in self.names():
                setattr(self, k, v)
            else:
                self.extra[k] = v


# --- preprocessing and tensors ------------------------------------------------------------------------------------


def _preprocessing(d, where: Where):
    """The ``preprocessing`` section as ``runtime.scoring.preprocess.Preprocessing``, every field checked."""
    from icrt.runtime.bundle.preprocessing import DRAFT_RANGE, INTERPOLATIONS, RESIZE_POLICIES, Preprocessing

    if d is None:
        where.fail("preprocessing", "missing")
    f = Fields(d, "preprocessing", where, optional=False)
    p = {**Preprocessing().to_dict(), **d}
    if p["resize"] not in RESIZE_POLICIES:
        f.fail("resize", "must be 'square' or 'patches'", p["resize"])
    size = p["size"]
    if not _is_int(size) or not MIN_SIZE <= size <= MAX_SIZE:
        f.fail("size", f"must be a whole number of pixels in [{MIN_SIZE}, {MAX_SIZE}]", size)
    # checked as the float32 values the runtime computes with: a std of 1e-50 is 0 in float32 (every input
    # infinite), one of 1e300 overflows; a sane normalisation divides pixels in [0, 1] by 0.001 .. 10
    for key, ok, what in (("mean", lambda v: 0 <= v <= 1, "3 numbers in [0, 1]"),
                          ("std", lambda v: STD_RANGE[0] <= v <= STD_RANGE[1],
                           f"3 numbers in [{STD_RANGE[0]:g}, {STD_RANGE[1]:g}]")):
        v = p[key]
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(x) and ok(_as_float32(x)) for x in v)):
            f.fail(key, f"must be {what} (as float32)", v)
    if p["interpolation"] not in INTERPOLATIONS:
        f.fail("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}", p["interpolation"])
    stride = p["stride"]
    low = -(-size // STRIDE_DIVISOR) if p["resize"] == "patches" else 1  # stride 1: ~size^2 times the work
    if not _is_int(stride) or stride < low or (p["resize"] == "patches" and stride > size):
        f.fail("stride", f"must be a whole number in [{low}, size = {size}]"
               + (f" (at least size / {STRIDE_DIVISOR}: patches overlap at most {STRIDE_DIVISOR}-fold each way)"
                  if low > 1 else ""), stride)
    cap = p["max_long_side"]
    if cap is not None and (not _is_int(cap) or cap < size):
        f.fail("max_long_side", f"must be null or a whole number >= size ({size})", cap)
    if p["pool"] != "mean":
        f.fail("pool", "must be 'mean'", p["pool"])
    draft = p.get("draft", 1.0)
    if not _is_number(draft) or not DRAFT_RANGE[0] <= draft <= DRAFT_RANGE[1]:
        f.fail("draft", f"must be a number in [{DRAFT_RANGE[0]}, {DRAFT_RANGE[1]}]", draft)
    return Preprocessing.from_dict(p)


def _files(d, where: Where) -> dict:
    """``files``: precision -> {backend form: file name}, every precision declared, every form a declared one
    (``precisions.forms``), every name inside the bundle."""
    from icrt.runtime.bundle.precisions import forms, precision_names

    f = Fields(d, "files", where)
    keys, names, out = forms(), precision_names(), {}
    for prec, entry in f.data.items():
        if prec not in names:
            where.fail("files", f"unknown precision {prec!r} (known: {', '.join(names)})")
        forms = Fields(entry, f"files.{prec}", where, optional=False)
        for form in forms.data:
            if form not in keys:
                where.fail(f"files.{prec}", f"unknown backend {form!r} (known: {', '.join(keys)})")
        out[prec] = {form: forms.file(form) for form in forms.data}
        for form, name in out[prec].items():
            if where.root and not os.path.isfile(os.path.join(where.root, name)):
                # a dangling entry: every user of this form would fail later
                where.fail(f"files.{prec}.{form}", f"names {_show(name)}, which is not in the bundle")
    return out


# --- the manifest -------------------------------------------------------------------------------------------------

KNOWN_KEYS = ("format", "kind", "name", "version", "input", "outputs", "preprocessing", "score", "files", "engines", "opset",
              "versions", "parity", "calibration", "model_card", "sha256")
SHA256 = re.compile(r"[0-9a-f]{64}")


def file_sha256(path: str) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksums(d, where: Where) -> dict:
    """``sha256``: file name (inside the bundle) -> 64 lowercase hex digits."""
    f = Fields(d, "sha256", where)
    out = {}
    for name, digest in f.data.items():
        check_name(where.root, name, f"sha256 key {name!r}")
        if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            f.fail(name, "must be 64 lowercase hex digits", digest)
        out[name] = digest
    return out


@dataclass
class Manifest:
    kind: str  # a train.kinds name: d2s | cmssa
    name: str
    preprocessing: Any  # runtime.scoring.preprocess.Preprocessing
    version: str | None = None  # the model's version (python -m export --version)
    input_name: str = INPUT_NAME
    score_output: str = SCORE_OUTPUT
    level_output: str | None = None  # CM-SSA: level probabilities
    score: ScoreSpec = field(default_factory=lambda: ScoreSpec.from_dict(DEFAULT_SCORE))
    files: dict = field(default_factory=dict)  # precision -> {backend form: file name}
    engines: list = field(default_factory=list)  # [EngineRecord]
    opset: int = DEFAULT_OPSET
    versions: dict = field(default_factory=dict)  # library -> version it was exported with
    parity: dict = field(default_factory=dict)  # precision -> ParityFigures
    calibration: Calibration = field(default_factory=Calibration)
    model_card: ModelCard = field(default_factory=ModelCard)
    sha256: dict = field(default_factory=dict)  # file name -> SHA-256 of every file named above
    root: str = ""  # the bundle folder (not stored)
    extra: dict = field(default_factory=dict)  # top-level keys this version does not know (kept)
    checked: set = field(default_factory=set, repr=False, compare=False)  # paths whose SHA-256 matched (not stored)

    @property
    def score_range(self) -> tuple[float, float]:
        return self.score.range

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    @property
    def input_shape(self) -> list:
        return [None, 3, self.input_size, self.input_size]

    def precisions(self) -> list[str]:
        """The precisions this bundle has files for, in the precision table's order."""
        from icrt.runtime.bundle.precisions import precision_names

        return [p for p in precision_names() if self.files.get(p)]

    def file_name(self, precision: str, form: str = "onnxruntime") -> str | None:
        """The file name serving ``precision`` for the backend form ``form`` (None: not in the bundle)."""
        return (self.files.get(precision) or {}).get(form)

    def add_file(self, precision: str, form: str, name: str) -> None:
        self.files.setdefault(precision, {})[form] = name

    def engines_for(self, precision: str) -> list[EngineRecord]:
        return [e for e in self.engines if e.precision == precision]

    def file_for(self, precision: str, backend: str = "onnxruntime") -> str:
        """Path of the file serving ``precision`` for the backend form ``backend`` (falls back to the
        onnxruntime file); BundleError when the bundle has none, it is missing or it is not the file recorded."""
        name, path = self._file_of(precision, backend)
        self.check_file(name)
        return path

    def model_bytes(self, precision: str, backend: str = "onnxruntime") -> tuple[str, bytes]:
        """(path, bytes) of the file serving ``precision`` for ``backend`` (as :meth:`file_for`), read once and checked:
        a backend loads these bytes, so the file checked is the file run."""
        return self.model_file(precision, backend)[:2]

    def model_file(self, precision: str, backend: str = "onnxruntime") -> tuple[str, bytes, str]:
        """:meth:`model_bytes` and the SHA-256 of those bytes (the recorded one they were checked against, else
        computed once): what a backend keys its caches by, without hashing the file again."""
        name, path = self._file_of(precision, backend)
        data = self.read_file(name)
        return path, data, self._digest_of(name) or hashlib.sha256(data).hexdigest()

    def _file_of(self, precision: str, backend: str) -> tuple[str, str]:
        if not self.files.get(precision):
            raise BundleError(f"{self.root}: no {precision} model in this bundle (has: {', '.join(self.precisions())})")
        name = self.file_name(precision, backend) or self.file_name(precision, "onnxruntime")
        if not name:
            raise BundleError(f"{self.root}: no {precision} model for {backend} in this bundle")
        path = self.path(name, f"files.{precision}.{backend}")
        if not os.path.isfile(path):
            raise BundleError(f"{self.root}: manifest names {name} for {precision}/{backend}, but the file is missing")
        return name, path

    def named_files(self) -> list[str]:
        """Every file this manifest names: the model files of each precision and form, then the engines."""
        names = [n for p in self.precisions() for n in self.files[p].values()] + [e.file for e in self.engines]
        return list(dict.fromkeys(names))

    def record_checksums(self, names=None) -> dict:
        """Record the SHA-256 of ``names`` (default: every named file in the bundle); entries of files the manifest
        no longer names are dropped. The new ``sha256``."""
        named = self.named_files()
        sums = {k: v for k, v in self.sha256.items() if k in named} if names is not None else {}
        for name in named if names is None else names:
            path = self.path(name)
            if os.path.isfile(path):
                sums[name] = file_sha256(path)
        self.sha256 = sums
        self.checked = set()
        return sums

    def _digest_of(self, name: str) -> str | None:
        """The recorded SHA-256 of ``name`` (None: this manifest records none at all); BundleError for a named file
        left out of a table that has entries (deleting an entry must not let any file through)."""
        want = self.sha256.get(name)
        if want is None and self.sha256:
            raise BundleError(f"{self.path(name)}: the manifest records the SHA-256 of its other files but not of this "
                              "one: refused (a file without its digest could be any file); copy or export the bundle "
                              "again")
        return want

    def _mismatch(self, path: str, got: str, want: str) -> BundleError:
        return BundleError(f"{path}: SHA-256 {got[:12]}... is not the manifest's {want[:12]}...: the file is damaged or "
                           "was changed (a broken copy?); copy the bundle again")

    def check_file(self, name: str) -> None:
        """BundleError (one line) unless the named file's SHA-256 is the manifest's (no entries at all: nothing to
        check). A file that matched is not hashed again by this manifest object. To load a file, use
        :meth:`read_file`: it checks the bytes it returns."""
        want = self._digest_of(name)
        if want is None:
            return
        path = self.path(name)
        if path in self.checked:
            return
        try:
            got = file_sha256(path)
        except OSError as e:
            raise BundleError(f"{path}: cannot read it to check its SHA-256 ({e.strerror or e})") from None
        if got != want:
            raise self._mismatch(path, got, want)
        self.checked.add(path)

    def read_file(self, name: str, key: str = "file") -> bytes:
        """The bytes of the named file, read once and checked against its SHA-256 (BundleError, one line, when they
        are not the recorded file's). What is checked is what the caller gets: check and load are one read."""
        path = self.path(name, key)
        want = self._digest_of(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BundleError(f"{path}: cannot read it ({e.strerror or e})") from None
        except MemoryError:
            raise BundleError(f"{path}: not enough memory to read it ({os.path.getsize(path)} bytes)") from None
        if want is not None:
            got = hashlib.sha256(data).hexdigest()
            if got != want:
                raise self._mismatch(path, got, want)
        return data

    def verify_files(self) -> str | None:
        """Check every file with a ``sha256`` entry, and that every named file has one when any has; the first
        problem (one line), or None when all match."""
        try:
            for name in self.sha256:
                if not os.path.isfile(self.path(name)):
                    return f"{self.path(name)}: missing (the manifest records its SHA-256)"
                self.check_file(name)
            for name in self.named_files():
                self._digest_of(name)
        except BundleError as e:
            return str(e)
        return None

    def path(self, name: str, key: str = "file") -> str:
        """The path of a file the manifest names (root joined); BundleError unless it lies inside the bundle."""
        return check_name(self.root, name, key)

    def to_dict(self) -> dict:
        d = {k: _plain(v) for k, v in self.extra.items()}
        d.update({
            "format": FORMAT, "kind": self.kind, "name": self.name, **({"version": self.version} if self.version else {}),
            "input": {"name": self.input_name, "shape": self.input_shape, "dtype": INPUT_DTYPE, "layout": INPUT_LAYOUT},
            "outputs": {"score": self.score_output, "levels": self.level_output},
            "preprocessing": self.preprocessing.to_dict(), "score": self.score.to_dict(), "files": _plain(self.files),
            "engines": _plain(self.engines), "opset": self.opset, "versions": _plain(self.versions),
            "parity": _plain(self.parity), "calibration": self.calibration.to_dict(),
            "model_card": self.model_card.to_dict(), **({"sha256": dict(self.sha256)} if self.sha256 else {}),
        })
        return d

    @classmethod
    def from_dict(cls, d, root: str = "") -> "Manifest":
        """The manifest of the JSON object ``d`` of the bundle folder ``root``, every field checked as it is read
        (BundleError on the first bad one)."""
        where = Where(root)
        if not isinstance(d, dict):
            raise BundleError(f"{where.file}: must be a JSON object, got {type(d).__name__}")
        top = Fields(d, "", where)
        if top.get("format", lambda v: v == FORMAT, repr(FORMAT)) is None:
            where.fail("format", f"must be {FORMAT!r}", None)
        kind = top.text("kind", required=True)
        name = top.text("name", default=kind)
        inp, outputs = Fields(d.get("input"), "input", where), Fields(d.get("outputs"), "outputs", where)
        top.read.update(("input", "outputs"))
        input_name = inp.text("name", default=INPUT_NAME)
        score_output = outputs.get("score", lambda v: isinstance(v, str) and v, "a non-empty string",
                                   default=SCORE_OUTPUT if "score" not in outputs.data else None)
        if score_output is None:
            outputs.fail("score", "must be a non-empty string", None)
        level_output = outputs.text("levels")
        top.read.add("preprocessing")
        prep = _preprocessing(d.get("preprocessing"), where)
        _input_checks(inp, prep.size)
        top.read.update(("score", "files", "engines", "parity", "sha256"))
        score = ScoreSpec.from_dict(d.get("score"), "score", where)
        files = _files(d.get("files"), where)
        engines = d.get("engines") or []
        if not isinstance(engines, list):
            where.fail("engines", "must be a list", engines)
        engines = [EngineRecord.from_dict(e, f"engines[{i}]", where) for i, e in enumerate(engines)]
        parity = {k: ParityFigures.from_dict(v, f"parity.{k}", where)
                  for k, v in Fields(d.get("parity"), "parity", where).data.items()}
        return cls(kind=kind, name=name, version=top.text("version"), preprocessing=prep, input_name=input_name,
                   score_output=score_output,
                   level_output=level_output, score=score, files=files, engines=engines,
                   opset=top.whole("opset", default=DEFAULT_OPSET), versions=top.object("versions", default={}),
                   parity=parity, calibration=Calibration.from_dict(top.object("calibration"), where=where),
                   model_card=ModelCard.from_dict(top.object("model_card"), where=where),
                   sha256=_checksums(d.get("sha256"), where), root=root,
                   extra={k: v for k, v in d.items() if k not in KNOWN_KEYS})

    def validate(self) -> None:
        """BundleError naming the field for anything the runtime could not use safely (the checks of
        :meth:`from_dict`, on what this manifest would write)."""
        Manifest.from_dict(json.loads(json.dumps(self.to_dict())), self.root)

    def save(self, root: str | None = None) -> str:
        """Check, then write ``ROOT/manifest.json`` atomically (the folder is made when missing); its path."""
        root = root or self.root
        d = self.to_dict()
        Manifest.from_dict(json.loads(json.dumps(d)), root)
        os.makedirs(root or os.curdir, exist_ok=True)
        path = os.path.join(root, MANIFEST_FILE)
        write_json(path, d)
        self.root = root
        return path


def _input_checks(inp: Fields, size: int) -> None:
    """``input.shape`` / ``dtype`` / ``layout``: optional (older bundles), but when written they must match the
    preprocessing."""
    shape = inp.anything("shape")
    if shape is not None:
        batch = shape[0] if isinstance(shape, list) and shape else None
        if not (isinstance(shape, list) and len(shape) == 4 and (batch is None or (_is_int(batch) and batch >= 1))
                and all(_is_int(v) for v in shape[1:]) and shape[1:] == [3, size, size]):
            inp.fail("shape", f"must be [null or batch, 3, {size}, {size}] (preprocessing.size {size})", shape)
    for k, want in (("dtype", INPUT_DTYPE), ("layout", INPUT_LAYOUT)):
        if k in inp.data and inp.anything(k) != want:
            inp.fail(k, f"must be {want!r}", inp.data[k])


def write_bundle(folder: str, manifest: Manifest) -> str:
    """Write ``manifest`` into the bundle ``folder`` (made when missing; the model files are the caller's);
    the folder. For code that builds bundles outside ``export`` (tests, benchmarks)."""
    manifest.save(folder)
    return folder


def manifest_path(bundle: str) -> str:
    """``bundle``/manifest.json for a folder; a path to a manifest file as it is."""
    return os.path.join(bundle, MANIFEST_FILE) if os.path.isdir(bundle) else bundle


def load_manifest(bundle: str) -> Manifest:
    """Read and check the manifest of the bundle folder ``bundle`` (or of a manifest.json path)."""
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


def check_name(root: str, name, key: str = "file") -> str:
    """``root``/``name``, or BundleError unless ``name`` is a relative name that resolves inside ``root``."""
    where = Where(root)
    if not isinstance(name, str) or not name or "\0" in name:
        where.fail(key, "must be a file name", name)
    if os.path.isabs(name):
        raise BundleError(f"{where.file}: {key}: {_show(name)} is outside the bundle (an absolute path)")
    if not root:  # no folder to resolve against: refuse names that climb out of it
        if os.path.normpath(name).split(os.sep)[0] == os.pardir:
            raise BundleError(f"{where.file}: {key}: {_show(name)} points outside the bundle")
        return name
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, name))  # symbolic links resolved
    if real == base or os.path.commonpath([base, real]) != base:
        raise BundleError(f"{where.file}: {key}: {_show(name)} resolves outside the bundle ({real})")
    return os.path.join(root, name)
