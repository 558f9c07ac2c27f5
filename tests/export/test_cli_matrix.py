"""The headline path from the command line, for every model kind x precision: train -> export -> icrt score.

The CM-SSA tower is the small OpenCLIP config whose fp16 export once died with SIGSEGV (onnxruntime's NCHWc
layout pass on the fp16 patch-embedding convolution; see runtime/backends/onnxruntime.py).
"""
import csv
import json
import os
import subprocess
import sys

import pytest

from tests.images import make_images
from tests.tiny import CLIP_SMALL, D2S_ARGS, write_clip_config

pytestmark = pytest.mark.slow  # trains a tiny model of every kind, then exports and scores each

from tests import ROOT  # noqa: E402

KINDS = {
    "d2s": ["d2s", *D2S_ARGS, "--image-size", "64", "--batch-size", "8"],
    "cmssa": ["cmssa", "--pretrained", "none", "--batch-size", "8"],  # --backbone: the config file below
}


def _run(args, cwd=ROOT):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


@pytest.fixture(scope="module", params=sorted(KINDS))
def bundle(request, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    rows = make_images(root, 16, size=64)
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "category", "caption"])
        for r, s, c in rows:
            w.writerow([r, s, c, "a plain grey image" if s < 0.5 else "a busy image full of coloured dots"])
    args = list(KINDS[kind])
    if kind == "cmssa":
        args += ["--backbone", write_clip_config(root, "small-clip.json", CLIP_SMALL)]
    run = root / "run"
    r = _run(["-m", "train", *args, "--data", str(labels), "--out", str(run), "--epochs", "1", "--device", "cpu"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = root / "bundle"
    r = _run(["-m", "export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out), "--fp16", "--int8",
              "--calib-data", str(labels)])
    assert r.returncode == 0, f"export exit {r.returncode}: {r.stderr[-3000:]}"
    return kind, out, root


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_kind_and_precision_scores_from_the_cli(bundle, precision):
    kind, out, root = bundle
    r = _run(["-m", "icrt.runtime.cli", "score", "-m", str(out), "--precision", precision, "--format", "json",
              str(root / "images")])
    assert r.returncode == 0, f"{kind}/{precision}: exit {r.returncode}: {r.stderr[-2000:]}"
    recs = json.loads(r.stdout)
    assert len(recs) == 16 and all(0.0 <= rec["score"] <= 1.0 for rec in recs)
    from icrt.runtime.bundle.manifest import load_manifest
    assert load_manifest(str(out)).kind == kind
