"""What to score, from every place it can come from, in one module: PATH arguments (files, folders, globs; symlink loops
and unreadable folders as failed inputs), ``--files-from LIST`` (one path a line), ``--shard I/N`` (a stable split by
path) and URIs (``s3://``, ``gs://``, ``file://``, listed and read through pyarrow's file systems for ``icrt batch``),
gathered once from :class:`InputOptions` (:func:`gather`); and the scores of such a list in input order
(:func:`in_input_order`). Shared by ``icrt score``, ``icrt batch``, ``icrt eval`` and ``icrt.score``.

**List files are untrusted.** A line is one file name taken literally: no globs, no folder listing (a folder in
the list gets its own ``is a directory`` error row, as on the command line), no comments. Blank lines are
skipped; one trailing ``\\r`` (a list written on Windows) is dropped; bytes that are not UTF-8 are kept as the
name's bytes (``os.fsdecode``). A line with a NUL byte (no file name can hold one: most likely the list is not a
text list of paths) or longer than :data:`MAX_LINE` bytes stops the command with one line naming the list and
the line number. Relative names are relative to the current folder, as on the command line. ``-`` reads the list
from standard input.

**Shards.** ``--shard I/N`` keeps the paths whose shard is I, counted from 0 (``0/4`` .. ``3/4``): the first
8 bytes of the BLAKE2b digest of the path's bytes (``os.fsencode``, as written in the inputs: ``a.jpg`` and
``./a.jpg`` are different strings), as a big-endian integer, modulo N. It depends on nothing but the path
string, so every machine given the same inputs (the same list file) agrees on the split, run after run, and the
N shards partition the inputs.

Light: the standard library (pyarrow only for URIs, when one is given).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import glob
import hashlib
import os
import re
import stat
import sys

from icrt.runtime.base.errors import UnavailableError, UserInputError
from icrt.runtime.base.files import SYMLINK_LOOP, file_kind, is_symlink_loop


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """The inputs of a command: PATH arguments, a list file, a shard, and whether URIs are taken."""

    paths: tuple = ()  # files, folders, globs (and URIs when ``uris``)
    recursive: bool = False  # descend into sub-folders (and ** in globs)
    files_from: str | None = None  # a list file, one path a line ("-": standard input)
    shard: tuple[int, int] | None = None  # (I, N): only shard I of N
    uris: bool = False  # s3://, gs://, file:// PATHs listed through pyarrow (icrt batch); otherwise plain paths


# The one list of file-name extensions taken for images when a folder is listed (icrt score, calibration,
# training data folders); lower case, with the dot. Files named on the command line are taken whatever their name.
IMAGE_EXTENSIONS = tuple(
    ".jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .ico .jp2 .avif .heic".split())
LOOP_NOTE = "symlink loop: a link back to a folder being walked, not followed (its images are listed once)"


def unlistable(e: OSError) -> str:
    """The problem of a folder that cannot be listed, as an input's error text."""
    why = "permission denied" if isinstance(e, PermissionError) else (e.strerror or str(e))
    return f"cannot list this folder ({why})"


def is_image_name(name) -> bool:
    """``name`` (str, bytes or path) ends in one of IMAGE_EXTENSIONS (any case)."""
    return os.path.splitext(os.fsdecode(name))[1].lower() in IMAGE_EXTENSIONS


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk(top: str, onerror=None):
    """Like ``os.walk(top, followlinks=True)``, sorted, but no folder is entered twice.

    Yields (folder, sub-folder names, other names, symlink loops met there). A loop is a link to a folder
    that is being walked (the walk would never end): it is not entered. A link to a folder inside ``top``,
    or to one already walked, is skipped: its images are listed under their own names. Other linked
    folders are walked. A folder that cannot be listed (no permission) is skipped; ``onerror(path, OSError)``
    is told of it, as os.walk's ``onerror``."""
    real_top = os.path.realpath(top)
    try:
        st = os.stat(top)
    except OSError as e:
        if onerror is not None:
            onerror(top, e)
        return
    seen = {(st.st_dev, st.st_ino)}
    todo = [(top, frozenset(seen))]  # (folder, (device, inode) of it and of the folders above it)
    while todo:
        folder, ancestors = todo.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if onerror is not None:
                onerror(folder, e)
            continue
        dirs, files, loops, below = [], [], [], []
        for e in entries:
            try:
                is_dir = e.is_dir()
                st = e.stat() if is_dir else None
            except OSError:  # a link loop that never ends in a file lands here too
                is_dir = False
            if not is_dir:
                files.append(e.name)
                continue
            dirs.append(e.name)
            key = (st.st_dev, st.st_ino)
            real = os.path.realpath(e.path) if e.is_symlink() else None
            if key in ancestors or (real and _inside(real_top, real)):
                loops.append(e.path)
            elif key not in seen and not (real and _inside(real, real_top)):
                seen.add(key)
                below.append((e.path, ancestors | {key}))
        yield folder, dirs, files, loops
        todo.extend(reversed(below))


def list_folder(folder: str, recursive: bool = False, problems: dict | None = None,
                notes: list | None = None) -> list[str]:
    """Entries named like images, sorted. Non-recursive listing keeps a *directory* named like an image, so
    that it is reported as an error rather than silently dropped. A folder that cannot be listed (the folder
    itself, or one met by a recursive walk) is listed in its place and named in ``problems`` (a failed input:
    its images could not be scored). Symlink loops met by a recursive walk are not inputs: they are told in
    ``notes`` as (path, text)."""
    problems = {} if problems is None else problems
    if not recursive:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            problems[folder] = unlistable(e)
            return [folder]
        return [e.path for e in entries if is_image_name(e.name)]
    out = []

    def unreadable(path, e):
        problems[path] = unlistable(e)
        out.append(path)

    for root, _, files, loops in walk(folder, onerror=unreadable):
        out.extend(sorted(os.path.join(root, f) for f in files if is_image_name(f)))
        if notes is not None:
            notes.extend((p, LOOP_NOTE) for p in loops)
    return out


def _match_parts(parts, pats) -> bool:
    """Path components against pattern components; ``**`` matches any number of them (not hidden ones)."""
    if not pats:
        return not parts
    if pats[0] == "**":
        return _match_parts(parts, pats[1:]) or (
            bool(parts) and not parts[0].startswith(".") and _match_parts(parts[1:], pats))
    if not parts or (parts[0].startswith(".") and not pats[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pats[0]) and _match_parts(parts[1:], pats[1:])


def glob_recursive(pattern: str, problems: dict | None = None, notes: list | None = None) -> list[str]:
    """``glob.glob(pattern, recursive=True)`` over :func:`walk`, so that linked folders are never entered twice.
    Folders that cannot be listed are listed too, and named in ``problems``; symlink loops met on the way are
    told in ``notes`` (see :func:`list_folder`)."""
    parts = pattern.split(os.sep)
    n = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    base = os.sep.join(parts[:n]) or (os.sep if pattern.startswith(os.sep) else "")
    pats = [p for p in parts[n:] if p]
    dirs_only = pattern.endswith(os.sep)
    out = []

    def unreadable(path, e):
        name = path if base else os.path.relpath(path)
        out.append(name)
        if problems is not None:
            problems[name] = unlistable(e)

    for folder, _, files, loops in walk(base or os.curdir, onerror=unreadable):
        rel = os.path.relpath(folder, base or os.curdir)
        rel_parts = [] if rel == os.curdir else rel.split(os.sep)
        prefix = folder if base else ("" if rel == os.curdir else rel)
        if prefix and _match_parts(rel_parts, pats):
            out.append(os.path.join(prefix, "") if dirs_only or not rel_parts else prefix)
        if not dirs_only:
            out.extend(os.path.join(prefix, f) for f in files if _match_parts(rel_parts + [f], pats))
        if notes is not None:
            notes.extend((p if base else os.path.relpath(p), LOOP_NOTE) for p in loops)
    return sorted(out)


def collect(args, recursive: bool = False, problems: dict | None = None, notes: list | None = None) -> list[str]:
    """Files as given (any extension), folders listed, globs expanded; duplicates dropped, order kept.

    A path that does not exist is kept, so that it gets its own error line. So is a directory named like
    an image (``photos.jpg``): most likely a mistake, reported as one; ``photos.jpg/`` scans it as a folder.
    Links that never end in a file stay in the list and are named in ``problems`` (path -> ``"symlink loop"``),
    and so do folders that cannot be listed (path -> ``"cannot list this folder (...)"``): both are failed
    inputs. A link back to a folder being walked is no input: it is told in ``notes`` (path, text)."""
    problems = {} if problems is None else problems
    paths = []
    for arg in args:
        arg = os.fspath(arg)
        if os.path.isdir(arg) and not is_image_name(arg):
            paths.extend(list_folder(arg, recursive, problems, notes))
        elif not os.path.lexists(arg) and glob.has_magic(arg):
            if recursive and "**" in arg:
                matches = glob_recursive(arg, problems, notes)
            else:
                matches = sorted(glob.glob(arg))
            for m in matches:
                if m in problems:
                    paths.append(m)
                elif os.path.isdir(m):
                    if recursive:
                        paths.extend(list_folder(m, True, problems, notes))
                    elif is_image_name(m):
                        paths.append(m)
                else:
                    paths.append(m)
            if not matches:
                paths.append(arg)
        else:
            paths.append(arg)
    out = unique(paths)
    for p in out:
        if p not in problems and os.path.islink(p) and is_symlink_loop(p):
            problems[p] = SYMLINK_LOOP
    return out


# --- lists, shards, the gathered work -------------------------------------------------------------------------

MAX_LINE = 4096  # bytes: Linux's PATH_MAX; a longer line is no path
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """``s3://bucket/key``, ``gs://...``, ``file:///...``: a location read through pyarrow's file systems."""
    return bool(_URI.match(path))


MAX_LIST_LINES = 20_000_000  # lines of a --files-from list at most (icrt batch is for millions of images)
MAX_LIST_BYTES = 2 << 30  # bytes of a list at most: an endless pipe stops here, not when memory runs out


def _open_list(path: str, name: str):
    """The list file ``path`` opened for reading (binary): a regular file or a FIFO (a pipe, ``<(cmd)``), nothing
    else (``/dev/zero`` and other devices are refused, they never end); UserInputError naming the problem."""
    def refuse(problem):
        raise UserInputError(f"cannot read --files-from {name}: {problem}")

    try:
        st = os.stat(path)
    except FileNotFoundError:
        refuse("broken symbolic link" if os.path.islink(path) else "no such file")
    except NotADirectoryError:
        refuse("no such file")
    except OSError as e:
        refuse(e.strerror or str(e))
    except ValueError as e:  # a NUL byte in the name
        refuse(str(e))
    if stat.S_ISDIR(st.st_mode):
        refuse("is a directory, not a list of paths")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        refuse(f"is {file_kind(st)}, not a list of paths (a regular file, a pipe or - for standard input)")
    try:
        f = open(path, "rb")  # a FIFO waits here for its writer, as any reader of a named pipe does
        st = os.fstat(f.fileno())
    except OSError as e:
        refuse("permission denied" if isinstance(e, PermissionError) else (e.strerror or str(e)))
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):  # swapped since the check above
        f.close()
        refuse(f"is {file_kind(st)}, not a list of paths")
    return f


def read_path_list(path: str) -> list[str]:
    """The paths in the list file ``path`` (``-``: standard input), in order; UserInputError for a bad list.

    Read a line at a time (a line is read at most :data:`MAX_LINE` + 2 bytes at a time), so that a list that is no
    text list of paths stops at its first NUL byte or over-long line, and one that never ends at
    :data:`MAX_LIST_LINES` lines or :data:`MAX_LIST_BYTES` bytes, with memory bounded by those."""
    from icrt.runtime.base.text import printable

    name = "standard input" if path == "-" else printable(path)
    f = sys.stdin.buffer if path == "-" else _open_list(path, name)
    out, number, size = [], 0, 0
    try:
        while True:
            try:
                line = f.readline(MAX_LINE + 2)  # the path, "\r\n", and one byte to tell a longer line
            except OSError as e:
                raise UserInputError(f"cannot read --files-from {name}: {e.strerror or e}") from None
            if not line:
                return out
            number += 1
            size += len(line)
            if number > MAX_LIST_LINES or size > MAX_LIST_BYTES:
                raise UserInputError(f"--files-from {name}: longer than {MAX_LIST_LINES:,} lines or "
                                     f"{MAX_LIST_BYTES >> 30} GiB (is it endless?); split it into smaller lists")
            if b"\0" in line:
                raise UserInputError(f"--files-from {name} line {number}: a NUL byte, which no file name can hold "
                                     "(is this a text list of paths, one a line?)")
            if not line.endswith(b"\n") and len(line) > MAX_LINE:
                raise UserInputError(f"--files-from {name} line {number}: more than {MAX_LINE} bytes, longer than "
                                     "any path (is this a text list of paths, one a line?)")
            line = line[:-1] if line.endswith(b"\n") else line
            line = line[:-1] if line.endswith(b"\r") else line
            if len(line) > MAX_LINE:
                raise UserInputError(f"--files-from {name} line {number}: {len(line)} bytes, longer than any path "
                                     f"({MAX_LINE}; is this a text list of paths, one a line?)")
            if line.strip():
                out.append(os.fsdecode(line))
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ValueError with a one-line reason."""
    m = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text or "", re.ASCII)  # ASCII digits only
    if not m:
        if re.fullmatch(r"\s*-\s*[0-9]+\s*/.*", text or ""):
            raise ValueError(f"I must be 0 or more (shards are counted from 0), got {text!r}")
        raise ValueError(f"expected I/N (shard I of N, counted from 0, e.g. 0/4; ASCII digits), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or n > 1_000_000:
        raise ValueError(f"N must be 1 .. 1000000, got {text!r}")
    if i >= n:
        raise ValueError(f"I must be 0 .. {n - 1} (shards are counted from 0), got {text!r}")
    return i, n


def shard_argv(argv: list[str]) -> list[str]:
    """``--shard -1/2`` as ``--shard=-1/2``: argparse takes a value that starts with '-' for an option (and says
    only "expected one argument"); joined, the value reaches :func:`parse_shard`, which says what is wrong."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "--shard" and out[i + 1].startswith("-") and "/" in out[i + 1]:
            out[i:i + 2] = [f"--shard={out[i + 1]}"]
            break
    return out


def shard_of(path: str, n: int) -> int:
    """The shard (0 .. n-1) of ``path``: BLAKE2b of its bytes, first 8 bytes big-endian, modulo n."""
    digest = hashlib.blake2b(os.fsencode(path), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def select_shard(paths, shard: tuple[int, int] | None) -> list[str]:
    """The paths of shard (I, N), order kept; all of them when ``shard`` is None."""
    if shard is None:
        return list(paths)
    i, n = shard
    return [p for p in paths if shard_of(p, n) == i]


def unique(paths) -> list[str]:
    """Duplicates dropped, order kept."""
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def collect_paths(args_paths, recursive: bool, problems: dict) -> list[str]:
    """PATH arguments through the runtime's walker (``runtime.scoring.inputs.collect``): folders that cannot be listed
    are failed inputs (in ``problems``), and symlink loops met while walking are told on stderr, one line each
    (they are no inputs: the folder they point back to is listed once)."""
    import logging

    from icrt.runtime.base.text import printable

    notes = []
    try:
        paths = collect(args_paths, recursive=recursive, problems=problems, notes=notes) if args_paths else []
    except OSError as e:
        where = printable(os.fsdecode(e.filename)) if isinstance(e.filename, (str, bytes)) else ""
        raise UserInputError(f"cannot list {where}: {e.strerror or e}") from None
    for path, text in notes:
        logging.getLogger("icrt").warning("icrt: %s: %s", printable(path), text)
    return paths


def gather(opts: InputOptions, problems: dict) -> list[str]:
    """The command's paths: PATH arguments through the runtime's walker (``runtime.scoring.inputs.collect``; with
    ``list_uri(uri, recursive) -> [uri]``, the URIs among them listed by it, after the local paths), then the
    ``--files-from`` list, duplicates dropped, then ``--shard``. UserInputError when neither gives a path."""
    from icrt.runtime.base.text import printable

    if not opts.paths and not opts.files_from:
        raise UserInputError("nothing to score: give image PATHs or --files-from LIST")
    uris = [a for a in opts.paths if is_uri(a)] if opts.uris else []
    paths = collect_paths([a for a in opts.paths if a not in uris], opts.recursive, problems)
    for u in uris:
        paths += list_uri(u, opts.recursive)
    listed = read_path_list(opts.files_from) if opts.files_from else []
    paths = unique(paths + listed)
    if not paths:
        what = " ".join(printable(p) for p in opts.paths)
        if opts.files_from:
            what = (what + " and " if what else "") + f"--files-from {printable(opts.files_from)}"
        raise UserInputError("no images found in " + what)
    chosen = select_shard(paths, opts.shard)
    if opts.shard and not chosen:
        import logging
        logging.getLogger("icrt").info("icrt: shard %d/%d holds none of the %d input(s)", *opts.shard, len(paths))
    return chosen


def in_input_order(scorer, paths: list[str], problems: dict, progress=None, **score_options):
    """Records in input order: the scorer's (``iter_score(..., **score_options)``), and an error record for each
    path found bad while listing (``problems``). ``progress``: a callable told of each record."""
    it = scorer.iter_score([p for p in paths if p not in problems], **score_options)
    for p in paths:
        rec = {"image": p, "error": problems[p]} if p in problems else next(it)
        if progress is not None:
            progress(rec)
        yield rec


# --- URIs, through pyarrow's file systems -------------------------------------------------------------------

BUCKET_SCHEMES = ("s3", "gs", "gcs")  # their paths are bucket/key: one file system per bucket serves all keys


def _pyarrow_fs():
    """pyarrow's file systems (UnavailableError naming the extra to install without pyarrow)."""
    try:
        import pyarrow.fs as pafs
    except ImportError:
        from icrt.runtime.base.install import extra_hint

        raise UnavailableError(f"inputs named by URI are read through pyarrow; {extra_hint('scale')}") from None
    return pafs


@functools.lru_cache(maxsize=64)
def _filesystem(base: str):
    pafs = _pyarrow_fs()
    try:
        return pafs.FileSystem.from_uri(base)[0]
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for unknown schemes and bad URIs
        raise UserInputError(f"{base}: cannot open through pyarrow ({type(e).__name__}: {e})") from None


def uri_filesystem(uri: str):
    """(pyarrow FileSystem, path within it) for ``s3://bucket/key``, ``gs://...``, ``file:///...``; the file
    system of a bucket is made once (for S3 that may mean a region look-up)."""
    scheme, rest = uri.split("://", 1)
    if scheme in BUCKET_SCHEMES:
        bucket = rest.split("/", 1)[0]
        return _filesystem(f"{scheme}://{bucket}"), rest
    if scheme == "file":
        return _filesystem("file:///"), "/" + rest.lstrip("/") if not rest.startswith("/") else rest
    pafs = _pyarrow_fs()
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:
        raise UserInputError(f"{uri}: cannot open through pyarrow ({type(e).__name__}: {e})") from None


def list_uri(uri: str, recursive: bool) -> list[str]:
    """A URI naming a file -> [uri]; naming a folder (prefix) -> the image-named files in it, as URIs, sorted."""
    import pyarrow.fs as pafs

    fs, path = uri_filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        return [uri]
    scheme = uri.split("://", 1)[0]
    if scheme not in BUCKET_SCHEMES and scheme != "file":
        raise UserInputError(f"{uri}: only s3://, gs:// and file:// folders can be listed; name the files")
    found = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    names = sorted(f.path for f in found if f.type == pafs.FileType.File and is_image_name(f.path))
    return [f"{scheme}://{n}" for n in names]


def read_uri(uri: str) -> bytes:
    from icrt.runtime.scoring.preprocess import ImageError
    fs, path = uri_filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise ImageError(uri, "no such file") from None
    except Exception as e:
        raise ImageError(uri, f"cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
