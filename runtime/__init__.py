"""icrt runtime: torch-free image complexity scoring (numpy, Pillow, onnxruntime; OpenVINO and TensorRT on request).

Its layers, lowest first (each imports only those below it; tests/layering.py checks it): ``base`` (errors, safe
files, printable text, hardware and package facts), ``bundle`` (the bundle format: manifest, precisions, records,
preprocessing policy, staging, the default bundle), ``backends`` (inference engines behind one interface),
``scoring`` (pixels, the Scorer and its options, inputs), ``tools`` (bench, doctor, info, output formats), ``batch``
/ ``serving`` / ``report``, and ``cli`` (the ``icrt`` command line).

``from icrt.runtime import Scorer`` is resolved lazily so that ``icrt`` starts without loading numpy or
onnxruntime before it needs them.
"""
from icrt.runtime.base.version import __version__  # noqa: F401

__all__ = ["Scorer", "load_manifest", "ImageError", "BundleError", "BackendError"]


def __getattr__(name):
    if name == "Scorer":
        from icrt.runtime.scoring.scorer import Scorer
        return Scorer
    if name in ("load_manifest", "BundleError"):
        import icrt.runtime.bundle.manifest as manifest
        return getattr(manifest, name)
    if name == "ImageError":
        from icrt.runtime.scoring.preprocess import ImageError
        return ImageError
    if name == "BackendError":
        from icrt.runtime.backends import BackendError
        return BackendError
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
