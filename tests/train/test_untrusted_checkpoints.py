"""Checkpoints and training states are loaded without running code from the file (weights_only=True)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from icrt.train.checkpoint import FORMAT, CheckpointError, load_checkpoint
from tests import ROOT  # noqa: E402
from tests.model_helpers import interrupt_after_first_epoch
from tests.tiny import D2S_TRAIN_ARGS as TRAIN_ARGS
from tests.tiny import d2s

TINY = d2s(image_size=48)


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file appears if the payload runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _malicious(path, marker, fmt=FORMAT):
    torch.save({"format": fmt, "kind": "d2s", "config": dict(TINY), "preprocessing": {"size": 48},
                "model": {}, "epoch": 1, "payload": Payload(marker)}, path)
    return str(path)


def _run(*args):
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stderr.strip().splitlines()


def _refused(rc, err, path, marker):
    assert not os.path.exists(marker), "the payload ran"
    assert rc == 2, err
    progs = ("python -m export", "python -m icrt.export", "python -m train.evaluate", "python -m train d2s",
             "python -m icrt.train d2s")
    assert len(err) == 1 and err[0].startswith(tuple(f"{p}: error: " for p in progs)), err
    assert str(path) in err[0] and "refused" in err[0], err


@pytest.mark.slow
def test_export_refuses_a_pickle_payload(tmp_path):
    marker = tmp_path / "ran"
    ckpt = _malicious(tmp_path / "checkpoint.pt", marker)
    rc, err = _run("export", "--checkpoint", ckpt, "--out", str(tmp_path / "bundle"))
    _refused(rc, err, ckpt, marker)
    assert not os.path.exists(tmp_path / "bundle" / "model.onnx")


@pytest.mark.slow
def test_evaluate_refuses_a_pickle_payload(tmp_path, labels_csv):
    marker = tmp_path / "ran"
    ckpt = _malicious(tmp_path / "checkpoint.pt", marker)
    rc, err = _run("icrt.train.evaluate", "--checkpoint", ckpt, "--data", labels_csv)
    _refused(rc, err, ckpt, marker)


@pytest.mark.slow
def test_resume_refuses_a_pickle_payload(tmp_path, labels_csv):
    marker, out = tmp_path / "ran", tmp_path / "run"
    out.mkdir()
    last = _malicious(out / "last.pt", marker, fmt=FORMAT + "+state")
    rc, err = _run("train", "d2s", "--data", labels_csv, "--out", str(out), *TRAIN_ARGS, "--resume")
    _refused(rc, err, last, marker)


def test_load_checkpoint_messages_are_one_line(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match="refused") as e:
        load_checkpoint(_malicious(tmp_path / "x.pt", marker))
    assert "\n" not in str(e.value) and not os.path.exists(marker)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(str(tmp_path / "empty.pt"))


def _state_bytes(tmp_path):
    torch.save({"format": FORMAT + "+state", "model": {"w": torch.zeros(1000)}}, tmp_path / "good.pt")
    return (tmp_path / "good.pt").read_bytes()


@pytest.mark.parametrize("kind,problem", [
    ("truncated", "not a readable training state"),
    ("garbage", "not a readable training state"),
    ("empty", "empty file"),
    ("other-format", "not an icrt training state"),
    ("other-run", "does not fit this run"),
])
def test_resume_from_a_bad_last_pt_is_one_line(tmp_path, labels_csv, capsys, kind, problem):
    from icrt.train.cli import main

    out = tmp_path / "run"
    out.mkdir()
    last = out / "last.pt"
    if kind == "truncated":
        data = _state_bytes(tmp_path)
        last.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        last.write_bytes(os.urandom(300))
    elif kind == "empty":
        last.write_bytes(b"")
    elif kind == "other-format":
        torch.save({"format": FORMAT, "model": {}}, last)  # a checkpoint.pt, not a last.pt
    else:
        torch.save({"format": FORMAT + "+state", "model": {"w": torch.zeros(3)}, "optimizer": {}}, last)
    rc = main(["d2s", "--data", labels_csv, "--out", str(out), *TRAIN_ARGS, "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and problem in err[0], err
    assert err[0].startswith(f"python -m icrt.train d2s: error: {last}: "), err


def test_evaluate_with_mismatched_weights_is_one_line(tmp_path, labels_csv, capsys):
    from icrt.train.evaluate import main

    torch.save({"format": FORMAT, "kind": "d2s", "config": dict(TINY), "preprocessing": {"size": 48},
                "model": {"nope": torch.zeros(1)}}, tmp_path / "c.pt")
    rc = main(["--checkpoint", str(tmp_path / "c.pt"), "--data", labels_csv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot rebuild the model" in err[0], err


def _d2s_cfg(labels_csv, captions_csv, tiny_clip_config, out, **kw):
    from icrt.train.d2s_trainer import D2STrainConfig

    base = dict(data=labels_csv, out=str(out), epochs=2, batch_size=8, lr=3e-3, seed=0, text="clip",
                captions=captions_csv, text_encoder=tiny_clip_config, text_pretrained="none", buffer_size=16,
                refresh_step=2, model=dict(TINY), cache="on", device="cpu")
    base.update(kw)
    return D2STrainConfig(**base)


@pytest.mark.slow
def test_caption_guided_resume_is_bit_exact_from_a_weights_only_state(labels_csv, captions_csv, tiny_clip_config,
                                                                      tmp_path):
    """D2S with the text branch: entropy buffers, momentum model and every RNG survive last.pt exactly."""
    from icrt.train.d2s_trainer import D2STrainer

    quiet = {}
    full = D2STrainer(_d2s_cfg(labels_csv, captions_csv, tiny_clip_config, tmp_path / "full"), **quiet)
    full.fit()
    part = D2STrainer(_d2s_cfg(labels_csv, captions_csv, tiny_clip_config, tmp_path / "part"), **quiet)
    interrupt_after_first_epoch(part)
    last = str(tmp_path / "part" / "last.pt")
    state = torch.load(last, weights_only=True)  # plain data only
    assert state["buffers"]["count"] > 0
    resumed = D2STrainer(_d2s_cfg(labels_csv, captions_csv, tiny_clip_config, tmp_path / "part"), **quiet)
    resumed.load_state(last)
    resumed.fit()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(full.momentum_model.state_dict().values(), resumed.momentum_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(full.buffers.visual, resumed.buffers.visual)


def test_last_pt_with_a_numpy_rng_array_still_resumes(labels_csv, tmp_path):
    """last.pt files written before this change hold the numpy RNG state as an array."""
    from icrt.train.d2s_trainer import D2STrainConfig, D2STrainer

    cfg = D2STrainConfig(data=labels_csv, out=str(tmp_path / "run"), epochs=1, batch_size=8, seed=0, text="none",
                         model=dict(TINY), device="cpu")
    tr = D2STrainer(cfg)
    last = str(tmp_path / "last.pt")
    tr.save_state(last)
    state = torch.load(last, weights_only=True)
    np.random.seed(123)
    want = np.random.get_state()
    state["rng"]["numpy"] = want
    torch.save(state, last)
    np.random.seed(0)
    tr.load_state(last)
    got = np.random.get_state()
    assert np.array_equal(got[1], want[1]) and got[2] == want[2]
