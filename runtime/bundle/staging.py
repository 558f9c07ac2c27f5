"""Bundles are built (export) or copied (:func:`copy_bundle`) into a temporary sibling folder and renamed into
place when complete.

A failed or interrupted export leaves an old bundle as it was; a folder that is not a bundle is never
replaced.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile

from icrt.runtime.base.errors import BundleError, UserInputError
from icrt.runtime.bundle.manifest import EXPORT_REPORT, MANIFEST_FILE, TIMING_CACHE, Manifest, load_manifest


def bundle_destination(out: str) -> str:
    """The folder the bundle will replace (a link to a folder: the folder); UserInputError if it cannot be one."""
    target = os.path.realpath(out) if os.path.islink(out) else out
    if os.path.lexists(target) and not os.path.isdir(target):
        raise UserInputError(f"--out {out}: exists and is not a folder")
    if os.path.isdir(target) and os.listdir(target) and not os.path.isfile(os.path.join(target, MANIFEST_FILE)):
        raise UserInputError(f"--out {out}: folder exists and is not a bundle (no {MANIFEST_FILE}); "
                             "it would be replaced: choose a new or empty folder")
    return target


def staging_folder(final: str) -> str:
    """A new, empty temporary sibling of ``final`` (same file system: the bundle is renamed into place)."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(final))}.tmp-")
    for old in glob.glob(os.path.join(final, TIMING_CACHE)):  # keep TensorRT's timing caches: later builds are faster
        if os.path.isfile(old) and not os.path.islink(old):
            shutil.copy2(old, work)
    return work


def install(work: str, final: str) -> None:
    """Rename the finished bundle ``work`` to ``final``; an old bundle there is replaced only now."""
    mode = os.stat(final).st_mode & 0o7777 if os.path.isdir(final) else 0o777 & ~_umask()
    os.chmod(work, mode)  # mkdtemp's own mode is 0700
    if not os.path.isdir(final):
        os.rename(work, final)
        return
    backup = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(final)), prefix=f".{os.path.basename(final)}.old-")
    os.rename(final, backup)  # onto the empty folder mkdtemp made
    try:
        os.rename(work, final)
    except BaseException:
        os.rename(backup, final)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def copy_bundle(src: str, dst: str) -> Manifest:
    """Copy the bundle ``src`` into the folder ``dst``: its manifest, export report and exactly the files the
    manifest names (TensorRT engines included), nothing else; a bundle already at ``dst`` is replaced only when
    the copy is complete. Returns the copy's manifest."""
    m = load_manifest(src)
    names = {MANIFEST_FILE, *(n for p in m.precisions() for n in m.files[p].values()), *(e.file for e in m.engines)}
    if os.path.isfile(os.path.join(m.root, EXPORT_REPORT)):
        names.add(EXPORT_REPORT)
    final = bundle_destination(dst)
    work = staging_folder(final)
    try:
        for name in sorted(names):
            os.makedirs(os.path.dirname(os.path.join(work, name)) or work, exist_ok=True)
            shutil.copyfile(m.path(name), os.path.join(work, name))
        copy = load_manifest(work)
        problem = copy.verify_files()  # a damaged copy (or source) is never installed
        if problem:
            raise BundleError(problem.replace(work, m.root, 1))
        install(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    copy.root = final
    return copy


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
