"""Quantile statistics pooling (StageStats) and the RBF kernel head (train.kernel, KernelHead)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from icrt.train.models.d2s import D2S, D2SConfig, KernelHead, StageStats
from tests import ROOT  # noqa: E402


def test_stage_stats_are_per_channel_statistics_with_nearest_rank_quantiles():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 1, 101)  # 101 positions: the quantiles fall on exact ranks (no interpolation)
    out = StageStats(("mean", "q10", "median", "q90", "max", "std", "relu"))([f])
    flat = f.flatten(2)
    want = torch.cat([flat.mean(2), *torch.quantile(flat, torch.tensor([0.1, 0.5, 0.9]), dim=2), flat.amax(2),
                      flat.std(2), flat.clamp_min(0).mean(2)], 1)
    assert out.shape == (2, 21)
    assert torch.allclose(out, want, atol=1e-6)


def test_stage_stats_mean_std_keep_the_layout_of_earlier_checkpoints():
    from icrt.train.models.d2s import mean_std

    feats = [torch.randn(2, 4, 5, 5), torch.randn(2, 6, 3, 3)]
    assert torch.equal(StageStats()(feats), torch.cat([mean_std(f) for f in feats], 1))
    with pytest.raises(ValueError, match="distinct names"):
        StageStats(("mean", "mode"))


def test_kernel_fit_learns_what_a_linear_head_cannot():
    import icrt.train.kernel as kernel
    import icrt.train.ridge as ridge
    from icrt.train.metrics import srcc

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8)) * rng.uniform(0.1, 10, 8)
    z = x / x.std(0)
    y = 1 / (1 + np.exp(-(z[:, 0] ** 2 - 1 + 0.5 * z[:, 1])))  # not monotone in z[:, 0]
    groups = ["a", "b", "c"] * 80
    tr, te = slice(0, 180), slice(180, 240)
    k = kernel.fit_head(x[tr], y[tr], groups[tr])
    head = KernelHead(8)
    head.set(k["mean"], k["std"], k["centres"], k["alpha"], k["gamma"], k["bias"])
    with torch.no_grad():
        pred = head(torch.as_tensor(x[te], dtype=torch.float32)).squeeze(1).numpy()
    r = ridge.fit_head(x[tr], y[tr], groups[tr])
    lin = ((x[te] - r["mean"]) / r["std"]) @ r["weight"] + r["bias"]
    assert srcc(pred, y[te]) > 0.9 > srcc(lin, y[te]) + 0.2
    assert len(k["cv"]) == 9 and (k["g"], k["lambda"]) in [(c["g"], c["lambda"]) for c in k["cv"]]
    # what the head stores (fp16 centres) is what was fitted: its scores equal the fit's own on the training set
    zt = torch.as_tensor((x[tr] - k["mean"]) / k["std"], dtype=torch.float32)
    with torch.no_grad():
        own = head.forward(torch.as_tensor(x[tr], dtype=torch.float32)).squeeze(1).numpy()
    d2 = kernel.sq_distances(zt.double().numpy(), k["centres"])
    assert np.allclose(own, np.exp(-k["gamma"] * d2) @ k["alpha"] + k["bias"], atol=1e-4)


def test_kernel_head_takes_its_number_of_centres_from_the_checkpoint():
    cfg = D2SConfig(backbone="tf_efficientnet_lite0", pretrained="none", image_size=64, pool="stats",
                    stats=("mean", "median"), head="kernel")
    m = D2S(cfg).eval()
    dim = m.feature_dim
    rng = np.random.default_rng(1)
    m.head.set(rng.normal(size=dim), rng.uniform(0.5, 2, dim), rng.normal(size=(7, dim)), rng.normal(size=7), 0.5 / dim, 0.4)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = m(x)
    fresh = D2S(cfg).eval()
    fresh.load_state_dict(m.state_dict())
    assert fresh.head.centres.shape == (7, dim) and fresh.head.centres.dtype == torch.float16
    with torch.no_grad():
        assert torch.equal(fresh(x), want)
    assert ((want >= 0) & (want <= 1)).all()  # raw-score head, kept in [0, 1]


@pytest.mark.slow
def test_kernel_training_exports_and_scores_like_pytorch(labels_csv, tmp_path):
    """--pool stats --stats ... --fit kernel trains from the CLI; the bundle (fp32, fp16, both int8 forms) scores
    through the runtime as PyTorch did (the quantiles' TopK and the kernel head stay fp32)."""
    out, bundle = tmp_path / "run", tmp_path / "bundle"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "train", "d2s", "--data", labels_csv, "--out", str(out), "--backbone",
           "tf_efficientnet_lite0", "--pretrained", "imagenet", "--text", "none", "--image-size", "64",
           "--pool", "stats", "--stats", "mean,q10,median,q90", "--fit", "kernel", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "kernel head on" in r.stderr
    assert json.load(open(out / "metrics.json"))["srcc"] > 0.8
    r = subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(bundle),
                        "--fp16", "--int8", "--calib-data", labels_csv], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import onnx

    parity = json.load(open(bundle / "manifest.json"))["parity"]
    assert parity["fp32"]["passed"] and parity["fp16"]["srcc"] > 0.99
    for name in ("model.int8.onnx", "model.int8.qdq.onnx"):
        g = onnx.load(str(bundle / name)).graph
        tail_outputs = {o for n in g.node if n.name.startswith(("/stats/", "/head/")) for o in n.output}
        requantized = [n.name for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in tail_outputs]
        assert not requantized, (name, requantized)  # the statistics and the head compute in float
        assert any(n.name.startswith("/stats/") and n.op_type == "TopK" for n in g.node)
    # the onnxruntime form: 7-bit weights where onnxruntime's AVX2 GEMM kernels add u8 x s8 pairs in 16 bits,
    # 8-bit depthwise weights (their kernels widen first); the TensorRT form: 8 bits throughout
    from icrt.export.int8 import depthwise_weights

    m = onnx.load(str(bundle / "model.int8.onnx"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    dw = set(depthwise_weights(onnx.load(str(bundle / "model.onnx"))))
    q = {n.input[0]: inits[n.input[0]] for n in m.graph.node if n.op_type == "DequantizeLinear"
         and n.input[0] in inits and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim == 4}
    depthwise = [w for name, w in q.items() if name.replace("_quantized", "") in dw]
    dense = [w for name, w in q.items() if name.replace("_quantized", "") not in dw]
    assert len(depthwise) == len(dw) > 0 and dense
    assert max(int(np.abs(w.astype(int)).max()) for w in depthwise) == 127
    assert max(int(np.abs(w.astype(int)).max()) for w in dense) <= 64
