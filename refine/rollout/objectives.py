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
