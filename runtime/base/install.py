"""The ``pip install`` line a message gives for an extra (``serve``, ``scale``, ``trt``, ...), in one place.

icrt is not on the package index: a line that names the distribution ``icrt`` with its extra would fail, or
install whatever someone registered under that name. The line names where this copy of icrt came from instead: its clone (the
folder with icrt's pyproject.toml, when the runtime is imported from one), or the folder or wheel file pip
installed it from (PEP 610's ``direct_url.json``), when that is still there. Otherwise it says what to name:
``pip install ".[serve]"`` from an icrt clone, or the wheel built from one (docs/install.md).
"""
from __future__ import annotations

import json
import os
import shlex
from urllib.parse import unquote, urlparse

DIST = "icrt"


def _clone() -> str | None:
    """The clone the runtime is imported from (the folder above runtime/ holds icrt's pyproject.toml), else None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
            text = f.read(4096)
    except OSError:
        return None
    return root if f'name = "{DIST}"' in text else None


def _installed_from() -> str | None:
    """The local folder or wheel file pip installed icrt from (when it still exists), else None."""
    from importlib import metadata

    try:
        text = metadata.distribution(DIST).read_text("direct_url.json")
        url = json.loads(text).get("url", "") if text else ""
    except (metadata.PackageNotFoundError, ValueError, AttributeError, OSError):
        return None
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    path = unquote(parsed.path)
    return path if os.path.exists(path) else None


def source() -> str | None:
    """Where this copy of icrt can be installed from again: a clone, a folder or a wheel (None: unknown)."""
    return _clone() or _installed_from()


def pip_line(extra: str = "") -> str:
    """A ``pip install`` line that installs ``extra`` for this copy of icrt (``extra`` may be ``serve,scale``; empty:
    icrt and its dependencies only)."""
    from icrt.runtime.base.version import __version__

    tail = f"[{extra}]" if extra else ""
    where = source()
    if where:
        return f"pip install {shlex.quote(where + tail)}"
    return (f'pip install ".{tail}" in an icrt clone, or pip install "icrt-{__version__}-py3-none-any.whl{tail}" '
            f"(the wheel built from a clone; {doc('install.md')})")


def doc(name: str) -> str:
    """The file of the doc ``name`` (``install.md``) in this copy of icrt: the clone's docs/, or the docs the wheel
    installs beside the package (icrt/docs/), so that a message can name a file that is there."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", name)


def extra_hint(extra: str) -> str:
    """``the [serve] extra: pip install ...`` for a message that says what is missing."""
    return f"install the [{extra}] extra: {pip_line(extra)}"
