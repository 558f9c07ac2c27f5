"""The one shape every ``icrt`` command has: a :class:`Command` (the runtime's commands, one module each in
``icrt.runtime.cli.commands``, and the console script's ``icrt train`` / ``icrt export``, which hand their arguments
to ``python -m icrt.train`` / ``python -m icrt.export``)."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    """One ``icrt`` command.

    ``arguments(parser)`` adds its options (the shared ones from ``icrt.runtime.cli.options``); ``run(args) -> exit
    code`` does the work through the library, run by ``icrt.runtime.base.errors.run_command`` (an ``IcrtError`` is
    one ``icrt: error:`` line and its exit code). ``forward``: everything after the name goes to ``run`` untouched
    as ``args.args`` (a command with its own parser elsewhere). A command module imports nothing heavy at module
    level (the parser is built at every ``icrt`` start): numpy, onnxruntime, pyarrow, Ray, PyTriton load in ``run``.
    """

    name: str
    help: str  # its line in `icrt --help`
    description: str  # the top of its own --help
    examples: tuple[tuple[str, str], ...]  # (command line, what it does): the end of its --help
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    forward: bool = False

    def add_to(self, subparsers) -> argparse.ArgumentParser:
        width = max(len(cmd) for cmd, _ in self.examples)
        epilog = "examples:\n" + "\n".join(f"  {cmd:<{width}}  {what}".rstrip() for cmd, what in self.examples)
        p = subparsers.add_parser(self.name, help=self.help, description=self.description, epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter, add_help=not self.forward)
        if self.forward:
            p.add_argument("args", nargs=argparse.REMAINDER, help="its own arguments (see its --help)")
        self.arguments(p)
        return p


def ran_line(what_ran: str, scored: int, failed: int, seconds: float) -> str:
    """The stderr line ``icrt score`` and ``icrt eval`` end with (``-q`` drops it): how many images, how fast (images
    scored per second of wall time), and what ran (``Scorer.what_ran()``: backend and version, precision, device)."""
    rate = scored / seconds if seconds > 0 else 0.0
    return f"icrt: {scored} scored, {failed} failed in {seconds:.1f} s ({rate:.1f} images/s) by {what_ran}"


def write_stdout(data: bytes) -> None:
    """``data`` (UTF-8) to standard output, as bytes where it takes them; BrokenPipeError when its reader has gone."""
    out = getattr(sys.stdout, "buffer", None)
    sys.stdout.flush()
    if out is None:  # a text-only stream (tests, embedding)
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))
        sys.stdout.flush()
    else:
        out.write(data)
        out.flush()


def pipe_closed() -> None:
    """The reader of stdout stopped reading (``| head``): nothing more is written there, and nothing is said."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
