"""CM-SSA: prompt construction, deep prompts, gradients, scoring rules, training, patch evaluation,
checkpoints, early stop, CLI and folded export. Tiny random OpenCLIP towers (no weights are reachable)."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icrt.runtime.bundle.preprocessing import Preprocessing, patch_count
from icrt.runtime.scoring.preprocess import load_rgb, to_model_input
from icrt.train.checkpoint import load_checkpoint, model_from_checkpoint
from icrt.train.cmssa_trainer import CMSSATrainConfig, CMSSATrainer
from icrt.train.evaluate import predict
from icrt.train.models.cmssa import CMSSA, LEVEL_PROMPTS, CMSSAConfig, level_values
from tests.images import textured
from tests.model_helpers import interrupt_after_first_epoch
from tests.tiny import CLIP3, CLIP224, write_clip_config

QUIET = {}  # progress goes to the train.* loggers, silent unless configured


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory):
    return write_clip_config(tmp_path_factory.mktemp("clip3"), "icrt-cmssa-tiny3.json", CLIP3)


@pytest.fixture(scope="module")
def tiny224(tmp_path_factory):
    return write_clip_config(tmp_path_factory.mktemp("clip224"), "icrt-cmssa-tiny224.json", CLIP224)


def _model(backbone, **kw):
    torch.manual_seed(0)
    return CMSSA(CMSSAConfig(backbone=backbone, pretrained="none", n_ctx=kw.pop("n_ctx", 4), **kw))


def _cfg(labels_csv, captions_csv, out, backbone, **kw):
    model = {"backbone": backbone, "pretrained": "none", "n_ctx": 4}
    model.update(kw.pop("model", {}))
    base = dict(data=labels_csv, captions=captions_csv, out=str(out), epochs=2, batch_size=8, lr=1e-2,
                device="cpu", model=model, preprocessing={"stride": 16})
    base.update(kw)
    return CMSSATrainConfig(**base)


# --- model ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [3, 5, 7])
def test_prompt_construction_shapes(tiny3, levels):
    m = _model(tiny3, levels=levels)
    p = m.prompts
    assert m.depth == 3  # 12 capped at the towers' 3 layers
    assert p.ctx.shape == (4, 32) and len(p.text_deep) == 2 and all(t.shape == (4, 32) for t in p.text_deep)
    assert len(p.align_vis) == 3 and all(v.shape == (4, 48) for v in p.align_vis)
    shallow, deep = p.complexity_visual()
    assert shallow.shape == (4, 48) and [d.shape for d in deep] == [(4, 48)] * 2
    assert m.level_tokens.shape == (levels, 77) and len(m.level_names) == levels == len(LEVEL_PROMPTS[levels])
    # the n_ctx placeholder tokens sit right after the start token, the level name after them
    assert (m.level_tokens[:, 1:5] == m.level_tokens[0, 1]).all()
    assert m.level_text_features().shape == (levels, 24)
    x = torch.randn(3, 3, 32, 32)
    assert m.encode_image(x).shape == (3, 24) and m.level_probs(x).shape == (3, levels)
    assert m(x).shape == (3,)


def _block_inputs(blocks):
    seen, hooks = {}, []
    for i, blk in enumerate(blocks):
        hooks.append(blk.register_forward_pre_hook(lambda mod, args, kwargs, i=i: seen.__setitem__(i, args[0].detach()),
                                                   with_kwargs=True))
    return seen, hooks


@pytest.mark.parametrize("depth", [2, 12])
def test_deep_prompts_reach_every_layer_up_to_the_depth(tiny3, depth):
    m = _model(tiny3, prompt_depth=depth)
    d = min(depth, 3)
    assert m.depth == d and len(m.prompts.text_deep) == d - 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for branch in ("complexity", "align"):
            shallow, deep = m.prompts.complexity_visual() if branch == "complexity" else m.prompts.align_visual()
            seen, hooks = _block_inputs(m.clip.visual.transformer.resblocks)
            m.encode_image(x, branch)
            for h in hooks:
                h.remove()
            torch.testing.assert_close(seen[0][:, -4:], m.clip.visual.ln_pre(shallow).expand(2, -1, -1))
            for i in range(1, 3):
                if i < d:  # replaced by this layer's prompt
                    torch.testing.assert_close(seen[i][:, -4:], deep[i - 1].expand(2, -1, -1))
                else:  # past the depth: the previous layer's output carries on
                    assert not torch.allclose(seen[i][:, -4:], seen[i - 1][:, -4:])
        seen, hooks = _block_inputs(m.clip.transformer.resblocks)
        m.level_text_features()
        for h in hooks:
            h.remove()
        pos = m.clip.positional_embedding[1:5]
        torch.testing.assert_close(seen[0][:, 1:5], (m.prompts.ctx + pos).expand(5, -1, -1))
        for i in range(1, d):
            torch.testing.assert_close(seen[i][:, 1:5], m.prompts.text_deep[i - 1].expand(5, -1, -1))


def test_only_prompt_parameters_receive_gradients(tiny3):
    m = _model(tiny3).train()
    assert not m.clip.training  # the frozen CLIP stays in eval mode
    x, y = torch.randn(4, 3, 32, 32), torch.rand(4)
    caps = m.encode_captions(["a cat", "two dogs", "a busy street", "sky"])
    cos = m.alignment(x, caps)
    loss = 0.9 * F.mse_loss(m(x), y) + 0.1 * F.mse_loss(cos, torch.ones_like(cos))
    loss.backward()
    trainable = {n for n, _ in m.named_parameters() if n.startswith("prompts.")}
    assert trainable == {"prompts." + n for n, _ in m.prompts.named_parameters()}
    for n, p in m.named_parameters():
        if n in trainable:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert not p.requires_grad and p.grad is None, n


@pytest.mark.slow
def test_both_scoring_rules(tiny3):
    assert level_values(5) == (0.0, 0.25, 0.5, 0.75, 1.0) and level_values(3, "first-level") == (1.0, 0.0, 0.0)
    x = torch.randn(6, 3, 32, 32)
    exp, first = _model(tiny3), _model(tiny3, score="first-level")
    with torch.no_grad():
        probs = exp.level_probs(x)
        torch.testing.assert_close(exp(x), probs @ torch.linspace(0, 1, 5))
        torch.testing.assert_close(first(x), first.level_probs(x)[:, 0])
        torch.testing.assert_close(first.level_probs(x), probs)  # same weights (seeded), only the reading differs
    with pytest.raises(ValueError, match="score"):
        CMSSAConfig(score="median")
    with pytest.raises(ValueError, match="levels"):
        CMSSAConfig(levels=4)


def test_patch_evaluation_on_images_smaller_and_larger_than_224(tiny224, tmp_path):
    m = _model(tiny224).eval()
    assert m.image_size == 224
    prep = Preprocessing(resize="patches", size=224, stride=64, mean=m.cfg.mean, std=m.cfg.std)
    paths = []
    for i, (name, (h, w)) in enumerate({"small": (150, 200), "large": (300, 260)}.items()):
        paths.append(str(tmp_path / f"{name}.png"))
        textured(w, h, seed=i, level=1.0).save(paths[-1])  # every pixel random
    assert patch_count(150, 200, prep) == 3 and patch_count(300, 260, prep) == 6  # 224x299: 1x3; 300x260: 3x2
    from icrt.train.data import Sample

    samples = [Sample(image=p, score=0.5) for p in paths]
    got = predict(m, samples, prep, batch_size=4)  # batches mix patches of both images
    for p, g in zip(paths, got):
        x, _ = to_model_input(load_rgb(p), prep)
        with torch.no_grad():
            want = m(torch.from_numpy(x)).mean().item()
        assert g == pytest.approx(want, abs=1e-5)


# --- training ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_run_lowers_the_loss_and_writes_the_run(labels_csv, captions_csv, tmp_path, tiny3):
    tr = CMSSATrainer(_cfg(labels_csv, captions_csv, tmp_path / "run", tiny3, epochs=3), **QUIET)
    assert tr.prep.resize == "patches" and tr.prep.size == 32 and tr.prep.mean == tuple(CMSSAConfig().mean)
    assert tr.caption_feats.shape == (len(tr.train_samples), 24)
    xs, ys, idx = next(iter(torch.utils.data.DataLoader(tr.eval_set, batch_size=len(tr.eval_set))))

    def loss():
        with torch.no_grad():
            cos = tr.model.alignment(xs, tr.caption_feats[idx])
            return (0.9 * F.mse_loss(tr.model(xs), ys) + 0.1 * F.mse_loss(cos, torch.ones_like(cos))).item()

    clip_before = {k: v.clone() for k, v in tr.model.clip.state_dict().items()}
    before = loss()
    best = tr.fit()
    assert loss() < before
    for k, v in tr.model.clip.state_dict().items():  # CLIP stayed frozen
        assert torch.equal(v, clip_before[k]), k
    out = tmp_path / "run"
    assert {"checkpoint.pt", "metrics.json", "config.json", "last.pt"} <= set(os.listdir(out))
    assert set(tr.history[0]) >= {"loss_l_c", "loss_l_a", "loss_loss", "val"}
    assert json.loads((out / "metrics.json").read_text())["epoch"] == best["epoch"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["levels"] == 5 and cfg["alpha"] == 0.1 and cfg["preprocessing"]["stride"] == 16
    # last.pt holds the prompts only (the frozen CLIP is rebuilt on resume); checkpoint.pt is self-contained
    state = torch.load(out / "last.pt", weights_only=False)
    assert set(state["model"]) == set(tr.model.prompts.state_dict())
    ckpt = load_checkpoint(str(out / "checkpoint.pt"))
    assert ckpt["kind"] == "cmssa" and any(k.startswith("clip.") for k in ckpt["model"])


@pytest.mark.slow
def test_alpha_zero_trains_the_complexity_branch_without_captions(labels_csv, tmp_path, tiny3):
    tr = CMSSATrainer(_cfg(labels_csv, None, tmp_path / "c", tiny3, epochs=1, alpha=0.0), **QUIET)
    assert tr.caption_feats is None
    tr.fit()
    assert "loss_l_a" not in tr.history[0]
    from icrt.train.data import DataError

    with pytest.raises(DataError, match="captions"):
        CMSSATrainer(_cfg(labels_csv, None, tmp_path / "d", tiny3), **QUIET)


@pytest.mark.slow
def test_checkpoint_round_trip_and_resume_matches_uninterrupted_run(labels_csv, captions_csv, tmp_path, tiny3):
    full = CMSSATrainer(_cfg(labels_csv, captions_csv, tmp_path / "full", tiny3), **QUIET)
    full.fit()
    part = CMSSATrainer(_cfg(labels_csv, captions_csv, tmp_path / "part", tiny3), **QUIET)
    interrupt_after_first_epoch(part)
    resumed = CMSSATrainer(_cfg(labels_csv, captions_csv, tmp_path / "part", tiny3), **QUIET)
    resumed.load_state(str(tmp_path / "part" / "last.pt"))
    resumed.fit()
    for (k, a), b in zip(full.model.prompts.state_dict().items(), resumed.model.prompts.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    ckpt = load_checkpoint(str(tmp_path / "full" / "checkpoint.pt"))
    model = model_from_checkpoint(ckpt)
    x = torch.randn(3, 3, 32, 32)
    full.model.load_state_dict(ckpt["model"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), full.model.eval()(x))


def test_early_stop_after_epochs_without_gain(labels_csv, captions_csv, tmp_path, tiny3):
    tr = CMSSATrainer(_cfg(labels_csv, captions_csv, tmp_path / "es", tiny3, epochs=10, early_stop=2), **QUIET)
    srccs = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.9])
    tr.train_epoch = lambda: {"loss": 0.0}
    tr.validate = lambda: {"n": 6, "srcc": next(srccs), **dict.fromkeys(("plcc", "krcc", "rmse", "rmae", "mae"), 0.0)}
    tr.fit()
    assert tr.epoch == 4 and tr.best_epoch == 2


@pytest.mark.slow
def test_cli_trains_evaluates_and_exports(labels_csv, captions_csv, tmp_path, tiny3, capsys):
    from icrt.export import export_checkpoint
    from icrt.export.checks import generated_images
    from icrt.export.fold import count_parameters, fold_for_export
    from icrt.train.cli import main as train_main
    from icrt.train.evaluate import main as eval_main
    from icrt.train.models.cmssa import LevelScorer
    from tests.model_helpers import inputs_of, run_onnx

    out = tmp_path / "cli"
    rc = train_main(["cmssa", "--data", labels_csv, "--captions", captions_csv, "--out", str(out), "--backbone", tiny3,
                     "--pretrained", "none", "--epochs", "1", "--batch-size", "8", "--n-ctx", "4", "--patch-stride", "16",
                     "--normalize", "imagenet", "--score", "first-level", "--device", "cpu"])
    assert rc == 0
    ckpt = load_checkpoint(str(out / "checkpoint.pt"))
    assert ckpt["preprocessing"]["mean"] == [0.485, 0.456, 0.406] and ckpt["config"]["score"] == "first-level"
    assert eval_main(["--checkpoint", str(out / "checkpoint.pt"), "--data", labels_csv]) == 0
    assert "SRCC" in capsys.readouterr().out

    # folding: the complexity branch alone, text tower and alignment prompts gone, same scores
    model = model_from_checkpoint(ckpt)
    folded = fold_for_export(model, "cmssa")
    assert isinstance(folded, LevelScorer)
    assert count_parameters(folded) == count_parameters(model.clip.visual)
    assert folded.text_matrix.shape == (5, 24) and folded.levels.tolist() == [1, 0, 0, 0, 0]
    prep = Preprocessing.from_dict(ckpt["preprocessing"])
    x = inputs_of(generated_images(4), prep)  # patches of 32 px on a stride-16 grid
    assert len(x) > 4
    with torch.no_grad():
        score, levels = folded(torch.from_numpy(x))
        torch.testing.assert_close(score, model(torch.from_numpy(x)), atol=1e-6, rtol=0)
        torch.testing.assert_close(score, levels[:, 0])

    man = export_checkpoint(str(out / "checkpoint.pt"), str(tmp_path / "bundle"))
    assert man.level_output == "levels" and man.preprocessing.resize == "patches"
    onnx_scores = run_onnx(man.file_for("fp32"), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_scores - ref).max() < 1e-4
    # no text tower in the bundle: no token embedding, no text transformer weights, only the image path
    import onnx

    g = onnx.load(man.file_for("fp32")).graph
    shapes = [tuple(i.dims) for i in g.initializer]
    assert (49408, 32) not in shapes  # the token embedding
    n_const = sum(int(np.prod(s)) for s in shapes)
    visual = count_parameters(model.clip.visual)
    text = count_parameters(model.clip.transformer)
    assert n_const < visual + text // 2
    assert man.model_card.parameters["after_folding"] == visual


@pytest.mark.slow
def test_sind_options_reach_cmssa(labels_csv, captions_csv, tmp_path, tiny3):
    from collections import Counter

    from icrt.train.scene import SceneBatchSampler

    tr = CMSSATrainer(_cfg(labels_csv, captions_csv, tmp_path / "sind", tiny3, epochs=1, scene_sampling=2,
                           loss="scale-shift"), **QUIET)
    assert isinstance(tr.loader.batch_sampler, SceneBatchSampler)
    x, y, idx = next(iter(tr.loader))
    assert Counter(tr.domains[int(i)] for i in idx) == Counter({"a": 4, "b": 4})
    terms = tr.train_step(x, y, idx)
    assert all(np.isfinite(v) for v in terms.values())
