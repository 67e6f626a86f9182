import math

import pytest
import torch

from refine.rollout.advantages import (
    aggregate_turns,
    broadcast_over_turns,
    fuse_advantages,
    fuse_rewards,
    group_advantages,
    group_stats,
    low_std_keep_mask,
)

NAN = float("nan")


def test_local_advantages_are_zero_mean_unit_std_per_group():
    g = torch.Generator().manual_seed(0)
    rewards = torch.cat([torch.rand(8, generator=g), 10 + 5 * torch.rand(8, generator=g)])
    groups = torch.tensor([0] * 8 + [1] * 8)
    adv = group_advantages(rewards, groups)
    for k in (0, 1):
        a = adv[groups == k]
        assert float(a.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(a.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    # the ranking inside each group is kept
    assert torch.equal(adv[:8].argsort(), rewards[:8].argsort())


def test_group_ids_need_not_be_contiguous_or_sorted():
    rewards = torch.tensor([1.0, 5.0, 3.0, 7.0])
    adv = group_advantages(rewards, torch.tensor([9, 2, 9, 2]), std="none")
    assert adv.tolist() == [-1.0, -1.0, 1.0, 1.0]


def test_global_std_divides_every_group_by_the_batch_std():
    rewards = torch.tensor([0.0, 2.0, 10.0, 10.5])
    adv = group_advantages(rewards, torch.tensor([0, 0, 1, 1]), std="global", eps=0)
    batch_std = float(rewards.std(unbiased=False))
    assert adv.tolist() == pytest.approx([-1 / batch_std, 1 / batch_std, -0.25 / batch_std, 0.25 / batch_std])


def test_clipping_and_equal_rewards():
    adv = group_advantages(torch.tensor([0.0, 0.0, 0.0, 100.0]), torch.zeros(4, dtype=torch.long), clip=1.0)
    assert adv.max() == 1.0 and adv.min() >= -1.0
    flat = group_advantages(torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))
    assert flat.tolist() == [0.0, 0.0]  # no signal, no division blow-up


def test_missing_rewards_are_left_out_and_get_zero_advantage():
    rewards = torch.tensor([1.0, NAN, 3.0, NAN, NAN])
    groups = torch.tensor([0, 0, 0, 1, 1])
    mean, std, count = group_stats(rewards, groups)
    assert mean[0] == 2.0 and std[0] == 1.0 and count.tolist() == [2, 2, 2, 0, 0]
    assert math.isnan(float(mean[3]))
    adv = group_advantages(rewards, groups, eps=0)
    assert adv.tolist() == [-1.0, 0.0, 1.0, 0.0, 0.0]


def test_low_std_filter_drops_only_high_mean_low_std_groups():
    rewards = torch.tensor([0.96, 0.97, 0.98, 0.2, 0.21, 0.22, 0.5, 0.99, 0.3, NAN])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    keep = low_std_keep_mask(rewards, groups, tau_mu=0.9, tau_sigma=0.05)
    # group 0: high mean + low std -> dropped; group 1: low std but low mean -> kept;
    # group 2: spread out -> kept; group 3: nothing valid -> dropped
    assert keep.tolist() == [False] * 3 + [True] * 6 + [False]
    # both conditions are needed
    assert low_std_keep_mask(rewards[:3], groups[:3], tau_mu=0.99, tau_sigma=0.05).all()
    assert low_std_keep_mask(rewards[:3], groups[:3], tau_mu=0.9, tau_sigma=0.001).all()


def test_reward_level_fusion_is_a_weighted_mean_then_normalised():
    r = {"if": torch.tensor([1.0, 0.0, 0.5, 0.5]), "cc": torch.tensor([0.0, 0.2, 0.9, 0.1])}
    groups = torch.tensor([0, 0, 1, 1])
    fused = fuse_rewards(r, {"if": 0.75, "cc": 0.25})
    assert fused.tolist() == pytest.approx([0.75, 0.05, 0.6, 0.4])
    assert torch.allclose(fuse_advantages(r, groups, {"if": 3, "cc": 1}, level="reward"), group_advantages(fused, groups))


def test_advantage_level_fusion_is_insensitive_to_reward_scale():
    groups = torch.tensor([0, 0, 0])
    small = {"if": torch.tensor([0.0, 1.0, 0.5]), "cc": torch.tensor([0.3, 0.1, 0.2])}
    scaled = {"if": small["if"], "cc": small["cc"] * 1000}
    a = fuse_advantages(small, groups, level="advantage")
    b = fuse_advantages(scaled, groups, level="advantage")
    assert torch.allclose(a, b, atol=1e-4)
    expected = 0.5 * group_advantages(small["if"], groups) + 0.5 * group_advantages(small["cc"], groups)
    assert torch.allclose(a, expected)
    assert not torch.allclose(fuse_advantages(scaled, groups, level="reward"), a, atol=1e-2)


def test_fusion_checks_weights():
    r = {"if": torch.ones(2), "cc": torch.ones(2)}
    with pytest.raises(ValueError, match="one weight per reward"):
        fuse_rewards(r, {"if": 1.0, "ccc": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        fuse_rewards(r, {"if": 0.0, "cc": 0.0})
    with pytest.raises(ValueError, match="level="):
        fuse_advantages(r, torch.zeros(2, dtype=torch.long), level="turn")


def test_turn_aggregation_and_broadcast():
    per_turn = torch.tensor([[1.0, 0.5, 0.0], [0.8, NAN, NAN]])
    assert aggregate_turns(per_turn, "mean").tolist() == pytest.approx([0.5, 0.8])
    assert aggregate_turns(per_turn, "min").tolist() == pytest.approx([0.0, 0.8])
    assert aggregate_turns(per_turn, "last").tolist() == pytest.approx([0.0, 0.8])
    assert aggregate_turns(per_turn, "product").tolist() == pytest.approx([0.0, 0.8])
    played = ~torch.isnan(per_turn)
    adv = broadcast_over_turns(torch.tensor([0.7, -0.7]), 3, played)
    assert torch.allclose(adv, torch.tensor([[0.7, 0.7, 0.7], [-0.7, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="played has shape"):
        broadcast_over_turns(torch.tensor([1.0]), 3, played)
