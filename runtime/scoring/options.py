"""What builds a Scorer, declared once: :class:`ScorerOptions`.

Each field carries its command-line form (flag, metavar, help, the parser of its text, its choices) as metadata, so
``icrt score``, ``icrt batch``, ``icrt serve``, ``icrt bench`` and ``icrt eval`` add the same flags from here
(``icrt.runtime.cli.options.add_scorer_options``) and hand the same object to the library: ``Scorer.open(options)``,
the batch runners (local and Ray), the server's instances, bench. The backends read it by attribute
(``precision``, ``threads``, ``device_id``, ...). A new option is a field here, and the code that uses it: the
Scorer (``scoring/scorer.py``) or a backend (``backends/<name>.py``); nothing in between passes it by name.

Standard library only (the parser is built at every ``icrt`` start).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

MAX_BATCH = 1024  # model inputs per call: beyond this, memory grows with no speed left to gain


def positive_int(text: str) -> int:
    """``text`` as an integer >= 1 (ValueError naming the problem otherwise)."""
    try:
        v = int(text)
    except (TypeError, ValueError):
        v = 0
    if v < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        v = -1
    if v < 0:
        raise ValueError(f"expected an integer >= 0, got {text!r}")
    return v


def batch_size(text: str) -> int:
    v = positive_int(text)
    if v > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH}, got {v}")
    return v


def threads(text: str) -> int:
    """1 .. 4 x the CPUs: more threads than that only add scheduling overhead (5000 took 94 s per image)."""
    v = positive_int(text)
    cap = 4 * (os.cpu_count() or 1)
    if v > cap:
        raise ValueError(f"at most {cap} (4 x the {os.cpu_count()} CPUs), got {v}")
    return v


def _backend_choices() -> tuple[str, ...]:
    from icrt.runtime.backends import backend_choices

    return backend_choices()


def _precision_names() -> tuple[str, ...]:
    from icrt.runtime.bundle.precisions import precision_names

    return precision_names()


def option(default, flags: tuple[str, ...] = (), *, help: str = "", metavar: str | None = None,
           parse: Callable[[str], object] | None = None, choices: Callable[[], tuple] | None = None):
    """A ScorerOptions field and its command-line form (``flags`` empty: set from Python or by a command only)."""
    return dataclasses.field(default=default, metadata={"flags": flags, "help": help, "metavar": metavar,
                                                         "parse": parse, "choices": choices})


@dataclasses.dataclass(frozen=True)
class ScorerOptions:
    """How to open a bundle's model and score with it."""

    model: str | None = option(None, ("-m", "--model"), metavar="BUNDLE",
                               help="model bundle folder (default: the bundled default model)")
    backend: str = option("auto", ("--backend",), choices=_backend_choices, help=(
        "inference backend (default auto: TensorRT engines when the bundle has one for this GPU, else OpenVINO on "
        "CPUs with AVX-512 or AMX where it is installed, else onnxruntime: on the GPU with onnxruntime-gpu, else the "
        "CPU; icrt doctor says what auto picks here)"))
    precision: str = option("fp32", ("--precision",), choices=_precision_names, help=(
        "model precision (default fp32; int8: the fastest on CPUs, most with VNNI/AMX; bf16: the fp32 file computed "
        "in bfloat16 by OpenVINO on CPUs with AMX or AVX512-BF16; fp16: GPUs; icrt info lists the bundle's and what "
        "each costs in accuracy)"))
    batch_size: int | None = option(None, ("--batch-size",), metavar="N", parse=batch_size, help=(
        "model inputs (images or patches, across images) per inference call (default: as many as fit in 64 MB for the "
        "model's input size, at most 32: 1 for the default model; larger values are lowered to what fits in 2 GB)"))
    threads: int | None = option(None, ("--threads",), metavar="N", parse=threads,
                                 help="CPU threads for the inference engine (default: one per physical core)")
    device_id: int = option(0, ("--device-id",), metavar="N", parse=non_negative_int,
                            help="GPU to run on, for TensorRT and onnxruntime-gpu (default 0)")
    workers: int = option(1, help="images decoded ahead of the model, on this many threads (0: on the calling thread)")

    def bundle(self) -> str:
        """The bundle folder: ``model``, else the default bundle (BundleError when none is installed)."""
        if self.model:
            return os.fspath(self.model)
        from icrt.runtime.bundle.defaults import default_bundle

        return default_bundle()

    def replace(self, **changes) -> "ScorerOptions":
        return dataclasses.replace(self, **changes)

    def changed(self) -> dict:
        """The fields set to something other than their default (what a remote scorer cannot honour)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(ScorerOptions)
