"""An ``icrt batch --out DIR`` folder, guarded: ``run.json`` (what scores the folder: the bundle, its model files'
digests, preprocessing and score range, checked when a run is resumed; and where its images were, for ``icrt
report``: ``runtime.batch.origin``), what a folder must hold before icrt writes
into it (icrt's own regular files only: never links, FIFOs or someone else's files), the lock one run holds, and
:func:`prepare_out`, which checks all of it before any work.
"""
from __future__ import annotations

import fnmatch
import glob
import json
import os

from icrt.runtime.base.errors import IcrtError, UserInputError, one_line
from icrt.runtime.batch.layout import (
    LOCK_FILE,
    OWNED_FILES,
    PART_GLOB,
    RUN_FILE,
    SUCCESS_FILE,
    part_files,
    write_owned_file,
)
from icrt.runtime.batch.origin import IMAGES, images_record
from icrt.runtime.batch.parts import done_images

RUN_FORMAT = "icrt-batch/1"
MAX_RUN_BYTES = 1 << 20


def model_file_digest(path: str) -> tuple[str | None, str | None]:
    """(SHA-256 hex, None) of the model file ``path`` as the backend loads it: a symbolic link is followed (the
    manifest's check already keeps it inside the bundle), so the digest is that of the file behind the link, and
    retargeting the link changes it. (None, why) when it cannot be hashed (missing, not a regular file,
    unreadable). Opened non-blocking: a FIFO is refused, never waited on."""
    import errno
    import hashlib
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return None, "no such file" if e.errno == errno.ENOENT else (e.strerror or str(e))
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None, "not a regular file"
            return hashlib.file_digest(f, "sha256").hexdigest(), None
        except OSError as e:
            return None, e.strerror or str(e)


def model_identity(m, precision: str) -> dict:
    """What scores a folder, for ``run.json``: the SHA-256 of each model file the bundle has for ``precision``
    (one per backend form: the file that scores is one of them; ``problem`` says why one could not be hashed), of
    the preprocessing, and the score range."""
    import hashlib

    files = {}
    digests = {}  # path -> (digest, problem): backend forms often share one file (fp32: model.onnx), hashed once
    for key, name in sorted((m.files.get(precision) or {}).items()):
        try:
            path = m.path(name, f"files.{precision}.{key}")
        except IcrtError:
            continue
        if path not in digests:
            digests[path] = model_file_digest(path)
        digest, problem = digests[path]
        files[key] = {"file": name, "sha256": digest, **({"problem": problem} if problem else {})}
    prep = m.preprocessing.to_dict()
    text = json.dumps(prep, sort_keys=True)
    return {"files": files, "preprocessing": prep,
            "preprocessing_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "score_range": list(m.score_range)}


def run_config(job) -> dict:
    return {"format": RUN_FORMAT, "bundle": job.bundle_name, "bundle_path": job.bundle,
            "precision": job.precision, "kind": job.bundle_kind, "model": job.extra.get("model"),
            IMAGES: job.extra.get(IMAGES)}


RUN_FIELDS = ("bundle", "bundle_path", "precision", "kind")  # text fields every icrt's run.json has ("model": later)


def run_file_problem(prev) -> str | None:
    """Why ``prev`` (a parsed run.json) is not one icrt wrote, or None: the format and every field icrt writes
    (``model`` may be missing: an older icrt wrote none, and ``--resume`` refuses such a folder by name)."""
    if not isinstance(prev, dict) or prev.get("format") != RUN_FORMAT:
        return f"not an {RUN_FORMAT} run file"
    missing = [k for k in RUN_FIELDS if not isinstance(prev.get(k), str)]
    if missing:
        return f"not a complete {RUN_FORMAT} run file (no {', '.join(missing)})"
    if "model" in prev and not isinstance(prev["model"], dict):
        return f"not a complete {RUN_FORMAT} run file (model is not an object)"
    return None


def _read_run(run_file: str) -> dict:
    """A previous run's ``run.json`` (read without following a link); UserInputError when it is not icrt's."""
    from icrt.runtime.base.files import read_owned
    from icrt.runtime.base.text import printable
    try:
        prev = json.loads(read_owned(run_file, MAX_RUN_BYTES).decode("utf-8"))
        problem = run_file_problem(prev)
        if problem:
            raise ValueError(problem)
    except (OSError, ValueError, RecursionError) as e:
        why = (getattr(e, "strerror", None) if isinstance(e, OSError) else None) or str(e) or type(e).__name__
        raise UserInputError(f"{printable(run_file)}: {one_line(why)}; is --out an icrt batch folder? (choose a new "
                             "or empty folder)") from None
    return prev


def _is_owned_name(name: str) -> bool:
    """A name icrt batch writes in DIR (its files, parts and temporary files)."""
    return name in OWNED_FILES or name.startswith(".tmp-") or fnmatch.fnmatchcase(name, PART_GLOB)


def _check_folder(out: str) -> tuple[dict | None, list[str]]:
    """(the previous run.json or None, the parts) of DIR, or UserInputError: icrt's own files there must be
    regular files (never links, FIFOs or folders), and a folder that is not empty must be an icrt batch folder, so
    that nothing of someone else's is replaced or removed: a complete run.json of icrt's (:func:`run_file_problem`)
    and parts, or, before the first part (a run stopped early), nothing but icrt's own files."""
    from icrt.runtime.base.files import owned_problem
    from icrt.runtime.base.text import printable

    for name in OWNED_FILES:
        path = os.path.join(out, name)
        problem = owned_problem(path)
        if problem:
            raise UserInputError(f"{printable(path)} {problem}")
    parts = part_files(out)
    for p in parts:
        problem = owned_problem(p)
        if problem:
            raise UserInputError(f"{printable(p)} {problem}")
    run_file = os.path.join(out, RUN_FILE)
    prev = _read_run(run_file) if os.path.lexists(run_file) else None
    if prev is None and parts:
        raise UserInputError(f"--out {printable(out)} holds {len(parts)} part(s) but no {RUN_FILE}: which model "
                             "scored them cannot be checked, so icrt will not add to them; choose another --out")
    if not parts:
        try:
            others = sorted(e for e in os.listdir(out) if e != LOCK_FILE and (prev is None or not _is_owned_name(e)))
        except OSError as e:
            raise UserInputError(f"cannot list --out {printable(out)}: {e.strerror or e}") from None
        if others:
            why = f"no {RUN_FILE}" if prev is None else f"a {RUN_FILE} but no parts"
            raise UserInputError(f"--out {printable(out)} is not empty and is not an icrt batch folder ({why}; "
                                 f"it holds {printable(others[0])}{' ...' if len(others) > 1 else ''}): icrt "
                                 "batch would replace or remove files in it; choose a new or empty folder")
    return prev, parts


def _same_model(prev: dict, mine: dict, out: str) -> None:
    """UserInputError unless the previous run scored with the same model (bundle name, precision, model file
    digests, preprocessing, score range)."""
    from icrt.runtime.base.text import printable

    def refuse(what, there, here):
        raise UserInputError(f"--resume: {printable(out)} was scored with {what} {there}, this run uses {here}; one "
                             "folder holds the scores of one model (use another --out)")
    for key in ("bundle", "precision"):
        if prev.get(key) != mine[key]:
            refuse(key, printable(repr(prev.get(key))), printable(repr(mine[key])))
    was, now = prev.get("model"), mine["model"]
    if not isinstance(was, dict):
        raise UserInputError(f"--resume: {printable(os.path.join(out, RUN_FILE))} records no model digest (an older "
                             "icrt wrote it), so the model cannot be checked; use another --out")
    files_was = was.get("files") if isinstance(was.get("files"), dict) else {}
    for key, entry in now["files"].items():
        old = files_was.get(key)
        old_digest = old.get("sha256") if isinstance(old, dict) else None
        if entry["sha256"] is None or old_digest is None:  # nothing to compare: never taken as "the same"
            where = f"here ({entry.get('problem')})" if entry["sha256"] is None else f"in {RUN_FILE}"
            raise UserInputError(f"--resume: the {key} model file {printable(entry['file'])} has no SHA-256 "
                                 f"{printable(where)}, so the model that scored {printable(out)} cannot be checked; "
                                 "use another --out")
        if old_digest != entry["sha256"]:
            refuse(f"another {key} model file", f"({entry['file']}: sha256 {str(old_digest)[:12]}...)",
                   f"sha256 {str(entry['sha256'])[:12]}...")
    if set(files_was) != set(now["files"]):
        refuse("model files for", printable(", ".join(sorted(map(str, files_was)))), ", ".join(sorted(now["files"])))
    if was.get("preprocessing_sha256") != now["preprocessing_sha256"]:
        refuse("other preprocessing", printable(json.dumps(was.get("preprocessing"))[:200]),
               json.dumps(now["preprocessing"]))
    if was.get("score_range") != now["score_range"]:
        refuse("the score range", printable(repr(was.get("score_range"))), repr(now["score_range"]))


def prepare_out(job) -> set[str]:
    """Check DIR (before any work), clean what a killed run left, and return the paths already done."""
    from icrt.runtime.base.files import folder_problem
    from icrt.runtime.base.text import printable

    out = job.out
    problem = folder_problem(out)
    if problem:
        raise UserInputError(f"cannot write into --out {printable(out)}: {problem}")
    os.makedirs(out, exist_ok=True)
    prev, parts = _check_folder(out)
    job.extra["lock"] = lock_folder(out)
    parts = part_files(out)  # again, under the lock
    if parts and not job.resume:
        raise UserInputError(f"--out {printable(out)} already holds a batch run ({len(parts)} part(s)): pass "
                             "--resume to continue it, or choose another folder")
    if parts:
        if prev is None:
            prev, _ = _check_folder(out)
        _same_model(prev, run_config(job), out)
    done = done_images(out) if parts else set()
    for stale in glob.glob(os.path.join(glob.escape(out), ".tmp-*")):  # a killed run's half-written file
        try:
            os.remove(stale)  # a link is removed, never what it points to
        except OSError:
            pass
    try:
        os.remove(os.path.join(out, SUCCESS_FILE))
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserInputError(f"cannot remove {printable(os.path.join(out, SUCCESS_FILE))}: {e.strerror or e}") from None
    job.extra[IMAGES] = images_record(out, job.extra.get("inputs_root"), (prev or {}).get(IMAGES))
    write_owned_file(os.path.join(out, RUN_FILE), json.dumps(run_config(job), indent=2) + "\n")
    return done


def lock_folder(out: str):
    """Hold ``DIR/.lock`` (an advisory lock, released when the process ends, even by SIGKILL): one run writes a
    folder at a time (two would number their parts alike). The open file; keep it for the run. The lock file is
    opened without following a link and must be a regular file (``runtime.base.files.open_owned``)."""
    import fcntl

    from icrt.runtime.base.files import open_owned
    from icrt.runtime.base.text import printable
    path = os.path.join(out, LOCK_FILE)
    try:
        f = os.fdopen(open_owned(path, write=True), "r+")
    except OSError as e:
        raise UserInputError(f"{printable(path)} {e.strerror or e}" if e.strerror and e.strerror.startswith(("is ", "has "))
                             else f"cannot open {printable(path)}: {e.strerror or e}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = printable(f.read(200).strip())
        f.close()
        raise UserInputError(f"--out {printable(out)} is being written by another icrt batch run ({holder or 'unknown'}); "
                             "give each run (each shard) its own folder") from None
    f.seek(0)
    f.truncate()
    import socket
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f

