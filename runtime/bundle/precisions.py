"""Precisions, each declared once: its name, its export flag and options, its file per backend form, its parity target.

Everything that names a precision reads this table: the bundle contract (``runtime.bundle.manifest``: which ``files``,
``parity`` and ``engines`` keys a bundle may have), the backends (which file a backend form loads), ``python -m
export`` (its flags and ``ExportOptions`` fields, the files it writes and how close to fp32 each must score, the
engines it builds), ``icrt build``, ``icrt triton --tensorrt-accelerator`` and every ``--precision`` choice.

A new precision is one more :class:`Precision` given to :func:`register_precision` (the built-ins are at the end of
this module); export registers the function that writes its files against its name (``icrt.export.precisions``:
the runtime names no export module). Like ultralytics' ``export_formats()`` table: one row per format, read by
everything.

A bundle's ``files`` are keyed by precision, then by backend form (the file a kind of backend loads:
``onnxruntime`` for onnxruntime and OpenVINO, ``tensorrt`` for TensorRT's builder): :func:`forms` are the ones the
precisions declare and those a backend registers (:func:`register_form`).

Standard library only (``icrt`` reads these names at start-up).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from icrt.runtime.base.errors import UserInputError

ONNXRUNTIME = "onnxruntime"  # the backend form every precision has (a CPU-friendly ONNX file)


@dataclass(frozen=True)
class Option:
    """An export option: a ``python -m export`` flag and an ``ExportOptions`` field (``export.options`` declares
    the ones every export has; a precision declares those it brings)."""

    name: str  # the ExportOptions field
    default: Any = None
    type: Callable | None = None  # argparse type (None: text; bool: a switch)
    choices: tuple | None = None
    help: str = ""
    metavar: str | None = None
    flag: str | None = None  # default --name-with-dashes; "": not on the command line

    def __post_init__(self):
        if self.flag is None:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))


@dataclass(frozen=True)
class Precision:
    """One precision of a bundle's model."""

    name: str  # --precision NAME; the key of manifest files / parity / engines entries
    files: Mapping[str, str]  # backend form (a backend's files key) -> the file name in a bundle
    target_srcc: float | None  # export: image-score SRCC vs fp32 ONNX on the check images it must reach (None:
    # fp32 itself, the reference, held to PyTorch per model input instead)
    target_max_diff: float | None = None  # export: the largest per-image |score - fp32 score| allowed (None: no bound)
    help: str = ""  # what the export flag writes
    always: bool = False  # written by every export (fp32), so no flag
    options: tuple[Option, ...] = ()  # export options it brings
    requires: tuple[str, ...] = ()  # options that must be given when it is asked for (e.g. calib_data)

    @property
    def flag(self) -> str | None:
        """Its ``python -m export`` flag (None: always written)."""
        return None if self.always else f"--{self.name}"

    def file(self, form: str = ONNXRUNTIME) -> str:
        """The bundle file that serves the backend form ``form`` (the onnxruntime file when it has no own form)."""
        return self.files.get(form) or self.files[ONNXRUNTIME]

    def export_hint(self) -> str:
        """The export flags that write it (``--int8 --calib-data PATH``), for error messages."""
        opts = {o.name: o for o in self.options}
        needs = [f"{opts[r].flag} {opts[r].metavar or 'VALUE'}" for r in self.requires]
        return " ".join([self.flag or "", *needs]).strip()


_REGISTRY: dict[str, Precision] = {}
_FORMS: dict[str, None] = {}  # forms registered beyond those the precisions declare (a backend's own files)


def register_precision(p: Precision) -> Precision:
    """Add (or replace) the precision ``p.name``."""
    if not p.name.isidentifier() or ONNXRUNTIME not in p.files:
        raise ValueError(f"invalid precision {p.name!r}: a name like fp16 and an {ONNXRUNTIME!r} file are needed")
    _REGISTRY[p.name] = p
    return p


def precisions() -> list[Precision]:
    """Every declared precision, in declaration order (fp32 first)."""
    return list(_REGISTRY.values())


def precision_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_precision(name: str) -> Precision:
    """The declared precision ``name``; UserInputError naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UserInputError(f"unknown precision {name!r} (choose from {', '.join(_REGISTRY)})") from None


def register_form(name: str) -> None:
    """Let bundles name files for the backend form ``name`` (a backend that reads a file of its own registers it)."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"invalid backend form {name!r}")
    _FORMS[name] = None


def forms() -> tuple[str, ...]:
    """The backend forms a manifest's ``files[precision]`` may name, sorted."""
    return tuple(sorted({*_FORMS, *(f for p in _REGISTRY.values() for f in p.files)}))


def export_options() -> list[Option]:
    """The export options every precision brings, each once (``ExportOptions`` fields, ``python -m export`` flags)."""
    seen: dict[str, Option] = {}
    for p in _REGISTRY.values():
        for o in p.options:
            seen.setdefault(o.name, o)
    return list(seen.values())


# --- the built-in precisions ----------------------------------------------------------------------------------

SPLITS = ("all", "train", "val")  # parts of a labelled data set (as training splits it)

register_precision(Precision(
    "fp32", files={ONNXRUNTIME: "model.onnx", "tensorrt": "model.onnx"}, target_srcc=None, always=True,
    help="model.onnx, checked against PyTorch per model input (always written)"))
register_precision(Precision(
    "fp16", files={ONNXRUNTIME: "model.fp16.onnx", "tensorrt": "model.fp16.onnx"}, target_srcc=0.999,
    help="also write model.fp16.onnx (fp16 weights and activations, fp32 scoring tail)"))
register_precision(Precision(
    "int8", files={ONNXRUNTIME: "model.int8.onnx", "tensorrt": "model.int8.qdq.onnx"}, target_srcc=0.99,
    help="also write model.int8.onnx (onnxruntime CPU form) and model.int8.qdq.onnx (TensorRT form), calibrated on "
         "--calib-data", requires=("calib_data",),
    options=(
        Option("calib_data", help="calibration images: labels CSV, IC9600 folder, image folder or list file",
               metavar="IMAGES"),
        Option("calib_images", 256, int, help="calibration images drawn (seeded)", metavar="N"),
        Option("calib_method", "minmax", choices=("minmax", "entropy", "percentile"),
               help="how activation ranges are calibrated"),
        Option("calib_split", "all", choices=SPLITS,
               help="part of a labelled --calib-data to use (train: never the held-out images)"),
        Option("int8_tool", "ort", choices=("ort", "modelopt"),
               help="quantizer of the TensorRT form (modelopt: NVIDIA ModelOpt, optional extra; minmax or entropy)"),
    )))
# bf16 has no file of its own: the fp32 file computed in bfloat16 (8 bits of mantissa, fp32's range), where the
# hardware does it at speed: OpenVINO on CPUs with AMX-BF16 or AVX512-BF16 (runtime.base.hardware.BF16_UNITS),
# TensorRT 10 engines on GPUs (BuilderFlag.BF16). Export measures its parity with OpenVINO on such a CPU.
register_precision(Precision(
    "bf16", files={ONNXRUNTIME: "model.onnx", "tensorrt": "model.onnx"}, target_srcc=0.999, target_max_diff=0.01,
    help="also offer bf16: model.onnx computed in bfloat16 (no file of its own) by OpenVINO on CPUs with AMX-BF16 or "
         "AVX512-BF16 and by TensorRT 10 engines; parity measured with OpenVINO (needs such a CPU)"))
