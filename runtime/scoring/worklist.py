"""What to score: PATH arguments, ``--files-from LIST`` (one path a line) and ``--shard I/N`` (a stable split by
path), gathered once (:func:`gather`); and the scores of such a list in input order (:func:`in_input_order`).

Shared by ``icrt score`` and ``icrt batch``. Light: imports only the standard library.

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
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import sys

from icrt.runtime.base.errors import UserInputError

MAX_LINE = 4096  # bytes: Linux's PATH_MAX; a longer line is no path
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """``s3://bucket/key``, ``gs://...``, ``file:///...``: a location read through pyarrow's file systems."""
    return bool(_URI.match(path))


def _list_problem(path: str) -> str | None:
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "no such file"
    except NotADirectoryError:
        return "no such file"
    except OSError as e:
        return e.strerror or str(e)
    except ValueError as e:  # a NUL byte in the name
        return str(e)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a list of paths"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def read_path_list(path: str) -> list[str]:
    """The paths in the list file ``path`` (``-``: standard input), in order; UserInputError for a bad list."""
    from icrt.runtime.base.text import printable

    name = "standard input" if path == "-" else printable(path)
    problem = _list_problem(path)
    if problem:
        raise UserInputError(f"cannot read --files-from {name}: {problem}")
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as e:
        raise UserInputError(f"cannot read --files-from {name}: {e.strerror or e}") from None
    out = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        if b"\0" in line:
            raise UserInputError(f"--files-from {name} line {number}: a NUL byte, which no file name can hold "
                                 "(is this a text list of paths, one a line?)")
        if len(line) > MAX_LINE:
            raise UserInputError(f"--files-from {name} line {number}: {len(line)} bytes, longer than any path "
                                 f"({MAX_LINE}; is this a text list of paths, one a line?)")
        out.append(os.fsdecode(line))
    return out


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


def shard_arg(text: str) -> tuple[int, int]:
    """argparse ``type`` for ``--shard I/N``."""
    import argparse
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    from icrt.runtime.scoring.inputs import collect

    notes = []
    try:
        paths = collect(args_paths, recursive=recursive, problems=problems, notes=notes) if args_paths else []
    except OSError as e:
        where = printable(os.fsdecode(e.filename)) if isinstance(e.filename, (str, bytes)) else ""
        raise UserInputError(f"cannot list {where}: {e.strerror or e}") from None
    for path, text in notes:
        logging.getLogger("icrt").warning("icrt: %s: %s", printable(path), text)
    return paths


def gather(args, problems: dict, list_uri=None) -> list[str]:
    """The command's paths: PATH arguments through the runtime's walker (``runtime.scoring.inputs.collect``; with
    ``list_uri(uri, recursive) -> [uri]``, the URIs among them listed by it, after the local paths), then the
    ``--files-from`` list, duplicates dropped, then ``--shard``. UserInputError when neither gives a path."""
    from icrt.runtime.base.text import printable

    if not args.paths and not args.files_from:
        raise UserInputError("nothing to score: give image PATHs or --files-from LIST")
    uris = [a for a in args.paths if is_uri(a)] if list_uri is not None else []
    paths = collect_paths([a for a in args.paths if a not in uris], args.recursive, problems)
    for u in uris:
        paths += list_uri(u, args.recursive)
    listed = read_path_list(args.files_from) if args.files_from else []
    paths = unique(paths + listed)
    if not paths:
        what = " ".join(printable(p) for p in args.paths)
        if args.files_from:
            what = (what + " and " if what else "") + f"--files-from {printable(args.files_from)}"
        raise UserInputError("no images found in " + what)
    chosen = select_shard(paths, args.shard)
    if args.shard and not chosen:
        import logging
        logging.getLogger("icrt").info("icrt: shard %d/%d holds none of the %d input(s)", *args.shard, len(paths))
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
