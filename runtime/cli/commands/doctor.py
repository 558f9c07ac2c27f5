"""``icrt doctor [--json] [--timeout S]``: what this machine can do with icrt (``runtime.tools.doctor``): Python, numpy,
onnxruntime and its providers, OpenVINO, TensorRT and the CUDA bindings (each imported in a child process, so a broken
or hanging one is a problem line), the GPU, the CPU's int8 features, what ``auto`` picks for the default model and
why, the model cache, PyTriton, Ray, pyarrow, the optional libraries, a Jetson's power mode, the default model's
checksums. Exit 0 when no problem was found, 1 otherwise."""
from __future__ import annotations

import sys

from icrt.runtime.base.errors import EXIT_FAILURES, EXIT_OK
from icrt.runtime.cli.command import Command


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds from 1 to 3600")
    return value


def arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                   help="seconds an inference library's import, auto's pick of a backend, or NVML may take before "
                        "it is reported as hanging (default 60)")


def run(args) -> int:
    from icrt.runtime.tools.doctor import facts, render

    f = facts(timeout=args.timeout)
    if args.json:
        import json

        sys.stdout.write(json.dumps(f, indent=2) + "\n")
    else:
        sys.stdout.write(render(f))
    return EXIT_FAILURES if f["problems"] else EXIT_OK


COMMAND = Command(
    "doctor", help="what this machine can do with icrt: packages, providers, GPU, CPU int8 features, serving",
    description=("Report what this machine can do with icrt, and every problem found (one line each). Exit 0 "
                 "when none, 1 otherwise."),
    examples=(("icrt doctor", ""), ("icrt doctor --json > doctor.json", "to attach to a bug report")),
    arguments=arguments, run=run)
