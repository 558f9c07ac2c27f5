"""``icrt doctor [--json]``: what this machine can do with icrt (``runtime.tools.doctor``): Python, numpy, onnxruntime and its
providers, TensorRT and the CUDA bindings, the GPU, the CPU's int8 features, PyTriton, Ray, pyarrow, the optional
libraries, a Jetson's power mode, the default model's checksums. Exit 0 when no problem was found, 1 otherwise."""
from __future__ import annotations

import sys

from icrt.runtime.base.errors import EXIT_FAILURES, EXIT_OK
from icrt.runtime.cli.command import Command


def arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def run(args) -> int:
    from icrt.runtime.tools.doctor import facts, render

    f = facts()
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
