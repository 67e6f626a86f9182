"""Edit-R1: DiffusionNFT post-training of a flow editor with a judge reward and low-std group filtering.

Example:
    >>> from refine.edit_r1 import EditR1Config
    >>> EditR1Config().rollout.steps
    6

Paper: edit-r1-uniworld-v2.txt (UniWorld-V2). The pieces, one concept per module:

| module | what |
|---|---|
| `config.py` | `EditR1Config`, every setting (YAML presets in examples/configs/edit_r1/) |
| `data.py` | position-addressed training requests, held-out evaluation requests |
| `collect.py` | rollout (old policy, DPM-Solver) and reward scoring with failure handling |
| `update.py` | the NFT update phase over micro-batches (the loss from `refine.rollout.objectives`) |
| `evaluate.py`, `samples.py` | held-out judge score, sample grids |
| `train.py` | the loop and the `refine train edit-r1` command |
| `refiner.py` | `EditR1Refiner`: load a trained LoRA into a `FlowEditor` |

Checkpoints, metrics, shadow weights (old policy, EMA), `PolicyState` and LoRA come from the
shared training layer (`refine.training`). Names are imported lazily so `import refine.edit_r1` (and the CLI) does not import torch.
"""

from __future__ import annotations

from refine._lazy import lazy_exports

_EXPORTS = {
    "EditR1Config": "refine.edit_r1.config",
    "train": "refine.edit_r1.train",
    "TrainResult": "refine.edit_r1.train",
    "EditR1Refiner": "refine.edit_r1.refiner",
    "nft_loss": "refine.rollout.objectives",
    "optimality": "refine.rollout.objectives",
    "implicit_policies": "refine.rollout.objectives",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
