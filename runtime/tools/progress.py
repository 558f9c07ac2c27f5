"""The progress bar of ``icrt score`` and ``icrt batch``, and the per-file lines written past it on stderr.

A bar is drawn for :data:`MIN_FILES` files or more when stderr is a terminal (or ``ICRT_PROGRESS=1``), with tqdm
(a runtime dependency; should it be missing, there is no bar, and nothing else changes). Lines go through the bar when one
is drawn, so that they do not tear it.
"""
from __future__ import annotations

import os
import sys

MIN_FILES = 10


class Progress:
    """``update(n)`` after each finished file, ``line(text)`` for a message about one; use as a context manager."""

    def __init__(self, total: int, desc: str = "scoring"):
        self.bar = None
        if total >= MIN_FILES and (sys.stderr.isatty() or os.environ.get("ICRT_PROGRESS") == "1"):
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is a dependency; an install without it gets no bar
                return
            self.bar = tqdm(total=total, unit="image", file=sys.stderr, desc=desc, leave=True)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
