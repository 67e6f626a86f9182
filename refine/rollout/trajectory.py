"""The typed record of a rollout: every x_t visited, the times, the noise and the log-probabilities.

Example:
    >>> import torch
    >>> from refine.rollout.trajectory import Trajectory
    >>> traj = Trajectory(
    ...     latents=torch.zeros(4, 3, 5, 2),                 # (B, S + 1, N, C): 4 samples, 2 steps
    ...     sigmas=torch.tensor([1.0, 0.5, 0.0]).repeat(4, 1),
    ...     log_probs=torch.zeros(4, 2),
    ...     stochastic=torch.tensor([True, False]),
    ...     request_index=torch.tensor([0, 0, 1, 1]),
    ...     sample_index=torch.tensor([0, 1, 0, 1]),
    ... )
    >>> traj.group(1).sample_index.tolist(), traj.steps, traj.final.shape
    ([0, 1], 2, torch.Size([4, 5, 2]))

Conventions: ``latents[:, i]`` is x at ``sigmas[:, i]`` (t = 1 noise first, t = 0 image last), so
step ``i`` goes from ``latents[:, i]`` to ``latents[:, i + 1]``; ``log_probs[:, i]`` is
log p(latents[:, i + 1] | latents[:, i]) for stochastic steps (``stochastic[i]``) and 0 for ODE steps.
All tensors are float32 except the index tensors (long) and `stochastic` (bool).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch


@dataclass
class Trajectory:
    """B recorded samples over S steps, all of one latent shape (N, C).

    Attributes:
        latents: (B, S + 1, N, C) x_t at every time of the schedule, initial noise first.
        sigmas: (B, S + 1) the times t (per sample: requests of another resolution get another shift).
        log_probs: (B, S) log-probability of each step's transition; 0 on deterministic steps.
        stochastic: (S,) which steps injected noise.
        request_index: (B,) the request each sample belongs to (its group).
        sample_index: (B,) the sample's index inside its group.
        guidance: the guidance scale the velocities were computed with (part of the policy).
        info: sampler settings and anything else worth logging (JSON-ready).
    """

    latents: torch.Tensor
    sigmas: torch.Tensor
    log_probs: torch.Tensor
    stochastic: torch.Tensor
    request_index: torch.Tensor
    sample_index: torch.Tensor
    guidance: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        batch, points = self.latents.shape[:2]
        expected = {
            "sigmas": (self.sigmas.shape, (batch, points)),
            "log_probs": (self.log_probs.shape, (batch, points - 1)),
            "stochastic": (self.stochastic.shape, (points - 1,)),
            "request_index": (self.request_index.shape, (batch,)),
            "sample_index": (self.sample_index.shape, (batch,)),
        }
        for name, (got, want) in expected.items():
            if tuple(got) != want:
                raise ValueError(f"Trajectory.{name} has shape {tuple(got)}, expected {want} for latents {tuple(self.latents.shape)}")

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def steps(self) -> int:
        return self.latents.shape[1] - 1

    @property
    def noise(self) -> torch.Tensor:
        """(B, N, C) the initial noise x_1."""
        return self.latents[:, 0]

    @property
    def final(self) -> torch.Tensor:
        """(B, N, C) the final latents x_0 (what was decoded)."""
        return self.latents[:, -1]

    @property
    def stochastic_indices(self) -> list[int]:
        """Indices of the steps that carry a log-probability."""
        return [int(i) for i in torch.nonzero(self.stochastic).flatten()]

    def step(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t (B, N, C), t (B,), x_next (B, N, C), t_next (B,)) of step `index`."""
        return self.latents[:, index], self.sigmas[:, index], self.latents[:, index + 1], self.sigmas[:, index + 1]

    def select(self, index: torch.Tensor | Sequence[int]) -> "Trajectory":
        """The samples at `index`, in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        pick = lambda x: x.index_select(0, index.to(x.device))  # noqa: E731
        return replace(
            self,
            latents=pick(self.latents),
            sigmas=pick(self.sigmas),
            log_probs=pick(self.log_probs),
            request_index=pick(self.request_index),
            sample_index=pick(self.sample_index),
        )

    def group(self, request: int) -> "Trajectory":
        """The samples of one request (its group), ordered by sample index."""
        index = torch.nonzero(self.request_index == request).flatten()
        if index.numel() == 0:
            raise KeyError(f"no samples for request {request}; requests present: {self.requests}")
        order = torch.argsort(self.sample_index.index_select(0, index))
        return self.select(index[order])

    @property
    def requests(self) -> list[int]:
        """The distinct request indices, in first-seen order."""
        seen: dict[int, None] = {}
        for r in self.request_index.tolist():
            seen.setdefault(int(r), None)
        return list(seen)

    def group_ids(self) -> torch.Tensor:
        """(B,) long: 0..R-1 numbering the groups in `requests` order (for per-group advantages)."""
        lookup = {r: i for i, r in enumerate(self.requests)}
        return torch.tensor([lookup[int(r)] for r in self.request_index.tolist()], dtype=torch.long)

    def to(self, device: torch.device | str) -> "Trajectory":
        return replace(
            self,
            latents=self.latents.to(device),
            sigmas=self.sigmas.to(device),
            log_probs=self.log_probs.to(device),
            stochastic=self.stochastic.to(device),
            request_index=self.request_index.to(device),
            sample_index=self.sample_index.to(device),
        )

    @staticmethod
    def cat(trajectories: Sequence["Trajectory"]) -> "Trajectory":
        """Stack trajectories of equal latent shape and step pattern along the batch."""
        first = trajectories[0]
        for other in trajectories[1:]:
            if other.latents.shape[1:] != first.latents.shape[1:]:
                raise ValueError(
                    f"cannot stack trajectories of latent shapes {tuple(first.latents.shape[1:])} and "
                    f"{tuple(other.latents.shape[1:])}; group them by resolution first"
                )
            if not torch.equal(other.stochastic.cpu(), first.stochastic.cpu()) or other.guidance != first.guidance:
                raise ValueError("cannot stack trajectories sampled with different SDE windows or guidance")
        return replace(
            first,
            latents=torch.cat([t.latents for t in trajectories]),
            sigmas=torch.cat([t.sigmas for t in trajectories]),
            log_probs=torch.cat([t.log_probs for t in trajectories]),
            request_index=torch.cat([t.request_index for t in trajectories]),
            sample_index=torch.cat([t.sample_index for t in trajectories]),
        )
