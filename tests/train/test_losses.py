import math

import pytest
import torch

from icrt.train.losses import EntropyBuffers, eal_loss, energy_distance, feature_entropy, info_nce


def test_energy_distance_known_value():
    # 2 E|X-Y| - E|X-X'| - E|Y-Y'| with distinct-pair means: 2*1.5 - 2 - 2 = -1
    assert energy_distance(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])).item() == pytest.approx(-1.0)


def test_energy_distance_matches_brute_force_and_is_shift_sensitive():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, generator=g), torch.randn(25, generator=g) + 1.0
    xy = sum(abs(a - b) for a in x for b in y) / (30 * 25)
    xx = sum(abs(a - b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j) / (30 * 29)
    yy = sum(abs(a - b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j) / (25 * 24)
    assert energy_distance(x, y).item() == pytest.approx((2 * xy - xx - yy).item(), abs=1e-5)
    assert energy_distance(x, y + 3).item() > energy_distance(x, y).item()


def test_info_nce_known_value():
    v = torch.eye(4)
    for tau in (1.0, 0.5):
        expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 3))
        assert info_nce(v, v.clone(), tau).item() == pytest.approx(expected, rel=1e-5)
    assert info_nce(v, v.clone(), 0.07).item() < 1e-5
    assert info_nce(v, v.roll(1, 0), 0.07).item() > 10  # wrong pairing is heavily penalised


def test_feature_entropy_bounds():
    assert feature_entropy(torch.zeros(1, 8)).item() == pytest.approx(math.log(8))
    assert feature_entropy(torch.tensor([[100.0, 0, 0, 0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_buffer_fifo_half_full_and_refresh():
    b = EntropyBuffers(capacity=8)
    b.push(torch.arange(3.0), torch.arange(3.0) + 10, torch.arange(3))
    assert len(b) == 3 and not b.half_full
    b.push(torch.tensor([3.0]), torch.tensor([13.0]), torch.tensor([3]))
    assert b.half_full
    b.push(torch.arange(4.0, 10.0), torch.arange(14.0, 20.0), torch.arange(4, 10))
    v, s = b.values()
    assert len(b) == 8 and v.tolist() == [2, 3, 4, 5, 6, 7, 8, 9]  # the two oldest were dropped
    assert s.tolist() == [12, 13, 14, 15, 16, 17, 18, 19]
    slots, idx = b.refresh_slots(3)
    slots2, _ = b.refresh_slots(3)
    slots3, _ = b.refresh_slots(3)
    assert len(set(slots.tolist() + slots2.tolist())) == 6  # the cursor rotates over different entries
    assert set(slots.tolist() + slots2.tolist() + slots3.tolist()) == set(range(8))
    assert idx.tolist() == [b.index[i].item() for i in slots]
    b.update(slots, torch.full((3,), -1.0))
    assert (b.visual[slots] == -1).all() and (b.text[slots] >= 10).all()


def test_eal_is_zero_until_half_full_then_has_gradient():
    b = EntropyBuffers(capacity=8)
    hv = torch.tensor([1.0, 2.0], requires_grad=True)
    hs = torch.tensor([1.5, 2.5])
    assert eal_loss(b, hv, hs).item() == 0.0
    b.push(torch.ones(4), torch.full((4,), 3.0), torch.arange(4))
    loss = eal_loss(b, hv, hs)
    loss.backward()
    assert loss.item() > 0 and hv.grad is not None and hv.grad.abs().sum() > 0
