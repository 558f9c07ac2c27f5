"""icrt calibration (see README)."""
