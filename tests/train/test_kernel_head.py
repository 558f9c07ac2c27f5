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
    assert fresh.head.centres.shape == (7, dim) and fresh.head.centres.dtype == torch.int8
    with torch.no_grad():
        assert torch.equal(fresh(x), want)
    assert ((want >= 0) & (want <= 1)).all()  # raw-score head, kept in [0, 1]

    # an earlier checkpoint: fp16 centres, no scales; it loads and scores as it did
    old = dict(m.state_dict())
    old["head.centres"] = m.head._centres().half()
    del old["head.centre_scale"]
    fresh = D2S(cfg).eval()
    fresh.load_state_dict(old)
    assert fresh.head.centres.dtype == torch.float16
    with torch.no_grad():
        assert torch.equal(fresh(x), want)
    old["head.centres"] = old["head.centres"].float()  # any other type is refused, not cast
    with pytest.raises(ValueError, match="kernel head centres of type torch.float32"):
        D2S(cfg).load_state_dict(old)


def train_and_export(labels_csv, tmp_path, backbone, *model_args):
    """`python -m train d2s --pool stats --fit kernel` on ImageNet ``backbone`` at 64 px, then `python -m export --fp16
    --int8`: (run folder, bundle folder, the training log)."""
    out, bundle = tmp_path / "run", tmp_path / "bundle"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "train", "d2s", "--data", labels_csv, "--out", str(out), "--backbone", backbone,
           "--pretrained", "imagenet", "--text", "none", "--image-size", "64", "--pool", "stats", *model_args,
           "--fit", "kernel", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    e = subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(bundle),
                        "--fp16", "--int8", "--calib-data", labels_csv], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert e.returncode == 0, e.stderr[-2000:]
    return out, bundle, r.stderr


@pytest.mark.slow
def test_kernel_training_exports_and_scores_like_pytorch(labels_csv, tmp_path):
    """--pool stats --stats ... --fit kernel trains from the CLI; the bundle (fp32, fp16, both int8 forms) scores
    through the runtime as PyTorch did (the quantiles' TopK and the kernel head stay fp32)."""
    out, bundle, log = train_and_export(labels_csv, tmp_path, "tf_efficientnet_lite0", "--stats", "mean,q10,median,q90")
    assert "kernel head on" in log
    assert json.load(open(out / "metrics.json"))["srcc"] > 0.8
    import onnx

    parity = json.load(open(bundle / "manifest.json"))["parity"]
    assert parity["fp32"]["passed"] and parity["fp16"]["srcc"] > 0.99
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    n, dim = ckpt["head.centres"].shape
    assert ckpt["head.centres"].dtype == torch.int8
    for name, stored in (("model.onnx", onnx.TensorProto.INT8), ("model.fp16.onnx", onnx.TensorProto.INT8),
                         ("model.int8.onnx", onnx.TensorProto.FLOAT16), ("model.int8.qdq.onnx", onnx.TensorProto.FLOAT16)):
        # the centres, folded into a constant when traced, are stored back as int8 codes (fp16 in the Q/DQ graphs,
        # where OpenVINO would mis-scale a weight DequantizeLinear: export.onnx_export.store_exact)
        shapes = {tuple(i.dims): i.data_type for i in onnx.load(str(bundle / name)).graph.initializer}
        assert shapes.get((dim, n)) == stored, name
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


def test_category_targets_score_within_category_without_a_category_at_inference():
    """--kernel-target category: one solve of [z, one-hot(category)]; the head scores softmax(affinities) . levels
    + spread * z, in PyTorch exactly as the fit predicts; it needs the features only."""
    import icrt.train.kernel as kernel
    from icrt.train.metrics import report

    rng = np.random.default_rng(3)
    n, cats = 300, np.array(["a", "b", "c"])
    c = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 3))
    x[:, 0] += 3 * c  # the category is visible in the features
    y = 0.2 + 0.25 * c + 0.08 * np.tanh(x[:, 1]) + 0.005 * rng.normal(size=n)
    groups = list(cats[c])
    tr, te = slice(0, 240), slice(240, n)
    k = kernel.fit_head(x[tr], y[tr], groups[tr], target="category")
    assert k["alpha"].shape == (240, 4) and k["bias"].shape == (4,) and len(k["levels"]) == 3
    assert np.allclose(k["levels"], [y[tr][c[tr] == i].mean() for i in range(3)])
    head = KernelHead(3)
    head.set(k["mean"], k["std"], k["centres"], k["alpha"], k["gamma"], k["bias"], k["levels"], k["spread"],
             k["sharpness"])
    with torch.no_grad():
        pred = head(torch.as_tensor(x[te], dtype=torch.float32)).squeeze(1).numpy()
    t = kernel.Targets(y[tr], groups[tr], "category")
    ze = (x[te] - k["mean"]) / k["std"]
    want = t.score(np.exp(-k["gamma"] * kernel.sq_distances(ze, k["centres"])) @ k["alpha"] + k["bias"])
    assert np.allclose(pred, want, atol=1e-4)
    rep = report(pred, y[te], groups[te])
    assert rep["srcc"] > 0.9 and rep["mean_category_srcc"] > 0.7
    # a checkpoint of the category head loads into a fresh one (its number of columns and categories taken)
    fresh = KernelHead(3)
    fresh.load_state_dict(head.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(torch.as_tensor(x[te], dtype=torch.float32)).squeeze(1), torch.as_tensor(pred))
    with pytest.raises(ValueError, match="kernel target"):
        kernel.Targets(y, groups, "rank")


def test_a_score_head_checkpoint_from_before_category_mode_loads():
    head = KernelHead(3)
    head.set(np.zeros(3), np.ones(3), np.eye(3), np.array([0.1, 0.2, 0.3]), 0.5, 0.4)
    state = {k: v for k, v in head.state_dict().items() if k not in ("levels", "spread", "sharpness")}
    fresh = KernelHead(3)
    fresh.load_state_dict(state)
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.equal(fresh(x), head(x))


def test_the_cue_block_gets_its_share_of_the_distance():
    """cue_dims: a few cue columns beside many features are scaled to hold a share of the squared distance, chosen
    by CV; with one informative cue (not monotone) among 200 noise features, that share is what makes the head
    work."""
    import icrt.train.kernel as kernel
    from icrt.train.metrics import srcc

    rng = np.random.default_rng(5)
    x = rng.normal(size=(260, 201))
    y = np.cos(1.5 * x[:, -1])  # the last column (the cue) decides
    groups = ["a", "b"] * 130
    tr, te = slice(0, 200), slice(200, 260)
    plain = kernel.fit_head(x[tr], y[tr], groups[tr])
    cued = kernel.fit_head(x[tr], y[tr], groups[tr], cue_dims=1)
    assert plain["cue_share"] is None and cued["cue_share"] in kernel.CUE_SHARES
    assert len(cued["cv"]) == 9 * len(kernel.CUE_SHARES)
    scale = kernel.cue_scale(201, 1, cued["cue_share"])
    assert np.allclose(cued["std"], (x[tr].std(0) + 1e-6) / scale)  # folded into the stored standardisation

    def predict(k):
        ze = (x[te] - k["mean"]) / k["std"]
        return np.exp(-k["gamma"] * kernel.sq_distances(ze, k["centres"])) @ k["alpha"] + k["bias"]

    assert srcc(predict(cued), y[te]) > 0.6 > srcc(predict(plain), y[te]) + 0.4


@pytest.mark.slow
def test_two_backbones_colour_counts_and_category_targets_export_every_form(labels_csv, tmp_path):
    """The default model's design (Lite0 + Lite1, colour counts, category targets) trains from the CLI and exports
    every form; the colour counts are computed in float in every file, equal to fp32's (int8 never rounds the
    pixels they count, fp16 never holds a count)."""
    import onnx
    import onnxruntime as ort
    from onnx.utils import extract_model

    _, bundle, log = train_and_export(labels_csv, tmp_path, "tf_efficientnet_lite0+tf_efficientnet_lite1",
                                      "--stats-from", "3", "--stats", "mean,relu", "--last-stats", "mean",
                                      "--colour-counts", "3,4,5", "--kernel-target", "category")
    assert "/cue share" in log and "(targets: category)" in log
    parity = json.load(open(bundle / "manifest.json"))["parity"]
    assert parity["fp32"]["passed"] and parity["fp16"]["srcc"] > 0.99

    def colours(name):
        path = str(bundle / name)
        g = onnx.load(path).graph
        scatter = [n for n in g.node if n.op_type == "ScatterElements"]
        assert len(scatter) == 1 and scatter[0].name.startswith("/colours/")
        assert all(a.s in (b"", b"none") for a in scatter[0].attribute if a.name == "reduction")
        consumers = {i for n in g.node if n.op_type == "QuantizeLinear" for i in n.input}
        assert not consumers & {o for n in g.node if n.name.startswith("/colours/") for o in n.output}
        # the head and the colour counts never compute on a dequantized activation (ORT's pre-processing fuses the
        # head's MatMul + Add into a Gemm named /head/MatMul_1/MatMulAddFusion, which must stay excluded too); the
        # statistics read the stages' dequantized int8 outputs, as they should
        inits = {i.name for i in g.initializer}
        dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits}
        assert not [n.name for n in g.node if n.name.startswith(("/head/", "/colours/")) and dq & set(n.input)], name
        log = next(n for n in g.node if n.name.startswith("/colours/") and n.op_type == "Log")
        sub = str(tmp_path / f"colours-{name}")
        extract_model(path, sub, [g.input[0].name], [log.output[0]])
        return ort.InferenceSession(sub, providers=["CPUExecutionProvider"]).run(None, {g.input[0].name: x})[0]

    rng = np.random.default_rng(0)
    x = ((rng.integers(0, 256, (3, 3, 64, 64)) - 127) / 128).astype(np.float32)
    want = colours("model.onnx")
    assert want.shape == (3, 3) and (want > 0).all()
    for name in ("model.fp16.onnx", "model.int8.onnx", "model.int8.qdq.onnx"):
        np.testing.assert_allclose(colours(name), want, atol=1e-6, err_msg=name)


def test_last_stats_pool_each_backbones_last_stage_alone():
    """--last-stats: each backbone's last stage gives these statistics instead of --stats (the default model: the
    mean alone of stage 6 of Lite0 and of Lite1)."""
    feats = [torch.randn(2, c, 5, 5) for c in (3, 4, 3, 4)]  # two backbones of two stages each
    pooled = StageStats(("mean", "relu"), last=("mean",), groups=(2, 2))(feats)
    want = torch.cat([feats[0].mean((2, 3)), feats[0].clamp_min(0).mean((2, 3)), feats[1].mean((2, 3)),
                      feats[2].mean((2, 3)), feats[2].clamp_min(0).mean((2, 3)), feats[3].mean((2, 3))], 1)
    assert torch.allclose(pooled, want, atol=1e-6)
    cfg = D2SConfig(backbone="tf_efficientnet_lite0+tf_efficientnet_lite1", pretrained="none", image_size=64,
                    pool="stats", stats_from=3, stats=("mean", "relu"), last_stats=("mean",), head="kernel")
    m = D2S(cfg)
    assert m.stats.groups == (4, 4) and m.feature_dim == 2 * (2 * (80 + 112 + 192) + 320)
    with pytest.raises(ValueError, match="stats"):
        StageStats(("mean",), last=("mean", "mean"))
