"""``icrt.evaluate``: icrt eval from Python, the same figures as the command's JSON."""
import json

import pytest

import icrt
from icrt.runtime.base.errors import UserInputError
from icrt.runtime.cli import main


def test_evaluate_gives_what_icrt_eval_json_gives(labels_csv, square_bundle, capsys):
    got = icrt.evaluate(labels_csv, model=square_bundle, precision="int8", backend="onnxruntime")
    assert main(["eval", "--data", labels_csv, "-m", square_bundle, "--precision", "int8", "--backend", "onnxruntime",
                 "--format", "json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(got))
    assert got["n"] == 32 and got["failed"] == 0 and set(got["per_category"]) == {"a", "b"}
    assert -1 <= got["pooled"]["srcc"] <= 1 and "int8" in got["ran"]


def test_evaluate_counts_bad_images_and_raises_for_an_unreadable_file(labels_csv, square_bundle, tmp_path):
    with open(labels_csv, "a") as f:
        f.write("images/gone.png,0.5,a\n")
    got = icrt.evaluate(labels_csv, model=square_bundle)
    assert (got["n"], got["failed"]) == (32, 1) and got["failures"][0]["image"] == "images/gone.png"
    with pytest.raises(UserInputError, match="no such file or folder"):
        icrt.evaluate(tmp_path / "nothing.csv", model=square_bundle)
