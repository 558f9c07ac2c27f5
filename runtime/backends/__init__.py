"""Inference backends: a bundle file in, ``run(batch) -> scores`` out, found through a small registry.

Each backend module registers itself with :func:`icrt.runtime.backends.base.register_backend`: its name (``--backend
NAME``), an ``open`` function, an ``available()`` check (cheap: it must not import the backend's library), its place
in ``auto``'s order, and the manifest ``files`` form it reads. The built-in modules (``tensorrt``, ``onnxruntime``,
``openvino``) are imported on the first look at the registry; importing them loads neither TensorRT, onnxruntime nor
OpenVINO (nor numpy).

``open_backend(manifest, "auto", ...)`` walks the registry in ``auto`` order and remembers why each earlier
choice was passed over (the built-ins: TensorRT, then OpenVINO where installed and onnxruntime has no GPU providers,
then onnxruntime with GPU providers, then on CPU).
"""
from __future__ import annotations

import importlib
import threading

import icrt.runtime.backends.base as base
from icrt.runtime.backends.base import (  # noqa: F401 (the names a caller of the backends uses, in one place)
    AUTO,
    Backend,
    BackendError,
    BackendSpec,
    ModelRunError,
    NotInBundleError,
    installed,
    register_backend,
    takes_pixels,
)
from icrt.runtime.bundle.precisions import precision_names

BUILTIN_MODULES = ("icrt.runtime.backends.tensorrt", "icrt.runtime.backends.onnxruntime", "icrt.runtime.backends.openvino")
_builtins_loaded = False
_LOADING = threading.RLock()


def registry() -> dict[str, BackendSpec]:
    """name -> BackendSpec of every registered backend (the built-ins are registered on the first call; a second
    thread asking meanwhile waits for them, so it never sees a half-filled registry)."""
    global _builtins_loaded
    if not _builtins_loaded:
        with _LOADING:
            if not _builtins_loaded:
                for module in BUILTIN_MODULES:
                    importlib.import_module(module)
                _builtins_loaded = True
    return base._REGISTRY


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(registry()))


def backend_choices() -> tuple[str, ...]:
    """What ``--backend`` accepts: ``auto`` and every registered name."""
    return (AUTO, *backend_names())


def auto_order() -> list[BackendSpec]:
    """The backends ``auto`` tries, in order."""
    specs = [s for s in registry().values() if s.auto_order is not None]
    return sorted(specs, key=lambda s: (s.auto_order, s.name))


def backend_spec(name: str) -> BackendSpec:
    spec = registry().get(name)
    if spec is None:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(backend_choices())})")
    return spec


def open_backend(manifest, options) -> Backend:
    """Open a bundle's model as ``options`` say (a ``icrt.runtime.scoring.options.ScorerOptions``: ``backend``,
    ``precision``, and what each backend reads of it, e.g. ``threads``, ``device_id``); ``backend="auto"``: the first
    registered backend, in auto order, that is available and opens (the notes of the one returned say why the
    earlier ones were passed over). When none opens, the last one's error is raised."""
    backend, precision = options.backend, options.precision
    if backend != AUTO:
        spec = backend_spec(backend)
    if precision not in precision_names():
        raise BackendError(f"unknown precision {precision!r} (choose from {', '.join(precision_names())})")
    if backend != AUTO:
        return spec.open(manifest, options)
    passed_over, last = [], None
    for spec in auto_order():
        if not spec.available():
            passed_over.append(f"{spec.name}: {spec.unavailable}")
            continue
        try:
            return spec.open(manifest, options, notes=passed_over)
        except BackendError as e:
            passed_over.append(f"{spec.name}: {e}")
            last = e
    if last is not None:
        raise last
    raise BackendError("no inference backend is available here (" + "; ".join(passed_over) + "); "
                       "pip install onnxruntime")
