"""A model that fails while running: the engine's message quotes the model's node names, which a downloaded bundle
chooses, so what ``RunFailures`` tells (stderr, the error records, the last line) is one printable line (R9)."""
import logging
import os
import subprocess
import sys

import pytest

from icrt.runtime.backends import ModelRunError
from icrt.runtime.scoring.scorer import RunFailures
from tests.runtime.fixtures import ROOT, make_bundle, sample_images
from tests.runtime.onnx_models import EVIL  # noqa: E402


def test_the_engines_message_is_told_as_one_printable_line(caplog):
    e = ModelRunError(f"m.onnx: onnxruntime failed to run the model (Name:'{EVIL}'\nStatus Message: no)")
    e.cause = f"onnxruntime Fail: Name:'{EVIL}'"
    failures = RunFailures()
    logger = logging.getLogger("runtime")
    logger.addHandler(caplog.handler)  # also where an earlier command set up icrt's own handler (no propagation)
    try:
        record = failures.add(e, 2, 1)
    finally:
        logger.removeHandler(caplog.handler)
    told = [r.getMessage() for r in caplog.records]
    for text in [*told, record, failures.message()]:
        assert not any(c in text for c in "\x1b\x07\x9b\n"), text
        assert "reshape\\x1b]0;PWNED-TITLE\\x07\\x1b[31mRED\\x9b2J" in text
    assert failures.batches == 1 and failures.images == 1 and failures.inputs == 2


@pytest.mark.slow
def test_a_node_name_with_escape_sequences_never_reaches_the_terminal(tmp_path):
    from tests.runtime.onnx_models import copy_hostile

    b = make_bundle(tmp_path / "b")
    copy_hostile("reshape_for_one_evil.onnx", os.path.join(b, "model.onnx"))  # a node named EVIL
    images = sample_images(tmp_path)[:2]
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", *images, "-m", b, "--backend", "onnxruntime",
                        "--batch-size", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 2 and "the model failed on a batch of 2 input(s), 2 image(s)" in r.stderr
    assert "\x1b" not in r.stderr + r.stdout and "\x07" not in r.stderr + r.stdout
    assert "reshape\\x1b]0;PWNED-TITLE\\x07" in r.stderr
