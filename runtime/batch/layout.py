"""The files of an ``icrt batch --out DIR`` folder (docs/batch.md), by name, and how icrt writes its own.

- ``part-NNNNNN.parquet``: the rows (``runtime.batch.parts``);
- ``run.json``: what the run scores with, checked when it is resumed (``runtime.batch.folder``);
- ``summary.json``: counts, errors, score quantiles and histogram, speed (``runtime.batch.summary``);
- ``_SUCCESS``: the completion marker, written last;
- ``.lock``: held by the run writing the folder.

``icrt report`` reads such folders by these names too.
"""
from __future__ import annotations

import glob
import os

from icrt.runtime.base.errors import IcrtError

PART_GLOB = "part-*.parquet"
PART_FORMAT = "part-{:06d}.parquet"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
SUCCESS_FILE = "_SUCCESS"
LOCK_FILE = ".lock"
OWNED_FILES = (RUN_FILE, SUMMARY_FILE, SUCCESS_FILE, LOCK_FILE)  # besides the parts and .tmp-* files


def part_files(out: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(out), PART_GLOB)))


def write_owned_file(path: str, data) -> None:
    """Write one of icrt's files in DIR (``runtime.base.files.write_owned``: atomic, never through a link); an
    IcrtError naming the file and the problem (the parts already written are kept)."""
    from icrt.runtime.base.files import write_owned
    from icrt.runtime.base.text import printable
    try:
        write_owned(path, data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as e:
        raise IcrtError(f"cannot write {printable(path)}: {e.strerror or e} (the parts written so far are kept: fix "
                        "the cause, then rerun with --resume)") from None
