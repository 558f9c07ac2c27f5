"""The Parquet parts of an ``icrt batch`` folder: their rows (``runtime.bundle.records.PARQUET_COLUMNS``), reading them
back checked, and
:class:`PartWriter`, which writes them. A part exists only complete (``runtime.base.files.write_owned``: a temporary
file, then a rename): the parts *are* the record of finished work.
"""
from __future__ import annotations

import os
import time

from icrt.runtime.base.errors import UnavailableError, UserInputError
from icrt.runtime.batch.layout import PART_FORMAT, part_files, write_owned_file
from icrt.runtime.bundle.records import ERROR, IMAGE, OLD_FILE_COLUMN, SCORE, parquet_schema

DEFAULT_PART_ROWS = 5000
DEFAULT_PART_SECONDS = 300.0  # a part is written at least this often while rows come (a kill loses less)
MAX_ERROR_LINES = 200  # error lines printed on stderr


def require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        from icrt.runtime.base.install import extra_hint

        raise UnavailableError(f"icrt batch writes Parquet and needs pyarrow; {extra_hint('scale')}") from None
    return pa


def part_number(path: str) -> int:
    stem = os.path.basename(path)[len("part-"):-len(".parquet")]
    return int(stem) if stem.isdigit() else -1


def part_problem(table) -> str | None:
    """What makes ``table`` (a part read back) something other than an icrt batch part, or None: the column types
    of the records' Parquet schema, an image in every row, and in each row either a finite score or an error."""
    pa = require_pyarrow()
    want = parquet_schema()
    for name in table.column_names:
        if table.schema.field(name).type != want.field(name).type:
            return f"column {name} has type {table.schema.field(name).type}, not {want.field(name).type}"
    if IMAGE in table.column_names and table.column(IMAGE).null_count:
        return "a row without an image"
    if SCORE in table.column_names:
        import numpy as np
        score = table.column(SCORE)
        values = score.drop_null().to_numpy()
        if values.size and not np.all(np.isfinite(values)):
            return "a score that is not a finite number (NaN or infinity)"
        if ERROR in table.column_names:
            both = pa.compute.and_(pa.compute.is_valid(score), pa.compute.is_valid(table.column(ERROR)))
            neither = pa.compute.and_(pa.compute.is_null(score), pa.compute.is_null(table.column(ERROR)))
            if pa.compute.any(both).as_py() or pa.compute.any(neither).as_py():
                return "a row with both a score and an error, or neither"
    return None


def read_part(path: str, columns):
    """The pyarrow Table of ``columns`` of one part, checked (:func:`part_problem`); the part is opened without
    following a link and never blocks (``runtime.base.files.open_owned``). UserInputError naming the part otherwise.
    The file column of older parts (``path``) is read as ``image``."""
    pa = require_pyarrow()
    from icrt.runtime.base.files import open_owned
    from icrt.runtime.base.text import printable

    def bad(problem):
        return UserInputError(f"{printable(path)}: not an icrt batch part ({problem}); move it away and rerun with "
                              "--resume (its rows will be scored again)")
    try:
        with os.fdopen(open_owned(path), "rb") as f:  # read here, parsed from memory (parts are small)
            data = f.read()
        buffer = pa.BufferReader(data)
        # on the calling thread: with arrow's thread pool (use_threads, pre_buffer) a reader task could still hold
        # the Python bytes when the process exits, and releasing them then needs the GIL of a finalizing
        # interpreter: an abort (seen after a Ray run, whose terminate handler turns it into SIGABRT)
        one_thread = {"use_threads": False, "pre_buffer": False}
        if IMAGE in columns and OLD_FILE_COLUMN in pa.parquet.read_schema(buffer).names:
            old = [OLD_FILE_COLUMN if c == IMAGE else c for c in columns]
            table = pa.parquet.read_table(buffer, columns=old, **one_thread).rename_columns(list(columns))
        else:
            table = pa.parquet.read_table(buffer, columns=list(columns), **one_thread)
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as e:
        text = getattr(e, "strerror", None) if isinstance(e, OSError) else None
        raise bad(text or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    problem = part_problem(table)
    if problem:
        raise bad(problem)
    return table


def read_parts(out: str, columns):
    """Yield (part file, checked pyarrow Table of ``columns``) for each finished part (:func:`read_part`)."""
    for p in part_files(out):
        yield p, read_part(p, columns)


def done_images(out: str) -> set[str]:
    """The ``image`` cells of every finished part, each part checked whole first (a tampered part is refused
    before anything is scored, not when the summary is written)."""
    done = set()
    for _, t in read_parts(out, [IMAGE, SCORE, ERROR]):
        done.update(t.column(IMAGE).to_pylist())
    return done


class PartWriter:
    """Buffers rows and writes ``part-NNNNNN.parquet`` files of ``part_rows`` rows, each atomically."""

    def __init__(self, out: str, part_rows: int = DEFAULT_PART_ROWS, progress=None,
                 part_seconds: float = DEFAULT_PART_SECONDS):
        """``progress``: a ``runtime.tools.progress.Progress`` told of every row and the error lines (None: lines on
        stderr)."""
        self.out, self.part_rows, self.progress = out, max(1, int(part_rows)), progress
        self.part_seconds = part_seconds
        self.buffer, self.buffered = [], 0
        self.oldest = None  # when the oldest buffered row came
        self.next_part = max([part_number(p) for p in part_files(out)] + [-1]) + 1
        self.rows = self.errors = 0
        self.parts = []
        self.error_lines = 0

    def add(self, table) -> None:
        """Add a Table of rows (``runtime.bundle.records.records_table``)."""
        if table.num_rows == 0:
            return
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.oldest is None:
            self.oldest = time.monotonic()
        self.rows += table.num_rows
        errors = table.column(ERROR)
        n_err = table.num_rows - errors.null_count
        self.errors += n_err
        if n_err:
            self._tell_errors(table)
        if self.progress is not None:
            self.progress.update(table.num_rows)
        while self.buffered >= self.part_rows:
            self._flush(self.part_rows)
        if self.buffered and time.monotonic() - self.oldest >= self.part_seconds:  # a slow run still checkpoints
            self._flush(self.buffered)

    def _tell_errors(self, table) -> None:
        from icrt.runtime.base.text import printable
        for p, e in zip(table.column(IMAGE).to_pylist(), table.column(ERROR).to_pylist()):
            if e is None:
                continue
            self.error_lines += 1
            if self.error_lines <= MAX_ERROR_LINES:
                self._line(f"icrt: {printable(p)}: {printable(e)}")
            elif self.error_lines == MAX_ERROR_LINES + 1:
                self._line("icrt: more files could not be scored; their errors are in the parts' error column")

    def _flush(self, n: int) -> None:
        pa = require_pyarrow()
        table = pa.concat_tables(self.buffer)
        head, rest = table.slice(0, n), table.slice(n)
        self.buffer = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows
        self.oldest = time.monotonic() if rest.num_rows else None
        self._write(head)

    def _write(self, table) -> None:
        pa = require_pyarrow()
        sink = pa.BufferOutputStream()
        pa.parquet.write_table(table.combine_chunks(), sink, compression="zstd")
        path = os.path.join(self.out, PART_FORMAT.format(self.next_part))
        write_owned_file(path, sink.getvalue().to_pybytes())
        self.next_part += 1
        self.parts.append(path)

    def _line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.line(text)
        else:
            import sys
            print(text, file=sys.stderr)

    def close(self) -> None:
        while self.buffered:
            self._flush(min(self.buffered, self.part_rows))
