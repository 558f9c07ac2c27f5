"""SIND (scene sampler, scale-shift loss, several data sets) and the evaluation protocols."""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch

from icrt.train.data import Sample, load_many
from icrt.train.protocol import (
    cross_set_rounds,
    few_shot_rounds,
    few_shot_sample,
    leave_one_scene_out_rounds,
    random_split_rounds,
    score_bins,
)
from icrt.train.protocol import (
    main as protocol_main,
)
from icrt.train.scene import SceneBatchSampler, align_scale_shift, regression_loss, scale_shift_loss
from tests import tiny


def _samples(n=70, cats=("a", "b", "c", "d", "e"), seed=0):
    rng = np.random.default_rng(seed)
    return [Sample(f"/x/{i}.png", float(rng.random()), cats[i % len(cats)], None, f"{i}.png") for i in range(n)]


# --- scene sampler ----------------------------------------------------------------------------------------
def test_scene_sampler_batches_hold_k_scenes_with_equal_shares():
    domains = ["a"] * 40 + ["b"] * 30 + ["c"] * 20 + ["d"] * 10
    sampler = SceneBatchSampler(domains, batch_size=12, k=3, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 100 // 12
    seen = Counter()
    for b in batches:
        per = Counter(domains[i] for i in b)
        assert len(per) == 3 and set(per.values()) == {4}, per
        assert len(set(b)) == len(b)  # no image twice in a batch
        seen.update(per)
    assert set(seen) == {"a", "b", "c", "d"}  # every scene gets drawn


def test_scene_sampler_is_seeded_and_checks_k():
    d = ["a", "b"] * 20
    one = list(SceneBatchSampler(d, 8, 2, torch.Generator().manual_seed(3)))
    two = list(SceneBatchSampler(d, 8, 2, torch.Generator().manual_seed(3)))
    assert one == two
    capped = SceneBatchSampler(d, 8, 3)  # K above the scene count: every scene in every batch
    assert capped.k == 2 and capped.per_scene == 4


def test_scene_sampler_small_scene_gives_all_its_images():
    d = ["a"] * 20 + ["b"] * 2
    for b in SceneBatchSampler(d, 10, 2, torch.Generator().manual_seed(1)):
        c = Counter(d[i] for i in b)
        assert c == Counter({"a": 5, "b": 2})


# --- scale-shift loss -----------------------------------------------------------------------------------
def _scenes():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(12, generator=g)
    domains = ["s1"] * 5 + ["s2"] * 4 + ["s3"] * 3
    return y, domains


def test_scale_shift_loss_is_zero_for_positive_affine_maps_per_scene():
    y, domains = _scenes()
    pred = y.clone()
    for d, (a, b) in {"s1": (3.0, -1.0), "s2": (0.2, 5.0), "s3": (1.0, 0.0)}.items():
        m = torch.tensor([x == d for x in domains])
        pred[m] = a * y[m] + b
    assert scale_shift_loss(pred, y, domains).item() < 1e-10
    # a plain MSE sees the per-scene offsets, so this is not trivially zero
    assert regression_loss("mse", pred, y).item() > 0.1


def test_scale_shift_loss_is_invariant_to_positive_affine_maps_per_scene():
    y, domains = _scenes()
    pred = torch.rand(12, generator=torch.Generator().manual_seed(5))
    base = scale_shift_loss(pred, y, domains).item()
    assert base > 1e-3
    moved = pred.clone()
    for d, (a, b) in {"s1": (7.0, 2.0), "s2": (0.01, -3.0), "s3": (2.0, 0.5)}.items():
        m = torch.tensor([x == d for x in domains])
        moved[m] = a * pred[m] + b
    assert scale_shift_loss(moved, y, domains).item() == pytest.approx(base, rel=1e-4)


def test_scale_shift_loss_penalises_inverted_ranking_and_handles_degenerate_scenes():
    y = torch.tensor([0.1, 0.4, 0.9, 0.3])
    dom = ["s"] * 4
    # negative scale: not aligned away; r = -1 gives var(y) * (1 + 3 r^2) = 4 var(y)
    var_y = float(((y - y.mean()) ** 2).mean())
    assert scale_shift_loss(-2 * y + 1, y, dom).item() == pytest.approx(4 * var_y, rel=1e-4)
    # and the loss falls as the ranking improves
    noisy = torch.tensor([0.4, 0.1, 0.9, 0.3])
    assert scale_shift_loss(-y, y, dom) > scale_shift_loss(noisy, y, dom) > scale_shift_loss(y, y, dom)
    # constant predictions: shift only -> the label variance, and still a gradient
    p = torch.full((4,), 0.5, requires_grad=True)
    loss = scale_shift_loss(p, y, dom)
    assert loss.item() == pytest.approx(float(((y - y.mean()) ** 2).mean()), rel=1e-5)
    loss.backward()
    assert p.grad.abs().sum() > 0
    # one image per scene: skipped, zero
    assert scale_shift_loss(torch.tensor([0.3, 0.8]), torch.tensor([0.1, 0.2]), ["a", "b"]).item() == 0.0
    # the aligned predictions are the least-squares fit
    q = torch.tensor([1.0, 2.0, 4.0, 3.0])
    a, b = np.polyfit(q.numpy(), y.numpy(), 1)
    assert torch.allclose(align_scale_shift(q, y), torch.tensor(a * q.numpy() + b, dtype=torch.float32), atol=1e-5)


@pytest.mark.slow
def test_scale_shift_training_step_runs_with_scene_sampling(labels_csv, tmp_path):
    from icrt.train.d2s_trainer import D2STrainConfig, D2STrainer

    cfg = D2STrainConfig(data=labels_csv, out=str(tmp_path / "run"), text="none", epochs=1, batch_size=8,
                         device="cpu", scene_sampling=2, loss="scale-shift",
                         model=dict(tiny.D2S))
    tr = D2STrainer(cfg)
    assert isinstance(tr.loader.batch_sampler, SceneBatchSampler)
    x, y, idx = next(iter(tr.loader))
    assert Counter(tr.domains[int(i)] for i in idx) == Counter({"a": 4, "b": 4})
    terms = tr.train_step(x, y, idx)
    assert np.isfinite(terms["scale-shift"])
    tr.fit()
    assert json.load(open(tmp_path / "run" / "config.json"))["loss"] == "scale-shift"


def test_several_data_sets_and_dataset_domain(labels_csv, ic9600_dir, tmp_path):
    from icrt.train.cli import build_parser, train_config, trainer_for

    s = load_many(f"{labels_csv},{ic9600_dir}")
    assert {x.source for x in s} == {labels_csv, ic9600_dir}
    args = build_parser().parse_args(["d2s", "--data", labels_csv, "--data", ic9600_dir, "--out", str(tmp_path / "r"),
                                      *tiny.D2S_ARGS, "--image-size", "64", "--dataset-domain", "--scene-sampling", "2",
                                      "--batch-size", "8", "--device", "cpu"])
    assert train_config(args).data == f"{labels_csv},{ic9600_dir}"
    tr = trainer_for(args)
    assert set(tr.domains) == {labels_csv, ic9600_dir}
    _, _, idx = next(iter(tr.loader))
    assert Counter(tr.domains[int(i)] for i in idx) == Counter({labels_csv: 4, ic9600_dir: 4})


# --- protocol splits -----------------------------------------------------------------------------------
def _keys(ss):
    return [s.image for s in ss]


def test_random_split_rounds_disjoint_and_cover_every_image():
    samples = _samples()
    rounds = random_split_rounds(samples)
    assert [r[1] for r in rounds] == [42, 826, 1215]
    for _, _, train, test in rounds:
        assert not set(_keys(train)) & set(_keys(test))
        assert sorted(_keys(train) + _keys(test)) == sorted(_keys(samples))
        assert len(test) == pytest.approx(0.2 * len(samples), abs=len({s.category for s in samples}))
    assert _keys(rounds[0][3]) != _keys(rounds[1][3])


def test_leave_one_scene_out_tests_each_image_exactly_once():
    samples = _samples()
    rounds = leave_one_scene_out_rounds(samples)
    assert len(rounds) == 5
    tested = Counter(k for _, _, _, test in rounds for k in _keys(test))
    assert set(tested.values()) == {1} and set(tested) == set(_keys(samples))
    for scene, _, train, test in rounds:
        assert {s.category for s in test} == {scene} and scene not in {s.category for s in train}
        assert len(train) + len(test) == len(samples)


def test_few_shot_sampling_is_even_over_score_bins():
    samples = [Sample(f"/x/{i}.png", (i % 100) / 100 + 0.001, "a") for i in range(1000)]
    for n in (10, 50, 100):
        chosen = few_shot_sample(samples, n, seed=42)
        assert len(chosen) == n and len({s.image for s in chosen}) == n
        assert set(Counter(score_bins([s.score for s in chosen])).values()) == {n // 10}
    # a bin short of images: it gives all it has, the others fill the total
    skew = [Sample(f"/y/{i}.png", 0.95 if i < 2 else (i % 90) / 100, "a") for i in range(300)]
    chosen = few_shot_sample(skew, 50, seed=1)
    assert len(chosen) == 50 and sum(s.score >= 0.9 for s in chosen) == 2


def test_few_shot_rounds_train_only_from_the_pool():
    samples = _samples(200)
    for setting, _, train, test in few_shot_rounds(samples, shots=(10, 50), seeds=(42, 826)):
        assert not set(_keys(train)) & set(_keys(test))
        assert len(train) == int(setting.split()[0])


def test_cross_set_rounds_keep_the_sets_apart():
    a, b = _samples(20), [Sample(f"/b/{i}.png", 0.5, "z") for i in range(5)]
    (_, _, train, test), = cross_set_rounds(a, b)
    assert _keys(train) == _keys(a) and _keys(test) == _keys(b)


# --- the command ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_protocol_writes_results_files(labels_csv, tmp_path):
    out = tmp_path / "loso"
    model = " ".join(["d2s", *tiny.D2S_TRAIN_ARGS])
    rc = protocol_main(["leave-one-scene-out", "--data", labels_csv, "--out", str(out), "--model", model,
                        "--model", model + " --scene-sampling 1 --loss scale-shift"])
    assert rc == 0
    res = json.load(open(out / "results.json"))
    assert len(res["runs"]) == 4 and {r["setting"] for r in res["runs"]} == {"a", "b"}
    assert sum(r["n_test"] for r in res["runs"]) == 2 * 32
    settings = [(r["model"], r["setting"]) for r in res["rows"]]
    assert len(settings) == 6 and len(set(settings)) == 6  # 2 models x (2 scenes + mean over scenes)
    md = open(out / "results.md").read()
    assert "| SRCC | PLCC | KRCC | RMSE | RMAE |" in md and "mean over scenes" in md and "±" in md
    assert os.path.isfile(out / "runs" / "model1" / "a_seed42" / "checkpoint.pt")


def test_protocol_rejects_data_inside_model(labels_csv, tmp_path, capsys):
    assert protocol_main(["random-split", "--data", labels_csv, "--out", str(tmp_path / "o"),
                          "--model", f"d2s --data {labels_csv}"]) == 2
    assert "leave --data" in capsys.readouterr().err
