"""Group-relative advantages: normalise rewards within each group of samples of one request.

Example:
    >>> import torch
    >>> from refine.rollout.advantages import group_advantages, low_std_keep_mask
    >>> rewards = torch.tensor([1.0, 0.0, 0.96, 0.97])      # two groups of two samples
    >>> groups = torch.tensor([0, 0, 1, 1])
    >>> group_advantages(rewards, groups).round(decimals=3).tolist()
    [1.0, -1.0, -1.0, 1.0]
    >>> low_std_keep_mask(rewards, groups, tau_mu=0.9, tau_sigma=0.05).tolist()   # group 1: high mean, low std
    [True, True, False, False]

Conventions for every function here (pure tensor functions, any device, no gradients needed):
* `rewards` are (B,) float; `group_ids` (B,) integers naming each sample's group (its request).
* A missing reward ("not applicable", `None` from a reward function) is NaN. It is left out of
  group statistics and its advantage is 0 (no learning signal either way).
* Standard deviations are population std (ddof = 0), as Flow-GRPO and DiffusionNFT compute them.
"""

from __future__ import annotations

from typing import Literal, Mapping

import torch

StdMode = Literal["local", "global", "none"]


def group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (B,) mean, std and count of the valid (non-NaN) values of its group.

    Example:
        >>> mean, std, count = group_stats(torch.tensor([1.0, 3.0, float("nan")]), torch.tensor([0, 0, 1]))
        >>> mean.tolist()[:2], std.tolist()[:2], count.tolist()
        ([2.0, 2.0], [1.0, 1.0], [2.0, 2.0, 0.0])
    """
    values = values.float()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1 if inverse.numel() else 0
    valid = ~torch.isnan(values)
    filled = torch.where(valid, values, torch.zeros_like(values))
    count = torch.zeros(groups, device=values.device).index_add_(0, inverse, valid.float())
    total = torch.zeros(groups, device=values.device).index_add_(0, inverse, filled)
    mean = total / count.clamp_min(1)
    centred = torch.where(valid, values - mean[inverse], torch.zeros_like(values))
    var = torch.zeros(groups, device=values.device).index_add_(0, inverse, centred**2) / count.clamp_min(1)
    nan = torch.full_like(mean, float("nan"))
    mean = torch.where(count > 0, mean, nan)
    std = torch.where(count > 0, var.sqrt(), nan)
    return mean[inverse], std[inverse], count[inverse]


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    std: StdMode = "local",
    eps: float = 1e-6,
    clip: float | None = None,
) -> torch.Tensor:
    """(B,) advantages ``(r - mean_group) / (std + eps)``, optionally clipped to [-clip, clip].

    `std`: ``"local"`` divides by the group's std (Flow-GRPO), ``"global"`` by the std of every
    valid reward in the batch (DiffusionNFT / Edit-R1's Z_c), ``"none"`` only centres.

    Example:
        >>> r, g = torch.tensor([1.0, 0.0, 0.5, 0.5]), torch.tensor([0, 0, 1, 1])
        >>> [round(a, 3) for a in group_advantages(r, g, std="global").tolist()]   # global std 0.354
        [1.414, -1.414, 0.0, 0.0]
    """
    rewards = rewards.float()
    mean, local_std, _ = group_stats(rewards, group_ids)
    centred = rewards - mean
    if std == "local":
        scale = local_std + eps
    elif std == "global":
        valid = rewards[~torch.isnan(rewards)]
        scale = (valid.std(unbiased=False) if valid.numel() else torch.tensor(0.0, device=rewards.device)) + eps
    elif std == "none":
        scale = torch.ones_like(centred)
    else:
        raise ValueError(f"std={std!r}; use 'local', 'global' or 'none'")
    advantages = centred / scale
    if clip is not None:
        advantages = advantages.clamp(-clip, clip)
    return torch.nan_to_num(advantages, nan=0.0)


def low_std_keep_mask(rewards: torch.Tensor, group_ids: torch.Tensor, *, tau_mu: float, tau_sigma: float) -> torch.Tensor:
    """(B,) bool, False for samples of groups whose raw-reward mean > `tau_mu` AND std < `tau_sigma`.

    Edit-R1's low-std group filtering: when every sample of a group is already good, the small
    differences between them are judge noise that std-normalisation would blow up; such groups
    contribute no gradient. Groups with no valid reward are dropped too.

    Example:
        >>> low_std_keep_mask(torch.tensor([0.2, 0.21, 0.99, 0.98]), torch.tensor([0, 0, 1, 1]), tau_mu=0.9, tau_sigma=0.05).tolist()
        [True, True, False, False]
    """
    mean, std, count = group_stats(rewards, group_ids)
    filtered = (mean > tau_mu) & (std < tau_sigma)
    return ~filtered & (count > 0)


def fuse_rewards(rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """(B,) weighted mean of several rewards; a NaN reward drops out and the weights renormalise.

    Example:
        >>> fuse_rewards({"if": torch.tensor([1.0, 0.0]), "cc": torch.tensor([0.0, float("nan")])}, {"if": 3, "cc": 1}).tolist()
        [0.75, 0.0]
    """
    names, stacked, w = _stack(rewards, weights)
    valid = ~torch.isnan(stacked)
    w = w[:, None] * valid.float()  # (K, B)
    total = (torch.nan_to_num(stacked) * w).sum(0)
    norm = w.sum(0)
    return torch.where(norm > 0, total / norm.clamp_min(1e-12), torch.full_like(total, float("nan")))


def fuse_advantages(
    rewards: Mapping[str, torch.Tensor],
    group_ids: torch.Tensor,
    weights: Mapping[str, float] | None = None,
    *,
    level: Literal["reward", "advantage"] = "advantage",
    std: StdMode = "local",
    eps: float = 1e-6,
    clip: float | None = None,
) -> torch.Tensor:
    """(B,) advantages from several rewards fused with `weights` (default: equal).

    ``level="reward"``: fuse the raw rewards (`fuse_rewards`), then normalise per group.
    ``level="advantage"``: normalise each reward per group, then take the weighted sum of the
    advantages (MT-EditFlow: rewards of different scales and within-group variances, like instruction
    following and content consistency, then weigh what they say about the ranking, not their units).
    Weights are normalised to sum to 1; `clip` applies to the fused result.

    Example:
        >>> r = {"if": torch.tensor([1.0, 0.0]), "cc": torch.tensor([0.0, 100.0])}
        >>> w = {"if": 3.0, "cc": 1.0}
        >>> fuse_advantages(r, torch.tensor([0, 0]), w, level="advantage").round(decimals=3).tolist()  # ranks weighed
        [0.5, -0.5]
        >>> fuse_advantages(r, torch.tensor([0, 0]), w, level="reward").round(decimals=3).tolist()     # cc's scale wins
        [-1.0, 1.0]
    """
    if level == "reward":
        return group_advantages(fuse_rewards(rewards, weights), group_ids, std=std, eps=eps, clip=clip)
    if level != "advantage":
        raise ValueError(f"level={level!r}; use 'reward' or 'advantage'")
    names, stacked, w = _stack(rewards, weights)
    w = w / w.sum()
    fused = sum(w[k] * group_advantages(stacked[k], group_ids, std=std, eps=eps) for k in range(len(names)))
    return fused.clamp(-clip, clip) if clip is not None else fused


def aggregate_turns(rewards: torch.Tensor, mode: Literal["mean", "min", "last", "product"] = "mean") -> torch.Tensor:
    """(B, T) per-turn rewards -> (B,) one trajectory reward; NaN turns (not played) are skipped.

    Example:
        >>> aggregate_turns(torch.tensor([[1.0, 0.5, float("nan")]]), "min").tolist()
        [0.5]
    """
    rewards = rewards.float()
    valid = ~torch.isnan(rewards)
    if mode == "mean":
        return torch.nansum(rewards, dim=1) / valid.sum(1).clamp_min(1)
    if mode == "min":
        return torch.where(valid, rewards, torch.full_like(rewards, float("inf"))).min(dim=1).values
    if mode == "product":
        return torch.where(valid, rewards, torch.ones_like(rewards)).prod(dim=1)
    if mode == "last":
        last = (valid.long() * torch.arange(1, rewards.shape[1] + 1, device=rewards.device)).argmax(dim=1)
        return rewards.gather(1, last[:, None]).squeeze(1)
    raise ValueError(f"mode={mode!r}; use 'mean', 'min', 'last' or 'product'")


def broadcast_over_turns(advantages: torch.Tensor, turns: int, played: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) trajectory advantages -> (B, T): every turn of a trajectory gets its advantage.

    `played` (B, T) bool marks the turns that happened (a trajectory may stop early); others get 0.
    MT-EditFlow broadcasts the aggregated advantage so each turn's edit is credited with the
    success of the whole sequence.

    Example:
        >>> broadcast_over_turns(torch.tensor([1.0, -1.0]), 2, played=torch.tensor([[True, True], [True, False]])).tolist()
        [[1.0, 1.0], [-1.0, 0.0]]
    """
    out = advantages.float()[:, None].expand(-1, turns)
    if played is not None:
        if tuple(played.shape) != (advantages.shape[0], turns):
            raise ValueError(f"played has shape {tuple(played.shape)}, expected {(advantages.shape[0], turns)}")
        out = torch.where(played.bool(), out, torch.zeros_like(out))
    return out.contiguous()


def _stack(rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    if not rewards:
        raise ValueError("no rewards to fuse")
    names = list(rewards)
    weights = dict(weights or {name: 1.0 for name in names})
    unknown = sorted(set(weights) - set(names))
    missing = [name for name in names if name not in weights]
    if unknown or missing:
        raise ValueError(f"weights name {unknown or missing} but rewards are {names}; give one weight per reward")
    stacked = torch.stack([rewards[name].float() for name in names])  # (K, B)
    w = torch.tensor([float(weights[name]) for name in names], device=stacked.device)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights {dict(weights)} must be >= 0 with a positive sum")
    return names, stacked, w
