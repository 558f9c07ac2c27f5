"""Safe file writes: a reader never sees a half-written file, and a failed write keeps the old one.

What is at the destination decides how it is written:

- a regular file or nothing: a temporary file in the same folder, then a rename (atomic); a replaced file keeps
  its permission bits (and owner, where allowed), a new one gets the mode an ordinary ``open`` would give it;
- a symbolic link: the same, on the file it points to (the link stays a link);
- a FIFO, a character device or another special file: written straight through (``/dev/stdout``,
  ``/dev/null`` and a named pipe stay what they are).

:func:`destination_problem` and :func:`folder_problem` say, before any work is done, why a path could not be
written (``None`` when it looks writable).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping

from .inputs import SYMLINK_LOOP, is_symlink_loop


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Mapping):  # dicts, and manifest sections (runtime.manifest.Section)
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
    """UTF-8; file names that are not valid UTF-8 (lone surrogates from ``os.fsdecode``) go back to their bytes."""
    write_bytes(path, text.encode("utf-8", "surrogateescape"))


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def write_bytes(path: str, data: bytes) -> None:
    target, st = resolve(path)
    if _is_special(st):
        with open(target, "wb") as f:
            f.write(data)
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def resolve(path: str):
    """(the file to write for ``path``, its os.stat result or None when missing). A symbolic link resolves to
    the file it points to; a link loop is an OSError (ELOOP)."""
    target = path
    if os.path.islink(path):
        if is_symlink_loop(path):
            raise OSError(errno.ELOOP, SYMLINK_LOOP, path)
        target = os.path.realpath(path)
    try:
        return target, os.stat(target)
    except (FileNotFoundError, NotADirectoryError):
        return target, None


def _is_special(st) -> bool:
    return st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary name; on success its contents go to ``path`` (see the module notes), on error it is
    removed and ``path`` is left as it was.

    For writers that want a file name (matplotlib's savefig, Pillow's save).
    """
    suffix = suffix or os.path.splitext(path)[1]
    target, st = resolve(path)
    if _is_special(st):  # a FIFO or device: write the finished file straight through
        with tempfile.TemporaryDirectory(prefix="icrt-") as d:
            tmp = os.path.join(d, "out" + suffix)
            yield tmp
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    d = os.path.dirname(os.path.abspath(target))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            _take_over(tmp, st)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _take_over(tmp: str, st) -> None:
    """Give the new file the replaced file's mode (and owner, where allowed); a new file the umask mode."""
    if st is None or not stat.S_ISREG(st.st_mode):
        os.chmod(tmp, _umask_mode())
        return
    with contextlib.suppress(OSError):  # only root may give a file away
        os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))


def _nearest_folder(path: str):
    """The nearest existing ancestor of ``path`` (which is missing): (that path, problem or None)."""
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(d):
        if os.path.lexists(d):
            return d, f"{d} is a broken symbolic link"
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        return d, f"{d} is not a directory"
    return d, None


def _writable_folder(d: str) -> str | None:
    if not os.access(d, os.W_OK | os.X_OK):
        return f"cannot create files in {d} (permission denied or read-only)"
    return None


def destination_problem(path: str) -> str | None:
    """Why the file ``path`` could not be written by :func:`write_bytes` (None when it looks writable)."""
    try:
        target, st = resolve(path)
    except OSError as e:
        return e.strerror
    except ValueError as e:  # e.g. a NUL byte in the name
        return str(e)
    if st is None:
        d, problem = _nearest_folder(target)
        return problem or _writable_folder(d)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if _is_special(st):
        return None if os.access(target, os.W_OK) else "permission denied"
    return _writable_folder(os.path.dirname(os.path.abspath(target)))


def folder_problem(path: str) -> str | None:
    """Why files could not be created in the folder ``path`` (made when missing); None when they can."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return "broken symbolic link"
        d, problem = _nearest_folder(path)
        return problem or _writable_folder(d)
    except OSError as e:
        return SYMLINK_LOOP if e.errno == errno.ELOOP else e.strerror
    except ValueError as e:
        return str(e)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    return _writable_folder(path)
