"""What every inference backend is built on: the :class:`Backend` interface, its errors, and the registry a backend
module adds itself to with :func:`register_backend` (its name, ``--backend NAME``; an ``open`` function; a cheap
``available()`` check that must not import the backend's library; its place in ``auto``'s order; the bundle ``files``
form it reads). Backend modules import this module, never the package: ``icrt.runtime.backends`` loads the built-in
ones and opens a bundle's model on one.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

from icrt.runtime.base.errors import EXIT_USAGE, BundleError, UnavailableError
from icrt.runtime.bundle.precisions import register_form

AUTO = "auto"


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

    def engine_version(self) -> str | None:
        """The version of the inference engine behind this backend (onnxruntime's, OpenVINO's, TensorRT's)."""
        return None

    def describe(self) -> dict:
        """What ran, for people and reports: the backend that actually runs (never ``auto``), its engine's version,
        the precision, the device, the file."""
        return {"backend": self.name, "version": self.engine_version(), "precision": self.precision,
                "device": self.device, "file": self.file, "max_batch": self.max_batch,
                "notes": list(getattr(self, "notes", []))}


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend.

    ``open(manifest, options, *, notes=None) -> Backend`` opens ``options.precision`` of the bundle (``options``: a
    ``icrt.runtime.scoring.options.ScorerOptions``, read by attribute: ``threads``, ``device_id``, ...). It raises
    BackendError when it cannot run here (``auto`` then tries the next one) and BundleError for a broken bundle.
    ``notes``: what ``auto`` passed over before it, for the backend to keep in its own ``notes`` (None: asked for by
    name, not by ``auto``).
    """

    name: str
    open: Callable
    available: Callable[[], bool]  # cheap: e.g. importlib.util.find_spec, never an import of the library
    auto_order: int | None = None  # place in "auto" (lower first); None: only when asked for by name
    files_key: str = ""  # the key of manifest files[precision] it reads
    unavailable: str = "not installed"  # what auto notes when available() is False


_REGISTRY: dict[str, BackendSpec] = {}


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
    register_form(spec.files_key)  # the bundle format then takes manifests that name files for it
    _REGISTRY[name] = spec
    return spec
