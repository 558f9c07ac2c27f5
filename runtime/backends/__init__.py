"""Inference backends: a bundle file in, ``run(batch) -> scores`` out, found through a small registry.

Each backend module registers itself with :func:`register_backend`: its name (``--backend NAME``), an
``open`` function, an ``available()`` check (cheap: it must not import the backend's library), its place in
``auto``'s order, and the manifest ``files`` key it reads. The built-in modules (``tensorrt``, ``onnxruntime``,
``openvino``) are imported on the first look at the registry; importing them loads neither TensorRT, onnxruntime nor
OpenVINO (nor numpy).

``open_backend(manifest, "auto", ...)`` walks the registry in ``auto`` order and remembers why each earlier
choice was passed over (the built-ins: TensorRT, then OpenVINO where installed and onnxruntime has no GPU providers,
then onnxruntime with GPU providers, then on CPU).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

from icrt.runtime.errors import EXIT_USAGE, BundleError, UnavailableError
from icrt.runtime.precisions import precision_names

AUTO = "auto"
BUILTIN_MODULES = ("icrt.runtime.backends.tensorrt", "icrt.runtime.backends.onnxruntime", "icrt.runtime.backends.openvino")


class BackendError(UnavailableError):
    """The requested backend or precision cannot run here; the message says why and what to do."""


class NotInBundleError(BackendError, BundleError):
    """The bundle has no (or a missing) file for the requested precision / backend: a usage error (exit 2)."""

    exit_code = EXIT_USAGE


class ModelRunError(BundleError):
    """A model that loaded and passed the checks failed while running a batch (an onnxruntime or TensorRT error):
    the model is broken for such inputs. The Scorer gives the images of that batch error records and goes on;
    commands end with exit code 2 (a model error) after writing every record."""


class Backend:
    """What the scorer needs from an inference engine (any object with this interface will do)."""

    name = "?"
    precision = "fp32"
    device = "cpu"
    max_batch: int | None = None  # largest batch the engine accepts (None: any)
    file = ""
    notes: list

    def run(self, batch):
        """N x 3 x S x S float32 numpy array -> N float32 scores."""
        raise NotImplementedError

    def takes_pixels(self, prep) -> bool:
        """Whether ``run`` also takes N x S x S x 3 uint8 pixels (resized, not normalised) for inputs preprocessed
        by ``prep``, normalising them itself (in the model graph); the Scorer then hands it those."""
        return False

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": self.device, "file": self.file,
                "max_batch": self.max_batch, "notes": list(getattr(self, "notes", []))}


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend.

    ``open(manifest, precision, *, threads=None, device_id=0, notes=None) -> Backend`` raises BackendError when
    it cannot run here (``auto`` then tries the next one) and BundleError for a broken bundle. ``notes``: what
    ``auto`` passed over before it, for the backend to keep in its own ``notes``.
    """

    name: str
    open: Callable
    available: Callable[[], bool]  # cheap: e.g. importlib.util.find_spec, never an import of the library
    auto_order: int | None = None  # place in "auto" (lower first); None: only when asked for by name
    files_key: str = ""  # the key of manifest files[precision] it reads
    unavailable: str = "not installed"  # what auto notes when available() is False


_REGISTRY: dict[str, BackendSpec] = {}
_builtins_loaded = False


def takes_pixels(backend, prep) -> bool:
    """Whether ``backend`` takes uint8 pixels for this preprocessing, normalising them in its model
    (``Backend.takes_pixels``); any object with ``run()`` will do as a backend, and takes floats."""
    method = getattr(backend, "takes_pixels", None)
    return bool(method and method(prep))


def installed(module: str) -> bool:
    """``module`` is installed (found without importing it): a backend's cheap ``available()``."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def register_backend(name: str, open: Callable, available: Callable[[], bool], auto_order: int | None = None,
                     files_key: str | None = None, unavailable: str = "not installed") -> BackendSpec:
    """Add (or replace) the backend ``name``; see :class:`BackendSpec`. ``files_key`` defaults to ``name``."""
    if not name or name == AUTO or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"invalid backend name {name!r}")
    spec = BackendSpec(name, open, available, auto_order, files_key or name, unavailable)
    _REGISTRY[name] = spec
    return spec


def registry() -> dict[str, BackendSpec]:
    """name -> BackendSpec of every registered backend (the built-ins are registered on the first call)."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
    return _REGISTRY


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(registry()))


def backend_choices() -> tuple[str, ...]:
    """What ``--backend`` accepts: ``auto`` and every registered name."""
    return (AUTO, *backend_names())


def auto_order() -> list[BackendSpec]:
    """The backends ``auto`` tries, in order."""
    specs = [s for s in registry().values() if s.auto_order is not None]
    return sorted(specs, key=lambda s: (s.auto_order, s.name))


def files_keys() -> tuple[str, ...]:
    """The keys a manifest's files[precision] may have: one per registered backend."""
    return tuple(dict.fromkeys(s.files_key for s in sorted(registry().values(), key=lambda s: s.name)))


def backend_spec(name: str) -> BackendSpec:
    spec = registry().get(name)
    if spec is None:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(backend_choices())})")
    return spec


def open_backend(manifest, backend: str = AUTO, precision: str = "fp32", threads: int | None = None,
                 device_id: int = 0) -> Backend:
    """Open ``precision`` of the bundle on ``backend``; ``auto``: the first registered backend, in auto order,
    that is available and opens (the notes of the one returned say why the earlier ones were passed over).
    When none opens, the last one's error is raised."""
    if backend != AUTO:
        spec = backend_spec(backend)
    if precision not in precision_names():
        raise BackendError(f"unknown precision {precision!r} (choose from {', '.join(precision_names())})")
    if backend != AUTO:
        return spec.open(manifest, precision, threads=threads, device_id=device_id)
    passed_over, last = [], None
    for spec in auto_order():
        if not spec.available():
            passed_over.append(f"{spec.name}: {spec.unavailable}")
            continue
        try:
            return spec.open(manifest, precision, threads=threads, device_id=device_id, notes=passed_over)
        except BackendError as e:
            passed_over.append(f"{spec.name}: {e}")
            last = e
    if last is not None:
        raise last
    raise BackendError("no inference backend is available here (" + "; ".join(passed_over) + "); "
                       "pip install onnxruntime")
