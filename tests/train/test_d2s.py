"""D2S model, text teacher and training loop on tiny generated data."""
import os

import numpy as np
import pytest
import torch

from icrt.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from icrt.train.d2s_trainer import D2STrainConfig, D2STrainer
from icrt.train.models.d2s import D2S, D2SConfig
from icrt.train.text import TextTeacher
from tests.model_helpers import interrupt_after_first_epoch
from tests.tiny import D2S as TINY
from tests.tiny import D2S_ARGS


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 96, 160])
def test_attention_pool_and_score_shapes_for_several_input_sizes(size):
    torch.manual_seed(0)
    m = D2S(D2SConfig(**TINY)).eval()
    x = torch.randn(2, 3, size, size)
    z = m.features(x)
    assert z.shape == (2, m.feature_dim)
    s = m(x)
    assert s.shape == (2,) and ((s > 0) & (s < 1)).all()


def test_pool_positional_embedding_follows_training_size():
    m = D2S(D2SConfig(**{**TINY, "image_size": 128}))
    assert m.pool.pos_embed.shape[0] == (128 // 32) ** 2 + 1  # + the pooled (mean) token


def test_text_teacher_from_config_json_is_frozen(tiny_clip_config):
    t = TextTeacher(tiny_clip_config, "none")
    f = t.encode(["a plain grey image", "a busy image full of noise"])
    assert f.shape == (2, 32) and t.dim == 32
    assert not any(p.requires_grad for p in t.parameters())
    t.train()
    assert not t.clip.training


def _cfg(data, out, **kw):
    base = dict(data=data, out=str(out), epochs=2, batch_size=8, lr=3e-3, seed=0, text="none",
                model=dict(TINY), cache="on")
    base.update(kw)
    return D2STrainConfig(**base)


def _batch_mse(trainer, x, y):
    trainer.model.train()  # batch statistics, as in training; the head's dropout is off in TINY
    with torch.no_grad():
        return torch.nn.functional.mse_loss(trainer.model(x), y).item()


@pytest.mark.slow
def test_training_steps_lower_the_loss(labels_csv, tmp_path):
    tr = D2STrainer(_cfg(labels_csv, tmp_path / "run"))
    x, y, idx = next(iter(tr.loader))
    before = _batch_mse(tr, x, y)
    for _ in range(15):
        tr.train_step(x, y, idx)
    assert _batch_mse(tr, x, y) < 0.3 * before


def test_fit_writes_checkpoint_metrics_and_config(labels_csv, tmp_path):
    tr = D2STrainer(_cfg(labels_csv, tmp_path / "run", epochs=1))
    best = tr.fit()
    for f in ("checkpoint.pt", "metrics.json", "config.json", "last.pt"):
        assert os.path.isfile(tmp_path / "run" / f)
    assert {"srcc", "plcc", "krcc", "rmse", "rmae", "mae", "per_category"} <= set(best)
    import json
    assert json.load(open(tmp_path / "run" / "metrics.json"))["epoch"] == 1


@pytest.mark.slow
def test_caption_guided_training_uses_fal_and_eal(labels_csv, captions_csv, tiny_clip_config, tmp_path):
    cfg = _cfg(labels_csv, tmp_path / "run", text="clip", captions=captions_csv, text_encoder=tiny_clip_config,
               text_pretrained="none", buffer_size=32, refresh_step=4, epochs=1)
    tr = D2STrainer(cfg)
    assert tr.proj.out_features == 32
    mom_before = [p.clone() for p in tr.momentum_model.parameters()]
    x, y, idx = next(iter(tr.loader))
    first = tr.train_step(x, y, idx)
    assert first["eal"] == 0.0 and first["fal"] > 0  # buffers hold 8 of 32: not yet half full...
    second = tr.train_step(*next(iter(tr.loader)))
    assert second["eal"] != 0.0  # ...16 of 32 now are
    assert len(tr.buffers) == 16
    moved = [not torch.equal(a, b) for a, b in zip(mom_before, tr.momentum_model.parameters())]
    assert any(moved)  # EMA update reached the momentum model
    assert all(not p.requires_grad for p in tr.momentum_model.parameters())


@pytest.mark.slow
def test_checkpoint_round_trip_and_resume_matches_uninterrupted_run(labels_csv, tmp_path):
    full = D2STrainer(_cfg(labels_csv, tmp_path / "full", epochs=2))
    full.fit()
    part = D2STrainer(_cfg(labels_csv, tmp_path / "part", epochs=2))
    interrupt_after_first_epoch(part)
    resumed = D2STrainer(_cfg(labels_csv, tmp_path / "part", epochs=2))
    resumed.load_state(str(tmp_path / "part" / "last.pt"))
    resumed.fit()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    ckpt = load_checkpoint(str(tmp_path / "full" / "checkpoint.pt"))
    assert ckpt["kind"] == "d2s" and ckpt["preprocessing"]["size"] == 64
    model = model_from_checkpoint(ckpt)
    x = torch.randn(1, 3, 64, 64)
    ref = D2S(D2SConfig(**TINY))
    ref.load_state_dict(ckpt["model"])
    torch.testing.assert_close(model(x), ref.eval()(x))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(str(tmp_path / "junk.pt"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an icrt checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


def test_cli_trains_and_evaluates(labels_csv, tmp_path, capsys):
    from icrt.train.cli import main as train_main
    from icrt.train.evaluate import main as eval_main

    out = tmp_path / "cli"
    rc = train_main(["d2s", "--data", labels_csv, "--out", str(out), *D2S_ARGS, "--epochs", "1", "--batch-size", "8",
                     "--image-size", "64"])
    assert rc == 0
    rc = eval_main(["--checkpoint", str(out / "checkpoint.pt"), "--data", labels_csv, "--out", str(out / "eval.json")])
    assert rc == 0 and "SRCC" in capsys.readouterr().out
    import json
    assert json.load(open(out / "eval.json"))["n"] == 32


def test_cli_without_captions_says_what_to_do(labels_csv, tmp_path, capsys):
    from icrt.train.cli import main as train_main

    rc = train_main(["d2s", "--data", labels_csv, "--out", str(tmp_path / "x"), "--pretrained", "none"])
    assert rc == 2 and "--text none" in capsys.readouterr().err


@pytest.mark.slow
def test_patch_policy_trains_on_random_crops_and_scores_the_grid(labels_csv, tmp_path):
    from icrt.runtime.bundle.preprocessing import patch_grid
    from icrt.train.evaluate import predict

    cfg = _cfg(labels_csv, tmp_path / "patch", epochs=1, model={**TINY, "image_size": 32},
               preprocessing={"resize": "patches", "stride": 8})
    tr = D2STrainer(cfg)
    crops = [tr.train_set[0][0] for _ in range(6)]
    assert crops[0].shape == (3, 32, 32)
    assert any(not torch.equal(crops[0], c) for c in crops[1:])  # random positions (and flips)
    assert torch.equal(tr.eval_set[0][0], tr.eval_set[0][0])  # the centre crop is fixed
    tr.fit()
    # the image score is the mean over the 3x3 grid of 32-px patches on a 48-px image
    sample = tr.val_samples[:1]
    from icrt.runtime.scoring.preprocess import load_rgb, to_model_input
    x, pos = to_model_input(load_rgb(sample[0].image), tr.prep)
    assert len(pos) == len(patch_grid(48, 48, 32, 8)) == 9
    with torch.no_grad():
        expected = tr.model.eval()(torch.from_numpy(x)).mean().item()
    assert predict(tr.model, sample, tr.prep)[0] == pytest.approx(expected, abs=1e-6)


def test_low_level_cues_rank_busy_above_plain_and_feed_the_head():
    from icrt.runtime.scoring.preprocess import normalize
    from icrt.train.models.d2s import LowLevelCues
    from tests.images import textured

    cues = LowLevelCues((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).eval()
    imgs = [np.asarray(textured(64, 64, seed=1, level=level)) for level in (0.0, 0.2, 0.8)]
    x = torch.from_numpy(np.stack([normalize(i, (0.5,) * 3, (0.5,) * 3) for i in imgs]))
    f = cues(x)  # BatchNorm in eval mode with fresh statistics is the identity up to eps
    edge_density = f[:, 1]
    assert edge_density[0] < edge_density[1] < edge_density[2]
    m = D2S(D2SConfig(**{**TINY, "cues": True})).eval()
    assert m.features(torch.randn(2, 3, 64, 64)).shape == (2, m.backbone.num_features + LowLevelCues.n_features)


@pytest.mark.slow
def test_val_fraction_zero_trains_on_everything_and_keeps_the_last_epoch(labels_csv, tmp_path):
    import json

    tr = D2STrainer(_cfg(labels_csv, tmp_path / "all", epochs=2, val_fraction=0.0))
    assert len(tr.train_samples) == 32 and tr.val_samples == []
    tr.fit()
    assert json.load(open(tmp_path / "all" / "metrics.json"))["epoch"] == 2
    assert load_checkpoint(str(tmp_path / "all" / "checkpoint.pt"))["epoch"] == 2


def test_two_backbones_put_their_stage_statistics_side_by_side():
    """--backbone a+b: both read the same input; the statistics pooling is each one's, concatenated in order."""
    from icrt.train.models.d2s import Backbones

    cfg = D2SConfig(backbone="tf_efficientnet_lite0+tf_efficientnet_lite1", pretrained="none", image_size=64,
                    pool="stats", stats=("mean", "relu"), head="linear")
    both = D2S(cfg).eval()
    assert isinstance(both.backbone, Backbones) and len(both.backbone) == 2
    singles = []
    for i, name in enumerate(("tf_efficientnet_lite0", "tf_efficientnet_lite1")):
        one = D2S(D2SConfig(backbone=name, pretrained="none", image_size=64, pool="stats", stats=("mean", "relu"),
                            head="linear")).eval()
        one.backbone.load_state_dict(both.backbone[i].state_dict())
        singles.append(one)
    assert both.feature_dim == sum(s.feature_dim for s in singles)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(both.features(x), torch.cat([s.features(x) for s in singles], 1), atol=1e-5)
    with pytest.raises(ValueError, match="several backbones need --pool stats"):
        D2S(D2SConfig(backbone="tf_efficientnet_lite0+tf_efficientnet_lite1", pretrained="none", image_size=64))


def test_two_backbones_need_one_normalisation_and_no_single_weights_file(tmp_path):
    from icrt.train.models.d2s import create_backbone
    from icrt.train.weights import WeightsError, preprocessing_for

    assert preprocessing_for("tf_efficientnet_lite0+tf_efficientnet_lite1", "imagenet") == \
        preprocessing_for("tf_efficientnet_lite0", "imagenet")
    with pytest.raises(WeightsError, match="different input normalisations"):
        preprocessing_for("tf_efficientnet_lite0+resnet18", "imagenet")
    with pytest.raises(WeightsError, match="a weights file fits one backbone"):
        create_backbone("tf_efficientnet_lite0+tf_efficientnet_lite1", str(tmp_path / "w.pth"))
    with pytest.raises(WeightsError, match="joined by"):
        create_backbone("tf_efficientnet_lite0+", "none")
