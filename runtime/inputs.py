"""Turn command-line arguments (files, folders, globs) into an ordered list of image paths."""
from __future__ import annotations

import glob
import os

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .ico .jp2 .avif .heic".split())


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_folder(folder: str, recursive: bool = False) -> list[str]:
    """Entries named like images, sorted. Non-recursive listing keeps a *directory* named like an image, so
    that it is reported as an error rather than silently dropped."""
    if not recursive:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)  # OSError: the CLI reports it
        return [e.path for e in entries if is_image_name(e.name)]
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out.extend(os.path.join(root, f) for f in sorted(files) if is_image_name(f))
    return out


def collect(args, recursive: bool = False) -> list[str]:
    """Files as given (any extension), folders listed, globs expanded; duplicates dropped, order kept.

    A path that does not exist is kept, so that it gets its own error line. So is a directory named like
    an image (``photos.jpg``): most likely a mistake, reported as one; ``photos.jpg/`` scans it as a folder."""
    paths = []
    for arg in args:
        arg = os.fspath(arg)
        if os.path.isdir(arg) and not is_image_name(arg):
            paths.extend(list_folder(arg, recursive))
        elif not os.path.lexists(arg) and glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=recursive))
            for m in matches:
                if os.path.isdir(m):
                    if recursive:
                        paths.extend(list_folder(m, True))
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
    return unique
