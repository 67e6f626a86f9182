"""Training ShapeEdit's own editor (`refine train base`): the recipe behind the bundled editor.

Example:
    >>> from refine.shapes.editor_training import BaseTrainConfig
    >>> BaseTrainConfig(max_steps=10, warmup_steps=0, lr_scheduler="constant").max_steps
    10

| module | what |
|---|---|
| `config.py` | `BaseTrainConfig` (torch-free: `refine config show base/shapes` stays fast) |
| `data.py` | `ShapesBatches`: batch k of the training stream, a pure function of (seed, k) |
| `objective.py` | the rectified-flow loss with per-pixel weights, a step's draws, held-out diagnostics |
| `train.py` | the loop and the `refine train base` command |

Why here and not in `refine/backbones/`: the backbones layer holds backbones (model code and
loading), which rollouts, RL and the critic import. This trainer is a recipe over the ShapeEdit
world: its data stream, judge and evaluation all live in `refine/shapes/`, and only ShapeEdit's
editor can be trained by it. Checkpoints, metrics, the EMA and accelerate come from the shared
`refine.training` layer, as for every trainer; evaluation from `refine.shapes.evaluate`.
"""

from __future__ import annotations

from refine._lazy import lazy_exports

_EXPORTS = {
    "BaseTrainConfig": "refine.shapes.editor_training.config",
    "ShapesBatches": "refine.shapes.editor_training.data",
    "flow_matching_loss": "refine.shapes.editor_training.objective",
    "train": "refine.shapes.editor_training.train",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
