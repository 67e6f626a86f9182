import math

import pytest
import torch

from refine.config import load_config
from refine.errors import ConfigError
from refine.rollout.group import sample_group
from refine.rollout.samplers import (
    SamplerConfig,
    gaussian_log_prob,
    make_sampler,
    sde_mean_std,
    sde_step,
    sde_step_log_prob,
)
from refine.types import EditRequest

SIGMAS = torch.tensor([1.0, 0.8, 0.5, 0.2, 0.0])


@pytest.mark.parametrize(
    "coefficient_preserving, t, t_next",
    [(False, 1.0, 0.8), (False, 0.5, 0.2), (False, 0.2, 0.0), (True, 1.0, 0.8), (True, 0.5, 0.2)],
)
def test_sde_log_prob_matches_direct_gaussian_density(coefficient_preserving, t, t_next):
    g = torch.Generator().manual_seed(0)
    x, v, noise = (torch.randn(3, 5, 4, generator=g) for _ in range(3))
    out = sde_step(x, v, t, t_next, noise, noise_level=0.7, coefficient_preserving=coefficient_preserving)
    normal = torch.distributions.Normal(out.mean, out.std)
    direct = normal.log_prob(out.sample)  # (B, N, C)
    assert torch.allclose(out.log_prob, direct.mean(dim=(1, 2)), atol=1e-5)
    assert torch.allclose(gaussian_log_prob(out.sample, out.mean, out.std, "sum"), direct.sum(dim=(1, 2)), atol=1e-3)
    # the density of the recorded sample re-evaluated from (x, v) is the stored one
    again = sde_step_log_prob(x, v, t, t_next, out.sample, 0.7, coefficient_preserving)
    assert torch.allclose(again, out.log_prob)
    assert out.log_prob.dtype == torch.float32


def test_sde_transition_moments_follow_the_flow_grpo_formula():
    x, v = torch.full((1, 1, 1), 0.3), torch.full((1, 1, 1), -0.4)
    t, t_next, a = 0.6, 0.4, 0.5
    mean, std = sde_mean_std(x, v, t, t_next, a)
    sigma = a * math.sqrt(t / (1 - t))
    dt = t_next - t
    expected_mean = 0.3 + dt * (-0.4 + sigma**2 / (2 * t) * (0.3 + (1 - t) * -0.4))
    assert float(mean) == pytest.approx(expected_mean, rel=1e-6)
    assert float(std) == pytest.approx(sigma * math.sqrt(-dt), rel=1e-6)
    # at t = 1 the step's own gap replaces 1 - t, so sigma stays finite
    _, std_first = sde_mean_std(x, v, 1.0, 0.75, a)
    assert float(std_first) == pytest.approx(a * math.sqrt(1 / 0.25) * math.sqrt(0.25), rel=1e-6)


def test_coefficient_preserving_keeps_the_noise_coefficient():
    x0, eps, new = torch.randn(3, 1, 2000, generator=torch.Generator().manual_seed(1)).unbind(0)
    x0, eps, new = x0[None], eps[None], new[None]
    t, t_next = 0.7, 0.4
    x = (1 - t) * x0 + t * eps
    v = eps - x0  # the exact velocity for this pair
    out = sde_step(x, v, t, t_next, new, noise_level=0.6, coefficient_preserving=True)
    # x_next - (1 - t_next) x0 is pure noise of std exactly t_next
    residual = out.sample - (1 - t_next) * x0
    assert float(residual.std()) == pytest.approx(t_next, rel=0.05)
    # last step into t = 0 injects nothing
    assert sde_step(x, v, t, 0.0, new, 0.6, coefficient_preserving=True).log_prob is None


@pytest.mark.parametrize("coefficient_preserving", [False, True])
def test_sde_with_noise_level_zero_equals_the_ode_sampler(toy, random_image, coefficient_preserving):
    requests = [EditRequest(random_image(0), "make it warmer", seed=0)]
    ode = sample_group(toy, requests, group_size=3, sampler="euler", steps=6, seed=5)
    sde = SamplerConfig(name="sde", steps=6, noise_level=0.0, coefficient_preserving=coefficient_preserving)
    out = sample_group(toy, requests, group_size=3, sampler=sde, seed=5, record=True)
    assert torch.allclose(out.latents[0], ode.latents[0], atol=1e-6)
    assert out.trajectories[0].stochastic_indices == []


def test_sde_noise_changes_samples_but_keeps_the_data_distribution(make_toy, random_image):
    """Flow-GRPO's SDE has the ODE's marginals: final samples ~ N(m, s^2) with s = 0.5."""
    toy = make_toy(shift=1.0)
    requests = [EditRequest(random_image(1), "shift it")]
    sde = SamplerConfig(name="sde", steps=50, noise_level=0.5)
    out = sample_group(toy, requests, group_size=16, sampler=sde, seed=0, max_batch=16)
    ode = sample_group(toy, requests, group_size=16, sampler="euler", steps=50, seed=0, max_batch=16)
    mean = toy.data_mean(out.conditions[0])
    assert not torch.allclose(out.latents[0], ode.latents[0], atol=1e-2)
    for latents in (out.latents[0], ode.latents[0]):
        z = latents - mean  # (16, N, C), 3072 values
        assert abs(float(z.mean())) < 0.03
        assert float(z.std()) == pytest.approx(0.5, rel=0.05)


def test_dpm_solver_with_6_steps_is_closer_to_the_50_step_euler_reference(make_toy, random_image):
    # unit-variance data (as normalised VAE latents), unshifted schedule; the tiny Qwen-Image-Edit
    # backbone repeats this check with a real transformer in tests/backbones.
    toy = make_toy(data_std=1.0, shift=1.0)
    requests = [EditRequest(random_image(2), "move the square left")]
    reference = sample_group(toy, requests, group_size=2, sampler="euler", steps=50, seed=3).latents[0]
    euler = sample_group(toy, requests, group_size=2, sampler="euler", steps=6, seed=3).latents[0]
    dpm = sample_group(toy, requests, group_size=2, sampler="dpm", steps=6, seed=3).latents[0]
    err_euler = float((euler - reference).abs().mean())
    err_dpm = float((dpm - reference).abs().mean())
    assert err_dpm < 0.5 * err_euler, (err_dpm, err_euler)
    # and against the exact answer m + s z of this Gaussian flow
    cond = sample_group(toy, requests, group_size=1, steps=1).conditions[0]
    noise = toy.prepare_noise(cond.repeat_interleave(2), [torch.Generator().manual_seed(s) for s in _seeds(3, 2)])
    exact = toy.data_mean(cond) + 1.0 * noise
    assert float((dpm - exact).abs().mean()) < 0.5 * float((euler - exact).abs().mean())


def _seeds(seed, group):
    from refine.rollout.group import sample_seed

    return [sample_seed(seed, 0, g) for g in range(group)]


def test_sde_window_makes_only_those_steps_stochastic():
    config = SamplerConfig(name="sde", steps=4, noise_level=0.7, sde_window=(1, 3))
    sampler = make_sampler(config, SIGMAS)
    x = torch.zeros(2, 3, 1)
    v = torch.ones_like(x)
    flags = []
    for i in range(4):
        out = sampler.step(i, x, v, torch.randn_like(x) if sampler.is_stochastic(i) else None)
        flags.append(out.log_prob is not None)
        x = out.sample
    assert flags == [False, True, True, False]
    assert config.stochastic_steps() == flags


def test_stochastic_step_without_noise_is_refused():
    sampler = make_sampler(SamplerConfig(name="sde", steps=4), SIGMAS)
    with pytest.raises(ValueError, match="pass noise"):
        sampler.step(0, torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))


def test_dpm_steps_must_run_in_order():
    sampler = make_sampler("dpm", SIGMAS)
    sampler.step(0, torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))
    with pytest.raises(RuntimeError, match="in order"):
        sampler.step(2, torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))


def test_euler_step_is_the_flow_matching_update():
    sampler = make_sampler("euler", SIGMAS)
    x, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.allclose(sampler.step(1, x, v).sample, x + (0.5 - 0.8) * v)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["name=sde", "sde_window=[3, 2]"], "0 <= start < end <= steps"),
        (["name=dpm", "sde_window=[0, 2]"], "only applies to the 'sde' sampler"),
        (["name=heun"], "name"),
        (["steps=0"], "steps"),
        (["noise_level=-1"], "noise_level"),
    ],
)
def test_bad_sampler_configs_say_how_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SamplerConfig, overrides=overrides)


def test_schedule_must_decrease():
    with pytest.raises(ValueError, match="decrease"):
        make_sampler("euler", torch.tensor([0.0, 0.5, 1.0]))
