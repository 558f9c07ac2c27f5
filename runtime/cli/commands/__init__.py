"""The ``icrt`` commands, one module each, all of one shape: ``add_command(subparsers) -> (name, run)`` adds the
command's parser (its options from :mod:`runtime.cli.options` where they are shared) and ``run(args) -> exit
code`` does the work through the library. ``runtime.cli`` builds the parser from :data:`COMMANDS` and runs the
command through ``runtime.base.errors.run_command``.

A command module imports nothing heavy at module level (the parser is built at every ``icrt`` start, and ``icrt
--help`` stays fast and torch-free): numpy, onnxruntime, pyarrow, Ray, PyTriton load in ``run``. A new command is
one module in this package, named in :data:`COMMANDS`.
"""
from __future__ import annotations

import importlib

# in `icrt --help` order
COMMANDS = ("score", "info", "bench", "build", "triton", "serve", "batch", "report", "doctor", "completion")


def add_commands(subparsers) -> dict:
    """Add every command's parser; command name -> its ``run``."""
    runs = {}
    for name in COMMANDS:
        command, run = importlib.import_module(f"{__name__}.{name}").add_command(subparsers)
        runs[command] = run
    return runs
