"""Accuracy metrics for image complexity assessment: the runtime's (``runtime.tools.metrics``, numpy only), under the
names training, the protocol, export parity and the recipe have always imported from here. One definition: nothing
is computed in this module."""
from __future__ import annotations

from icrt.runtime.tools.metrics import (  # noqa: F401 (the public names of this module)
    agreement,
    format_line,
    krcc,
    label_agreement,
    mae,
    plcc,
    report,
    rmae_ic9600,
    rmse,
    srcc,
    summary,
)
