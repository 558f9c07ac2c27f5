"""The runtime's command line: ``python -m runtime.cli``, and the commands of the ``icrt`` console script
(``icrt.cli``, which adds ``icrt train`` and ``icrt export``).

It only parses arguments and runs one command of :mod:`runtime.commands` through ``runtime.base.errors.run_command``,
the one place that turns an ``IcrtError`` into an ``icrt: error: ...`` line and its exit code (any other
exception is a bug and keeps its traceback). Start-up imports only argparse and the light registries; numpy,
Pillow and onnxruntime load when a command needs them, tqdm only when a bar is drawn, matplotlib only for
``icrt bench``'s plot.
"""
from __future__ import annotations

import argparse
import sys

from icrt.runtime.base.errors import EXIT_USAGE, run_command, setup_logging
from icrt.runtime.base.version import __version__

DESCRIPTION = "Score image complexity with an icrt model bundle (default: the bundled model)."
EPILOG = """examples:
  icrt score examples/*.jpg                      score images with the bundled default model
  icrt score photos/ --recursive --format csv -o scores.csv
  icrt info                                      the default model's card
  icrt doctor                                    what this machine can run
  icrt COMMAND --help                            a command's options and examples"""


def build_parser(more=()) -> tuple[argparse.ArgumentParser, dict]:
    """The ``icrt`` parser and command name -> its Command; ``more``: further Commands (the console script's
    ``train`` and ``export``)."""
    from icrt.runtime.cli.commands import commands

    p = argparse.ArgumentParser(prog="icrt", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"icrt {__version__}")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    known = {}
    for command in [*commands(), *more]:
        command.add_to(sub)
        known[command.name] = command
    p.set_defaults(root_parser=p)  # icrt completion writes its scripts from the whole parser
    return p, known


def main(argv=None, more=()) -> int:
    from icrt.runtime.scoring.inputs import shard_argv

    parser, runs = build_parser(more)
    args = parser.parse_args(shard_argv(sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    setup_logging()
    return run_command("icrt", runs[args.command].run, args)


if __name__ == "__main__":
    sys.exit(main())
