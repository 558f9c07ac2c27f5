"""The errors of ``python -m export`` (``runtime.base.errors.IcrtError`` subclasses: one line, an exit code)."""
from icrt.runtime.base.errors import EXIT_PARITY, IcrtError


class ExportError(IcrtError):
    """Export cannot proceed (bad checkpoint, bad options or data, missing tools); the message says why."""


class ParityError(ExportError):
    """The fp32 ONNX model disagrees with PyTorch beyond the tolerance (the bundle is written anyway)."""

    exit_code = EXIT_PARITY


class PrecisionRefused(ExportError):
    """An optional precision the runtime would refuse for this model (bf16 whose scores OpenVINO's own check finds too
    far from fp32's): export leaves it out of the bundle, says why, and writes the rest."""
