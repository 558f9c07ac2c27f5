"""Safe file writes: a reader never sees a half-written file, and a failed write keeps the old one.

What is at the destination decides how it is written:

- a regular file or nothing: a temporary file in the same folder, then a rename (atomic); a replaced file keeps
  its permission bits (and owner, where allowed), a new one gets the mode an ordinary ``open`` would give it;
- a symbolic link: the same, on the file it points to (the link stays a link);
- a FIFO, a character device or another special file: written straight through (``/dev/null`` and a named
  pipe stay what they are);
- an open file descriptor named as a path (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``,
  ``/proc/PID/fd/N``, also through links to them): written as it is, never replaced. This process's own
  descriptor is written through the descriptor itself (``>> log`` keeps appending, a pipe works); another
  process's is opened for appending, never truncated (:func:`fd_target`).

Files that icrt *owns* inside an output folder (``icrt batch --out``: ``.lock``, parts, ``run.json``,
``summary.json``, ``_SUCCESS``, temporary files) are different: that folder may be writable by others, so such a
file is never opened through a symbolic link (``O_NOFOLLOW``), never blocks on a FIFO (``O_NONBLOCK``), and is
refused, with the reason, when it is anything but a regular file (:func:`owned_problem`, :func:`open_owned`,
:func:`read_owned`, :func:`write_owned`): ``--heatmap DIR``'s PNGs and ``icrt bench --report DIR``'s files too.

A link given as ``-o`` is the user's own choice and is written through, unless another user planted it in a folder
others can write to (``/tmp``): icrt resolves links itself, so it applies the kernel's ``protected_symlinks`` rule
itself, whatever the sysctl says, to every link on the way, and ``protected_fifos``' to a FIFO or device at the end
(:func:`kernel_refuses`, :func:`planted_problem`, checked by :func:`resolve` and :func:`folder_problem`).

:class:`GrowingFile` writes a file a piece at a time (``icrt score``'s jsonl / csv rows) into ``FILE.partial``,
renamed over FILE at the end, so that a run stopped half-way keeps its rows and FILE stays whole.

:func:`destination_problem` and :func:`folder_problem` say, before any work is done, why a path could not be
written (``None`` when it looks writable).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping

SYMLINK_LOOP = "symlink loop"


def is_symlink_loop(path: str) -> bool:
    """A symbolic link that never ends in a file (a -> b -> a)."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    except ValueError:
        return False
    return False




def json_ready(o):
    """``o`` with every non-finite float (NaN, infinity) as None, so that it is strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Mapping):
        return {k: json_ready(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_ready(v) for v in o]
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
    write_text(path, json.dumps(json_ready(obj), indent=2) + "\n")


def write_bytes(path: str, data: bytes) -> None:
    fd = fd_target(path)
    if fd is not None:
        _write_descriptor(fd, data)
        return
    target, st = resolve(path)
    if _is_special(st):
        with open(target, "wb") as f:
            f.write(data)
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


# --- paths that name an open file descriptor -------------------------------------------------------------

_STD_STREAMS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"/(?:dev/fd|proc/(self|thread-self|[0-9]+)(?:/task/[0-9]+)?/fd)/([0-9]+)", re.ASCII)


class FdTarget:
    """A path naming an open file descriptor: ``fd`` (this process's descriptor) or ``path`` (another process's,
    opened for appending)."""

    __slots__ = ("fd", "path")

    def __init__(self, fd, path):
        self.fd, self.path = fd, path


def fd_target(path) -> FdTarget | None:
    """When ``path`` (or the chain of symbolic links it starts) names an open file descriptor (``/dev/stdout``,
    ``/dev/fd/N``, ``/proc/self/fd/N``, ``/proc/PID/fd/N``), what to write; None for any other path.

    Such paths are magic links: following them to a file name (``realpath``) would replace the file that the
    descriptor is open on (losing what ``>>`` had appended) or fail on a pipe (``pipe:[N]`` names nothing)."""
    try:
        p = os.path.abspath(os.fspath(path))
    except (TypeError, ValueError):
        return None
    for _ in range(40):  # the kernel's own limit on links followed
        norm = os.path.normpath(p)
        if norm in _STD_STREAMS:
            return FdTarget(_STD_STREAMS[norm], None)
        m = _FD_PATH.fullmatch(norm)
        if m:
            who = m.group(1)
            if who is None or who in ("self", "thread-self") or int(who) == os.getpid():
                return FdTarget(int(m.group(2)), None)
            return FdTarget(None, norm)
        try:
            if not os.path.islink(p):
                return None
            p = os.path.join(os.path.dirname(p), os.readlink(p))
        except (OSError, ValueError):
            return None
    return None


def _write_descriptor(target: FdTarget, data: bytes) -> None:
    """Write ``data`` into an open descriptor as it is (never truncated, never replaced)."""
    if target.fd is None:  # another process's descriptor: open what it is open on, for appending
        fd = os.open(target.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    else:
        fd = target.fd
        _flush_python_streams(fd)  # what Python buffered for the same descriptor goes first
    try:
        _write_all(fd, data)
    finally:
        if target.fd is None:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _descriptor_problem(target: FdTarget) -> str | None:
    if target.fd is None:
        return None if os.access(target.path, os.W_OK) else "permission denied"
    import fcntl
    try:
        flags = fcntl.fcntl(target.fd, fcntl.F_GETFL)
    except OSError:
        return f"file descriptor {target.fd} is not open"
    if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        return f"file descriptor {target.fd} is not open for writing"
    return None


# --- files icrt owns inside an output folder -------------------------------------------------------------

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(st) -> str:
    """What a file that is not a regular one is, for a message (``a FIFO``, ``a character device``, ...)."""
    return next((what for test, what in _KINDS if test(st.st_mode)), "a special file")


def owned_problem(path: str) -> str | None:
    """Why icrt must not write its own file ``path`` in an output folder (None: it is missing or a regular file)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror or str(e)
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (icrt never writes through a link inside its output folder); remove it"
    if not stat.S_ISREG(st.st_mode):
        return f"is {file_kind(st)}, not a regular file; remove it"
    return None


def open_owned(path: str, write: bool = False) -> int:
    """A descriptor on icrt's own file ``path`` (``write``: read-write, created when missing), opened with
    ``O_NOFOLLOW | O_NONBLOCK``; OSError with the reason when it is a link or anything but a regular file (or, to
    write, a file with other hard links: writing would change another file too)."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_RDWR | os.O_CREAT if write else os.O_RDONLY)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        problem = owned_problem(path) if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO) else None
        raise OSError(e.errno, problem or e.strerror, path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"is {file_kind(st)}, not a regular file; remove it", path)
        if write and st.st_nlink > 1:
            raise OSError(errno.EMLINK, "has other hard links (writing it would change another file); remove it", path)
        import fcntl
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_owned(path: str, limit: int) -> bytes:
    """The bytes of icrt's own file ``path`` (see :func:`open_owned`); OSError when it holds more than ``limit``."""
    with os.fdopen(open_owned(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return data


def write_owned(path: str, data: bytes) -> None:
    """Atomically replace icrt's own file ``path`` in an output folder, never through a link: OSError with the
    reason when ``path`` is a link or anything but a regular file. The temporary file is created in the same folder
    with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``mkstemp``), written and given its mode through its descriptor, then
    renamed over ``path`` (a rename replaces a name, never what a link points to)."""
    problem = owned_problem(path)
    if problem:
        raise OSError(errno.EEXIST, problem, path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# --- links and FIFOs planted by another user: the kernel's protected_symlinks / protected_fifos rule ---------------

_SHARED = stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH  # a folder others can put names in (or a sticky one)


def kernel_refuses(owner: int, folder_st, uid: int | None = None) -> bool:
    """The kernel's ``fs.protected_symlinks`` rule (``protected_fifos``' for FIFOs), whatever the sysctl says: a link
    (FIFO) in a folder that is sticky or writable by its group or others is followed (opened) only when it belongs to
    the user (``uid``, default this process's) or to the folder's owner. icrt resolves links itself (``realpath``,
    then a rename), so the kernel's own check never sees them."""
    uid = os.geteuid() if uid is None else uid
    return bool(folder_st.st_mode & _SHARED) and owner not in (uid, folder_st.st_uid)


def _links_followed(path: str):
    """(name, its lstat or None when missing, the folder it is in) for each symbolic link followed on the way to
    ``path``, component by component as the kernel does (``..`` after a link leaves the link's target), then for the
    file reached. Stops at the first missing component and after 40 links."""
    path = os.fspath(path)
    parts = list(reversed(path.split(os.sep)))
    current = os.sep if path.startswith(os.sep) else os.getcwd()
    hops = 0
    while parts:
        name = parts.pop()
        if name in ("", os.curdir):
            continue
        if name == os.pardir:
            current = os.path.dirname(current)
            continue
        here = os.path.join(current, name)
        try:
            st = os.lstat(here)
        except OSError:
            yield here, None, current
            return
        if stat.S_ISLNK(st.st_mode):
            yield here, st, current
            hops += 1
            if hops >= 40:
                return
            target = os.readlink(here)
            parts.extend(reversed(target.split(os.sep)))
            if target.startswith(os.sep):
                current = os.sep
        elif parts:
            current = here  # a folder on the way (a file there: the next lstat fails)
        else:
            yield here, st, current


def planted_problem(path: str, uid: int | None = None) -> str | None:
    """Why ``path`` must not be written: a symbolic link on the way, or a FIFO or device at its end, that belongs to
    another user in a folder others can write to (:func:`kernel_refuses`); None otherwise. A link the user made, or
    one in a folder only its owner can write, stays the user's choice."""
    try:
        for here, st, folder in _links_followed(path):
            if st is None or not (stat.S_ISLNK(st.st_mode) or _is_special(st)):
                continue
            folder_st = os.stat(folder)
            if kernel_refuses(st.st_uid, folder_st, uid):
                what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else file_kind(st)
                rule = "protected_symlinks" if stat.S_ISLNK(st.st_mode) else "protected_fifos"
                return (f"{here} is {what} of another user (uid {st.st_uid}) in a folder others can write to: icrt "
                        f"does not follow it (the kernel's {rule} rule); remove it or choose another path")
    except (OSError, ValueError):
        return None  # what cannot be read here is reported by the caller's own checks
    return None


# --- a file written as it grows (icrt score's jsonl / csv rows) -------------------------------------------------

PARTIAL_SUFFIX = ".partial"


class GrowingFile:
    """``path`` written a piece at a time (``icrt score``'s rows, as they are scored), so that a run stopped half-way
    keeps what it wrote and ``path`` is only ever whole. What is at ``path`` decides how, as for :func:`write_bytes`:

    - a regular file, a new path or a link to one: the pieces go to ``<file>.partial`` beside the file, created with
      ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a regular one left by a stopped run is replaced; a link, FIFO or folder of
      that name is refused), each piece in whole ``write`` calls; :meth:`commit` renames it over the file, which
      keeps its mode (and owner, where allowed). Until then the file is as it was; a stopped run (Ctrl+C, SIGTERM,
      SIGKILL, an error) leaves ``.partial`` holding every piece written;
    - an open descriptor (``/dev/stdout``, ``/dev/fd/N``), a FIFO or a device: written straight into, piece by piece.
    """

    def __init__(self, path: str):
        self.path, self.partial, self.pieces = path, None, 0
        self._fd = None  # where pieces go
        self._own_fd = True  # False: a descriptor of this process named by path (closed by nobody here)
        self._target = fd_target(path)
        if self._target is not None:
            if self._target.fd is not None:
                self._fd, self._own_fd = self._target.fd, False
            return
        self._target, self._st = resolve(path)
        if _is_special(self._st):
            return  # opened at the first piece, as an ordinary open would (a FIFO waits for its reader there)
        self.partial = self._target + PARTIAL_SUFFIX
        problem = owned_problem(self.partial)
        if problem:
            raise OSError(errno.EEXIST, problem, self.partial)
        os.makedirs(os.path.dirname(os.path.abspath(self._target)), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)  # a regular file: the rows of an earlier stopped run
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._id = _identity(os.fstat(self._fd))
        _take_over(self._fd, self._st)  # by descriptor: the file just made, whatever its name points at now

    def write(self, data: bytes) -> None:
        if self._fd is None:
            if isinstance(self._target, FdTarget):  # another process's descriptor: appended to, never truncated
                self._fd = os.open(self._target.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            else:
                self._fd = os.open(self._target, os.O_WRONLY | os.O_CLOEXEC)
        if not self._own_fd:
            _flush_python_streams(self._fd)
        _write_all(self._fd, data)
        self.pieces += 1

    def commit(self) -> None:
        """Make ``path`` whole: the partial file renamed over it (OSError when that fails: the partial file stays)."""
        if self.partial is None and self._fd is None and not isinstance(self._target, FdTarget):
            self.write(b"")  # a FIFO or device not written yet: opened all the same (its reader sees the end)
        if self.partial is not None:
            if _identity(os.lstat(self.partial)) != self._id:
                raise OSError(errno.EEXIST, "was replaced by another file while icrt wrote it", self.partial)
            os.replace(self.partial, self._target)
            self.partial = None
        self._close()

    def stop(self) -> str | None:
        """Stop writing; the partial file's name when it holds pieces (one without any is removed)."""
        self._close()
        if self.partial is not None and not self.pieces:
            self.discard()
        return self.partial

    def discard(self) -> None:
        """Stop writing and remove the partial file (its pieces are saved elsewhere)."""
        self._close()
        if self.partial is not None:
            with contextlib.suppress(OSError):
                if _identity(os.lstat(self.partial)) == self._id:
                    os.unlink(self.partial)
            self.partial = None

    def _close(self) -> None:
        if self._fd is not None and self._own_fd:
            os.close(self._fd)
        self._fd = None


def _identity(st) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _flush_python_streams(fd: int) -> None:
    """What Python buffered for the descriptor ``fd`` (sys.stdout, sys.stderr) goes out before icrt writes to it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.fileno() == fd:
                stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def resolve(path: str):
    """(the file to write for ``path``, its os.stat result or None when missing). A symbolic link resolves to
    the file it points to; a link loop is an OSError (ELOOP); a link or FIFO another user planted in a folder others
    can write to is an OSError (EPERM) saying so (:func:`planted_problem`)."""
    planted = planted_problem(path)
    if planted:
        raise OSError(errno.EPERM, planted, path)
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
    fd = fd_target(path)
    target, st = (path, None) if fd is not None else resolve(path)
    if fd is not None or _is_special(st):  # a descriptor, FIFO or device: write the finished file straight through
        with tempfile.TemporaryDirectory(prefix="icrt-") as d:
            tmp = os.path.join(d, "out" + suffix)
            yield tmp
            if fd is not None:
                with open(tmp, "rb") as src:
                    _write_descriptor(fd, src.read())
                return
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    d = os.path.dirname(os.path.abspath(target))
    os.makedirs(d, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
        os.close(fd)
        yield tmp
        if os.path.exists(tmp):
            _take_over(tmp, st)
        os.replace(tmp, target)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _take_over(tmp: str | int, st) -> None:
    """Give the new file (a path, or its open descriptor) the replaced file's mode (and owner, where allowed); a new
    file the umask mode."""
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
    fd = fd_target(path)
    if fd is not None:
        return _descriptor_problem(fd)
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
    """Why files could not be created in the folder ``path`` (made when missing); None when they can. A link to it
    (or on the way) that another user planted in a folder others can write to is refused (:func:`planted_problem`)."""
    planted = planted_problem(path)
    if planted:
        return planted
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
