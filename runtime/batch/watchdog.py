"""The watchdog of ``icrt batch``: a run that makes no progress fails with a clear message instead of hanging."""
from __future__ import annotations

import _thread
import os
import sys
import threading
import time

from icrt.runtime.base.errors import EXIT_USAGE, IcrtError

DEFAULT_STALL_TIMEOUT = 600.0  # seconds without a row before the run is stopped
WATCHDOG_GRACE = 30.0  # seconds the main thread gets to stop after the watchdog fired, before a hard exit


class StalledError(IcrtError):
    """The run made no progress for the stall timeout."""


class Watchdog:
    """Stops the run when :meth:`tick` was not called for ``timeout`` seconds: interrupts the main thread
    (which turns it into :class:`StalledError`); if that does not end the run within :data:`WATCHDOG_GRACE`
    seconds (a call that never returns), prints the error and ends the process (exit code 2)."""

    def __init__(self, timeout: float, what: str = ""):
        self.timeout, self.what = float(timeout), what
        self.last = time.monotonic()
        self.fired = False
        self._stop = threading.Event()
        self._thread = None

    def tick(self) -> None:
        self.last = time.monotonic()

    def message(self) -> str:
        return (f"no progress for {self.timeout:g} s{self.what}: stopped (the rows written so far are kept: fix the "
                "cause, e.g. resources, then rerun with --resume; a slow start can be given longer with "
                "--stall-timeout)")

    def __enter__(self):
        if self.timeout > 0:
            self._thread = threading.Thread(target=self._watch, name="icrt-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        return False

    def _watch(self) -> None:
        step = min(1.0, self.timeout / 4)
        while not self._stop.wait(step):
            if time.monotonic() - self.last >= self.timeout:
                self.fired = True
                _thread.interrupt_main()
                if not self._stop.wait(WATCHDOG_GRACE):
                    print(f"icrt: error: {self.message()}", file=sys.stderr, flush=True)
                    os._exit(EXIT_USAGE)
                return
