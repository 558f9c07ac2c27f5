"""The ``icrt`` commands, one module each, all of one shape: a module-level ``COMMAND``
(``icrt.runtime.cli.command.Command``: its help, examples, ``arguments(parser)`` and ``run(args) -> exit code``).
``icrt.runtime.cli.app`` builds the parser from :data:`COMMANDS` and runs the command through
``icrt.runtime.base.errors.run_command``.

A command module imports nothing heavy at module level (the parser is built at every ``icrt`` start, and ``icrt
--help`` stays fast and torch-free): numpy, onnxruntime, pyarrow, Ray, PyTriton load in ``run``. A new command is
one module in this package, named in :data:`COMMANDS`.
"""
from __future__ import annotations

import importlib

# in `icrt --help` order
COMMANDS = ("score", "eval", "info", "bench", "build", "triton", "serve", "batch", "report", "doctor", "completion")


def commands() -> list:
    """Every command's ``COMMAND``, in :data:`COMMANDS` order."""
    return [importlib.import_module(f"{__name__}.{name}").COMMAND for name in COMMANDS]
