"""icrt training (PyTorch): D2S now, CM-SSA later. Entry point: ``python -m train``."""
