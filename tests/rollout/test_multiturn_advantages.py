"""MT-EditFlow's order of operations on hand-computed groups (values worked out on paper, in the comments).

Group 0 has three trajectories (a, b, c) of K = 2 turns; group 1 has two identical trajectories
(no signal: advantage 0 whatever the fusion). λ_CC = 0.3, so the weights are (0.7, 0.3).

    IF per turn: a [1, 0]   b [0, 0]   c [1, 1]      CC per turn: a [1, 1]  b [1, 1]  c [.5, .5]
"""

from __future__ import annotations

import math

import pytest
import torch

from refine.rollout.advantages import aggregate_turns, multiturn_advantages

NAN = float("nan")
R6, R2 = math.sqrt(6), math.sqrt(2)
IF = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
CC = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.7, 0.7], [0.7, 0.7]])
GROUPS = torch.tensor([0, 0, 0, 1, 1])
WEIGHTS = {"if": 0.7, "cc": 0.3}


def _adv(**kwargs):
    return multiturn_advantages({"if": IF, "cc": CC}, GROUPS, WEIGHTS, **kwargs)


def test_default_aggregate_then_normalise_then_fuse_then_broadcast():
    # mean over turns: IF (.5, 0, 1) -> mean .5, std sqrt(1/6): A_IF = (0, -sqrt(6)/2, sqrt(6)/2)
    #                  CC (1, 1, .5) -> mean 5/6, std sqrt(1/18): A_CC = (1/sqrt(2), 1/sqrt(2), -sqrt(2))
    a_if = torch.tensor([0.0, -R6 / 2, R6 / 2])
    a_cc = torch.tensor([1 / R2, 1 / R2, -R2])
    fused = 0.7 * a_if + 0.3 * a_cc  # (0.2121, -0.6452, 0.4331)
    expected = torch.cat([fused, torch.zeros(2)])[:, None].expand(-1, 2)
    torch.testing.assert_close(_adv(), expected, atol=1e-4, rtol=0)


def test_reward_level_fuses_raw_rewards_first():
    # R = .7 IF + .3 CC = (.65, .30, .85): mean .6, std sqrt(.155 / 3)
    fused = torch.tensor([0.05, -0.30, 0.25]) / math.sqrt(0.155 / 3)
    expected = torch.cat([fused, torch.zeros(2)])[:, None].expand(-1, 2)
    torch.testing.assert_close(_adv(level="reward"), expected, atol=1e-4, rtol=0)
    assert not torch.allclose(_adv(level="reward"), _adv(), atol=1e-3)  # the two levels really differ here


def test_per_turn_advantages_normalise_each_turn_within_the_group():
    # turn 1: IF (1, 0, 1) -> (1/sqrt2, -sqrt2, 1/sqrt2); turn 2: IF (0, 0, 1) -> (-1/sqrt2, -1/sqrt2, sqrt2)
    #         CC (1, 1, .5) -> (1/sqrt2, 1/sqrt2, -sqrt2) on both turns
    turn1 = 0.7 * torch.tensor([1 / R2, -R2, 1 / R2]) + 0.3 * torch.tensor([1 / R2, 1 / R2, -R2])
    turn2 = 0.7 * torch.tensor([-1 / R2, -1 / R2, R2]) + 0.3 * torch.tensor([1 / R2, 1 / R2, -R2])
    expected = torch.cat([torch.stack([turn1, turn2], dim=1), torch.zeros(2, 2)])
    torch.testing.assert_close(_adv(credit="per_turn"), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("aggregate", "if_row"),
    [
        ("min", [0.0, 0.0, 1.0]),  # A_IF = (-1/sqrt2, -1/sqrt2, sqrt2)
        ("last", [0.0, 0.0, 1.0]),
        ("product", [0.0, 0.0, 1.0]),
        ("success", [0.0, 0.0, 1.0]),
    ],
)
def test_other_aggregators_change_only_the_trajectory_reward(aggregate, if_row):
    a_if = torch.tensor([-1 / R2, -1 / R2, R2])
    a_cc = torch.tensor([1 / R2, 1 / R2, -R2])  # CC is constant over turns: every aggregator agrees
    assert aggregate_turns(IF[:3], aggregate).tolist() == if_row
    expected = torch.cat([0.7 * a_if + 0.3 * a_cc, torch.zeros(2)])[:, None].expand(-1, 2)
    torch.testing.assert_close(_adv(aggregate=aggregate), expected, atol=1e-4, rtol=0)


def test_success_uses_its_threshold_and_nan_turns_are_skipped():
    rewards = torch.tensor([[0.8, 0.9], [0.8, 0.6], [NAN, NAN]])
    assert aggregate_turns(rewards, "success", threshold=0.75).tolist()[:2] == [1.0, 0.0]
    assert math.isnan(aggregate_turns(rewards, "success").tolist()[2])
    assert aggregate_turns(torch.tensor([[1.0, NAN]]), "success").tolist() == [1.0]


def test_weight_one_on_if_ignores_cc_and_bad_arguments_are_refused():
    only_if = multiturn_advantages({"if": IF, "cc": CC}, GROUPS, {"if": 1.0, "cc": 0.0})
    torch.testing.assert_close(only_if[:3, 0], torch.tensor([0.0, -R6 / 2, R6 / 2]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="credit="):
        _adv(credit="turnwise")
    with pytest.raises(ValueError, match="one weight per reward"):
        multiturn_advantages({"if": IF, "cc": CC}, GROUPS, {"if": 1.0})
