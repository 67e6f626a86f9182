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


def training_times(schedule: torch.Tensor, minimum: float = 0.0, *, key: str = "the minimum training time") -> torch.Tensor:
    """The times of a sampling schedule (S + 1,) usable for training: t > `minimum`, t = 0 excluded.

    `key` names the setting that holds `minimum` (e.g. ``nft.timestep_min``) in the error.

    >>> training_times(torch.tensor([1.0, 0.5, 0.25, 0.0]), minimum=0.3).tolist()
    [1.0, 0.5]
    >>> training_times(torch.tensor([1.0, 0.0]), minimum=1.0, key="nft.timestep_min")
    Traceback (most recent call last):
    ...
    ValueError: no training time above 1.0 in the schedule [1.0, 0.0]; lower nft.timestep_min
    """
    times = schedule.float().flatten()
    times = times[(times > minimum) & (times > 0)]
    if times.numel() == 0:
        raise ValueError(f"no training time above {minimum} in the schedule {schedule.tolist()}; lower {key}")
    return times


def draw_times(times: torch.Tensor, batch: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, B) times: for each sample `count` distinct schedule times in random order.

    >>> g = torch.Generator().manual_seed(0)
    >>> drawn = draw_times(torch.tensor([1.0, 0.5, 0.25]), batch=2, count=3, generator=g)
    >>> sorted(drawn[:, 0].tolist()) == [0.25, 0.5, 1.0]
    True
    """
    count = min(count, times.numel())
    order = torch.stack([torch.randperm(times.numel(), generator=generator)[:count] for _ in range(batch)], dim=1)
    return times[order]  # (count, B)
