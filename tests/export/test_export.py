"""Export: folding, fp32 / fp16 / int8 ONNX agreement, bundle manifest, checkpoint errors, TensorRT pure parts,
replacing a bundle only with a complete one.

Models are tiny and random; their final layer is scaled up so that scores spread over (0, 1) and rank
agreement (SRCC) between precisions means something.
"""
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import icrt.runtime.backends.tensorrt_build as tensorrt_build
from icrt.export import ExportError, ParityError, export_checkpoint
from icrt.export.checks import generated_images
from icrt.export.fold import count_parameters, fold_for_export
from icrt.export.images import read_images
from icrt.runtime.base.errors import IcrtError
from icrt.runtime.bundle.manifest import load_manifest
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.train.checkpoint import FORMAT, atomic_torch_save
from icrt.train.kinds import ModelKind, register_kind, unregister_kind
from icrt.train.models.cmssa import LevelScorer, fold_level_scorer
from icrt.train.models.d2s import D2S, D2SConfig
from tests import ROOT  # noqa: E402
from tests.images import make_images, textured
from tests.model_helpers import inputs_of, run_onnx, run_torch
from tests.tiny import D2S as TINY
from tests.tiny import DictConfig

# Stated tolerances on generated images / the fixture images (random tiny models).
FP16_MAX_DIFF, FP16_SRCC = 5e-3, 0.99
INT8_MAX_DIFF, INT8_SRCC = 0.1, 0.9


# --- a tiny CM-SSA-like model (stands in for train.models.cmssa in fast tests) --------------------------------------------


@dataclass
class TinyCMSSAConfig(DictConfig):
    clip_config: str = ""  # an OpenCLIP config JSON
    n_visual_prompts: int = 2
    n_text_ctx: int = 2


class PromptedViT(nn.Module):
    """OpenCLIP ViT with VPT-deep visual prompts: fresh learned tokens after the class token in every layer."""

    def __init__(self, visual, prompts: nn.Parameter):
        super().__init__()
        self.visual, self.prompts = visual, prompts

    def forward(self, x):
        v, n = self.visual, self.prompts.shape[1]
        x = v._embeds(x)
        for i, blk in enumerate(v.transformer.resblocks):
            p = self.prompts[i].unsqueeze(0).expand(x.shape[0], -1, -1)
            x = blk(torch.cat([x[:, :1], p, x[:, 1 + (n if i else 0):]], dim=1))
        pooled, _ = v._pool(torch.cat([x[:, :1], x[:, 1 + n:]], dim=1))
        return pooled @ v.proj


class TinyCMSSA(nn.Module):
    """Prompted image encoder against the text features of five level prompts with a learned context."""

    LEVELS = ["very simple", "simple", "moderately complex", "complex", "very complex"]

    def __init__(self, cfg: TinyCMSSAConfig, load_pretrained: bool = False):
        super().__init__()
        import open_clip

        from icrt.train.text import resolve_openclip_name

        name = resolve_openclip_name(cfg.clip_config)
        self.clip = open_clip.create_model(name, pretrained=None)
        vt = self.clip.visual.transformer
        self.visual_prompts = nn.Parameter(0.02 * torch.randn(len(vt.resblocks), cfg.n_visual_prompts, vt.width))
        self.text_ctx = nn.Parameter(0.02 * torch.randn(cfg.n_text_ctx, self.clip.token_embedding.weight.shape[1]))
        ctx = " ".join(["X"] * cfg.n_text_ctx)
        tokens = open_clip.get_tokenizer(name)([f"{ctx} {lv} image." for lv in self.LEVELS])
        self.register_buffer("tokens", tokens, persistent=False)
        self.encoder = PromptedViT(self.clip.visual, self.visual_prompts)

    def level_text_features(self):
        c, n = self.clip, self.text_ctx.shape[0]
        x = c.token_embedding(self.tokens)
        x = torch.cat([x[:, :1], self.text_ctx.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
        x = c.ln_final(c.transformer(x + c.positional_embedding, attn_mask=c.attn_mask))
        return x[torch.arange(x.shape[0]), self.tokens.argmax(dim=-1)] @ c.text_projection

    def forward(self, x):  # the training-time graph: text tower run every time
        f = self.encoder(x)
        t = self.level_text_features()
        f, t = f / f.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
        probs = (self.clip.logit_scale.exp() * f @ t.t()).softmax(dim=-1)
        return probs @ torch.linspace(0, 1, len(self.LEVELS))

    def fold_for_export(self):
        with torch.no_grad():
            return fold_level_scorer(self.encoder, self.level_text_features(), self.clip.logit_scale.exp())


# --- helpers -------------------------------------------------------------------------------------------------


def _spread(model, images, prep, target=(0.2, 0.8)):
    """Scale the final linear layer so that scores on ``images`` spread over ``target``."""
    x = inputs_of(images, prep)
    s = run_torch(model, x)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    logit = np.log(s / (1 - s))
    k = (np.log(target[1] / (1 - target[1])) - np.log(target[0] / (1 - target[0]))) / max(np.ptp(logit), 1e-6)
    with torch.no_grad():
        last.weight.mul_(float(k))
        last.bias.sub_(float(logit.mean())).mul_(float(k))  # new logit = k * (old logit - mean)
    return model


def _d2s_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    prep = Preprocessing(resize="square", size=64)
    m = _spread(D2S(D2SConfig(**TINY), load_pretrained=False).eval(), generated_images(), prep)
    atomic_torch_save({"format": FORMAT, "kind": "d2s", "config": TINY, "preprocessing": prep.to_dict(),
                       "model": m.state_dict(), "projection": {"weight": torch.zeros(16, 512)},
                       "val_metrics": {"srcc": 0.5}, "score": {"range": [0.0, 1.0], "meaning": "higher = more complex"}},
                      str(path))
    return m


@pytest.fixture
def tiny_cmssa_kind():
    register_kind(ModelKind("tinycmssa", config=TinyCMSSAConfig, model=TinyCMSSA))  # folds by its own method
    yield "tinycmssa"
    unregister_kind("tinycmssa")


def _cmssa_checkpoint(path, clip_config, seed=0):
    torch.manual_seed(seed)
    cfg = TinyCMSSAConfig(clip_config)
    m = TinyCMSSA(cfg).eval()
    with torch.no_grad():  # a sharper text matrix, so level probabilities (and scores) spread out
        m.clip.logit_scale.fill_(np.log(100.0))
    prep = Preprocessing(resize="patches", size=32, stride=16, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))
    atomic_torch_save({"format": FORMAT, "kind": "tinycmssa", "config": cfg.to_dict(), "preprocessing": prep.to_dict(),
                       "model": m.state_dict()}, str(path))
    return m


# --- folding -------------------------------------------------------------------------------------------------


def test_cmssa_folding_matches_unfolded_and_drops_the_text_tower(tiny_clip_config):
    torch.manual_seed(0)
    m = TinyCMSSA(TinyCMSSAConfig(tiny_clip_config)).eval()
    folded = fold_for_export(m, "tinycmssa")
    assert isinstance(folded, LevelScorer)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        score, levels = folded(x)
        torch.testing.assert_close(score, m(x), atol=1e-6, rtol=0)
    assert levels.shape == (5, 5) and torch.allclose(levels.sum(-1), torch.ones(5))
    # folded image path = the ViT (with its prompts) alone; the text matrix is one constant
    visual = count_parameters(m.clip.visual) + m.visual_prompts.numel()
    assert count_parameters(folded) == visual < count_parameters(m)
    assert folded.text_matrix.shape == (5, 32)
    # the learned text context no longer matters: it is folded into the constant matrix
    with torch.no_grad():
        m.text_ctx.add_(1.0)
        torch.testing.assert_close(folded(x)[0], score)


def test_d2s_folding_keeps_the_inference_module():
    m = D2S(D2SConfig(**TINY), load_pretrained=False).eval()
    assert fold_for_export(m, "d2s") is m


def test_unknown_kind_without_fold_hook_is_a_clear_error():
    with pytest.raises(ValueError, match="no folding for model kind 'mystery'"):
        fold_for_export(nn.Linear(2, 2), "mystery")


# --- D2S bundle: fp32 / fp16 / int8 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def d2s_bundle(tmp_path_factory):
    """One tiny D2S export with every precision, calibrated on the train part, checked on the held-out part."""
    root = tmp_path_factory.mktemp("d2s")
    rows = make_images(root, 40, categories=("a", "b"))
    csv = root / "labels.csv"
    csv.write_text("image,score,category\n" + "".join(f"{r},{s},{c}\n" for r, s, c in rows))
    ckpt = root / "checkpoint.pt"
    _d2s_checkpoint(ckpt)
    out = root / "bundle"
    cwd = os.getcwd()
    work = root / "cwd"  # the export runs from here: nothing may be left in it
    work.mkdir()
    os.chdir(work)
    try:
        man = export_checkpoint(str(ckpt), str(out), fp16=True, int8=True, calib_data=str(csv), calib_split="train",
                                check_data=str(csv), check_split="val")
    finally:
        os.chdir(cwd)
    assert os.listdir(work) == [], "export left scratch files in the working directory"
    return man, out, csv, ckpt


@pytest.mark.slow
def test_d2s_bundle_manifest_round_trip_and_files(d2s_bundle):
    man, out, _, _ = d2s_bundle
    back = load_manifest(str(out))
    assert back.to_dict() == man.to_dict()
    assert back.kind == "d2s" and back.name == "d2s-resnet10t" and back.level_output is None
    assert back.precisions() == ["fp32", "fp16", "int8"] and set(back.parity) == {"fp32", "fp16", "int8"}
    assert back.files["int8"] == {"onnxruntime": "model.int8.onnx", "tensorrt": "model.int8.qdq.onnx"}
    for prec in back.precisions():
        for backend in ("onnxruntime", "tensorrt"):
            assert os.path.isfile(back.file_for(prec, backend))
    assert back.opset >= 17 and back.preprocessing.size == 64
    assert {"torch", "onnx", "onnxruntime"} <= set(back.versions)
    assert os.path.isfile(out / "export-report.json")
    params = back.model_card.parameters
    assert params["before_folding"] - params["after_folding"] == 16 * 512  # the projection is dropped


@pytest.mark.slow
def test_d2s_fp32_parity_and_dynamic_batch(d2s_bundle):
    man, out, _, ckpt = d2s_bundle
    assert man.parity["fp32"].input_max_abs_diff <= 1e-4 and man.parity["fp32"].passed
    from icrt.train.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(str(ckpt))
    for n in (1, 3, 7):
        x = inputs_of(generated_images(n, seed=n), man.preprocessing)
        assert np.abs(run_onnx(str(out / "model.onnx"), x) - run_torch(model, x)).max() <= 1e-4


@pytest.mark.slow
def test_training_time_scores_come_from_the_deployment_path(d2s_bundle):
    """train.evaluate scores through the runtime's Scorer (PyTorch backend): equal to `icrt score` on the bundle."""
    from icrt.runtime.scoring.scorer import Scorer
    from icrt.train.checkpoint import model_from_checkpoint
    from icrt.train.data import load_samples
    from icrt.train.evaluate import predict

    man, out, csv, ckpt = d2s_bundle
    samples = load_samples(str(csv))[:12]
    trained = predict(model_from_checkpoint(str(ckpt)), samples, man.preprocessing, batch_size=5)
    deployed = [r["score"] for r in Scorer.load(str(out), backend="onnxruntime").score_many([s.image for s in samples])]
    assert np.ptp(trained) > 0.1 and np.abs(trained - np.asarray(deployed)).max() <= 1e-4


@pytest.mark.slow
def test_export_runs_as_timed_stages(d2s_bundle):
    import json

    _, out, _, _ = d2s_bundle
    stages = json.loads((out / "export-report.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["fold", "check set", "fp32", "fp16", "int8", "parity", "write"]
    assert all(s["ok"] and s["seconds"] >= 0 for s in stages)


def test_a_failing_stage_is_recorded_and_raised():
    from icrt.export.stages import Stages

    st = Stages()
    assert st.run("one", lambda x: x + 1, 1) == 2
    with pytest.raises(ZeroDivisionError):
        st.run("two", lambda: 1 / 0)
    assert [(r["stage"], r["ok"]) for r in st.records] == [("one", True), ("two", False)]
    assert "division by zero" in st.records[1]["error"]


def test_precisions_are_declared_once_and_read_by_export():
    """A precision's flag, options, files and target come from runtime.bundle.precisions: export's flags and
    ExportOptions fields are built from that table."""
    from icrt.export.cli import parser
    from icrt.export.options import ExportOptions
    from icrt.runtime.bundle.precisions import get_precision, precision_names

    assert precision_names() == ("fp32", "fp16", "int8", "bf16") and get_precision("int8").target_srcc == 0.99
    assert get_precision("bf16").files == get_precision("fp32").files and get_precision("bf16").target_max_diff == 0.01
    assert get_precision("int8").files == {"onnxruntime": "model.int8.onnx", "tensorrt": "model.int8.qdq.onnx"}
    with pytest.raises(IcrtError, match="unknown precision 'int4'"):
        get_precision("int4")
    o = ExportOptions()
    assert (o.fp16, o.int8, o.bf16, o.calib_images, o.calib_method, o.max_batch, o.precisions()) == (
        False, False, False, 256, "minmax", 64, [])
    args = parser().parse_args(["--checkpoint", "c", "--out", "b", "--int8", "--calib-data", "x"])
    assert (args.int8, args.fp16, args.calib_data, args.calib_images, args.workspace_mb) == (True, False, "x", 256, 4096)
    assert ExportOptions(int8=True, fp16=True).precisions() == ["fp16", "int8"]


def test_modelopt_with_percentile_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="--int8-tool modelopt calibrates with minmax or entropy, not percentile"):
        export_checkpoint(str(tmp_path / "x.pt"), str(tmp_path / "b"), int8=True, calib_data="x",
                          int8_tool="modelopt", calib_method="percentile")
    with pytest.raises(ExportError, match="unknown --calib-method 'median'"):
        export_checkpoint(str(tmp_path / "x.pt"), str(tmp_path / "b"), int8=True, calib_data="x",
                          calib_method="median")
    with pytest.raises(ExportError, match="unexpected keyword argument 'log'"):
        export_checkpoint(str(tmp_path / "x.pt"), str(tmp_path / "b"), log=print)


@pytest.mark.slow
def test_d2s_fp16_graph_is_fp16_with_sensitive_ops_in_fp32(d2s_bundle):
    man, out, _, _ = d2s_bundle
    m = onnx.load(str(out / "model.fp16.onnx"))
    f16 = onnx.TensorProto.FLOAT16
    assert sum(i.data_type == f16 for i in m.graph.initializer) > 10  # conv weights are fp16
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in [*m.graph.input, *m.graph.output])
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*m.graph.value_info, *m.graph.input, *m.graph.output]}
    types.update({i.name: i.data_type for i in m.graph.initializer})
    for n in m.graph.node:
        if n.op_type in ("Softmax", "ReduceMean", "Sigmoid"):
            assert types.get(n.input[0]) == onnx.TensorProto.FLOAT, n.name
    p = man.parity["fp16"]
    assert p.max_abs_diff <= FP16_MAX_DIFF and p.srcc >= FP16_SRCC
    # agreement on generated images too
    x = inputs_of(generated_images(), man.preprocessing)
    a, b = run_onnx(str(out / "model.onnx"), x), run_onnx(str(out / "model.fp16.onnx"), x)
    assert np.abs(a - b).max() <= FP16_MAX_DIFF and np.ptp(a) > 0.5


@pytest.mark.slow
def test_d2s_int8_forms_and_agreement(d2s_bundle):
    man, out, csv, _ = d2s_bundle
    ort_form, trt_form = onnx.load(str(out / "model.int8.onnx")), onnx.load(str(out / "model.int8.qdq.onnx"))
    def inits(m):
        return {i.name: i for i in m.graph.initializer}

    def zero_point_types(m):
        zp = [n.input[2] for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
        return {inits(m)[z].data_type for z in zp}

    assert zero_point_types(ort_form) == {onnx.TensorProto.UINT8}
    assert zero_point_types(trt_form) == {onnx.TensorProto.INT8}
    zps = [onnx.numpy_helper.to_array(inits(trt_form)[n.input[2]]) for n in trt_form.graph.node
           if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert all((z == 0).all() for z in zps)  # symmetric
    assert not any(inits(trt_form).get(n.input[0]) is not None and inits(trt_form)[n.input[0]].data_type == onnx.TensorProto.INT32
                   for n in trt_form.graph.node if n.op_type == "DequantizeLinear")  # no int32 bias for TensorRT
    per_channel = [n for n in ort_form.graph.node if n.op_type == "DequantizeLinear"
                   and inits(ort_form).get(n.input[1]) is not None and inits(ort_form)[n.input[1]].dims not in ([], [1])]
    assert per_channel  # per-channel weight scales
    assert any(n.op_type == "Conv" for n in ort_form.graph.node)
    consumers = {}
    for n in trt_form.graph.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.op_type)
    dq_out = [n.output[0] for n in trt_form.graph.node if n.op_type == "DequantizeLinear"]
    assert dq_out and all(consumers[o] & {"Conv", "Gemm", "MatMul"} for o in dq_out)  # TensorRT placement
    p = man.parity["int8"]
    assert p.max_abs_diff <= INT8_MAX_DIFF and p.srcc >= INT8_SRCC
    assert p.forms["tensorrt"].max_abs_diff <= INT8_MAX_DIFF and p.forms["tensorrt"].srcc >= INT8_SRCC
    # calibrated on the train part only; checked on the held-out part (train.data's split)
    train = read_images(str(csv), "train")
    val = read_images(str(csv), "val")
    assert man.calibration.images == len(train) and man.calibration.split == "train"
    assert man.model_card.check_data["images"] == len(val)
    assert None not in (p.label_srcc, p.label_plcc, p.label_srcc_drop)


@pytest.mark.slow
def test_int8_onnxruntime_form_has_7_bit_weights_and_the_tensorrt_form_8_bit(d2s_bundle):
    """7-bit weights in the onnxruntime form: no u8 x s8 pair can saturate the 16-bit sums of onnxruntime's AVX2
    kernels, so its scores are the same on every CPU; TensorRT accumulates in 32 bits and keeps the full range."""
    _, out, _, _ = d2s_bundle

    def weights(name):
        m = onnx.load(str(out / name))
        inits = {i.name: i for i in m.graph.initializer}
        return [onnx.numpy_helper.to_array(inits[n.input[0]]) for n in m.graph.node if n.op_type == "DequantizeLinear"
                and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8
                and len(inits[n.input[0]].dims) >= 2]

    ort_w, trt_w = weights("model.int8.onnx"), weights("model.int8.qdq.onnx")
    dense = [w for w in ort_w if w.shape[1] > 1]  # depthwise convolutions (one input channel) keep 8 bits
    assert dense and max(int(np.abs(w.astype(int)).max()) for w in dense) <= 64
    assert max(int(np.abs(w.astype(int)).max()) for w in trt_w) == 127


@pytest.mark.slow
def test_parity_says_what_ran_and_where(d2s_bundle):
    from icrt.runtime.base.hardware import describe

    man, _, _, _ = d2s_bundle
    p = man.parity["int8"]
    assert p.run_on == "onnxruntime CPU kernels" and p.cpu == describe()
    assert p.forms["tensorrt"].run_on == "onnxruntime CPU, Q/DQ simulated in fp32"


@pytest.mark.slow
def test_no_bundle_file_records_a_path_of_the_exporting_machine(d2s_bundle):
    import json

    _, out, csv, ckpt = d2s_bundle

    def strings(v):
        if isinstance(v, dict):
            for k, x in v.items():
                yield k
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        elif isinstance(v, str):
            yield v

    for name in ("manifest.json", "export-report.json"):
        text = (out / name).read_text()
        assert str(csv.parent) not in text and str(ckpt.parent) not in text and os.getcwd() not in text, name
        assert not [t for t in strings(json.loads(text)) if os.path.isabs(t)], name
    man = load_manifest(str(out))
    assert man.calibration.data == "labels.csv" and man.model_card.checkpoint == "checkpoint.pt"


def test_simulated_qdq_is_the_exact_arithmetic_of_the_qdq_graph(tmp_path):
    """OrtBackend(simulate_qdq=True) runs Q/DQ nodes as written around a float Conv: equal to numpy's
    quantize -> dequantize -> convolution (what TensorRT computes), whatever this CPU's integer kernels do."""
    from onnx import TensorProto, helper, numpy_helper

    from icrt.runtime.backends.onnxruntime import OrtBackend

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (1, 3, 1, 1)).astype(np.int8)
    x_scale, w_scale = np.float32(0.02), np.float32(0.01)
    nodes = [helper.make_node("QuantizeLinear", ["image", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"]),
             helper.make_node("ReduceMean", ["c"], ["score"], axes=[1, 2, 3], keepdims=0)]
    inits = [numpy_helper.from_array(np.array(x_scale), "xs"), numpy_helper.from_array(np.array(0, np.int8), "xz"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(w_scale), "ws")]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 8, 8])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])], inits)
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.uniform(-2, 2, (4, 3, 8, 8)).astype(np.float32)
    xd = np.clip(np.round(x / x_scale), -128, 127).astype(np.float32) * x_scale
    want = np.einsum("nchw,c->nhw", xd, w[0, :, 0, 0].astype(np.float32) * w_scale).mean((1, 2))
    got = OrtBackend.from_file(str(path), "int8", simulate_qdq=True).run(x)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_constants_that_int8_codes_or_fp16_hold_exactly_are_stored_so_losslessly(tmp_path):
    """A kernel head's int8-rounded centres come out of tracing as fp32 constants; export stores such constants as
    int8 codes + per-row power-of-two scales (DequantizeLinear; a quarter of the bytes), fp16-exact ones as fp16 (half), the same
    values either way, and leaves any other constant as it was."""
    from onnx import TensorProto, helper, numpy_helper

    from icrt.export.onnx_export import store_exact
    from icrt.train.kernel import as_stored

    rng = np.random.default_rng(0)
    codes = as_stored(rng.standard_t(3, size=(64, 3))).T.astype(np.float32)  # [feature, centre], as traced
    half = rng.normal(size=(64, 6)).astype(np.float16).astype(np.float32)
    other = rng.normal(size=(6, 1)).astype(np.float32)  # neither: must stay fp32
    g = helper.make_graph([helper.make_node("MatMul", ["image", "codes"], ["h"]),
                           helper.make_node("MatMul", ["h", "half"], ["h2"]),
                           helper.make_node("MatMul", ["h2", "other"], ["score"])], "g",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
                          [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(half, "half"),
                           numpy_helper.from_array(other, "other")])
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    import onnxruntime as ort

    def run(p):
        return ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(["score"], {"image": x})[0]
    before = run(path)
    assert store_exact(path, min_bytes=100) == codes.nbytes * 3 // 4 - 3 * 4 + half.nbytes // 2
    m = onnx.load(path)
    types = {i.name: i.data_type for i in m.graph.initializer}
    assert types == {"codes_int8": TensorProto.INT8, "codes_scale": TensorProto.FLOAT,
                     "half_fp16": TensorProto.FLOAT16, "other": TensorProto.FLOAT}
    assert [(n.op_type, n.output[0]) for n in m.graph.node[:2]] == [("DequantizeLinear", "codes"), ("Cast", "half")]
    assert np.array_equal(run(path), before)
    assert store_exact(path, min_bytes=100) == 0  # nothing left to do

    # a Q/DQ graph keeps such a constant in fp16 (OpenVINO mis-scales a weight DequantizeLinear among its int8 nodes)
    q = helper.make_graph([helper.make_node("QuantizeLinear", ["image", "s", "z"], ["iq"]),
                           helper.make_node("DequantizeLinear", ["iq", "s", "z"], ["idq"]),
                           helper.make_node("MatMul", ["idq", "codes"], ["score"])], "q",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 64])],
                          [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(np.float32(0.05), "s"),
                           numpy_helper.from_array(np.uint8(128), "z")])
    onnx.save(helper.make_model(q, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert store_exact(path, min_bytes=100) == codes.nbytes // 2
    assert {i.name: i.data_type for i in onnx.load(path).graph.initializer}["codes_fp16"] == TensorProto.FLOAT16


# --- CM-SSA-like bundle (patches, two outputs) -----------------------------------------------------------------


@pytest.mark.slow
def test_cmssa_like_export_all_precisions(tmp_path, tiny_clip_config, tiny_cmssa_kind, labels_csv):
    ckpt = tmp_path / "cm.pt"
    m = _cmssa_checkpoint(ckpt, tiny_clip_config)
    man = export_checkpoint(str(ckpt), str(tmp_path / "b"), fp16=True, int8=True, calib_data=labels_csv,
                            calib_images=12)
    assert man.level_output == "levels" and man.preprocessing.resize == "patches"
    assert man.model_card.check_data["inputs"] == 4 * man.model_card.check_data["images"]  # 48 px -> 2x2 patches of 32
    assert man.parity["fp32"].input_max_abs_diff <= 1e-4
    params = man.model_card.parameters
    assert params["after_folding"] == count_parameters(m.clip.visual) + m.visual_prompts.numel() < params["before_folding"]
    # folded == unfolded through the export (the report compares the training-time graph)
    import json

    rep = json.loads((tmp_path / "b" / "export-report.json").read_text())
    assert rep["fold_max_abs_diff"] <= 1e-5
    # the level probabilities are a second output in every file
    x = inputs_of(generated_images(6), man.preprocessing)
    import onnxruntime as ort

    for prec in man.precisions():
        sess = ort.InferenceSession(man.file_for(prec), providers=["CPUExecutionProvider"])
        score, levels = sess.run(["score", "levels"], {"image": x})
        assert levels.shape == (len(x), 5) and np.allclose(levels.sum(-1), 1, atol=1e-2)
        assert np.allclose(score, levels @ np.linspace(0, 1, 5), atol=1e-2)
    # transformer: LayerNorm / Softmax / GELU (Erf) stay unquantized in both int8 forms
    for name in ("model.int8.onnx", "model.int8.qdq.onnx"):
        g = onnx.load(str(tmp_path / "b" / name)).graph
        producers = {o: n for n in g.node for o in n.output}
        for n in g.node:
            if n.op_type in ("LayerNormalization", "Softmax", "Erf"):
                src = producers.get(n.input[0])
                assert src is None or src.op_type != "DequantizeLinear", (name, n.name)
    fp16 = onnx.load(str(tmp_path / "b" / "model.fp16.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
    # stated tolerances vs fp32 on generated images
    a = run_onnx(man.file_for("fp32"), x)
    assert np.abs(run_onnx(man.file_for("fp16"), x) - a).max() <= FP16_MAX_DIFF
    assert np.abs(run_onnx(man.file_for("int8"), x) - a).max() <= INT8_MAX_DIFF
    assert np.abs(run_onnx(man.file_for("int8", "tensorrt"), x) - a).max() <= INT8_MAX_DIFF


# --- errors ----------------------------------------------------------------------------------------------------


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ExportError, match="checkpoint not found"):
        export_checkpoint(str(tmp_path / "nope.pt"), str(tmp_path / "b"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ExportError, match="not a readable checkpoint"):
        export_checkpoint(str(bad), str(tmp_path / "b"))
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ExportError, match="not an icrt checkpoint"):
        export_checkpoint(str(tmp_path / "other.pt"), str(tmp_path / "b"))
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_int8_without_calibration_data_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="--int8 needs --calib-data"):
        export_checkpoint(str(tmp_path / "x.pt"), str(tmp_path / "b"), int8=True)


def test_parity_failure_raises_after_writing_the_report(tmp_path):
    _d2s_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_checkpoint(str(tmp_path / "c.pt"), str(tmp_path / "b"), tolerance=-1.0)
    assert load_manifest(str(tmp_path / "b")).parity["fp32"].passed is False


@pytest.mark.slow
def test_cli_exit_codes(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(tmp_path / "missing.pt"),
                        "--out", str(tmp_path / "b")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("python -m export: error: ")
    assert "checkpoint not found" in r.stderr and "Traceback" not in r.stderr
    _d2s_checkpoint(tmp_path / "c.pt")
    r = subprocess.run([sys.executable, "-m", "export", "--checkpoint", str(tmp_path / "c.pt"),
                        "--out", str(tmp_path / "b")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    man = load_manifest(str(tmp_path / "b"))
    assert man.precisions() == ["fp32"] and man.model_card.check_data["source"] == "generated"


# --- TensorRT: the parts that need no GPU ------------------------------------------------------------------------


def test_trt_without_tensorrt_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(tensorrt_build.TensorRTError, match="needs the tensorrt Python package"):
        tensorrt_build.require_tensorrt()
    _d2s_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ExportError, match="tensorrt"):
        export_checkpoint(str(tmp_path / "c.pt"), str(tmp_path / "b"), trt=True)


def test_trt_export_builds_engines_with_the_runtime_builder(tmp_path, monkeypatch):
    """python -m export --trt runs runtime.backends.tensorrt_build (the code behind icrt build), here on the fake
    TensorRT 10.3 / CUDA of tests/fakes (no real TensorRT or GPU exists on the test machines)."""
    from tests.fakes.fake_cuda import CudaState, install_cuda
    from tests.fakes.fake_tensorrt import VERSIONS, install_tensorrt

    state = CudaState("Orin", (8, 7))
    install_cuda(monkeypatch, state)
    fake = install_tensorrt(monkeypatch, VERSIONS["10.3"], state).fake
    _d2s_checkpoint(tmp_path / "c.pt")
    man = export_checkpoint(str(tmp_path / "c.pt"), str(tmp_path / "b"), trt=True, max_batch=16, workspace_mb=256)
    v = VERSIONS["10.3"]
    [e] = man.engines
    assert (e.precision, e.file, e.onnx, e.tensorrt, e.compute_capability) == (
        "fp32", f"engine.fp32.trt{v}.sm87.plan", "model.onnx", v, "8.7")
    assert (e.strongly_typed, e.builder_flags, e.cleared_builder_flags) == (True, [], ["TF32"])
    assert (e.min_batch, e.opt_batch, e.max_batch) == (1, 1, 16)
    assert fake.builds[0]["profile"]["image"][2] == [16, 3, 64, 64] and "TF32" not in fake.builds[0]["builder_flags"]
    assert {e.file, f"timing.trt{v}.sm87.cache"} <= set(os.listdir(tmp_path / "b"))
    assert load_manifest(str(tmp_path / "b")).engines[0].file == e.file


def test_modelopt_path_is_optional_with_a_clear_error(tmp_path, monkeypatch):
    import icrt.calibration.modelopt as modelopt

    monkeypatch.setattr(modelopt, "available", lambda: False)
    with pytest.raises(ExportError, match="needs NVIDIA ModelOpt"):
        export_checkpoint(str(tmp_path / "x.pt"), str(tmp_path / "b"), int8=True, calib_data="x", int8_tool="modelopt")


def test_bad_calibration_data_is_a_clear_error_before_writing(tmp_path):
    _d2s_checkpoint(tmp_path / "c.pt")
    with pytest.raises(IcrtError, match="no such file"):  # a CalibrationDataError, one of the user errors
        export_checkpoint(str(tmp_path / "c.pt"), str(tmp_path / "b"), int8=True, calib_data=str(tmp_path / "none"))
    assert not (tmp_path / "b").exists()


def test_frozen_multihead_attention_exports(tmp_path):
    """A frozen CLIP's nn.MultiheadAttention takes a fused fast path in eval mode that ONNX cannot export."""
    import onnxruntime as ort
    import torch

    from icrt.export.onnx_export import export_onnx

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv2d(3, 16, 8, 8)
            self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            return torch.sigmoid(self.attn(t, t, t, need_weights=False)[0].mean((1, 2)))

    m = Tiny().eval().requires_grad_(False)
    export_onnx(m, str(tmp_path / "m.onnx"), 32)
    x = torch.rand(3, 3, 32, 32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": x.numpy()})[0]
    assert abs(got - m(x).numpy()).max() < 1e-5
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards


@pytest.mark.slow
def test_tf_same_padding_exports_as_constants(tmp_path):
    """timm's dynamic TF-"same" padding becomes constant padding for the bundle's fixed input size:
    identical outputs, and no run-time Pad left in the graph (onnxruntime can fuse and quantize)."""
    import onnx
    import torch

    from icrt.export.onnx_export import export_onnx
    from icrt.train.models.d2s import D2S, D2SConfig

    torch.manual_seed(0)
    m = D2S(D2SConfig(backbone="tf_efficientnet_lite0", pretrained="none", image_size=96, pool="stats",
                      head="linear")).eval()
    path = str(tmp_path / "m.onnx")
    export_onnx(m, path, 96)
    import onnxruntime as ort

    so = ort.SessionOptions()  # basic optimisation folds the constant pads into the convolutions
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "m.opt.onnx")
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 48
    x = np.random.default_rng(0).random((2, 3, 96, 96), dtype=np.float32)

    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.slow
def test_int8_quantization_leaves_no_scratch_files(tmp_path, monkeypatch):
    """onnxruntime's pre-quantization pass leaves sym_shape_infer_temp.onnx and <uuid>.data files in the working
    directory when symbolic shape inference fails (seen on EfficientNet-Lite with run-time TF padding): the
    export keeps them in a temporary folder."""
    from icrt.calibration.reader import PreprocessedImageReader
    from icrt.export.int8 import quantize_both

    torch.manual_seed(0)
    m = D2S(D2SConfig(backbone="tf_efficientnet_lite0", pretrained="none", image_size=64, pool="stats",
                      head="linear"), load_pretrained=False).eval()
    fp32 = str(tmp_path / "dynamic-pad.onnx")  # exported as is: timm's dynamic padding, as before static_same_padding
    torch.onnx.export(m, (torch.rand(1, 3, 64, 64),), fp32, input_names=["image"], output_names=["score"],
                      dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    x = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    forms = quantize_both(fp32, str(tmp_path), PreprocessedImageReader(x, "image"))
    assert set(forms) == {"onnxruntime", "tensorrt"} and os.path.isfile(tmp_path / "model.int8.onnx")
    assert os.listdir(work) == []


# --- python -m export replaces a bundle only when the new one is complete (moved from tests/runtime/cli/test_outputs.py) --


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    _d2s_checkpoint(d / "c0.pt", seed=0)
    _d2s_checkpoint(d / "c1.pt", seed=1)
    return d / "c0.pt", d / "c1.pt"


def _files(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


@pytest.mark.slow
def test_failed_reexport_leaves_the_old_bundle_intact(checkpoints, tmp_path, monkeypatch):
    import icrt.export.core as core
    from icrt.runtime.scoring.scorer import Scorer

    out = tmp_path / "b"
    core.export_checkpoint(str(checkpoints[0]), str(out))
    before = _files(out)

    def boom(*a, **k):  # after model.onnx is written, before the manifest
        raise RuntimeError("boom")
    with monkeypatch.context() as m:
        m.setattr(core, "parity_figures", boom)
        with pytest.raises(RuntimeError, match="boom"):
            core.export_checkpoint(str(checkpoints[1]), str(out))
    assert _files(out) == before and os.listdir(tmp_path) == ["b"]  # no temporary folder left either
    assert 0 <= Scorer.load(str(out)).score(textured(40, 40))["score"] <= 1
    man = core.export_checkpoint(str(checkpoints[1]), str(out))  # a good one replaces it
    assert man.root == str(out) and man.model_card.checkpoint == checkpoints[1].name  # a name, not a path
    assert _files(out)["model.onnx"] != before["model.onnx"] and os.listdir(tmp_path) == ["b"]


@pytest.mark.slow
def test_export_out_that_is_a_file_or_not_a_bundle_is_one_line(checkpoints, tmp_path, capsys):
    from icrt.export.cli import main as export_main

    (tmp_path / "file").write_text("x")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    for out, words in [("file", "is not a folder"), ("stuff", "not a bundle")]:
        code = export_main(["--checkpoint", str(checkpoints[0]), "--out", str(tmp_path / out)])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err
        last = err.strip().splitlines()[-1]  # one `PROG: error: message` line (runtime.base.errors.run_command)
        assert ": error: " in last and words in last.split(": error: ", 1)[1]
    assert (tmp_path / "file").read_text() == "x" and os.listdir(tmp_path / "stuff") == ["notes.txt"]


def _console_script(*argv, cwd):
    """``icrt ARGV`` as pip's console script runs it: the working folder is not on sys.path."""
    code = (f"import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; sys.path.insert(0, {ROOT!r}); "
            "from icrt.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.slow
def test_icrt_export_names_versions_carries_a_card_and_checksums_whatever_the_working_folder_holds(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    for own in ("train.py", "export.py"):  # a user's own scripts: `python -m export` here would run them
        (work / own).write_text("raise SystemExit('the user script ran instead of icrt')\n")
    _d2s_checkpoint(tmp_path / "c.pt")
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"summary": "a tiny test model", "training_data": "generated noise",
                                "licence": "CC0", "limits": "none of use", "owner": "tests"}))
    r = _console_script("export", "--checkpoint", tmp_path / "c.pt", "--out", tmp_path / "b", "--name", "tiny",
                        "--version", "2.1", "--card", card, cwd=work)
    assert r.returncode == 0, r.stderr
    m = load_manifest(str(tmp_path / "b"))
    assert (m.name, m.version, m.model_card.summary, m.model_card.extra["owner"]) == ("tiny", "2.1", "a tiny test model",
                                                                                     "tests")
    assert sorted(m.sha256) == ["model.onnx"] and m.verify_files() is None
    info = _console_script("info", tmp_path / "b", cwd=work).stdout.splitlines()
    assert info[0] == "tiny  version 2.1  (d2s)" and info[1].split() == ["what", "a", "tiny", "test", "model"]
    assert info[2].startswith("  trained on    generated noise") and "licence       CC0" in info[3]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = _console_script("export", "--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "b2", "--card", bad,
                        cwd=work)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "must be a JSON object" in r.stderr
    r = _console_script("train", "d2s", "--help", cwd=work)
    assert r.returncode == 0 and r.stdout.startswith("usage: icrt train d2s")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="bf16 parity is measured with OpenVINO")
def test_bf16_is_the_fp32_file_its_parity_measured_with_openvino(tmp_path, monkeypatch):
    """Issue 27: no file of its own; parity (SRCC >= 0.999, max |diff| <= 0.01) measured with OpenVINO's bf16 on a CPU
    with bf16 units, and recorded as such; refused in one line where it cannot be measured."""
    import icrt.runtime.base.hardware as hardware

    ckpt = tmp_path / "c.pt"
    _d2s_checkpoint(ckpt)
    monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "cache"))
    if hardware.bf16_units():
        man = export_checkpoint(str(ckpt), str(tmp_path / "b"), bf16=True)
        p = man.parity["bf16"]
        assert man.files["bf16"] == man.files["fp32"] and p.run_on.startswith("OpenVINO ")
        assert p.target_srcc == 0.999 and p.target_max_diff == 0.01 and p.max_abs_diff <= 0.01
        assert p.meets_target is (p.srcc >= 0.999)
    monkeypatch.setattr(hardware, "cpu_features", lambda cpuinfo=None: ["avx2"])
    with pytest.raises(ExportError, match="--bf16 measures its parity with OpenVINO on a CPU with amx_bf16 or "
                                          "avx512_bf16; this one has avx2"):
        export_checkpoint(str(ckpt), str(tmp_path / "b2"), bf16=True)


@pytest.mark.slow
def test_bf16_the_runtime_would_refuse_is_left_out_said_and_recorded(tmp_path, monkeypatch):
    """A model whose bf16 scores OpenVINO's own check refuses (the runtime would refuse --precision bf16): export
    writes every other precision, says why in one warning line, and records it in export-report.json."""
    import icrt.runtime.backends.base as backends_base
    import icrt.runtime.backends.openvino as openvino_backend
    import icrt.runtime.base.hardware as hardware
    from icrt.runtime.base.errors import BundleError

    class Refusing:
        def __init__(self, path, **kwargs):
            assert kwargs["norm"] is not None  # opened as the runtime opens it: pixels and the bundle's normalisation
            raise BundleError(f"{path}: refused: OpenVINO and onnxruntime disagree on a probe batch by 0.447")

    monkeypatch.setattr(hardware, "bf16_units", lambda: ["amx_bf16"])
    monkeypatch.setattr(backends_base, "installed", lambda name: True)
    monkeypatch.setattr(openvino_backend, "OpenVinoBackend", Refusing)
    ckpt = tmp_path / "c.pt"
    _d2s_checkpoint(ckpt)
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("export").addHandler(handler)  # its own handler: whatever logging setup ran before
    try:
        man = export_checkpoint(str(ckpt), str(tmp_path / "b"), bf16=True)
    finally:
        logging.getLogger("export").removeHandler(handler)
    assert man.precisions() == ["fp32"] and "bf16" not in man.parity
    said = [r.getMessage() for r in records if "bf16 not offered" in r.getMessage()]
    assert len(said) == 1 and "disagree on a probe batch by 0.447" in said[0] and str(tmp_path) not in said[0]
    report = json.loads((tmp_path / "b" / "export-report.json").read_text())
    assert report["not_offered"] == {"bf16": said[0].removeprefix("export: warning: ")}
