"""The per-user private cache of what the backends make from a model file: OpenVINO's compiled models, the engines of
onnxruntime's TensorRT execution provider, and OpenVINO's verdicts on model files (``runtime.backends.verdict``).

Where: ``$ICRT_CACHE_DIR`` (``off`` turns the cache off), else ``$XDG_CACHE_HOME/icrt``, else ``$HOME/.cache/icrt``.
A relative value is ignored, as the XDG specification says (it would put the cache in whatever folder icrt runs in,
a photo folder), and a home folder that does not exist is never made. Never inside a bundle: a bundle is untrusted
input, may be read-only or shared, and a compiled model planted there would be loaded as it is.

What is trusted: a compiled model (an OpenVINO blob, a TensorRT engine) is loaded as it is. OpenVINO names a blob
after a hash of the model and settings, and checks the blob's header for versions only, never that it was compiled
from that model; so whoever can write the cache decides what scores. The cache is therefore used only where nobody
else can write it, as ssh's StrictModes checks a key file: every folder from ``/`` (from ``$HOME`` for a cache
inside it) down to the cache must belong to this user or to root and be writable by nobody else (a sticky folder
such as ``/tmp`` aside: nobody else can rename or remove what is ours in it), and the cache's own folders must be
this user's and private (made 0700). The folders are opened one by one, each relative to the one above, with
``O_NOFOLLOW`` and checked with ``fstat``, and a library is handed ``/proc/self/fd/N``: the folder that was checked is
the folder used, even if a name on the way is swapped afterwards. Where any of that fails, the backends run without
a cache and note why.

Bounded: after something is added, the least recently used entries go until the cache holds at most
``$ICRT_CACHE_MAX_MB`` MB (default 2048; one OpenVINO blob of the default model is ~16 MB).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat

from icrt.runtime.base.text import printable

CACHE_ENV = "ICRT_CACHE_DIR"
SIZE_ENV = "ICRT_CACHE_MAX_MB"
CACHE_OFF = ("off", "none", "0")
DEFAULT_MAX_MB = 2048
EVICTED = ("openvino", "ort-trt")  # kinds whose entries (one folder per model file and settings) are evicted
MAX_VERDICT_BYTES = 64 * 1024
_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# /proc/self/fd/N names an open folder itself (not a path looked up again): Linux; elsewhere the checked path is used
_PROC_FD = os.path.isdir("/proc/self/fd")


class CacheProblem(Exception):
    """Why a folder cannot serve as the private cache (a note, never an error: icrt runs without a cache)."""


def _home() -> str | None:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return home if home and os.path.isabs(home) else None


def cache_root() -> tuple[str | None, list[str]]:
    """(the cache folder, or None for no cache; notes on values ignored and on why there is no cache)."""
    notes = []
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in CACHE_OFF:
        return None, [f"no model cache ({CACHE_ENV}=off)"]
    if value:
        if os.path.isabs(value):
            return os.path.normpath(value), notes
        notes.append(f"{CACHE_ENV}={printable(value)} ignored: not an absolute path")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        if os.path.isabs(xdg):
            return os.path.join(os.path.normpath(xdg), "icrt"), notes
        notes.append(f"XDG_CACHE_HOME={printable(xdg)} ignored: not an absolute path")
    home = _home()
    if home is None:
        return None, notes + ["no model cache: no home folder ($HOME is not set)"]
    if not os.path.isdir(home):
        return None, notes + [f"no model cache: the home folder {printable(home)} does not exist (icrt never makes it)"]
    return os.path.join(home, ".cache", "icrt"), notes


def max_bytes() -> int:
    """The cache's size cap (``$ICRT_CACHE_MAX_MB``; a value that is not a whole number >= 0 gives the default)."""
    value = os.environ.get(SIZE_ENV, "").strip()
    mb = int(value) if value.isascii() and value.isdigit() else DEFAULT_MAX_MB
    return mb * 2**20


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _check(fd: int, shown: str, own: bool) -> None:
    """CacheProblem unless the open folder ``fd`` may be on the cache's way (``own``: be one of its own folders)."""
    st = os.fstat(fd)
    uid = _uid()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheProblem(f"{shown} is not a folder")
    if own and st.st_uid != uid:
        raise CacheProblem(f"{shown} belongs to another user")
    if st.st_uid not in (uid, 0):
        raise CacheProblem(f"{shown} belongs to another user (uid {st.st_uid}), who could swap the cache")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (own or not st.st_mode & stat.S_ISVTX):
        raise CacheProblem(f"{shown} can be written by other users")


def _open_below(fd: int, name: str, shown: str, make: bool) -> int:
    """The folder ``name`` in the open folder ``fd``, never through a link (made 0700 when missing and ``make``)."""
    if make:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=fd)
    try:
        return os.open(name, _FLAGS, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
            try:
                link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
            except OSError:
                link = False
            raise CacheProblem(f"{shown} is {'a symbolic link' if link else 'not a folder'}") from None
        raise CacheProblem(f"cannot open {shown} ({e.strerror or e})") from None


def _exists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:
        pass
    return True


def _walk(root: str, below: tuple[str, ...], make: bool = True) -> tuple[int, str]:
    """(an open descriptor on ROOT/BELOW..., its path) after checking every folder on the way (see the module
    notes); CacheProblem naming the first one that fails."""
    if not (hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd):
        raise CacheProblem("this platform cannot open folders safely")
    real = os.path.realpath(root)  # the user's own links resolved once; from here on every folder is opened unfollowed
    home = _home()
    home = os.path.realpath(home) if home else None
    inside_home = home is not None and (real == home or real.startswith(home.rstrip(os.sep) + os.sep))
    parts = [p for p in real.split(os.sep) if p]
    fd, shown = os.open(os.sep, _FLAGS), os.sep
    try:
        for i, name in enumerate(["", *parts, *below]):
            if i:
                shown = os.path.join(shown, name)
                if shown == home and not _exists(fd, name):
                    raise CacheProblem(f"the home folder {shown} does not exist (icrt never makes it)")
                new = _open_below(fd, name, shown, make)
                os.close(fd)
                fd = new
            own = i >= len(parts)  # the cache root and what is below it
            above_home = inside_home and len(shown) < len(home)  # StrictModes stops at the home folder
            if not above_home:
                _check(fd, shown, own)
    except BaseException:
        os.close(fd)
        raise
    return fd, shown


class CacheFolder:
    """A checked, open folder of the cache. ``path`` is what to hand a library (``/proc/self/fd/N``: this very
    folder), ``shown`` its name for people. ``close()`` when done (also a context manager)."""

    def __init__(self, fd: int, shown: str):
        self.fd, self.shown = fd, shown
        self.path = f"/proc/self/fd/{fd}" if _PROC_FD else shown

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_folder(kind: str, key: str | None = None) -> tuple[CacheFolder | None, list[str]]:
    """(the private folder ``ROOT/kind[/key]``, made when missing and marked as just used; or None) and notes (why
    there is none, values ignored)."""
    root, notes = cache_root()
    if root is None:
        return None, notes
    below = (kind,) if key is None else (kind, key)
    try:
        fd, shown = _walk(root, below)
    except CacheProblem as e:
        return None, notes + [f"no model cache: {printable(str(e))}"]
    with contextlib.suppress(OSError):
        os.utime(fd)  # the least recently used entries are evicted first
    return CacheFolder(fd, printable(shown)), notes


# --- size: what doctor shows, and the cap ----------------------------------------------------------------------


def _tree_size(dir_fd: int, name: str) -> int:
    """Bytes of the files in the folder ``name`` of the open folder ``dir_fd`` and below (links not followed)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    try:
        fd = os.open(name, _FLAGS, dir_fd=dir_fd)
    except OSError:
        return 0
    try:
        return sum(_tree_size(fd, entry) for entry in os.listdir(fd))
    finally:
        os.close(fd)


def _entries(root_fd: int) -> tuple[list, int]:
    """([(last used, size, kind, name)] of the evictable entries, the size of everything else)."""
    entries, other = [], 0
    for kind in os.listdir(root_fd):
        if kind not in EVICTED:
            other += _tree_size(root_fd, kind)
            continue
        try:
            kind_fd = os.open(kind, _FLAGS, dir_fd=root_fd)
        except OSError:
            continue
        try:
            for name in os.listdir(kind_fd):
                with contextlib.suppress(OSError):
                    when = os.stat(name, dir_fd=kind_fd, follow_symlinks=False).st_mtime
                    entries.append((when, _tree_size(kind_fd, name), kind, name))
        finally:
            os.close(kind_fd)
    return entries, other


def usage() -> dict:
    """What ``icrt doctor`` shows: ``{"path", "bytes", "entries", "max_bytes", "problem"}`` (``path`` None: no cache)."""
    root, notes = cache_root()
    out = {"path": root, "bytes": 0, "entries": 0, "max_bytes": max_bytes(), "notes": notes, "problem": None}
    if root is None:
        return out
    if not os.path.isdir(root):
        return out  # made when first used
    try:
        fd, _ = _walk(root, (), make=False)
    except CacheProblem as e:
        out["problem"] = f"the model cache is not used: {printable(str(e))}"
        return out
    try:
        entries, other = _entries(fd)
    except OSError as e:
        out["problem"] = f"cannot read the model cache ({e.strerror or e})"
        return out
    finally:
        os.close(fd)
    out.update(bytes=other + sum(e[1] for e in entries), entries=len(entries))
    return out


def enforce_cap(keep: CacheFolder | None = None) -> list[str]:
    """Remove the least recently used compiled models and engines until the cache holds at most :func:`max_bytes`
    (never ``keep``, the folder just used); the entries removed (``kind/name``)."""
    root, _ = cache_root()
    if root is None:
        return []
    try:
        fd, _ = _walk(root, (), make=False)
    except CacheProblem:
        return []
    removed = []
    try:
        entries, other = _entries(fd)
        total, cap = other + sum(e[1] for e in entries), max_bytes()
        kept = os.fstat(keep.fd) if keep is not None and keep.fd >= 0 else None
        for _, size, kind, name in sorted(entries):
            if total <= cap:
                break
            kind_fd = os.open(kind, _FLAGS, dir_fd=fd)
            try:
                st = os.stat(name, dir_fd=kind_fd, follow_symlinks=False)
                if kept is not None and (st.st_dev, st.st_ino) == (kept.st_dev, kept.st_ino):
                    continue
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=kind_fd)  # fd-based: never follows a link out of the cache
                else:
                    os.unlink(name, dir_fd=kind_fd)
            except OSError:
                continue
            finally:
                os.close(kind_fd)
            total -= size
            removed.append(f"{kind}/{name}")
    except OSError:
        pass
    finally:
        os.close(fd)
    return removed


# --- verdicts: small JSON records -----------------------------------------------------------------------------


def read_record(kind: str, key: str) -> dict | None:
    """The JSON object stored under ``kind/key.json`` in the private cache (None: none, no cache, or unreadable)."""
    from icrt.runtime.base.files import read_owned

    folder, _ = open_folder(kind)
    if folder is None:
        return None
    with folder:
        try:
            value = json.loads(read_owned(os.path.join(folder.path, key + ".json"), MAX_VERDICT_BYTES))
        except (OSError, ValueError):
            return None
    return value if isinstance(value, dict) else None


def write_record(kind: str, key: str, value: dict) -> bool:
    """Store ``value`` under ``kind/key.json`` in the private cache (atomically, never through a link); whether it was
    stored."""
    from icrt.runtime.base.files import write_owned

    folder, _ = open_folder(kind)
    if folder is None:
        return False
    with folder:
        try:
            write_owned(os.path.join(folder.path, key + ".json"), json.dumps(value).encode())
        except OSError:
            return False
    return True
