"""Losses of the three stages: flow matching (eq. 1), probes (eq. 3), rescaled error target (eq. 6), critic (eq. 7).

Example:
    >>> import torch
    >>> from refine.inline_critic.losses import critic_target, flow_matching_loss, per_position_error
    >>> pred, target = torch.zeros(1, 3, 4), torch.tensor([[[1.0] * 4, [0.1] * 4, [0.0] * 4]])
    >>> per_position_error(pred, target)                    # mean over channels, (B, N)
    tensor([[1.0000, 0.0100, 0.0000]])
    >>> critic_target(per_position_error(pred, target), "log1p").round(decimals=4)
    tensor([[0.6931, 0.0100, 0.0000]])
    >>> round(float(flow_matching_loss(pred, target)), 4)
    0.3367

Conventions (refine.backbones.base): x_t = (1 - t) x_0 + t * noise, target velocity v = noise - x_0.

Error rescaling (eq. 6). The per-position error of a mid-layer probe spans several orders of
magnitude across tokens and timesteps (near t = 0 the velocity is almost the noise and easy, near
t = 1 it is nearly unpredictable), so an MSE on raw errors is dominated by a few positions.
* "log" (default): log(e + eps). Scale-free: a 10x larger error is always the same step up,
  whether it happens at 1e-3 or at 1; eps (default 1e-3) floors perfectly predicted tokens.
* "log1p": log(1 + e): linear for small
  errors, logarithmic for large ones. Use when errors are already O(1).
* "none": raw MSE (for ablations).
Only the *ranking* of positions matters for steering and for the paper's evaluation (Spearman),
and "log" preserves it while giving every order of magnitude equal weight in the loss.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

ErrorRescale = Literal["log", "log1p", "none"]


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Rectified-flow velocity target v = noise - x_0, (B, N, C)."""
    return noise - x0


# Probes, the generation loss and every error map live in the space the backbone's transformer
# predicts in: the velocity for Qwen-Image and FLUX (the paper's setting), the clean image for an
# x0-predicting editor (ShapeEdit's, see refine/backbones/shapes.py). A velocity loss on an x0
# model would weight t -> 0 by 1/t^2 and the probes would have to learn the 1/t conversion.
# A backbone that predicts something other than the velocity says so with `output_target` and
# `output_from_velocity` (ShapesBackbone); the conversion itself lives there only.


def model_target(backbone, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What `backbone`'s transformer is trained to output, (B, N, C): its `output_target`, else noise - x_0.

    >>> model_target(object(), torch.ones(1, 2, 3), torch.zeros(1, 2, 3)).sum().item()   # a velocity model
    -6.0
    """
    target = getattr(backbone, "output_target", None)
    return flow_target(x0, noise) if target is None else target(x0, noise)


def model_output(backbone, velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`backbone.velocity(x_t, t, cond)` mapped back to the transformer's own output (identity for velocity models)."""
    convert = getattr(backbone, "output_from_velocity", None)
    return velocity if convert is None else convert(velocity, x_t, t)


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean squared velocity error over batch, tokens and channels (scalar)."""
    return (pred.float() - target.float()).pow(2).mean()


def per_position_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-token squared error averaged over channels: (B, N, C) -> (B, N). The error map of a probe."""
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


def critic_target(error: torch.Tensor, rescale: ErrorRescale = "log", eps: float = 1e-3) -> torch.Tensor:
    """Eq. 6: the rescaled, gradient-stopped error map the critic regresses on (same shape as `error`)."""
    error = error.detach()
    if rescale == "log":
        return torch.log(error + eps)
    if rescale == "log1p":
        return torch.log1p(error)
    if rescale == "none":
        return error
    raise ValueError(f"unknown error rescale {rescale!r}; use 'log', 'log1p' or 'none'")


def probe_loss(probe_preds: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Eq. 3: flow-matching loss of every probe, averaged over probed layers."""
    return torch.stack([flow_matching_loss(pred, target) for pred in probe_preds]).mean()


def critic_loss(predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 7: MSE between predicted and rescaled error maps, averaged over layers and positions."""
    return torch.stack([(p.float() - t.float()).pow(2).mean() for p, t in zip(predictions, targets)]).mean()
