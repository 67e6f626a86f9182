"""Rollouts shared by the RL strategies: samplers, group sampling, trajectories, advantages, FlowEditor.

Example:
    >>> from refine.rollout import SamplerConfig
    >>> SamplerConfig(name="sde", steps=10, sde_window=(0, 3)).stochastic_steps()[:4]
    [True, True, True, False]

Map: `samplers` (Euler, DPM-Solver++ 2M, Flow-GRPO SDE with log-probs), `group` (`sample_group`,
`recompute_log_probs`), `trajectory` (`Trajectory`), `multiturn` (`rollout_turns`: G K-turn
trajectories per sequence), `advantages` (group-relative advantages, filtering, fusion, multi-turn
fusion), `objectives` (the RL losses: DiffusionNFT, Flow-GRPO), `cfg` (`ConditionalOnly`:
CFG-free sampling), `flow_editor` (`FlowEditor`). (`refine edit` lives in `refine.commands.edit`.)
Convention, as in
`refine.backbones.base`: ``x_t = (1 - t) x_0 + t noise``, ``v = noise - x_0``, t from 1 to 0.

Names are imported lazily, so `import refine.rollout` (and the CLI) does not import torch.
"""

from __future__ import annotations

from refine._lazy import lazy_exports

_EXPORTS = {
    "SamplerConfig": "refine.rollout.samplers",
    "make_sampler": "refine.rollout.samplers",
    "GroupOutput": "refine.rollout.group",
    "sample_group": "refine.rollout.group",
    "recompute_log_probs": "refine.rollout.group",
    "Trajectory": "refine.rollout.trajectory",
    "FlowEditor": "refine.rollout.flow_editor",
    "SequenceRequest": "refine.rollout.multiturn",
    "MultiTurnBatch": "refine.rollout.multiturn",
    "rollout_turns": "refine.rollout.multiturn",
    "group_advantages": "refine.rollout.advantages",
    "low_std_keep_mask": "refine.rollout.advantages",
    "fuse_advantages": "refine.rollout.advantages",
    "broadcast_over_turns": "refine.rollout.advantages",
    "aggregate_turns": "refine.rollout.advantages",
    "multiturn_advantages": "refine.rollout.advantages",
    "nft_loss": "refine.rollout.objectives",
    "optimality": "refine.rollout.objectives",
    "implicit_policies": "refine.rollout.objectives",
    "grpo_loss": "refine.rollout.objectives",
    "gaussian_mean_kl": "refine.rollout.objectives",
    "probability_ratio": "refine.rollout.objectives",
    "ConditionalOnly": "refine.rollout.cfg",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
