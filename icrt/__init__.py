"""icrt: image complexity scores from Python, with the runtime the ``icrt`` command uses (no torch).

    import icrt
    icrt.score("photo.jpg")                                  # {"image": "photo.jpg", "score": 0.41, ...}
    icrt.score(["a.jpg", "b.png"], precision="int8")         # one record each, in order
    icrt.score("photos/")                                    # a folder: its images (not its sub-folders)
    scorer = icrt.Scorer.load("bundles/d2s")                 # a bundle of your own, kept open
    scorer.score_many(images)

Scores are in [0, 1], higher = more complex. :func:`score` keeps the model it opened for the next call with the same
``model``, ``precision`` and ``backend``. The names below load lazily: ``import icrt`` (and ``icrt --help``) load no
numpy, Pillow or onnxruntime.

The layout behind it stays as it is: ``runtime`` (the scorer, bundles, backends), ``train`` and ``export`` (PyTorch:
``icrt train`` / ``icrt export``, or ``python -m train`` / ``python -m export``). This package imports ``runtime``
only; ``runtime`` never imports it.
"""
from __future__ import annotations

import os

from runtime import __version__

__all__ = ["Scorer", "score", "load_manifest", "ImageError", "BundleError", "BackendError", "__version__"]

_OPEN: dict = {}  # (bundle, precision, backend) -> the Scorer score() opened last
_KEEP = 2  # models kept open by score() at most


def __getattr__(name):
    if name in ("Scorer", "load_manifest", "ImageError", "BundleError", "BackendError"):
        import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'icrt' has no attribute {name!r}")


def _scorer(model, precision: str, backend: str):
    from runtime.scorer import Scorer

    if model is None:
        from runtime.defaults import default_bundle

        model = default_bundle()
    key = (os.path.abspath(os.fspath(model)), precision, backend)
    if key not in _OPEN:
        while len(_OPEN) >= _KEEP:
            _OPEN.pop(next(iter(_OPEN)))
        _OPEN[key] = Scorer.load(key[0], backend=backend, precision=precision)
    return _OPEN[key]


def score(images, model=None, precision: str = "fp32", backend: str = "auto", details: bool = False):
    """Score one image or many with ``model`` (a bundle folder; None: the bundled default model).

    One image (a path, a Pillow image, a uint8 array, the bytes of an encoded file) gives one record and raises
    ``ImageError`` when it cannot be scored; a folder gives its images' records, a list or other iterable one
    record each, in order, a file that cannot be scored as ``{"image": ..., "error": ...}`` while the rest go on.
    """
    scorer = _scorer(model, precision, backend)
    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        from runtime.inputs import collect

        return scorer.score_many(collect([images]), details=details)
    if isinstance(images, (str, os.PathLike, bytes, bytearray)) or not _is_many(images):
        return scorer.score(images, details=details)
    return scorer.score_many(images, details=details)


def _is_many(images) -> bool:
    """A list, tuple or other iterable of images, not one image (a Pillow image or an array is one)."""
    if isinstance(images, (list, tuple)):
        return True
    if hasattr(images, "__array_interface__") or hasattr(images, "getbands") or hasattr(images, "shape"):
        return False
    return hasattr(images, "__iter__")
