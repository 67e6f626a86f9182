"""`MultiTurnConfig`: every setting of an MT-EditFlow training run, validated.

Example:
    >>> from refine.config import load_config
    >>> from refine.multiturn.config import MultiTurnConfig
    >>> config = load_config(MultiTurnConfig, overrides=["rollout.group_size=4", "reward.lambda_cc=0.5"])
    >>> config.rollout.turns, config.rollout.group_size, config.reward.weights()
    (3, 4, {'if': 0.5, 'cc': 0.5})
    >>> config.advantage.aggregate, config.advantage.level, config.advantage.credit
    ('mean', 'advantage', 'broadcast')
    >>> load_config(MultiTurnConfig, overrides=["reward.lambda_cc=0.8", "reward.lambda_quality=0.3"])
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: reward: reward.lambda_cc=0.8 + reward.lambda_quality=0.3 exceed 1: the IF weight 1 - λ_CC - λ_Q would be negative; lower one of them (got a mapping)

Defaults follow the paper (mt-editflow.txt) where it gives a value: K = 3 turns, G = 16
trajectories per sequence and T = 12 sampling steps (its Fig. 7 found them best), λ_CC = 0.3
(Fig. 6), advantage-level fusion (Fig. 5), 1-5 IF scoring rather than binary (Fig. 5), thinking
mode for the MLLM judge, the aggregated advantage broadcast over every turn (its central
finding). Where the text we have does not say (the turn aggregator, the weight form), the choice
is ours and the README says why: the mean over turns, and convex weights (1 - λ_CC, λ_CC).
The ShapeEdit preset (examples/configs/multiturn/shapes.yaml) scales the batch down for a CPU.

Kept free of torch so `refine config show multiturn/shapes` stays fast; the loop is in `train.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from refine.config import RefineConfig
from refine.training.configs import LoRAConfig, OptimConfig, PolicyConfig


class DataConfig(RefineConfig):
    """Where training sequences come from (online RL needs the original image and K instructions)."""

    kind: Literal["shapes", "jsonl"] = Field(
        "shapes", description="shapes: ShapeEdit's endless multi-turn stream (refine.multiturn.data); jsonl: {image, instructions: [...]} lines."
    )
    path: str | None = Field(None, description="The JSONL file (kind=jsonl); image paths are relative to it.")
    seed: int = Field(0, description="Seed of the ShapeEdit stream / of the JSONL order.")

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.kind == "jsonl" and not self.path:
            raise ValueError("data.kind=jsonl needs data.path=/path/to/sequences.jsonl")
        return self


class RolloutConfig(RefineConfig):
    """G independent K-turn trajectories per sequence, from the old policy."""

    turns: int = Field(3, ge=1, description="K: turns per trajectory (paper: 3; its Fig. 3 ablates the number of training turns).")
    group_size: int = Field(16, ge=2, description="G: trajectories per sequence (paper: 16). At least 2 for a group statistic.")
    sequences_per_iteration: int = Field(8, ge=1, description="S: sequences per iteration; an iteration draws S x G trajectories of K turns.")
    sampler: Literal["dpm", "euler", "sde"] = Field("dpm", description="dpm: DPM-Solver++(2M); euler: ODE; sde: Flow-GRPO's SDE with log-probs.")
    steps: int = Field(12, ge=1, description="T: sampling steps per turn (paper: 12).")
    guidance: float | None = Field(None, description="CFG scale during rollouts; None: the backbone's default.")
    max_batch: int = Field(8, ge=1, description="Transformer items per rollout forward pass (CFG counts twice).")
    cfg: Literal["guided", "free"] = Field(
        "guided",
        description="guided: roll out (and evaluate) with the backbone's CFG; free: sample the conditional velocity alone "
        "(refine.rollout.cfg.ConditionalOnly), the policy NFT's loss models (DiffusionNFT's choice).",
    )
    noise_level: float = Field(0.7, ge=0, description="sampler=sde: the SDE noise level a (Flow-GRPO: 0.7).")
    sde_window: tuple[int, int] | None = Field(
        None, description="sampler=sde: steps [start, end) are stochastic (and trained by GRPO), the rest ODE; None: all."
    )

    def sampler_config(self):
        """The `refine.rollout.samplers.SamplerConfig` of the rollouts (imported here: this module stays torch-free)."""
        from refine.rollout.samplers import SamplerConfig

        extra = {"noise_level": self.noise_level, "sde_window": self.sde_window} if self.sampler == "sde" else {}
        return SamplerConfig(name=self.sampler, steps=self.steps, guidance=self.guidance, **extra)


class RewardConfig(RefineConfig):
    """Per-turn rewards (refine/multiturn/rewards.py) and their fusion weights."""

    instruction: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "shapes"},
        description="IF reward: {kind: shapes} (ShapeEdit's exact judge), {kind: mllm_multiturn, backend: ..., thinking: true} "
        "(one query per trajectory, the paper's judge) or any reward kind (called per turn).",
    )
    consistency: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "shapes"},
        description="CC reward against the ORIGINAL image: {kind: shapes} or {kind: consistency, model: <DINOv2>} (DINO + pixels).",
    )
    quality: dict[str, Any] | None = Field(None, description="Optional quality reward ({kind: shapes} = ShapeEdit's PQ, or any reward kind).")
    if_scale: Literal["graded", "binary"] = Field(
        "graded", description="graded: the judge's scale (1-5 mapped to [0, 1]; paper's choice); binary: IF >= binary_threshold."
    )
    binary_threshold: float = Field(1.0, description="IF that counts as followed (binary scale; success at turn k). 1.0 = a 5 on 1-5.")
    lambda_cc: float = Field(0.3, ge=0, le=1, description="λ_CC, weight of CC; IF gets 1 - λ_CC - λ_Q (paper: 0.3).")
    lambda_quality: float = Field(0.0, ge=0, le=1, description="λ_Q, weight of the quality reward (needs reward.quality).")
    scale: float = Field(1.0, description="Multiplies every reward; -1 trains towards what the judge dislikes (a sign check).")

    @model_validator(mode="after")
    def _check(self) -> "RewardConfig":
        if self.lambda_cc + self.lambda_quality > 1:
            raise ValueError(
                f"reward.lambda_cc={self.lambda_cc} + reward.lambda_quality={self.lambda_quality} exceed 1: the IF weight "
                "1 - λ_CC - λ_Q would be negative; lower one of them"
            )
        if self.lambda_quality > 0 and self.quality is None:
            raise ValueError("reward.lambda_quality > 0 needs reward.quality (e.g. reward.quality.kind=shapes)")
        for name in ("instruction", "consistency"):
            if "kind" not in getattr(self, name):
                raise ValueError(f"reward.{name} needs a 'kind' (e.g. reward.{name}.kind=shapes)")
        return self

    def weights(self) -> dict[str, float]:
        """The fusion weights (1 - λ_CC - λ_Q, λ_CC[, λ_Q]), keyed like the per-turn rewards."""
        out = {"if": round(1.0 - self.lambda_cc - self.lambda_quality, 12), "cc": self.lambda_cc}
        if self.quality is not None:
            out["quality"] = self.lambda_quality
        return out


class AdvantageConfig(RefineConfig):
    """Per-turn rewards -> (n, K) advantages (`refine.rollout.advantages.multiturn_advantages`)."""

    aggregate: Literal["mean", "min", "last", "product", "success"] = Field(
        "mean", description="Turn aggregation per reward before normalising (success: 1 iff every turn reached its threshold)."
    )
    level: Literal["advantage", "reward"] = Field(
        "advantage", description="advantage: normalise each reward in its group, then weight (paper); reward: weight raw rewards, then normalise."
    )
    credit: Literal["broadcast", "per_turn"] = Field(
        "broadcast", description="broadcast: the trajectory's advantage on every turn (paper); per_turn: each turn normalised on its own (ablation)."
    )
    std: Literal["local", "global", "none"] = Field("local", description="Divide by the group's std (local), the batch's (global) or not at all.")
    clip: float | None = Field(None, gt=0, description="Clip the fused advantage to [-clip, clip]; None: no clip.")


class ObjectiveConfig(RefineConfig):
    """The RL objective from the shared layer (refine.rollout.objectives): NFT or Flow-GRPO."""

    kind: Literal["nft", "grpo"] = Field(
        "nft", description="nft: DiffusionNFT on every (trajectory, turn) sample's final latents; grpo: Flow-GRPO on the recorded SDE steps."
    )
    clip_range: float = Field(1e-4, gt=0, description="grpo: ε of the ratio clip (Flow-GRPO: 1e-4, not PPO's 0.2).")
    advantage_clip: float = Field(5.0, gt=0, description="grpo: advantages clipped to ±this (Flow-GRPO: 5).")
    grpo_kl_weight: float = Field(0.04, ge=0, description="grpo: β of the Gaussian-mean KL to the reference (Flow-GRPO: 0.04).")
    timestep_fraction: float = Field(1.0, gt=0, le=1, description="grpo: share of the stochastic steps trained per micro-batch.")
    beta: float = Field(1.0, gt=0, description="NFT β of the implicit policies.")
    optimality_clip: float = Field(1.0, gt=0, description="r = 1/2 + 1/2 clip(A / c, -1, 1): the NFT optimality's c.")
    kl_weight: float = Field(1e-4, ge=0, description="Weight of ||v_θ - v_ref||² against the reference (adapters disabled).")
    timesteps_per_sample: int | None = Field(None, ge=1, description="Training times per sample drawn from the rollout schedule; None: all.")
    timestep_min: float = Field(0.0, ge=0, lt=1, description="Training times at or below this are not drawn.")


class TrainConfig(RefineConfig):
    """The loop: how long, how updates are batched, precision."""

    iterations: int = Field(100, ge=1, description="Rollout/update iterations.")
    micro_batch: int = Field(4, ge=1, description="(trajectory, turn) samples per forward/backward pass.")
    gradient_accumulation: int = Field(0, ge=0, description="Micro-batches per optimizer step; 0: a whole pass over the iteration's samples.")
    inner_epochs: int = Field(1, ge=1, description="Passes over each iteration's samples.")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="accelerate mixed precision (bf16 on GPUs).")
    gradient_checkpointing: bool = Field(False, description="Recompute transformer activations in backward (big models).")
    seed: int = Field(0, description="Seed of everything: rollouts, training noise and times, LoRA init.")
    max_cpu_seconds: float | None = Field(
        None, gt=0, description="Stop (after a checkpoint) once this invocation used this much process CPU time; rerun to resume. None: no cap."
    )
    max_reward_failures: int = Field(3, ge=0, description="Consecutive iterations whose rewards all failed before the run stops.")


class EvalRewardConfig(RefineConfig):
    """Per-turn rewards of the held-out evaluation when they are not the training ones (scored as in `reward`)."""

    instruction: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "shapes"}, description="IF reward spec (default: ShapeEdit's exact judge)."
    )
    consistency: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "shapes"}, description="CC reward spec, against the ORIGINAL image (default: the exact judge)."
    )
    quality: dict[str, Any] | None = Field(None, description="Optional quality reward spec.")

    @model_validator(mode="after")
    def _check(self) -> "EvalRewardConfig":
        for name in ("instruction", "consistency"):
            if "kind" not in getattr(self, name):
                raise ValueError(f"eval.reward.{name} needs a 'kind' (e.g. eval.reward.{name}.kind=shapes)")
        return self


class EvalConfig(RefineConfig):
    """Held-out multi-turn evaluation of the EMA weights (tune on shapes-mt-val, report with `refine compare`)."""

    benchmark: str | None = Field("shapes-mt-val", description="Multi-turn split (shapes-mt-val) or a JSONL file; None: no evaluation.")
    sequences: int = Field(16, ge=1, description="Sequences spread evenly over the split.")
    every: int = Field(10, ge=0, description="Evaluate every N iterations (and at the start and end); 0: start and end only.")
    seed: int = Field(1234, description="Sampling seed of the evaluation trajectories (fixed across the run).")
    turns: int | None = Field(
        None, ge=1, description="Turns evaluated per sequence; None: rollout.turns. Set it to compare runs trained on fewer turns "
        "(the paper's K ablation) at the same turn 3."
    )
    reward: EvalRewardConfig | None = Field(
        None,
        description="Per-turn rewards of the evaluation; None: the training rewards. {instruction: {kind: shapes}, consistency: "
        "{kind: shapes}} keeps ShapeEdit's exact O held out while an MLLM judge is the training reward, so hacking shows.",
    )


class LogConfig(RefineConfig):
    """Outputs: metrics, checkpoints, the exported LoRA."""

    output_dir: str = Field("runs/multiturn", description="Folder of metrics.jsonl, checkpoints and the final LoRA.")
    tensorboard: bool = Field(False, description="Also write TensorBoard events.")
    checkpoint_every: int = Field(10, ge=0, description="Checkpoint every N iterations (and at the end); 0: end only.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    resume: bool = Field(True, description="Continue from output_dir's latest checkpoint when there is one.")
    progress: bool = Field(True, description="Show a progress bar.")


class MultiTurnConfig(RefineConfig):
    """An MT-EditFlow run: backbone, data, rollouts, rewards, advantages, objective, policies, optimiser, loop, logs."""

    backbone: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "shapes"},
        description="Backbone spec: {kind: <registry backbone kind>, ...} (shapes, qwen_image_edit, flux_kontext).",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Training sequences.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Multi-turn group rollouts.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Per-turn rewards and fusion weights.")
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig, description="Aggregation, fusion, broadcast.")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="RL objective.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Old policy and EMA.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="LoRA settings.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Loop settings.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation.")
    log: LogConfig = Field(default_factory=LogConfig, description="Metrics and checkpoints.")

    @model_validator(mode="after")
    def _check(self) -> "MultiTurnConfig":
        if "kind" not in self.backbone:
            raise ValueError("backbone needs a 'kind' (e.g. backbone.kind=shapes)")
        if self.objective.kind == "grpo" and (self.rollout.sampler != "sde" or self.rollout.noise_level <= 0):
            raise ValueError(
                f"objective.kind=grpo needs per-step log-probabilities: set rollout.sampler=sde with rollout.noise_level > 0 "
                f"(got sampler={self.rollout.sampler}, noise_level={self.rollout.noise_level})"
            )
        if self.eval.benchmark in ("shapes-mt", "shapes-bench", "shapes-val"):
            raise ValueError(
                f"eval.benchmark={self.eval.benchmark} during training: tune on shapes-mt-val (shapes-mt is for reporting, "
                "with `refine compare`)"
            )
        return self
