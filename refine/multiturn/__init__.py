"""MT-EditFlow: multi-turn RL for sequential editing (paper: mt-editflow.txt; see README.md here).

Example:
    >>> from refine.multiturn import MultiTurnConfig
    >>> config = MultiTurnConfig()
    >>> config.rollout.turns, config.rollout.group_size, config.rollout.steps, config.reward.lambda_cc
    (3, 16, 12, 0.3)

The pieces, one concept per module (the shared ones live in `refine.rollout` and `refine.training`):

| module | what |
|---|---|
| `config.py` | `MultiTurnConfig`, every setting (YAML presets in examples/configs/multiturn/) |
| `data.py` | position-addressed training sequences (ShapeEdit's multi-turn stream, JSONL), held-out subsets |
| `rewards.py` | `TurnRewards`: IF, CC against the original and quality per turn |
| `update.py` | the NFT update on every (trajectory, turn) sample |
| `evaluate.py` | per-turn IF / CC / O / success summaries, held-out evaluation |
| `train.py` | the loop (`refine train multiturn`, command in `cli.py`) |
| `refiner.py` | `MultiTurnRefiner`: load a trained LoRA into a `FlowEditor` |

Shared: `refine.rollout.multiturn.rollout_turns` (G K-turn trajectories per sequence),
`refine.rollout.advantages.multiturn_advantages` (aggregate -> normalise -> fuse -> broadcast),
`refine.rollout.objectives` (NFT). Names are imported lazily so the CLI does not import torch.
"""

from __future__ import annotations

from refine._lazy import lazy_exports

_EXPORTS = {
    "MultiTurnConfig": "refine.multiturn.config",
    "train": "refine.multiturn.train",
    "TrainResult": "refine.multiturn.train",
    "TurnRewards": "refine.multiturn.rewards",
    "MultiTurnRefiner": "refine.multiturn.refiner",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
