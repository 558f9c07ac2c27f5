"""One ``prog: error:`` line per user error, and icrt's log lines, never carry terminal control sequences
(runtime/base/errors.py; R9)."""
from __future__ import annotations

import logging

from icrt.runtime.base.errors import EXIT_USAGE, BundleError, run_command, setup_logging
from tests.images import textured
from tests.runtime.fixtures import edit_manifest, make_bundle, run_cli

EVIL = "m\x1b]0;PWNED\x07\x1b[2J\x9b31m\u202e.onnx"


def test_an_error_line_escapes_control_and_invisible_characters(capsys):
    def fail():
        raise BundleError(f"bundle: cannot open {EVIL}\nsecond line")

    assert run_command("icrt", fail) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == ("icrt: error: bundle: cannot open m\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m\\u202e.onnx second line\n")


def test_a_model_whose_op_name_holds_escape_codes_fails_in_one_escaped_line(tmp_path, capsys):
    """R9: onnxruntime's message quotes a downloaded model's op type (``No Op registered for ...``); it reaches the
    terminal only escaped, through ``run_command``."""
    bundle = make_bundle(tmp_path / "b")
    model = tmp_path / "b" / "model.onnx"
    data = model.read_bytes()
    assert data.count(b"Sigmoid") == 1
    model.write_bytes(data.replace(b"Sigmoid", b"\x1b]0;T\x07x"))  # same length: the protobuf stays valid
    edit_manifest(bundle, lambda d: d.pop("sha256", None))
    image = str(tmp_path / "a.png")
    textured(40, 30).save(image)
    code, out, err = run_cli(capsys, "score", image, "-m", bundle, "--backend", "onnxruntime")
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1 and err.startswith("icrt: error: ")
    assert not any(c in err for c in "\x1b\x07") and "\\x1b]0;T\\x07x" in err


def test_log_lines_escape_what_they_quote_and_keep_their_lines(capsys):
    """An engine's message quoting a model's node names goes through icrt's loggers (a failed batch): escaped."""
    setup_logging()
    logging.getLogger("runtime").error("icrt: error: the model failed: node %s", EVIL)
    logging.getLogger("icrt").warning("first\nsecond\tcolumn")
    err = capsys.readouterr().err
    assert err.splitlines() == ["icrt: error: the model failed: node m\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m\\u202e.onnx",
                                "first", "second\\tcolumn"]
