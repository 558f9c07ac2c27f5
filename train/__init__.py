"""icrt training (PyTorch): D2S and CM-SSA models, trainers, data readers, metrics. Entry point: ``python -m train``."""
