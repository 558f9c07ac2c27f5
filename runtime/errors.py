"""icrt's exceptions, exit codes and command-line error handling, in one place.

Every error a user can cause (a bad file, bundle, option, data set, checkpoint) is an :class:`IcrtError`
subclass. Commands run through :func:`run_command`, which prints one ``prog: error: message`` line for
those and returns their exit code; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import logging
import sys

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some inputs failed (e.g. unreadable images in a batch)
EXIT_USAGE = 2  # bad arguments or inputs (argparse uses 2 as well)
EXIT_UNAVAILABLE = 2  # the requested backend / tool is not available here (a usage error, as before)
EXIT_PARITY = 3  # export: the bundle was written but disagrees with PyTorch


class IcrtError(Exception):
    """Base of the errors a user can cause or fix; the message is one line naming the file and the problem."""

    exit_code = EXIT_USAGE


class UserInputError(IcrtError, ValueError):
    """Bad input: a file, folder, option value, CSV row, manifest field."""


class UnavailableError(IcrtError, RuntimeError):
    """What was asked for cannot run on this machine (a backend, a GPU, an optional package)."""

    exit_code = EXIT_UNAVAILABLE


def one_line(text) -> str:
    """``text`` folded onto one line (error messages are one line)."""
    return " ".join(str(text).split())


def run_command(prog: str, fn, *args, **kwargs) -> int:
    """Call ``fn``; an IcrtError becomes ``prog: error: message`` on stderr and its exit code."""
    try:
        code = fn(*args, **kwargs)
    except IcrtError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else int(code)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message is emitted (it may be replaced after set-up:
    tests capturing output, a progress bar, a command run in process more than once)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.setStream: the stream is always the current sys.stderr
        pass


LOGGERS = ("icrt", "runtime", "train", "export", "calibration", "benchmarks")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Messages of the ``icrt``, ``train``, ``export`` ... loggers go to stderr, as plain lines."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in LOGGERS:
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False
