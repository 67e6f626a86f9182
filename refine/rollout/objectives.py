"""The RL objectives of the shared rollout layer, as pure tensor maths: DiffusionNFT (Edit-R1) and Flow-GRPO.

DiffusionNFT as Edit-R1 uses it (edit-r1-uniworld-v2.txt, eqs. 4-7).

Example (one sample, β = 1: the positive policy is the trained one, the negative mirrors it
around the old policy):
    >>> import torch
    >>> from refine.rollout.objectives import nft_loss, optimality
    >>> v_theta, v_old, target = torch.full((1, 2, 1), 1.0), torch.zeros(1, 2, 1), torch.full((1, 2, 1), 2.0)
    >>> r = optimality(torch.tensor([1.0]))             # the best sample of its group: r = 1
    >>> out = nft_loss(v_theta, v_old, target, r, beta=1.0)
    >>> float(out.loss)                                 # r * ||v+ - v||^2 = (1 - 2)^2
    1.0

Conventions (see `refine.backbones.base`): ``x_t = (1 - t) x0 + t noise``, target velocity
``v = noise - x0``; every velocity here is (B, N, C) packed latents and comes from
`FlowBackbone.velocity` (one conditional pass, no guidance).

The objective, per training sample (x0 from the old policy's rollout, fresh noise, time t):

* implicit policies (eqs. 5-6): ``v+ = (1 - β) v_old + β v_θ`` and ``v- = (1 + β) v_old - β v_θ``;
* optimality (eq. 7): ``r = 1/2 + 1/2 clip(A / c, -1, 1)`` with A the group-normalised advantage
  ``(raw - mean_group) / Z`` (Z the global or the group std, `refine.rollout.advantages`) and c the
  clip (1 in the paper);
* loss (eq. 4): ``r ||v+ - v||² + (1 - r) ||v- - v||²`` where ||.||² is the *mean* of squares
  over the latent elements (a constant rescaling of the paper's sum that keeps the loss O(1)
  whatever the resolution);
* optional KL regulariser: ``kl_weight * ||v_θ - v_ref||²`` with v_ref the velocity of the
  reference policy (the editor with its adapters disabled, or its initial weights);
* `keep` (B,) masks samples out (low-std group filtering, failed rewards): a dropped sample has
  zero loss and therefore zero gradient. The batch mean keeps B as its denominator so the step
  size does not jump when many groups of a batch are filtered.

Why the mask and not r = 1/2: at r = 1/2 the loss still pulls v_θ towards v_old
(its gradient is ``2 β² (v_θ - v_old)``), so a zero advantage is not "no gradient".

Optional x0-space adaptive weighting (`weighting="x0_adaptive"`), the variant DiffusionNFT's
public code trains with: each policy's velocity is turned into an x0 prediction
``x0_hat = x_t - t v``; the squared x0 error is divided by its own (gradient-free) mean absolute
error per sample, ``||x0_hat - x0||² / sg(mean|x0_hat - x0|)``. Since ``x0_hat - x0 = -t (v - v_target)``,
this reweights each sample by ``t / mean|v - v_target|``: noisy times and already-close samples
do not dominate the batch. It needs `x_t`, `t` and `x0`.

NFT's β is not classifier-free guidance. It only sets how far the implicit policies v± sit from
the old policy (Edit-R1's Table 5 lists 1/β as "guidance strength", because v+ extrapolates like
a guidance step). The CFG scale is another setting: which velocity the loss models, the
conditional one (CFG-free, DiffusionNFT's default) or the guided one with both branches through
the trained weights (CFG-consistent), is the caller's choice. Either way the velocities passed in
here must come from the policy that sampled the rollouts (`refine.rollout.cfg.ConditionalOnly`
samples CFG-free).

Flow-GRPO (Liu et al. 2025, as Edit-R1 and MT-EditFlow run it as a baseline), per SDE step i of
a recorded trajectory, with the log-probabilities of `refine.rollout.samplers.sde_step_log_prob`:

* ratio ``ρ = exp(log p_θ(x_{i+1} | x_i) - log p_old(x_{i+1} | x_i))``, in float32;
* clipped surrogate ``max(-A ρ, -A clip(ρ, 1 - ε, 1 + ε))`` with ε = 1e-4 and A the group advantage
  clipped to ±5 (`refine.rollout.advantages.group_advantages(..., clip=5)`);
* KL to the reference: both SDE steps are Gaussians with one std σ, so
  ``KL = ||μ_θ - μ_ref||² / (2 σ²)`` (mean over elements), weighted by β = 0.04 (0.01 in some of
  Flow-GRPO's presets). Flow-GRPO's β is a KL weight, neither NFT's β nor a CFG scale.
When CFG is on, μ and the log-probabilities come from the guided velocity (both branches through
the trained weights), since that is the velocity that sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Weighting = Literal["none", "x0_adaptive"]

# Smallest per-sample normaliser of the adaptive weighting: a sample already predicted exactly
# would otherwise divide by zero.
_MIN_ADAPTIVE_SCALE = 1e-5


@dataclass
class NFTLoss:
    """The loss and its parts, all already masked by `keep`.

    Attributes:
        loss: scalar to backpropagate: ``policy + kl_weight * kl``.
        policy: scalar, the batch mean of ``r * positive + (1 - r) * negative``.
        kl: scalar, the batch mean of ``||v_θ - v_ref||²`` (0 without a reference).
        positive: (B,) per-sample ``||v+ - v||²`` (or its adaptive x0 form), unmasked, detached.
        negative: (B,) per-sample ``||v- - v||²``, unmasked, detached.
    """

    loss: torch.Tensor
    policy: torch.Tensor
    kl: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


def implicit_policies(v_theta: torch.Tensor, v_old: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(v+, v-) of eqs. 5-6: ``(1 - β) v_old + β v_θ`` and ``(1 + β) v_old - β v_θ``.

    `v_old` is detached: the old policy is a fixed sampling distribution, not trained.

    Example:
        >>> v_pos, v_neg = implicit_policies(torch.tensor([2.0]), torch.tensor([1.0]), beta=0.5)
        >>> v_pos.item(), v_neg.item()
        (1.5, 0.5)
    """
    if beta <= 0:
        raise ValueError(f"beta={beta} must be > 0 (the paper uses 1.0, i.e. guidance strength 1/beta = 1)")
    v_old = v_old.detach()
    return (1.0 - beta) * v_old + beta * v_theta, (1.0 + beta) * v_old - beta * v_theta


def optimality(advantages: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """(B,) optimality probability r in [0, 1] of eq. 7 from normalised advantages (B,).

    ``r = 1/2 + 1/2 clip(A / clip, -1, 1)``: the paper's form with ``clip = 1``; a larger `clip`
    lets advantages up to ±clip map linearly onto [0, 1] (DiffusionNFT's public code uses 5).

    Example:
        >>> optimality(torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> optimality(torch.tensor([2.5]), clip=5.0).tolist()
        [0.75]
    """
    if clip <= 0:
        raise ValueError(f"advantage clip={clip} must be > 0")
    return 0.5 + 0.5 * (advantages.float() / clip).clamp(-1.0, 1.0)


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) mean of squared errors over every non-batch dimension, in float32.

    Example:
        >>> per_sample_mse(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2)).tolist()
        [5.0]
    """
    dims = tuple(range(1, prediction.dim()))
    return ((prediction.float() - target.float()) ** 2).mean(dim=dims)


def x0_adaptive_error(
    velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor
) -> torch.Tensor:
    """(B,) ``||x0_hat - x0||² / sg(mean|x0_hat - x0|)`` with ``x0_hat = x_t - t * velocity``.

    `t` is (B,). The normaliser is computed without gradient (it is a weight, not a target).

    Example:
        >>> v, x_t, x0 = torch.ones(1, 2, 1), torch.full((1, 2, 1), 0.5), torch.zeros(1, 2, 1)
        >>> x0_adaptive_error(v, x_t, torch.tensor([0.25]), x0).tolist()   # error 0.25 -> 0.0625 / 0.25
        [0.25]
    """
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    x0_hat = x_t.float() - t.float().reshape(shape) * velocity.float()  # (B, N, C)
    error = x0_hat - x0.float()
    dims = tuple(range(1, error.dim()))
    with torch.no_grad():
        scale = error.abs().mean(dim=dims).clamp_min(_MIN_ADAPTIVE_SCALE)  # (B,)
    return (error**2).mean(dim=dims) / scale


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    target: torch.Tensor,
    r: torch.Tensor,
    *,
    beta: float = 1.0,
    keep: torch.Tensor | None = None,
    v_ref: torch.Tensor | None = None,
    kl_weight: float = 0.0,
    weighting: Weighting = "none",
    x_t: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
) -> NFTLoss:
    """The Edit-R1 / DiffusionNFT loss (eq. 4) for a batch of B training samples.

    Args:
        v_theta: (B, N, C) velocity of the trained policy (carries the gradient).
        v_old: (B, N, C) velocity of the old (rollout) policy at the same (x_t, t, condition).
        target: (B, N, C) target velocity ``noise - x0``.
        r: (B,) optimality probabilities from `optimality`.
        beta: β of eqs. 5-6 (> 0).
        keep: (B,) bool/float; samples with 0 contribute nothing (filtered groups).
        v_ref: (B, N, C) reference-policy velocity for the KL term, or None.
        kl_weight: weight of the KL term (needs `v_ref` when > 0).
        weighting: "none" (eq. 4 as written) or "x0_adaptive" (see the module docstring).
        x_t, t, x0: (B, N, C), (B,), (B, N, C); required by "x0_adaptive".

    Example:
        >>> v = torch.zeros(2, 3, 1)
        >>> out = nft_loss(v + 1, v, v, torch.tensor([1.0, 0.0]), keep=torch.tensor([True, False]))
        >>> round(float(out.loss), 4), out.positive.tolist()     # the second sample is masked out
        (0.5, [1.0, 1.0])
    """
    if v_theta.shape != v_old.shape or v_theta.shape != target.shape:
        raise ValueError(
            f"v_theta {tuple(v_theta.shape)}, v_old {tuple(v_old.shape)} and target {tuple(target.shape)} must have one shape"
        )
    batch = v_theta.shape[0]
    if r.shape != (batch,):
        raise ValueError(f"r has shape {tuple(r.shape)}, expected ({batch},): one optimality per sample")
    v_pos, v_neg = implicit_policies(v_theta, v_old, beta)  # (B, N, C) each

    if weighting == "none":
        positive, negative = per_sample_mse(v_pos, target), per_sample_mse(v_neg, target)  # (B,)
    elif weighting == "x0_adaptive":
        if x_t is None or t is None or x0 is None:
            raise ValueError("weighting='x0_adaptive' needs x_t, t and x0")
        positive, negative = x0_adaptive_error(v_pos, x_t, t, x0), x0_adaptive_error(v_neg, x_t, t, x0)
    else:
        raise ValueError(f"weighting={weighting!r}; use 'none' or 'x0_adaptive'")

    r = r.float().to(positive.device)
    weights = torch.ones_like(r) if keep is None else keep.float().to(r.device)  # (B,)
    per_sample = r * positive + (1.0 - r) * negative  # (B,)
    policy = (weights * per_sample).sum() / batch

    if kl_weight > 0 and v_ref is None:
        raise ValueError(f"kl_weight={kl_weight} needs v_ref (the reference policy's velocity)")
    if v_ref is not None:
        kl = (weights * per_sample_mse(v_theta, v_ref.detach())).sum() / batch
    else:
        kl = torch.zeros((), device=policy.device)
    return NFTLoss(
        loss=policy + kl_weight * kl,
        policy=policy,
        kl=kl,
        positive=positive.detach(),
        negative=negative.detach(),
    )


# --- Flow-GRPO --------------------------------------------------------------------------------


@dataclass
class GRPOLoss:
    """The Flow-GRPO loss of one denoising step and its parts, all already masked by `keep`.

    Attributes:
        loss: scalar to backpropagate: ``policy + kl_weight * kl``.
        policy: scalar, the batch mean of the clipped surrogate ``max(-A ρ, -A clip(ρ, 1 - ε, 1 + ε))``.
        kl: scalar, the batch mean of the per-step Gaussian KL to the reference (0 without one).
        ratio: (B,) float32 ρ = exp(log p_θ - log p_old), detached.
        clipped: (B,) bool, samples whose ratio left [1 - ε, 1 + ε] (their gradient is cut when the
            clipped branch is the larger), detached.
    """

    loss: torch.Tensor
    policy: torch.Tensor
    kl: torch.Tensor
    ratio: torch.Tensor
    clipped: torch.Tensor


def probability_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """(B,) ρ = exp(log_prob - old_log_prob), always in float32.

    The difference is taken before the exponential and in float32: with Flow-GRPO's clip range of
    1e-4 a ratio must be exact to ~1e-6, which bf16 (8 mantissa bits, ~4e-3) cannot represent.

    Example:
        >>> probability_ratio(torch.tensor([-1.0, 0.5]), torch.tensor([-1.0, 0.5])).tolist()
        [1.0, 1.0]
    """
    return torch.exp(log_prob.float() - old_log_prob.float())


def gaussian_mean_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """(B,) KL between two Gaussian transitions of one std: ``mean over elements of (μ_θ - μ_ref)² / (2 σ²)``.

    Flow-GRPO's KL term: both policies' SDE steps are Gaussians with the same std σ (the transition
    std of the step, `refine.rollout.samplers.sde_mean_std`), whose KL is exactly this per element.
    The mean over elements matches the samplers' default `log_prob_reduce="mean"`.

    Example:
        >>> gaussian_mean_kl(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2), 0.5).tolist()  # (1 + 9) / 2 / (2 * 0.25)
        [10.0]
    """
    std = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
    dims = tuple(range(1, mean.dim()))
    return ((mean.float() - mean_ref.float().detach()) ** 2).mean(dim=dims) / (2 * std**2)


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_range: float = 1e-4,
    keep: torch.Tensor | None = None,
    mean: torch.Tensor | None = None,
    mean_ref: torch.Tensor | None = None,
    std: torch.Tensor | float | None = None,
    kl_weight: float = 0.0,
) -> GRPOLoss:
    """The Flow-GRPO loss (PPO's clipped surrogate on SDE steps) for one step of B samples.

    Args:
        log_prob: (B,) log p_θ(x_{i+1} | x_i) under the trained policy (carries the gradient).
        old_log_prob: (B,) the same under the policy that sampled (stored at rollout time).
        advantages: (B,) group-relative advantages, already clipped (Flow-GRPO: to ±5).
        clip_range: ε of the ratio clip (Flow-GRPO: 1e-4, not PPO's 0.2).
        keep: (B,) bool/float; samples with 0 contribute nothing (failed rewards).
        mean, mean_ref, std: (B, N, C) transition means of the trained and the reference policy
            and the step's transition std, for the KL term (all or none).
        kl_weight: β of Flow-GRPO's KL term (0.04; 0.01 in some of its presets).

    Example (a ratio above 1 + ε with a positive advantage: the clipped branch, no gradient):
        >>> lp = torch.tensor([0.5], requires_grad=True)
        >>> out = grpo_loss(lp, torch.tensor([0.0]), torch.tensor([1.0]), clip_range=0.2)
        >>> round(float(out.loss), 4), bool(out.clipped[0])     # -1 * clip(e^0.5, 0.8, 1.2)
        (-1.2, True)
    """
    batch = log_prob.shape[0]
    if log_prob.shape != (batch,) or old_log_prob.shape != (batch,) or advantages.shape != (batch,):
        raise ValueError(
            f"log_prob {tuple(log_prob.shape)}, old_log_prob {tuple(old_log_prob.shape)} and advantages "
            f"{tuple(advantages.shape)} must all be (B,): one value per sample of one step"
        )
    if clip_range <= 0:
        raise ValueError(f"clip_range={clip_range} must be > 0 (Flow-GRPO uses 1e-4)")
    ratio = probability_ratio(log_prob, old_log_prob)  # (B,) float32
    advantages = advantages.float().to(ratio.device)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    per_sample = torch.maximum(unclipped, clipped)  # (B,)
    weights = torch.ones_like(ratio) if keep is None else keep.float().to(ratio.device)
    policy = (weights * per_sample).sum() / batch

    given = [v is not None for v in (mean, mean_ref, std)]
    if any(given) and not all(given):
        raise ValueError("the KL term needs mean, mean_ref and std together")
    if kl_weight > 0 and not all(given):
        raise ValueError(f"kl_weight={kl_weight} needs mean, mean_ref and std (the reference policy's transition)")
    if all(given):
        kl = (weights * gaussian_mean_kl(mean, mean_ref, std)).sum() / batch
    else:
        kl = torch.zeros((), device=policy.device)
    outside = ((ratio - 1.0).abs() > clip_range).detach()
    return GRPOLoss(loss=policy + kl_weight * kl, policy=policy, kl=kl, ratio=ratio.detach(), clipped=outside)
