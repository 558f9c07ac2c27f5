"""``ExportOptions``, declared once: the options every export has (:data:`COMMON`), then one switch per precision
besides fp32 and the options each precision brings (``runtime.bundle.precisions``). ``python -m export`` builds its flags
from the same declarations (:func:`add_arguments`), so a default lives in one place.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from icrt.runtime.bundle.precisions import SPLITS, Option, export_options, get_precision, precisions

FP32_TOLERANCE = 1e-4  # max |score difference| per model input, onnxruntime fp32 vs PyTorch
EXPORTERS = ("torchscript", "dynamo")

COMMON = (
    Option("name", None, help="the model's name in the bundle (default: KIND-BACKBONE, e.g. d2s-resnet18)",
           metavar="NAME"),
    Option("version", None, help="the model's version, recorded in the bundle and shown by icrt info",
           metavar="VERSION"),
    Option("card", None, help="a JSON model card: what the model is (summary), what it was trained on "
           "(training_data), licence, limits, score_meaning, ... (docs/bundle.md, shipped in icrt/docs); icrt info "
           "shows it first",
           metavar="FILE"),
    Option("check_data", help="images to check parity on (default: the calibration images, else generated ones)",
           metavar="PATH"),
    Option("check_split", "all", choices=SPLITS, help="part of a labelled --check-data to use"),
    Option("check_images", None, int, help="at most this many check images", metavar="N"),
    Option("val_fraction", 0.2, float, help="held-out share of a labelled set's split (as training)"),
    Option("split_seed", 42, int, help="seed of the split (as training)"),
    Option("trt", False, bool, help="build TensorRT engines for this machine's GPU (needs tensorrt and a GPU)"),
    Option("max_batch", 64, int, help="TensorRT profile max batch", metavar="N"),
    Option("workspace_mb", 4096, int, help="TensorRT workspace limit, MB", metavar="MB", flag="--workspace"),
    Option("opset", 17, int, help="ONNX opset (at least 17)"),
    Option("exporter", "torchscript", choices=EXPORTERS, help="torch.onnx exporter"),
    Option("tolerance", FP32_TOLERANCE, float, flag="",
           help="fp32 ONNX vs PyTorch: largest |score difference| per model input"),
)


def _switches() -> list[Option]:
    """One ``--NAME`` switch per precision export writes on request (fp32 is always written)."""
    return [Option(p.name, False, bool, help=p.help, flag=p.flag) for p in precisions() if p.flag]


def options() -> list[Option]:
    """Every export option, in ``python -m export --help`` order: precision switches, their options, the rest."""
    return [*_switches(), *export_options(), *COMMON]


def _precisions(self) -> list[str]:
    """The precisions asked for besides fp32, in the precision table's order."""
    return [p.name for p in precisions() if p.flag and getattr(self, p.name)]


ExportOptions = dataclasses.make_dataclass(
    "ExportOptions", [(o.name, Any, dataclasses.field(default=o.default, metadata={"option": o})) for o in options()],
    namespace={"precisions": _precisions, "__module__": __name__,
               "__doc__": "What ``python -m export`` does besides writing fp32 (the fields: :func:`options`)."})


def add_arguments(parser) -> None:
    """The flags of every command-line option, each with the default of its ``ExportOptions`` field."""
    for o in options():
        if not o.flag:
            continue
        if o.type is bool:
            parser.add_argument(o.flag, dest=o.name, action="store_true", help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.name, type=o.type, default=o.default, choices=o.choices,
                                metavar=o.metavar, help=o.help + (f" (default: {o.default})" if o.default is not None
                                                                   else ""))


def from_args(args) -> "ExportOptions":
    return ExportOptions(**{o.name: getattr(args, o.name) for o in options() if o.flag})


def check(o) -> None:
    """ExportError for options that cannot work, before anything slow runs: a value outside its choices, a
    precision without what it requires (``--int8`` without ``--calib-data``), what its builder refuses."""
    from icrt.export.builders import builder
    from icrt.export.errors import ExportError

    for opt in options():
        value = getattr(o, opt.name)
        if opt.choices and value not in opt.choices:
            raise ExportError(f"unknown {opt.flag or opt.name} {value!r} ({'|'.join(opt.choices)})")
    for name in o.precisions():
        p = get_precision(name)
        by_name = {opt.name: opt for opt in p.options}
        for r in p.requires:
            if getattr(o, r) in (None, ""):
                raise ExportError(f"{p.flag} needs {by_name[r].flag} ({by_name[r].help})")
        check_options = builder(name).check
        if check_options is not None:
            check_options(o)
