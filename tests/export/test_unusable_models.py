"""Export refuses a model whose scores on the check images are not finite, or the same for every image (red-team R13):
one line, exit 2, no bundle. Tiny D2S kernel-head checkpoints (resnet10t, 64 px) with one head value edited."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from icrt.export import ExportError, export_checkpoint
from icrt.export.checks import Scores, check_set_from_images, generated_images, refuse_unusable
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.train.checkpoint import FORMAT, atomic_torch_save
from icrt.train.models.d2s import D2S, D2SConfig
from tests import ROOT
from tests.model_helpers import inputs_of
from tests.tiny import d2s

KERNEL = d2s(pool="stats", stats=["mean", "relu"], head="kernel")
PREP = Preprocessing(resize="square", size=64)


@pytest.fixture(scope="module")
def sound_head():
    """The state of a tiny kernel-head D2S whose centres are other generated images than the check images."""
    torch.manual_seed(0)
    m = D2S(D2SConfig.from_dict(KERNEL), load_pretrained=False).eval()
    with torch.no_grad():
        z = m.features(torch.from_numpy(inputs_of(generated_images(8, seed=5), PREP))).double().numpy()
    mean, std = z.mean(0), z.std(0) + 1e-6
    m.head.set(mean, std, (z - mean) / std, np.linspace(-0.3, 0.3, len(z)), 0.5 / z.shape[1], 0.5)
    return m.state_dict()


def kernel_checkpoint(path, state: dict, **edits) -> str:
    """``state`` with ``edits`` (a head buffer -> its value; ``std``: a factor on the feature standardisation's
    scale), saved as a checkpoint, as a hand-edited one would have them."""
    state = {k: v.clone() for k, v in state.items()}
    for name, value in edits.items():
        if name == "std":
            state["head.norm.std"].mul_(value)
        else:
            state[f"head.{name}"].fill_(value)
    atomic_torch_save({"format": FORMAT, "kind": "d2s", "config": KERNEL, "preprocessing": PREP.to_dict(),
                       "model": state}, str(path))
    return str(path)


def test_a_sound_kernel_head_exports(tmp_path, sound_head):
    man = export_checkpoint(kernel_checkpoint(tmp_path / "c.pt", sound_head), str(tmp_path / "b"))
    assert man.parity["fp32"].passed and man.parity["fp32"].srcc > 0.99


@pytest.mark.parametrize("edits,message", [
    ({"gamma": math.inf}, "the model gives every check image the same score (0.5 on 16 images"),
    ({"gamma": 1e30}, "the model gives every check image the same score (0.5 on 16 images"),
    ({"alpha": 0.0}, "the model gives every check image the same score (0.5 on 16 images"),
    ({"bias": 1e30}, "the model gives every check image the same score (1 on 16 images"),  # clipped to [0, 1]
    ({"alpha": math.inf}, "the model's scores are NaN on"),  # inf x 0 where a kernel value underflows
    ({"std": 1e-30}, "the model gives every check image the same score (0.5 on 16 images"),
    ({"gamma": math.nan}, "the model's scores are NaN on 16 of 16 check images"),
    ({"bias": math.nan}, "the model's scores are NaN on 16 of 16 check images"),
    ({"gamma": -1.0}, "the model's scores are NaN on 16 of 16 check images"),
])
def test_broken_kernel_heads_are_refused_before_a_bundle_is_written(tmp_path, sound_head, edits, message):
    ckpt = kernel_checkpoint(tmp_path / "c.pt", sound_head, **edits)
    with pytest.raises(ExportError) as e:
        export_checkpoint(ckpt, str(tmp_path / "b"))
    text = str(e.value)
    assert message in text and text.endswith("its weights hold inf, NaN or extreme values; no bundle written")
    assert "\n" not in text and "manifest" not in text
    assert not (tmp_path / "b").exists() and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.slow
def test_the_command_says_it_in_one_line_with_exit_2(tmp_path, sound_head):
    ckpt = kernel_checkpoint(tmp_path / "c.pt", sound_head, gamma=math.inf)
    r = subprocess.run([sys.executable, "-m", "export", "--checkpoint", ckpt, "--out", str(tmp_path / "b")],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("python -m export: error: the model gives every check image the same")
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()


def test_copies_of_one_image_may_score_alike_and_inf_is_named():
    same = check_set_from_images([np.zeros((8, 8, 3), np.uint8)] * 3, source="copies")
    refuse_unusable(Scores(np.full(3, 0.4), np.full(3, 0.4), np.ones(3)), same)  # nothing to rank: accepted
    two = check_set_from_images(generated_images(2), source="two")
    with pytest.raises(ExportError, match=r"^model.fp16.onnx's scores are infinite on 1 of 2 check images \(two\): "
                                          r"it overflows; no bundle written$"):
        refuse_unusable(Scores(np.array([0.3, np.inf]), np.zeros(2), np.ones(2)), two, "model.fp16.onnx", varies=False,
                        why="it overflows")
    refuse_unusable(Scores(np.array([0.3, 0.3]), np.zeros(2), np.ones(2)), two, "model.fp16.onnx", varies=False)


def test_a_form_whose_scores_overflow_is_refused_naming_its_file(tmp_path, sound_head, monkeypatch):
    """PyTorch's scores are sound; the fp16 file's are not (as an fp16 overflow would make them)."""
    from icrt.runtime.backends.onnxruntime import OrtBackend

    run = OrtBackend.run
    monkeypatch.setattr(OrtBackend, "run", lambda self, x: run(self, x) * (np.nan if self.precision == "fp16" else 1))
    with pytest.raises(ExportError, match=r"^model.fp16.onnx's scores are NaN on 16 of 16 check images \(generated\): "
                                          r"its arithmetic overflows; no bundle written$"):
        export_checkpoint(kernel_checkpoint(tmp_path / "c.pt", sound_head), str(tmp_path / "b"), fp16=True)
    assert not (tmp_path / "b").exists()
