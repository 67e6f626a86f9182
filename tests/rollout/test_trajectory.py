import pytest
import torch

from refine.rollout.trajectory import Trajectory


def make(batch=4, steps=3, request_index=(0, 0, 1, 1), sample_index=(0, 1, 0, 1), guidance=None):
    latents = torch.arange(batch * (steps + 1) * 2 * 1, dtype=torch.float32).view(batch, steps + 1, 2, 1)
    return Trajectory(
        latents=latents,
        sigmas=torch.linspace(1, 0, steps + 1).repeat(batch, 1),
        log_probs=torch.randn(batch, steps),
        stochastic=torch.tensor([True] + [False] * (steps - 1)),
        request_index=torch.tensor(request_index),
        sample_index=torch.tensor(sample_index),
        guidance=guidance,
    )


def test_views_of_the_recorded_steps():
    traj = make()
    assert len(traj) == 4 and traj.steps == 3
    assert torch.equal(traj.noise, traj.latents[:, 0]) and torch.equal(traj.final, traj.latents[:, -1])
    x, t, x_next, t_next = traj.step(1)
    assert torch.equal(x_next, traj.latents[:, 2]) and float(t[0]) > float(t_next[0])
    assert traj.stochastic_indices == [0]


def test_group_returns_one_request_in_sample_order():
    traj = make(request_index=(1, 0, 1, 0), sample_index=(1, 0, 0, 1))
    group = traj.group(1)
    assert group.sample_index.tolist() == [0, 1]
    assert torch.equal(group.latents[0], traj.latents[2])
    assert traj.requests == [1, 0]
    assert traj.group_ids().tolist() == [0, 1, 0, 1]
    with pytest.raises(KeyError, match="requests present"):
        traj.group(5)


def test_select_and_cat_round_trip():
    traj = make()
    halves = [traj.select([0, 1]), traj.select([2, 3])]
    again = Trajectory.cat(halves)
    assert torch.equal(again.latents, traj.latents) and torch.equal(again.log_probs, traj.log_probs)
    assert again.request_index.tolist() == [0, 0, 1, 1]


def test_cat_refuses_mismatched_trajectories():
    with pytest.raises(ValueError, match="latent shapes"):
        Trajectory.cat([make(), make(steps=2)])
    with pytest.raises(ValueError, match="guidance"):
        Trajectory.cat([make(), make(guidance=4.0)])


def test_shapes_are_checked():
    traj = make()
    with pytest.raises(ValueError, match="log_probs has shape"):
        Trajectory(traj.latents, traj.sigmas, traj.log_probs[:, :2], traj.stochastic, traj.request_index, traj.sample_index)
