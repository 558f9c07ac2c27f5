"""The options ``icrt`` commands share, each declared once: its flags, its type (the one check of its value) and
its help. A bad value is argparse's one usage error (exit 2).

Light: the standard library, the backend registry (no backend library is loaded) and the precision table.
"""
from __future__ import annotations

import argparse
import os

MAX_BATCH = 1024  # model inputs per call: beyond this, memory grows with no speed left to gain


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def positive_number(kind=float):
    """An argparse type: a number of ``kind`` above 0."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = 0
        if not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return v
    return parse


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def csv_list(kind=str):
    """An argparse type: a comma-separated list of ``kind`` (empty items dropped; at least one)."""
    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return values
    return parse


def batch_size(text: str) -> int:
    v = positive_int(text)
    if v > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"at most {MAX_BATCH}, got {v}")
    return v


def threads(text: str) -> int:
    """1 .. 4 x the CPUs: more threads than that only add scheduling overhead (5000 took 94 s per image)."""
    v = positive_int(text)
    cap = 4 * (os.cpu_count() or 1)
    if v > cap:
        raise argparse.ArgumentTypeError(f"at most {cap} (4 x the {os.cpu_count()} CPUs), got {v}")
    return v


def examples(*lines: tuple[str, str]) -> dict:
    """``add_parser`` keywords for a command's ``--help`` epilog: (command line, what it does) pairs, kept as written."""
    width = max(len(cmd) for cmd, _ in lines)
    text = "examples:\n" + "\n".join(f"  {cmd:<{width}}  {what}".rstrip() for cmd, what in lines)
    return {"epilog": text, "formatter_class": argparse.RawDescriptionHelpFormatter}


# --- the options ------------------------------------------------------------------------------------------------


def add_model(p, help: str = "model bundle folder (default: the bundled default model)") -> None:
    p.add_argument("-m", "--model", metavar="BUNDLE", help=help)


def bundle(args) -> str:
    """The bundle ``-m`` names, else the default bundle (``runtime.bundle.defaults``)."""
    from icrt.runtime.bundle.defaults import default_bundle

    return args.model or default_bundle()


def add_backend(p, many: bool = False) -> None:
    from icrt.runtime.backends import backend_choices

    choices = backend_choices()
    what = ("auto: TensorRT engines when the bundle has one for this GPU, else onnxruntime (on the GPU with "
            "onnxruntime-gpu, else the CPU)")
    if many:
        p.add_argument("--backend", type=csv_list(), default=["auto"], metavar="|".join(choices) + "[,...]",
                       help=f"backends to time, comma-separated (default auto; {what})")
    else:
        p.add_argument("--backend", choices=choices, default="auto", help=f"inference backend (default {what})")


def add_precision(p, many: bool = False, help: str | None = None) -> None:
    from icrt.runtime.bundle.precisions import precision_names

    names = precision_names()
    if many:
        p.add_argument("--precision", type=csv_list(), default=None, metavar=",".join(names),
                       help=help or "precisions, comma-separated (default: every precision in the bundle)")
    else:
        p.add_argument("--precision", choices=names, default="fp32", help=help or (
            "model precision (default fp32; int8: faster on CPUs with VNNI/AMX, fp16: GPUs; icrt info lists the "
            "bundle's and what each costs in accuracy)"))


def check_choices(values, choices, flag: str) -> None:
    """UserInputError for a value of a comma-separated ``flag`` that is not one of ``choices``."""
    from icrt.runtime.base.errors import UserInputError

    bad = [v for v in values if v not in choices]
    if bad:
        raise UserInputError(f"{flag} {', '.join(map(str, bad))}: choose from {', '.join(choices)}")


def add_threads(p, help: str = "CPU threads for onnxruntime") -> None:
    p.add_argument("--threads", type=threads, default=None, metavar="N", help=help)


def add_batch_size(p, help: str = "model inputs (images or patches, across images) per inference call (default: as "
                                  "many as fit in 64 MB for the model's input size, at most 32: 1 for the default "
                                  "model; larger values are lowered to what fits in 2 GB)") -> None:
    p.add_argument("--batch-size", type=batch_size, default=None, metavar="N", help=help)


def add_inputs(p, what: str = "image files, folders or glob patterns") -> None:
    """PATHs, ``--recursive``, ``--files-from LIST`` and ``--shard I/N`` (``runtime.worklist``)."""
    from icrt.runtime.scoring.worklist import shard_arg

    p.add_argument("paths", nargs="*", metavar="PATH", help=what)
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    p.add_argument("--files-from", metavar="LIST", help="also score the files named in LIST, one path a line "
                   "(taken literally: no globs, no folder listing; - reads standard input)")
    p.add_argument("--shard", type=shard_arg, default=None, metavar="I/N",
                   help="score only shard I of N (counted from 0): a stable split by a hash of the path")


def add_serving(p, max_batch: int = 32) -> None:
    """What ``icrt serve`` and ``icrt triton`` share: the model name, its batching and its instances (checked by
    ``runtime.serving.limits``, one line each)."""
    from icrt.runtime.serving.limits import DEFAULT_MODEL_NAME, MAX_INSTANCES

    p.add_argument("--name", default=DEFAULT_MODEL_NAME, help=f"model name clients call (default {DEFAULT_MODEL_NAME})")
    p.add_argument("--max-batch", type=int, default=max_batch, metavar="N",
                   help=f"images per batch Triton hands to the model (default {max_batch})")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="US",
                   help="how long Triton holds a request to batch it with others (default 2000)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help=f"model instances scoring batches in parallel (default 1, at most {MAX_INSTANCES})")
