"""Settings shared by the RL strategies (Edit-R1, MT-EditFlow): old policy and EMA, LoRA, optimiser.

Example:
    >>> from refine.training.configs import LoRAConfig, OptimConfig, PolicyConfig
    >>> PolicyConfig().ema_decay, LoRAConfig(rank=8).alpha, OptimConfig().lr
    (0.9, None, 0.0003)
    >>> LoRAConfig(targets=[])
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for LoRAConfig
    targets
    ...

Defaults follow Edit-R1's Table 5 (lr 3e-4, Adam betas (0.9, 0.999), EMA decay 0.9) and the
DiffusionNFT defaults otherwise (old-policy decay ramp, LoRA on the attention projections).
Kept free of torch so `refine config show` stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from refine.config import RefineConfig
from refine.training.lora import ATTENTION_TARGETS  # both streams' attention projections (torch-free import)


class PolicyConfig(RefineConfig):
    """Old (rollout) policy and evaluation EMA."""

    old_decay_flat: int = Field(0, ge=0, description="Iterations during which the old policy copies the trained one exactly.")
    old_decay_rate: float = Field(0.001, ge=0, description="Per-iteration growth of the old-policy decay after the flat phase.")
    old_decay_max: float = Field(0.5, ge=0, le=1, description="Cap of the old-policy decay: old <- d old + (1 - d) trained.")
    ema_decay: float = Field(
        0.9, ge=0, le=1, description="EMA of the trained weights (evaluation, samples, exported LoRA), per iteration (Edit-R1 paper: 0.9)."
    )


class LoRAConfig(RefineConfig):
    """peft LoRA on the transformer (Edit-R1: finetune=lora)."""

    rank: int = Field(32, ge=1, description="LoRA rank.")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha; None: equal to rank (scale 1).")
    targets: list[str] = Field(list(ATTENTION_TARGETS), min_length=1, description="Module names to adapt (diffusers naming).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")


class OptimConfig(RefineConfig):
    """AdamW and the learning-rate schedule (diffusers' get_scheduler)."""

    lr: float = Field(3e-4, gt=0, description="Learning rate (Edit-R1 paper: 3e-4).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas (Edit-R1 paper: 0.9, 0.999).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; None: no clipping.")
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant_with_warmup", description="Learning-rate schedule over optimizer steps."
    )
    warmup_steps: int = Field(0, ge=0, description="Warm-up optimizer steps.")
