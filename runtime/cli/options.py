"""The command-line form of the options ``icrt`` commands share: the Scorer's options from their one declaration
(``icrt.runtime.scoring.options.ScorerOptions``: :func:`add_scorer_options`, :func:`scorer_options`), the inputs
(``icrt.runtime.scoring.inputs.InputOptions``: :func:`add_inputs`, :func:`input_options`), serving's, and the argparse
types of the other flags. A bad value is argparse's one usage error (exit 2).

Light: the standard library, the backend registry (no backend library is loaded) and the precision table.
"""
from __future__ import annotations

import argparse

import icrt.runtime.scoring.options as declared
from icrt.runtime.scoring.inputs import InputOptions
from icrt.runtime.scoring.options import ScorerOptions


def argtype(parse):
    """An argparse ``type`` from a parser that raises ValueError with its reason (the message argparse prints)."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


positive_int = argtype(declared.positive_int)


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
        except (ValueError, argparse.ArgumentTypeError):
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return values
    return parse


# --- the Scorer's options, from their declaration ------------------------------------------------------------------

def add_scorer_options(p, only=None, help: dict | None = None, many=(), exclude=()) -> None:
    """The flags of the ScorerOptions fields (declared in ``icrt.runtime.scoring.options``): every field that has a
    flag, so a new option reaches every command that builds a Scorer; ``only``: just these (a command that opens no
    Scorer but shares a flag, e.g. ``icrt build --precision``); ``exclude``: all but these (a flag the command has
    in another form); ``help``: another help text for some (what the flag
    means for this command); ``many``: fields taken as comma-separated lists (``icrt bench --backend
    onnxruntime,openvino``), checked against their choices by :func:`check_choices`."""
    help = help or {}
    fields = {f.name: f for f in declared.fields() if f.metadata["flags"]}
    for name in (only or [f for f in fields if f not in exclude]):
        f = fields[name]
        meta = f.metadata
        kw = {"dest": name, "help": help.get(name, meta["help"]), "metavar": meta["metavar"]}
        choices = meta["choices"]() if meta["choices"] else None
        if name in many:
            kw.update(type=csv_list(argtype(meta["parse"]) if meta["parse"] else str), default=None,
                      metavar=(",".join(choices) if choices else (meta["metavar"] or name.upper())) + "[,...]")
        else:
            kw.update(default=f.default, choices=choices)
            if meta["parse"]:
                kw["type"] = argtype(meta["parse"])
        p.add_argument(*meta["flags"], **kw)


def scorer_options(args, **changes) -> ScorerOptions:
    """The ScorerOptions of parsed arguments (the fields the command declared; the others keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in declared.fields() if f.metadata["flags"] and hasattr(args, f.name)}
    return ScorerOptions(**{**given, **changes})


def bundle(args) -> str:
    """The bundle ``-m`` names, else the default bundle (``icrt.runtime.bundle.defaults``)."""
    return ScorerOptions(model=getattr(args, "model", None)).bundle()


def check_choices(values, choices, flag: str) -> None:
    """UserInputError for a value of a comma-separated ``flag`` that is not one of ``choices``."""
    from icrt.runtime.base.errors import UserInputError

    bad = [v for v in values if v not in choices]
    if bad:
        raise UserInputError(f"{flag} {', '.join(map(str, bad))}: choose from {', '.join(choices)}")


# --- inputs ---------------------------------------------------------------------------------------------------------


def shard_arg(text: str) -> tuple[int, int]:
    """argparse ``type`` for ``--shard I/N``."""
    from icrt.runtime.scoring.inputs import parse_shard

    return argtype(parse_shard)(text)


def add_inputs(p, what: str = "image files, folders or glob patterns") -> None:
    """PATHs, ``--recursive``, ``--files-from LIST`` and ``--shard I/N`` (``icrt.runtime.scoring.inputs``)."""
    p.add_argument("paths", nargs="*", metavar="PATH", help=what)
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    p.add_argument("--files-from", metavar="LIST", help="also score the files named in LIST, one path a line "
                   "(taken literally: no globs, no folder listing; - reads standard input)")
    p.add_argument("--shard", type=shard_arg, default=None, metavar="I/N",
                   help="score only shard I of N (counted from 0): a stable split by a hash of the path")


def input_options(args, uris: bool = False) -> InputOptions:
    return InputOptions(paths=tuple(args.paths), recursive=args.recursive, files_from=args.files_from,
                        shard=args.shard, uris=uris)


# --- serving --------------------------------------------------------------------------------------------------------


def add_serving(p, max_batch: int = 32) -> None:
    """What ``icrt serve`` and ``icrt triton`` share: the model name, its batching and its instances (checked by
    ``icrt.runtime.serving.limits``, one line each)."""
    from icrt.runtime.serving.limits import DEFAULT_MODEL_NAME, MAX_INSTANCES

    p.add_argument("--name", default=DEFAULT_MODEL_NAME, help=f"model name clients call (default {DEFAULT_MODEL_NAME})")
    p.add_argument("--max-batch", type=int, default=max_batch, metavar="N",
                   help=f"images per batch Triton hands to the model (default {max_batch})")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="US",
                   help="how long Triton holds a request to batch it with others (default 2000)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help=f"model instances scoring batches in parallel (default 1, at most {MAX_INSTANCES})")
