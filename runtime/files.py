"""Atomic file writes: a reader never sees a half-written file, and a failed write keeps the old one."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _umask_mode() -> int:
    """The mode an ordinary open() would create (mkstemp's own is 0600, too strict for shared bundles)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary name next to ``path``; on success it replaces ``path``, on error it is removed.

    For writers that want a file name (matplotlib's savefig, Pillow's save).
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix or os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
