"""icrt's version: one number (pyproject.toml reads it from here without importing; ``icrt --version``,
``icrt.__version__``)."""
__version__ = "0.1.0"
