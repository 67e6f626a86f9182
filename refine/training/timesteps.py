"""Training times for flow-matching losses: logit-normal (SD3) or uniform draws in (0, 1).

Example:
    >>> import torch
    >>> from refine.training.timesteps import sample_timesteps
    >>> t = sample_timesteps(1000, torch.Generator().manual_seed(0))
    >>> bool((t > 0).all() and (t < 1).all()), round(float(t.mean()), 1)
    (True, 0.5)

Shared by the base editor's training and the inline critic (both train with the rectified-flow
loss at random times); every draw comes from the caller's generator, so resumed runs repeat it.
"""

from __future__ import annotations

import torch

from refine.errors import ConfigError


def sample_timesteps(n: int, generator: torch.Generator, sampling: str = "logit_normal", mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """(n,) training times in (0, 1): ``sigmoid(N(mean, std))`` (logit-normal) or uniform."""
    if sampling == "uniform":
        return torch.rand(n, generator=generator)
    if sampling == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, generator=generator))
    raise ConfigError(f"timesteps.sampling={sampling!r}: use 'logit_normal' or 'uniform'")
