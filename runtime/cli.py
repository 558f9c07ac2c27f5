"""``icrt``: the command line (console script ``icrt = runtime.cli:main``; also ``python -m runtime.cli``).

It only parses arguments and runs one command of :mod:`runtime.commands` through ``runtime.errors.run_command``,
the one place that turns an ``IcrtError`` into an ``icrt: error: ...`` line and its exit code (any other
exception is a bug and keeps its traceback). Start-up imports only argparse and the light registries; numpy,
Pillow and onnxruntime load when a command needs them, tqdm only when a bar is drawn, matplotlib only for
``icrt bench``'s plot.
"""
from __future__ import annotations

import argparse
import sys

from .errors import EXIT_USAGE, run_command, setup_logging


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``icrt`` parser and command name -> ``run``."""
    from .commands import add_commands

    p = argparse.ArgumentParser(prog="icrt", description="Score image complexity with an exported icrt model bundle.")
    runs = add_commands(p.add_subparsers(dest="command", title="commands"))
    return p, runs


def main(argv=None) -> int:
    from .worklist import shard_argv

    parser, runs = build_parser()
    args = parser.parse_args(shard_argv(sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    setup_logging()
    return run_command("icrt", runs[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
