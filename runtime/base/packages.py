"""Installed packages, read from their metadata (nothing imported): versions, and two combinations that break icrt
in silence, checked by ``icrt doctor`` and again where they bite:

- :func:`onnxruntime_shadowed`: both ``onnxruntime`` and ``onnxruntime-gpu`` installed. They share one
  ``onnxruntime`` module and the one installed last wins, so the CPU build can hide the GPU providers and a GPU
  machine scores on its CPU (the onnxruntime backend says so when it opens without GPU providers);
- :func:`serve_problem`: numpy 2 beside PyTriton < 0.8, whose Python-backend stub then fails every request with
  HTTP 500 while the server looks ready (``icrt serve`` refuses to start).
"""
from __future__ import annotations

PYTRITON_NUMPY2 = (0, 8)  # the first PyTriton whose Python-backend stub works with numpy 2


def version(dist: str) -> str | None:
    """The installed version of the distribution ``dist`` (None: not installed); reads metadata, imports nothing."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _release(text: str | None) -> tuple[int, ...]:
    parts = []
    for p in (text or "0").split("+")[0].split("."):
        digits = "".join(c for c in p if c.isdigit()) if p[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


def onnxruntime_shadowed() -> str | None:
    """Why a GPU may silently go unused: both onnxruntime builds installed (None: only one, or none)."""
    if version("onnxruntime") and version("onnxruntime-gpu"):
        return ("both onnxruntime and onnxruntime-gpu are installed: they share one 'onnxruntime' module and the one "
                "installed last wins, so the CPU build can hide the GPU providers; keep one: pip uninstall -y "
                "onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    return None


def serve_problem(numpy_version: str | None = None, pytriton_version: str | None = None) -> str | None:
    """Why ``icrt serve`` cannot work in this environment (None: nothing known against it)."""
    numpy_version = numpy_version or version("numpy")
    pytriton_version = pytriton_version or version("nvidia-pytriton")
    if pytriton_version and _release(numpy_version)[0] >= 2 and _release(pytriton_version) < PYTRITON_NUMPY2:
        want = ".".join(map(str, PYTRITON_NUMPY2))
        return (f"numpy {numpy_version} is installed beside PyTriton {pytriton_version}, whose Python-backend stub "
                f"needs numpy < 2 (every request would fail with HTTP 500); pip install 'numpy<2' (or PyTriton >= "
                f"{want})")
    return None
