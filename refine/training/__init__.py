"""The shared training layer: one implementation per idea, used by every trainer.

Example:
    >>> from refine.training import CheckpointWriter, MetricsLogger, ShadowWeights
    >>> CheckpointWriter.__module__, MetricsLogger.__module__, ShadowWeights.__module__
    ('refine.training.checkpoint', 'refine.training.metrics', 'refine.training.shadows')

| module | what |
|---|---|
| `checkpoint.py` | atomic checkpoint folders, `latest`, RNG states for exact resume |
| `resume.py` | what a resumed run may change in its config (refused otherwise, one line) |
| `metrics.py` | `MetricsLogger`: metrics.jsonl, TensorBoard, wandb (when installed) |
| `shadows.py` | `ShadowWeights` (old policy, EMA), decay schedules, the adapters-off reference |
| `policies.py` | `PolicyState`: trainable parameters + old/EMA/reference shadows, checkpointed together |
| `lora.py` | peft LoRA on MM-DiT attention, saved and loaded in diffusers' format; `load_lora_into_editor` for LoRA refiners |
| `accelerate_setup.py` | the `Accelerator` a trainer runs under (DDP, FSDP2 also on CPU/gloo), what the RL trainers refuse, seeding |
| `sharding.py` | FSDP2 extras: frozen parts sharded, sharded optimizer state, gathered full weights and transformer export |
| `timesteps.py` | training-time draws of flow-matching losses; the schedule times RL updates train on |
| `configs.py` | `PolicyConfig`, `LoRAConfig`, `OptimConfig` shared by the RL configs (torch-free) |
| `nft_samples.py` | `NFTSamples`: what an NFT update phase trains on |
| `dropout.py` | `dropout_off`: eval mode with gradients (Flow-GRPO's ratio) |

The trainers stay in their own folders, each one readable loop: the ShapeEdit base editor
(`refine.shapes.editor_training`), Edit-R1 (`refine.edit_r1.train`), MT-EditFlow (`refine.multiturn.train`) and the inline critic
(`refine.inline_critic.train`). This layer imports no strategy. Names load lazily (torch).
"""

from __future__ import annotations

from refine._lazy import lazy_exports

_EXPORTS = {
    "CheckpointWriter": "refine.training.checkpoint",
    "latest_checkpoint": "refine.training.checkpoint",
    "list_checkpoints": "refine.training.checkpoint",
    "read_json": "refine.training.checkpoint",
    "read_tensors": "refine.training.checkpoint",
    "read_torch": "refine.training.checkpoint",
    "rng_state": "refine.training.checkpoint",
    "set_rng_state": "refine.training.checkpoint",
    "check_resume_config": "refine.training.resume",
    "MetricsLogger": "refine.training.metrics",
    "read_metrics": "refine.training.metrics",
    "ShadowWeights": "refine.training.shadows",
    "adapters_disabled": "refine.training.shadows",
    "decay_at": "refine.training.shadows",
    "PolicyState": "refine.training.policies",
    "setup_policies": "refine.training.policies",
    "make_trainable": "refine.training.policies",
    "build_policies": "refine.training.policies",
    "add_lora": "refine.training.lora",
    "load_lora": "refine.training.lora",
    "save_lora": "refine.training.lora",
    "make_accelerator": "refine.training.accelerate_setup",
    "is_sharded": "refine.training.accelerate_setup",
    "seeded": "refine.training.accelerate_setup",
    "sample_timesteps": "refine.training.timesteps",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
