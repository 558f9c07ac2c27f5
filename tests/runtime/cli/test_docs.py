"""Every command line in README.md and docs/*.md is run here as written, or by CI, or is marked as needing what
neither has (docs/architecture.md#documented-commands).

A fenced code block that holds command lines (lines starting with ``icrt``, ``python``, ``python3``, ``pip``, or
``$ `` and one of those) is one of these, by an HTML comment on the line just above its fence:

- ``<!-- doc: run -->`` (or no comment): :func:`test_documented_commands_run_as_written` runs every line of it with
  bash, in order, in one work folder per document laid out with the names the docs use (``photos/``,
  ``bundles/d2s``, ...: :func:`work_folder`), ``icrt`` being the console script of this checkout;
- ``<!-- doc: ci -->``: ``.ci/run`` runs each of its lines as written (checked here: the line is in .ci/run);
- ``<!-- doc: synopsis -->``: a usage line with placeholders;
- ``<!-- doc: needs WHAT -->``: needs what neither a test nor CI has (a GPU, TensorRT, a Jetson, Docker, a Ray
  cluster, the network, a long training).

In every block, each ``icrt COMMAND`` line names a real command and only options that command has, and every
``pip install`` line anywhere (blocks and inline code) installs icrt from a path, never the unpublished name.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

from tests.runtime.fixtures import ROOT, build_bundle

DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
MARK = re.compile(r"<!--\s*doc:\s*(run|ci|synopsis|needs\b[^>]*?)\s*-->")
COMMAND = re.compile(r"^(\$ )?(icrt|python3?|pip|pip3)( |$)")
FENCE = re.compile(r"^(\s*)```(.*)$")


class Block:
    def __init__(self, doc: str, line: int, info: str, mode: str, lines: list[str]):
        self.doc, self.line, self.info, self.mode, self.lines = doc, line, info, mode, lines

    def commands(self) -> list[str]:
        """The command lines: continuation lines (a trailing backslash) joined, the ``$ `` prompt taken off."""
        out, cur = [], ""
        for raw in self.lines:
            text = raw.strip()
            if cur:
                cur += " " + text
            elif COMMAND.match(text):
                cur = text[2:] if text.startswith("$ ") else text
            else:
                continue
            if cur.endswith("\\"):
                cur = cur[:-1].rstrip()
            else:
                out.append(cur)
                cur = ""
        return out + ([cur] if cur else [])

    def __repr__(self):
        return f"{self.doc}:{self.line}"


def blocks(doc: str) -> list[Block]:
    """Every fenced block of ``doc`` that holds a command line, with its mark (``run`` when unmarked)."""
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        text = f.read().splitlines()
    out, i = [], 0
    while i < len(text):
        m = FENCE.match(text[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(text) and not text[i].strip().startswith("```"):
            body.append(text[i])
            i += 1
        i += 1
        above = text[start - 1] if start else ""
        mark = MARK.search(above)
        b = Block(doc, start + 1, m.group(2).strip(), mark.group(1) if mark else "run", body)
        if b.commands():
            out.append(b)
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]


def test_docs_have_commands_and_every_mark_is_known():
    assert len(ALL) > 20
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if "<!-- doc:" in line:
                    assert MARK.search(line), f"{doc}:{n}: unknown mark {line.strip()!r}"


def _icrt_parser():
    from icrt.cli import TORCH_COMMANDS
    from icrt.runtime.cli.app import build_parser

    return build_parser(list(TORCH_COMMANDS.values()))[0]


def _options(parser, command: str) -> set[str] | None:
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices.get(command)
    if p is None:
        return None
    return {s for a in p._actions for s in a.option_strings}


@pytest.mark.parametrize("block", ALL, ids=repr)
def test_icrt_lines_name_real_commands_and_options(block):
    parser = _icrt_parser()
    for line in block.commands():
        for part in re.split(r"&&|\|", line):
            words = part.split()
            if not words or words[0] != "icrt" or len(words) < 2 or words[1].startswith("-"):
                continue
            command = words[1].strip("[]")
            if command in ("train", "export", "COMMAND"):
                continue
            known = _options(parser, command)
            assert known is not None, f"{block}: icrt {command}: no such command"
            for w in words[2:]:
                if w.startswith("#"):
                    break
                flag = w.strip("[]()|,'\"").split("=")[0]
                if flag.startswith("--") or re.fullmatch(r"-[a-zA-Z]", flag):
                    assert flag in known, f"{block}: icrt {command} has no option {flag}"


UNPUBLISHED = re.compile(r"pip3? install\s+(-\S+\s+)*['\"]?icrt(\[|['\"\s]|$)")


@pytest.mark.parametrize("doc", DOCS)
def test_no_install_line_names_the_unpublished_icrt_and_every_extra_exists(doc):
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = set(tomllib.load(f)["project"]["optional-dependencies"])
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        text = f.read()
    assert not UNPUBLISHED.search(text), f"{doc}: {UNPUBLISHED.search(text).group(0)!r}: icrt is not on the index"
    for m in re.finditer(r"pip3? install [^`\n]*", text):
        for group in re.findall(r"\[([a-z0-9,_-]+)\]", m.group(0)):
            if "/" in m.group(0) or m.group(0).split()[-1].startswith(("'.", '".', ".", "'dist", '"dist')):
                assert set(group.split(",")) <= extras, f"{doc}: {m.group(0)!r}: no such extra"


def _normal(line: str) -> str:
    line = line.split(" #")[0].strip()
    return " ".join(w for w in line.split() if w not in ("-q", "--quiet"))


@pytest.mark.parametrize("block", [b for b in ALL if b.mode == "ci"], ids=repr)
def test_ci_marked_lines_are_in_ci_as_written(block):
    import icrt.runtime as runtime

    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = " ".join(_normal(line) for line in f.read().replace("${version}", runtime.__version__).splitlines())
    for line in block.commands():
        assert _normal(line) in ci, f"{block}: {line!r} is marked ci but .ci/run does not run it as written"


# --- running the documented commands ----------------------------------------------------------------------------


def work_folder(path: str) -> dict:
    """The names the docs use, in ``path``: examples/ (the real ones), photo.jpg, photos/ (with a sub-folder),
    shots/ (JPEGs and a PNG), bundles/d2s and bundles/cmssa (tiny bundles: square and patches), all.txt and
    list.txt (image lists), Savoias-Dataset/ (the published layout, tiny); and a bin/ with ``icrt``, ``python`` and
    ``python3`` of this checkout. The environment to run in."""
    from tests.images import textured

    os.makedirs(path, exist_ok=True)
    shutil.copytree(os.path.join(ROOT, "examples"), os.path.join(path, "examples"))
    for folder, n in (("photos", 4), ("shots", 3), ("photos/holiday", 2)):
        os.makedirs(os.path.join(path, folder), exist_ok=True)
        for i in range(n):
            textured(80 + 8 * i, 60, seed=i, level=i / n).save(os.path.join(path, folder, f"img{i}.jpg"))
    textured(96, 72, seed=9).save(os.path.join(path, "photo.jpg"))
    textured(70, 90, seed=5).save(os.path.join(path, "shots", "scan.png"))
    images = sorted(glob.glob(os.path.join("photos", "**", "*.jpg"), root_dir=path, recursive=True))
    for name in ("all.txt", "list.txt"):
        with open(os.path.join(path, name), "w") as f:
            f.write("".join(f"{p}\n" for p in images))
    build_bundle(os.path.join(path, "bundles", "d2s"), int8=True)
    build_bundle(os.path.join(path, "bundles", "cmssa"), resize="patches")  # a patch model, as CM-SSA's are
    from pathlib import Path

    from tests.savoias_fake import published
    published(Path(path) / "Savoias-Dataset")
    bin_dir = os.path.join(path, "bin")
    os.makedirs(bin_dir)
    launcher = os.path.join(bin_dir, "icrt")
    with open(launcher, "w") as f:  # what pip writes for the console script
        f.write(f"#!{sys.executable}\nimport sys\nfrom icrt.cli import main\nsys.exit(main())\n")
    os.chmod(launcher, os.stat(launcher).st_mode | stat.S_IEXEC)
    for name in ("python", "python3"):
        os.symlink(sys.executable, os.path.join(bin_dir, name))
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": ROOT,
            "ICRT_PROGRESS": "0"}


RUN_DOCS = sorted({b.doc for b in ALL if b.mode == "run"})


@pytest.mark.slow
@pytest.mark.parametrize("doc", RUN_DOCS)
def test_documented_commands_run_as_written(doc, tmp_path):
    pytest.importorskip("pyarrow", reason="icrt batch and icrt report in the docs need the [scale] extra")
    env = work_folder(str(tmp_path))
    for block in (b for b in ALL if b.doc == doc and b.mode == "run"):
        for line in block.commands():
            r = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, f"{block}: {line}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def test_the_run_marked_commands_are_ones_the_work_folder_can_serve():
    """A quick look before the slow run: a run-marked line uses no placeholder (an upper-case word such as BUNDLE, or
    a [bracketed option])."""
    for b in (b for b in ALL if b.mode == "run"):
        for line in b.commands():
            words = shlex.split(line.split(" #")[0], posix=True)
            assert not any(re.fullmatch(r"[A-Z][A-Z_]{2,}(\.\.\.)?", w) for w in words), f"{b}: {line}"
            assert not any(w.startswith("[") and w != "[" for w in words), f"{b}: {line}"
