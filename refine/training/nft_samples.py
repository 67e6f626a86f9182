"""`NFTSamples`: the samples one process trains on with DiffusionNFT in an iteration.

Example:
    >>> import torch
    >>> from refine.training.nft_samples import NFTSamples
    >>> samples = NFTSamples(x0=torch.zeros(3, 4, 2), cond=None, r=torch.ones(3), keep=torch.ones(3, dtype=torch.bool),
    ...                      times=torch.tensor([1.0, 0.5]))
    >>> len(samples)
    3

Shared by Edit-R1 (one sample per rollout image, `TrainingBatch`) and MT-EditFlow (one per
(trajectory, turn) edit, `TurnSamples`): the NFT loss sees the same five tensors in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from refine.backbones.base import Condition


@dataclass
class NFTSamples:
    """The samples of an NFT update phase.

    Attributes:
        x0: (B, N, C) float32 final latents of the rollouts (the "data" of the forward process).
        cond: the positive condition of each sample (B items, no negative branch).
        r: (B,) optimality probabilities in [0, 1].
        keep: (B,) bool, False for samples that must not contribute (filtered groups, failed rewards).
        times: (T_all,) the rollout schedule's times a training point may use (t in (0, 1]).
    """

    x0: torch.Tensor
    cond: Condition
    r: torch.Tensor
    keep: torch.Tensor
    times: torch.Tensor

    def __len__(self) -> int:
        return self.x0.shape[0]
