"""icrt runtime: torch-free image complexity scoring (numpy, Pillow, onnxruntime; TensorRT on request).

``from runtime import Scorer`` is resolved lazily so that ``icrt`` starts without loading numpy or
onnxruntime before it needs them.
"""
__version__ = "0.1.0"
__all__ = ["Scorer", "load_manifest", "ImageError", "BundleError", "BackendError"]


def __getattr__(name):
    if name == "Scorer":
        from icrt.runtime.scorer import Scorer
        return Scorer
    if name in ("load_manifest", "BundleError"):
        from icrt.runtime import manifest
        return getattr(manifest, name)
    if name == "ImageError":
        from icrt.runtime.preprocess import ImageError
        return ImageError
    if name == "BackendError":
        from icrt.runtime.backends import BackendError
        return BackendError
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
