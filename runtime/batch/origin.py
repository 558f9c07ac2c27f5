"""Where an ``icrt batch`` run's images were: the ``images`` record of ``run.json``, which ``icrt report`` reads to
decide which thumbnails it may show (docs/report.md).

The record holds the working folder (what the relative paths are relative to), the images root (the folder every
local input lies in, links in folder names resolved), this host's name and the batch folder's own identity (device
and inode). A report shows images below the recorded root only when the record is this machine's and names this
very folder: a batch folder someone sends, unpacked anywhere, matches neither (its inode is new whatever its
run.json claims), so it shows no image of this machine unless the user names a root (``--images-root``).
"""
from __future__ import annotations

import os
import socket

IMAGES = "images"  # the key in run.json


def inputs_root(paths) -> str | None:
    """The folder every local input lies in (resolved), or None when there is none (URIs only)."""
    from icrt.runtime.scoring.inputs import is_uri

    folders = {os.path.dirname(p) for p in paths if not is_uri(p)}  # the distinct folders first: few syscalls
    real = {os.path.realpath(os.path.abspath(f)) for f in folders}
    return os.path.commonpath(sorted(real)) if real else None


def _identity(folder: str) -> list[int]:
    st = os.stat(folder)
    return [st.st_dev, st.st_ino]


def images_record(out: str, root: str | None, previous=None) -> dict:
    """The ``images`` record of a run writing ``out`` whose inputs lie below ``root``; a resumed run's root also
    covers the rows kept from the run before, when that run's record was this machine's for this folder."""
    if root is not None and isinstance(previous, dict) and origin_problem(previous, out) is None:
        was = previous.get("root")
        if isinstance(was, str) and os.path.isabs(was):
            root = os.path.commonpath([was, root])
    return {"host": socket.gethostname(), "cwd": os.getcwd(), "root": root, "folder": _identity(out)}


def origin_problem(record, folder: str) -> str | None:
    """Why ``record`` (the ``images`` of a batch folder's run.json, untrusted) does not say where this folder's
    images are on this machine, or None: it must name this host and this very folder (a copy has another inode)."""
    if not isinstance(record, dict):
        return "records no images root (written by an older icrt, or not by icrt batch)"
    if record.get("host") != socket.gethostname():
        return "was written on another machine"
    try:
        same = record.get("folder") == _identity(folder)
    except OSError:
        same = False
    if not same:
        return "is a copy of the one icrt batch wrote (copied, moved to another disk or unpacked)"
    return None


def recorded_root(record, folder: str) -> tuple[str | None, str | None]:
    """(the images root this machine's run recorded for ``folder``, None) or (None, why there is none)."""
    problem = origin_problem(record, folder)
    if problem:
        return None, problem
    root = record.get("root")
    if not (isinstance(root, str) and os.path.isabs(root) and "\0" not in root):
        return None, "scored no local images"
    return root, None


def recorded_cwd(record) -> str | None:
    """The working folder the run's relative paths are relative to, when the record names one."""
    cwd = record.get("cwd") if isinstance(record, dict) else None
    return cwd if isinstance(cwd, str) and os.path.isabs(cwd) and "\0" not in cwd else None
