"""icrt runtime: torch-free image complexity scoring (numpy, Pillow, onnxruntime; TensorRT on request)."""
__version__ = "0.1.0"
