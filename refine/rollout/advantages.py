"""Group-relative advantages: normalise rewards within each group of samples of one request; multi-turn fusion.

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


AggregateMode = Literal["mean", "min", "last", "product", "success"]
"""How per-turn rewards become one trajectory reward (`aggregate_turns`)."""


def aggregate_turns(rewards: torch.Tensor, mode: AggregateMode = "mean", *, threshold: float = 1.0) -> torch.Tensor:
    """(B, K) per-turn rewards -> (B,) one trajectory reward; NaN turns (not played / not scored) are skipped.

    ``success`` is EdiVal's all-or-nothing view: 1 when every scored turn reaches `threshold`,
    else 0 (the product of per-turn pass/fail). A row with no scored turn stays NaN.

    Example:
        >>> aggregate_turns(torch.tensor([[1.0, 0.5, float("nan")]]), "min").tolist()
        [0.5]
        >>> aggregate_turns(torch.tensor([[1.0, 1.0], [1.0, 0.9]]), "success").tolist()
        [1.0, 0.0]
    """
    rewards = rewards.float()
    valid = ~torch.isnan(rewards)
    if mode == "mean":
        out = torch.nansum(rewards, dim=1) / valid.sum(1).clamp_min(1)
    elif mode == "min":
        out = torch.where(valid, rewards, torch.full_like(rewards, float("inf"))).min(dim=1).values
    elif mode == "product":
        out = torch.where(valid, rewards, torch.ones_like(rewards)).prod(dim=1)
    elif mode == "success":
        out = torch.where(valid, (rewards >= threshold).float(), torch.ones_like(rewards)).prod(dim=1)
    elif mode == "last":
        last = (valid.long() * torch.arange(1, rewards.shape[1] + 1, device=rewards.device)).argmax(dim=1)
        out = rewards.gather(1, last[:, None]).squeeze(1)
    else:
        raise ValueError(f"mode={mode!r}; use 'mean', 'min', 'last', 'product' or 'success'")
    return torch.where(valid.any(dim=1), out, torch.full_like(out, float("nan")))


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


def multiturn_advantages(
    turn_rewards: Mapping[str, torch.Tensor],
    group_ids: torch.Tensor,
    weights: Mapping[str, float] | None = None,
    *,
    aggregate: AggregateMode = "mean",
    level: Literal["reward", "advantage"] = "advantage",
    credit: Literal["broadcast", "per_turn"] = "broadcast",
    std: StdMode = "local",
    eps: float = 1e-6,
    clip: float | None = None,
    success_threshold: float = 1.0,
) -> torch.Tensor:
    """(B, K) advantages of K-turn trajectories from several per-turn rewards (MT-EditFlow's order of operations).

    `turn_rewards` maps a reward name (``if``, ``cc``...) to (B, K) per-turn rewards (NaN: not
    scored); `group_ids` (B,) names each trajectory's group (the G trajectories of one sequence);
    `weights` one weight per reward (MT-EditFlow: ``{"if": 1 - λ_CC, "cc": λ_CC}``; they are
    normalised to sum to 1). With j a reward, k a turn, τ a trajectory of group g:

    credit="broadcast" (default), level="advantage" (default)::

        R_j(τ)   = agg_k r_{j,k}(τ)                            aggregate over turns, per reward
        A_j(τ)   = (R_j(τ) - mean_g R_j) / (std_g R_j + eps)   normalise per reward within the group
        A(τ)     = Σ_j w_j A_j(τ)                              fuse
        A_k(τ)   = A(τ)  for every turn k                      broadcast

    level="reward" fuses the aggregated raw rewards first, ``A(τ) = norm_g(Σ_j w_j R_j(τ))``.
    credit="per_turn" (the paper's ablation) skips the aggregation: each turn is normalised
    within the group at that turn, ``A_k(τ) = Σ_j w_j norm_g(r_{j,k}(τ))`` (advantage level) or
    ``norm_g(Σ_j w_j r_{j,k}(τ))`` (reward level). `clip` bounds the fused advantage.

    Example (one group of two trajectories, two turns):
        >>> rewards = {"if": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "cc": torch.tensor([[0.5, 0.5], [1.0, 1.0]])}
        >>> show = lambda a: [[round(v, 3) for v in row] for row in a.tolist()]
        >>> show(multiturn_advantages(rewards, torch.tensor([0, 0]), {"if": 0.7, "cc": 0.3}))   # 0.7 * 1 + 0.3 * (-1)
        [[0.4, 0.4], [-0.4, -0.4]]
        >>> show(multiturn_advantages(rewards, torch.tensor([0, 0]), {"if": 0.7, "cc": 0.3}, credit="per_turn"))
        [[0.4, -0.3], [-0.4, 0.3]]
    """
    names, stacked, _ = _stack(dict(turn_rewards), weights)  # (J, B, K)
    if stacked.dim() != 3:
        raise ValueError(f"per-turn rewards must be (B, K) each, got {tuple(stacked.shape[1:])}")
    w = {name: float(weight) for name, weight in (weights or {n: 1.0 for n in names}).items()}
    turns = stacked.shape[2]
    if credit == "broadcast":
        per_reward = {name: aggregate_turns(stacked[j], aggregate, threshold=success_threshold) for j, name in enumerate(names)}
        fused = fuse_advantages(per_reward, group_ids, w, level=level, std=std, eps=eps, clip=clip)  # (B,)
        return broadcast_over_turns(fused, turns)
    if credit != "per_turn":
        raise ValueError(f"credit={credit!r}; use 'broadcast' or 'per_turn'")
    columns = [
        fuse_advantages({name: stacked[j, :, k] for j, name in enumerate(names)}, group_ids, w, level=level, std=std, eps=eps, clip=clip)
        for k in range(turns)
    ]
    return torch.stack(columns, dim=1)  # (B, K)


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
