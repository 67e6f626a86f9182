"""The NFT objective against hand computations (paper eqs. 4-7)."""

import pytest
import torch

from refine.rollout.objectives import implicit_policies, nft_loss, optimality, x0_adaptive_error
from refine.rollout.advantages import group_advantages, low_std_keep_mask

# Two samples, two tokens, one channel; beta = 0.5.
V_THETA = torch.tensor([[[1.0], [2.0]], [[0.0], [-1.0]]])
V_OLD = torch.tensor([[[0.0], [1.0]], [[1.0], [1.0]]])
TARGET = torch.tensor([[[1.0], [1.0]], [[0.0], [0.0]]])


def test_implicit_policies_by_hand():
    v_pos, v_neg = implicit_policies(V_THETA, V_OLD, beta=0.5)
    # v+ = 0.5 v_old + 0.5 v_theta ; v- = 1.5 v_old - 0.5 v_theta
    assert v_pos.flatten().tolist() == [0.5, 1.5, 0.5, 0.0]
    assert v_neg.flatten().tolist() == [-0.5, 0.5, 1.5, 2.0]


def test_loss_matches_hand_computation():
    r = torch.tensor([0.75, 0.25])
    out = nft_loss(V_THETA, V_OLD, TARGET, r, beta=0.5)
    # ||v+ - v||^2 (mean over elements): [(0.25 + 0.25) / 2, (0.25 + 0) / 2] = [0.25, 0.125]
    # ||v- - v||^2: [(2.25 + 0.25) / 2, (2.25 + 4) / 2] = [1.25, 3.125]
    assert out.positive.tolist() == [0.25, 0.125]
    assert out.negative.tolist() == [1.25, 3.125]
    # per sample r * pos + (1 - r) * neg = [0.5, 2.375]; batch mean 1.4375
    assert out.policy.item() == pytest.approx(1.4375)
    assert out.loss.item() == pytest.approx(1.4375)
    assert out.kl.item() == 0.0


def test_kl_term_by_hand():
    r = torch.tensor([0.75, 0.25])
    out = nft_loss(V_THETA, V_OLD, TARGET, r, beta=0.5, v_ref=torch.zeros_like(V_THETA), kl_weight=0.1)
    # ||v_theta - 0||^2 = [(1 + 4) / 2, (0 + 1) / 2] = [2.5, 0.5] -> mean 1.5
    assert out.kl.item() == pytest.approx(1.5)
    assert out.loss.item() == pytest.approx(1.4375 + 0.1 * 1.5)


def test_gradient_matches_the_analytic_form():
    beta, r = 0.5, torch.tensor([0.75, 0.25])
    v_theta = V_THETA.clone().requires_grad_(True)
    nft_loss(v_theta, V_OLD, TARGET, r, beta=beta).loss.backward()
    v_pos, v_neg = implicit_policies(V_THETA, V_OLD, beta)
    batch, elements = 2, 2
    rr = r.view(-1, 1, 1)
    expected = (rr * 2 * beta * (v_pos - TARGET) - (1 - rr) * 2 * beta * (v_neg - TARGET)) / (batch * elements)
    assert torch.allclose(v_theta.grad, expected)


def test_positive_sample_pulls_towards_target_and_negative_pushes_away():
    v_theta = torch.zeros(2, 1, 1, requires_grad=True)
    target = torch.ones(2, 1, 1)
    nft_loss(v_theta, torch.zeros(2, 1, 1), target, torch.tensor([1.0, 0.0]), beta=1.0).loss.backward()
    assert v_theta.grad[0].item() < 0  # descent increases v_theta towards the target
    assert v_theta.grad[1].item() > 0  # r = 0: descent moves the trained policy away from it


def test_r_is_one_half_for_a_zero_advantage_group():
    rewards = torch.tensor([0.3, 0.3, 0.3, 0.9, 0.1, 0.5])  # group 0 unanimous, group 1 spread
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    for std in ("global", "local"):
        r = optimality(group_advantages(rewards, groups, std=std))
        assert r[:3].tolist() == [0.5, 0.5, 0.5]
        assert r[5].item() == 0.5  # the group's mean sample
        assert r[3].item() > 0.5 > r[4].item()


def test_optimality_clips_and_scales():
    assert optimality(torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert optimality(torch.tensor([-2.0, 2.0, 10.0]), clip=4.0).tolist() == [0.25, 0.75, 1.0]


def test_filtered_groups_produce_zero_gradient():
    # group 0: spread rewards (kept); group 1: all good and unanimous (mean > 0.9, std < 0.05: filtered)
    rewards = torch.tensor([0.2, 0.8, 0.96, 0.97])
    groups = torch.tensor([0, 0, 1, 1])
    keep = low_std_keep_mask(rewards, groups, tau_mu=0.9, tau_sigma=0.05)
    assert keep.tolist() == [True, True, False, False]
    r = optimality(group_advantages(rewards, groups, std="global"))
    v_theta = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    v_old, target = torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    nft_loss(v_theta, v_old, target, r, beta=1.0, keep=keep, v_ref=torch.randn(4, 3, 2), kl_weight=0.5).loss.backward()
    assert torch.count_nonzero(v_theta.grad[2:]) == 0
    assert torch.count_nonzero(v_theta.grad[:2]) > 0


def test_zero_advantage_alone_is_not_zero_gradient():
    # Why filtering masks samples instead of setting r = 1/2: at r = 1/2 the loss pulls v_theta to v_old.
    v_theta = torch.ones(1, 2, 1, requires_grad=True)
    nft_loss(v_theta, torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.tensor([0.5]), beta=1.0).loss.backward()
    assert torch.allclose(v_theta.grad, torch.full_like(v_theta, 2 * 1.0**2 * 1.0 / 2))  # 2 beta^2 (v - v_old) / elements


def test_x0_adaptive_weighting_is_a_per_sample_reweighting_of_velocity_error():
    g = torch.Generator().manual_seed(1)
    x0, noise, v = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])
    x_t = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * noise
    target = noise - x0
    got = x0_adaptive_error(v, x_t, t, x0)
    # x0_hat - x0 = -t (v - target): ||.||^2 / mean|.| = t * mse(v, target) / mean|v - target|
    diff = v - target
    expected = t * (diff**2).mean(dim=(1, 2)) / diff.abs().mean(dim=(1, 2))
    assert torch.allclose(got, expected, atol=1e-5)
    out = nft_loss(v, v, target, torch.ones(3), beta=1.0, weighting="x0_adaptive", x_t=x_t, t=t, x0=x0)
    assert torch.allclose(out.positive, expected, atol=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="beta"):
        implicit_policies(V_THETA, V_OLD, beta=0.0)
    with pytest.raises(ValueError, match="one optimality per sample"):
        nft_loss(V_THETA, V_OLD, TARGET, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="needs v_ref"):
        nft_loss(V_THETA, V_OLD, TARGET, torch.tensor([0.5, 0.5]), kl_weight=0.1)
    with pytest.raises(ValueError, match="x0_adaptive"):
        nft_loss(V_THETA, V_OLD, TARGET, torch.tensor([0.5, 0.5]), weighting="x0_adaptive")


# --- Flow-GRPO ------------------------------------------------------------------------------

from refine.rollout.objectives import gaussian_mean_kl, grpo_loss, probability_ratio  # noqa: E402


def test_the_ratio_is_exp_of_the_log_prob_difference_in_float32():
    lp, old = torch.tensor([0.0, 0.1], dtype=torch.bfloat16), torch.tensor([0.0, 0.0])
    ratio = probability_ratio(lp, old)
    assert ratio.dtype == torch.float32
    assert ratio.tolist() == pytest.approx([1.0, float(torch.exp(torch.tensor(0.1, dtype=torch.bfloat16).float()))])


def test_clipping_on_hand_computed_cases():
    # eps = 0.2; ratios e^{±0.405} = 1.5 / 0.667 around the clip range [0.8, 1.2].
    ratios = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0])
    log_prob = ratios.log().requires_grad_(True)
    out = grpo_loss(log_prob, torch.zeros(5), advantages, clip_range=0.2)
    # per sample max(-A rho, -A clip(rho)):
    #   A=+1, rho=1.5: max(-1.5, -1.2) = -1.2 (clipped: no gradient)
    #   A=+1, rho=0.5: max(-0.5, -0.8) = -0.5 (unclipped: d/dlogp = -A rho = -0.5)
    #   A=-1, rho=1.5: max(+1.5, +1.2) = +1.5 (unclipped: +1.5)
    #   A=-1, rho=0.5: max(+0.5, +0.8) = +0.8 (clipped: no gradient)
    #   A=+1, rho=1.1: inside the range, -1.1 (gradient -1.1)
    assert out.policy.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8 - 1.1) / 5)
    assert out.clipped.tolist() == [True, True, True, True, False]
    out.loss.backward()
    assert log_prob.grad.tolist() == pytest.approx([0.0, -0.5 / 5, 1.5 / 5, 0.0, -1.1 / 5])


def test_flow_grpo_clip_range_cuts_the_gradient_past_1e_minus_4():
    # Flow-GRPO's eps = 1e-4: a log-prob 2e-4 above the old one with a positive advantage is clipped.
    log_prob = torch.tensor([2e-4, 5e-5], requires_grad=True)
    out = grpo_loss(log_prob, torch.zeros(2), torch.tensor([1.0, 1.0]))
    out.loss.backward()
    assert out.clipped.tolist() == [True, False]
    assert log_prob.grad[0].item() == 0.0
    assert log_prob.grad[1].item() == pytest.approx(-float(torch.exp(torch.tensor(5e-5))) / 2)


def test_kl_formula_on_hand_computed_gaussians():
    mean = torch.tensor([[[1.0], [3.0]], [[0.5], [0.5]]])  # (B=2, N=2, C=1)
    mean_ref = torch.tensor([[[0.0], [1.0]], [[0.5], [1.5]]])
    std = torch.tensor(0.5)
    # ||mu - mu_ref||^2 / (2 sigma^2), mean over elements: [(1 + 4) / 2, (0 + 1) / 2] / 0.5 = [5.0, 1.0]
    assert gaussian_mean_kl(mean, mean_ref, std).tolist() == pytest.approx([5.0, 1.0])
    # ...which is the exact KL of the two Gaussian transitions (one std), per element:
    exact = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std), torch.distributions.Normal(mean_ref, std))
    assert gaussian_mean_kl(mean, mean_ref, std).tolist() == pytest.approx(exact.mean(dim=(1, 2)).tolist())
    out = grpo_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1.0, -1.0]), mean=mean, mean_ref=mean_ref, std=std, kl_weight=0.04)
    assert out.kl.item() == pytest.approx(3.0)
    assert out.loss.item() == pytest.approx((-1.0 + 1.0) / 2 + 0.04 * 3.0)


def test_kl_gradient_moves_the_mean_towards_the_reference():
    mean = torch.tensor([[[1.0]]], requires_grad=True)
    grpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), mean=mean, mean_ref=torch.zeros(1, 1, 1), std=1.0, kl_weight=1.0).loss.backward()
    assert mean.grad.item() == pytest.approx(1.0)  # d/dmu mu^2 / 2


def test_masked_samples_contribute_nothing_and_keep_the_batch_denominator():
    log_prob = torch.zeros(2, requires_grad=True)
    out = grpo_loss(log_prob, torch.zeros(2), torch.tensor([1.0, 3.0]), keep=torch.tensor([True, False]))
    assert out.policy.item() == pytest.approx(-0.5)
    out.loss.backward()
    assert log_prob.grad.tolist() == pytest.approx([-0.5, 0.0])


def test_grpo_refuses_inconsistent_inputs():
    with pytest.raises(ValueError, match="must all be"):
        grpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="needs mean, mean_ref and std"):
        grpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), kl_weight=0.04)
    with pytest.raises(ValueError, match="together"):
        grpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), mean=torch.zeros(1, 1, 1))
