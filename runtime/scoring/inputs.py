"""Turn command-line arguments (files, folders, globs) into an ordered list of image paths."""
from __future__ import annotations

import fnmatch
import glob
import os

from icrt.runtime.base.files import SYMLINK_LOOP, is_symlink_loop

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
    seen, unique = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            unique.append(p)
            if p not in problems and os.path.islink(p) and is_symlink_loop(p):
                problems[p] = SYMLINK_LOOP
    return unique
