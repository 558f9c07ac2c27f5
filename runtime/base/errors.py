"""icrt's exceptions, exit codes and command-line error handling, in one place.

Every error a user can cause (a bad file, bundle, option, data set, checkpoint) is an :class:`IcrtError`
subclass. Commands run through :func:`run_command`, which prints one ``prog: error: message`` line for
those and returns their exit code; anything else is a bug and keeps its traceback. Messages quote untrusted text (a
bundle's node names in an engine's message, a server's reply), so what reaches the terminal goes through
:func:`~icrt.runtime.base.text.printable` here: the error line and every message of icrt's loggers.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading

from icrt.runtime.base.text import printable

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some inputs failed (e.g. unreadable images in a batch)
EXIT_USAGE = 2  # bad arguments or inputs (argparse uses 2 as well)
EXIT_UNAVAILABLE = 2  # the requested backend / tool is not available here (a usage error, as before)
EXIT_PARITY = 3  # export: the bundle was written but disagrees with PyTorch
EXIT_INTERRUPTED = 130  # Ctrl+C (128 + SIGINT), as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM)


class IcrtError(Exception):
    """Base of the errors a user can cause or fix; the message is one line naming the file and the problem."""

    exit_code = EXIT_USAGE


class UserInputError(IcrtError, ValueError):
    """Bad input: a file, folder, option value, CSV row, manifest field."""


class BundleError(UserInputError):
    """A missing or malformed bundle; the message names the bundle and the problem (``runtime.bundle.manifest``)."""


class UnavailableError(IcrtError, RuntimeError):
    """What was asked for cannot run on this machine (a backend, a GPU, an optional package)."""

    exit_code = EXIT_UNAVAILABLE


def one_line(text) -> str:
    """``text`` folded onto one line (error messages are one line)."""
    return " ".join(str(text).split())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl+C, so that ``finally`` blocks run: temporary files are removed
    (a heatmap being written, an -o file), a Ray cluster started for the run is shut down."""


def _on_sigterm(signum, frame):
    raise Terminated()


def run_command(prog: str, fn, *args, **kwargs) -> int:
    """Call ``fn``; an IcrtError becomes ``prog: error: message`` on stderr and its exit code. SIGTERM and Ctrl+C
    end the command through its ``finally`` blocks (exit codes 143 and 130)."""
    old = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = fn(*args, **kwargs)
    except IcrtError as e:
        print(f"{prog}: error: {printable(one_line(e))}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
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


class _PrintableFormatter(logging.Formatter):
    """Each line of a message with its control and invisible characters escaped (``printable``): a log line may
    quote an engine's message about a bundle's model, which must not drive the terminal. A message of several lines
    (a traceback) keeps its lines."""

    def format(self, record) -> str:
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


LOGGERS = ("icrt", "runtime", "train", "export", "calibration", "benchmarks")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Messages of the ``icrt``, ``train``, ``export`` ... loggers go to stderr, as plain lines."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    handler = _StderrHandler()
    handler.setFormatter(_PrintableFormatter("%(message)s"))
    for name in LOGGERS:
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False
