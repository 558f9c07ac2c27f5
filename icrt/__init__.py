"""icrt: image complexity scores from Python, with the runtime the ``icrt`` command uses (no torch).

    import icrt
    icrt.score("photo.jpg")                                  # {"image": "photo.jpg", "score": 0.41, ...}
    icrt.score(["a.jpg", "b.png"], precision="int8")         # one record each, in order
    icrt.score("photos/")                                    # a folder: its images (not its sub-folders)
    scorer = icrt.Scorer.load("bundles/d2s")                 # a bundle of your own, kept open
    scorer.score_many(images)
    icrt.evaluate("labels.csv")["pooled"]["srcc"]           # how good the model is on labelled images of yours

Scores are in [0, 1], higher = more complex. :func:`score` keeps the model it opened for the next call with the same
``model``, ``precision`` and ``backend``. The names below load lazily: ``import icrt`` (and ``icrt --help``) load no
numpy, Pillow or onnxruntime.

Sub-packages: ``icrt.runtime`` (the scorer, bundles, backends; no torch), ``icrt.calibration``, ``icrt.train`` and
``icrt.export`` (PyTorch: ``icrt train`` / ``icrt export``), ``icrt.benchmarks``. In the repository they are the
top-level folders ``runtime/``, ``train/``, ...; the wheel installs them under ``icrt/``. This module imports
``icrt.runtime`` only (``train`` and ``export`` inside functions); nothing below imports it.
"""
from __future__ import annotations

import os
import threading

# In a clone, the sub-packages are the folders beside this one (pyproject.toml's package-dir maps them the same way
# for the wheel and the editable install): found here too when icrt is imported from the clone's root, where the
# clone's icrt/ comes first on sys.path whatever is installed. Three lines, as pkgutil.extend_path does for
# namespace packages (which would also take any other folder named icrt on sys.path).
_CLONE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "runtime")) and os.path.isfile(os.path.join(_CLONE, "runtime", "__init__.py")):
    __path__.append(_CLONE)

from icrt.runtime import __version__  # noqa: E402

__all__ = ["Scorer", "score", "evaluate", "load_manifest", "ImageError", "BundleError", "BackendError", "__version__"]

_OPEN: dict = {}  # (bundle, precision, backend) -> the Scorer score() opened last
_KEEP = 2  # models kept open by score() at most
_OPENING = threading.Lock()  # score() from several threads: each model opened once, _OPEN kept whole


def __getattr__(name):
    if name in ("Scorer", "load_manifest", "ImageError", "BundleError", "BackendError"):
        import icrt.runtime as runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'icrt' has no attribute {name!r}")


def _scorer(model, precision: str, backend: str):
    from icrt.runtime.scoring.scorer import Scorer

    if model is None:
        from icrt.runtime.bundle.defaults import default_bundle

        model = default_bundle()
    key = (os.path.abspath(os.fspath(model)), precision, backend)
    with _OPENING:  # a thread wanting another model waits while one opens (a Scorer is safe to share once open)
        scorer = _OPEN.get(key)
        if scorer is None:
            scorer = Scorer.load(key[0], backend=backend, precision=precision)
            while len(_OPEN) >= _KEEP:
                _OPEN.pop(next(iter(_OPEN)))
            _OPEN[key] = scorer
        return scorer


def score(images, model=None, precision: str = "fp32", backend: str = "auto", details: bool = False):
    """Score one image or many with ``model`` (a bundle folder; None: the bundled default model).

    One image (a path, a Pillow image, a uint8 array, the bytes of an encoded file as bytes, bytearray or memoryview)
    gives one record and raises ``ImageError`` when it cannot be scored; a folder gives its images' records (one that
    cannot be listed: an error record), a list or other iterable one record each, in order, an image that cannot be
    scored as ``{"image": ..., "error": ...}`` while the rest go on. TypeError for what is neither (None, a number, a
    dict).
    """
    from collections.abc import Mapping

    if images is None or isinstance(images, (bool, int, float, complex, Mapping)):
        raise TypeError(f"not an image nor a list of images: {type(images).__name__} (give a path, the bytes of an "
                        "encoded file, a Pillow image, a uint8 array, or a list of them)")
    scorer = _scorer(model, precision, backend)
    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        from icrt.runtime.scoring.inputs import collect, in_input_order

        problems = {}  # a folder that cannot be listed: its error record
        paths = collect([images], problems=problems)
        return list(in_input_order(scorer, paths, problems, details=details))
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or not _is_many(images):
        return scorer.score(images, details=details)
    return scorer.score_many(images, details=details)


def evaluate(data, model=None, precision: str = "fp32", backend: str = "auto", split: str | None = None) -> dict:
    """Score the images ``data`` labels with ``model`` (a bundle folder; None: the bundled default model) and measure
    the scores against the labels, as ``icrt eval`` does: ``data`` is a labels CSV (``image,score[,category]``, paths
    relative to it) or an IC9600 folder (its ``split`` list, default ``test``).

    A dict (``icrt eval --format json``): ``pooled`` (n, srcc, plcc, krcc, rmse, mae, rmae, computable),
    ``per_category``, ``category_means``, ``n`` scored, ``failed`` (``failures``: row, image, error),
    ``unreadable_rows`` (``unreadable``: row, problem), ``notes``, ``model_problem``. Images that fail and rows that
    cannot be read are counted, not raised; a labels file that cannot be read at all raises ``UserInputError``
    (``icrt.runtime.base.errors``). Each call opens the model afresh (``score`` keeps its own open).
    """
    from icrt.runtime.scoring.options import ScorerOptions
    from icrt.runtime.tools.evaluate import evaluate as run

    return run(ScorerOptions(model=os.fspath(model) if model is not None else None, backend=backend,
                             precision=precision), os.fspath(data), split)


def _is_many(images) -> bool:
    """A list, tuple or other iterable of images, not one image (a Pillow image or an array is one)."""
    if isinstance(images, (list, tuple)):
        return True
    if hasattr(images, "__array_interface__") or hasattr(images, "getbands") or hasattr(images, "shape"):
        return False
    return hasattr(images, "__iter__")
