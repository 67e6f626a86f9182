"""`EditR1Config`: every setting of an Edit-R1 (DiffusionNFT + MLLM reward) training run, validated.

Example:
    >>> from refine.config import load_config
    >>> from refine.edit_r1.config import EditR1Config
    >>> config = load_config(EditR1Config, overrides=["rollout.group_size=4", "train.iterations=2"])
    >>> config.rollout.group_size, config.nft.beta, config.filter.tau_mu
    (4, 1.0, 0.9)
    >>> load_config(EditR1Config, overrides=["rollout.groups_per_iteration=3", "train.micro_batch=5", "rollout.group_size=2"])
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: train.micro_batch=5 does not divide the 6 samples a process trains on per iteration (rollout.groups_per_iteration=3 x rollout.group_size=2 / 1 process); pick a divisor such as 1, 2, 3, 6

Defaults follow the paper's Table 5 where it gives a value (lr 3e-4, Adam betas (0.9, 0.999),
6 DPM-Solver steps, 12 images per prompt, 24 groups, KL weight 1e-4, β = 1 (guidance strength
1/β = 1), EMA decay 0.9, τμ = 0.9, τσ = 0.05) and the DiffusionNFT defaults otherwise (old-policy
decay ramp, LoRA on the attention projections). The ShapeEdit preset
(examples/configs/edit_r1/shapes.yaml) scales the batch down for a 2-core CPU.

`track_rewards` scores more rewards on the same rollouts for the logs only (never the advantages):
the exact judge beside an MLLM reward, so a judge being hacked shows (examples/configs/edit_r1/shapes_vlm_reward.yaml).

`objective: grpo` switches the loss to Flow-GRPO (`GRPOConfig`: its public settings are the
defaults; it needs `rollout.sampler: sde`). `nft.cfg` says which velocity NFT models: `free`
(default, DiffusionNFT: CFG-free rollouts and loss) or `consistent` (the guided velocity, both
branches through the LoRA). NFT's `beta` is not CFG; CFG is `rollout.guidance`.

Kept free of torch so `refine config show edit_r1/shapes` stays fast; the loop is in `train.py`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from refine.config import RefineConfig
from refine.registry import registry
from refine.training.configs import LoRAConfig, OptimConfig, PolicyConfig


class DataConfig(RefineConfig):
    """Where training requests come from. Online RL needs only (source image, instruction, task)."""

    kind: Literal["shapes", "jsonl"] = Field(
        "shapes",
        description="shapes: ShapeEdit's endless procedural stream (refine.shapes.data.training_stream); "
        "jsonl: a file of {\"image\": path, \"instruction\": text, \"task\": optional type, ...} lines.",
    )
    path: str | None = Field(None, description="The JSONL file (kind=jsonl); image paths are relative to it.")
    seed: int = Field(0, description="Seed of the ShapeEdit stream / of the JSONL shuffling order.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments of refine.shapes.data.training_stream (kind=shapes)."
    )

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.kind == "jsonl" and not self.path:
            raise ValueError("data.kind=jsonl needs data.path=/path/to/train.jsonl")
        return self


class RolloutConfig(RefineConfig):
    """Sampling G edits per request from the old policy (any black-box solver: DiffusionNFT is likelihood-free)."""

    sampler: Literal["dpm", "euler", "sde"] = Field(
        "dpm", description="dpm: DPM-Solver++(2M) as in the paper; euler: ODE; sde: Flow-GRPO SDE with per-step log-probs (objective=grpo needs it)."
    )
    steps: int = Field(
        6, ge=1, description="Training steps: sampling steps per rollout (paper: 6; Flow-GRPO: 10, against 40 for evaluation, see eval.steps)."
    )
    guidance: float | None = Field(
        None,
        description="CFG scale during rollouts; None: the backbone's default, except under objective=nft with nft.cfg=free, "
        "where rollouts are CFG-free (the conditional velocity the loss models).",
    )
    noise_level: float = Field(0.7, ge=0, description="sampler=sde: the SDE noise level a (Flow-GRPO: 0.7).")
    sde_window: tuple[int, int] | None = Field(
        None,
        description="sampler=sde: [start, end) steps that are stochastic (and trained by GRPO); the others are ODE steps. None: all.",
    )
    group_size: int = Field(12, ge=2, description="G: images per request (paper: 12). At least 2 for a group statistic.")
    groups_per_iteration: int = Field(
        24, ge=1, description="Requests per iteration over all processes (paper: 24); their G samples are split evenly over the processes."
    )
    max_batch: int = Field(8, ge=1, description="Transformer items per rollout forward pass (CFG counts twice).")


class RewardFilterConfig(RefineConfig):
    """Low-std group filtering (paper sec. 2.3): confident, unanimous groups carry only judge noise."""

    enabled: bool = Field(True, description="Drop groups whose raw-reward mean > tau_mu and std < tau_sigma from the loss.")
    tau_mu: float = Field(0.9, description="Mean threshold τμ on raw rewards (paper: 0.9, rewards in [0, 1]).")
    tau_sigma: float = Field(0.05, ge=0, description="Std threshold τσ on raw rewards (paper: 0.05).")


class AdvantageConfig(RefineConfig):
    """Raw rewards -> normalised advantages -> optimality r (eq. 7)."""

    std: Literal["global", "local"] = Field(
        "global", description="Z_c of eq. 7: the std of all rewards of the iteration (global, paper) or of the group (local)."
    )
    clip: float = Field(1.0, gt=0, description="r = 1/2 + 1/2 clip(A / clip, -1, 1); the paper's eq. 7 uses 1.")
    reward_scale: float = Field(
        1.0, description="Multiplies raw rewards before everything else; -1 trains towards the judge's dislikes (a sign check)."
    )


class NFTConfig(RefineConfig):
    """The DiffusionNFT objective (refine/rollout/objectives.py)."""

    beta: float = Field(
        1.0,
        gt=0,
        description="NFT's β: how far the implicit policies v± = v_old ± β (v_θ - v_old) sit from the old policy (paper: 1). "
        "Not classifier-free guidance: Edit-R1's Table 5 calls 1/β 'guidance strength'; the CFG scale is rollout.guidance.",
    )
    cfg: Literal["free", "consistent"] = Field(
        "free",
        description="free (DiffusionNFT): rollouts and loss without CFG, so the loss models the policy that sampled; "
        "consistent: rollouts at rollout.guidance and the loss on the guided velocity, both CFG branches through the LoRA.",
    )
    kl_weight: float = Field(1e-4, ge=0, description="Weight of ||v_θ - v_ref||² against the reference (adapters off / initial weights).")
    weighting: Literal["none", "x0_adaptive"] = Field(
        "none", description="none: eq. 4 as written; x0_adaptive: DiffusionNFT code's per-sample x0-space normalisation."
    )
    timesteps_per_sample: int | None = Field(
        None, ge=1, description="Training times t per rollout sample, drawn from the rollout schedule; None: all of them."
    )
    timestep_min: float = Field(0.0, ge=0, lt=1, description="Training times below this are not drawn (t=0 carries no signal).")


class GRPOConfig(RefineConfig):
    """The Flow-GRPO objective (refine/rollout/objectives.py), with its public settings as defaults."""

    clip_range: float = Field(1e-4, gt=0, description="ε of the clipped ratio ρ in [1 - ε, 1 + ε] (Flow-GRPO: 1e-4, not PPO's 0.2).")
    advantage_clip: float = Field(5.0, gt=0, description="Group advantages are clipped to ±this (Flow-GRPO: 5).")
    kl_weight: float = Field(
        0.04, ge=0, description="Flow-GRPO's β, the weight of the per-step KL ||μ_θ - μ_ref||² / (2 σ_t²) to the reference "
        "(adapters disabled); 0.04, some Flow-GRPO presets use 0.01. Neither NFT's β nor a CFG scale.",
    )
    timestep_fraction: float = Field(
        1.0, gt=0, le=1, description="Fraction of the stochastic steps trained per sample, drawn at random (Flow-GRPO's timestep subset)."
    )


class TrainConfig(RefineConfig):
    """The loop: how long, how updates are batched, precision, memory."""

    iterations: int = Field(100, ge=1, description="Rollout/update iterations.")
    finetune: Literal["lora", "full"] = Field("lora", description="lora: peft adapters on the attention projections; full: every transformer weight.")
    micro_batch: int = Field(3, ge=1, description="Samples per forward/backward pass (paper: batch size 3).")
    gradient_accumulation: int = Field(
        0, ge=0, description="Micro-batches per optimizer step; 0: all of an iteration's samples make one step."
    )
    inner_epochs: int = Field(1, ge=1, description="Passes over each iteration's rollouts.")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="accelerate mixed precision (bf16 on GPUs).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute transformer activations in backward (big models; works under DDP and FSDP2)."
    )
    frozen: Literal["replicate", "shard"] = Field(
        "replicate",
        description="Under FSDP2: keep the frozen text encoder/VAE whole on every process (replicate) or fully_shard them "
        "too (shard: 1/N of their memory each, gathered layer by layer in their forward). Ignored without FSDP2.",
    )
    seed: int = Field(0, description="Seed of everything: rollouts, training noise and times, LoRA init.")
    max_reward_failures: int = Field(
        3, ge=0, description="Consecutive iterations whose reward call failed before the run stops (after its last checkpoint)."
    )


class EvalConfig(RefineConfig):
    """Held-out judge reward, measured with the EMA weights."""

    benchmark: str | None = Field(
        "shapes-val",
        description="Split (refine.shapes.load_split) or a JSONL file; None: no evaluation. A tuning split: "
        "shapes-val, never the reported shapes-bench, since runs are compared and stopped on it.",
    )
    sampler: Literal["dpm", "euler", "sde"] | None = Field(
        None, description="Evaluation sampler; None: the rollout sampler, with sde replaced by euler (evaluation is deterministic)."
    )
    steps: int | None = Field(
        None, ge=1, description="Evaluation steps; None: rollout.steps (Flow-GRPO trains on 10 and evaluates on 40)."
    )
    guidance: float | None = Field(
        None, description="Evaluation CFG scale; None: the policy that was trained (CFG-free under nft.cfg=free, else rollout.guidance)."
    )
    cases: int = Field(32, ge=1, description="N cases spread evenly over the split (or over its `categories`).")
    categories: list[str] | None = Field(None, description="ShapeEdit only: evaluate on these edit categories (None: all).")
    every: int = Field(10, ge=0, description="Evaluate every N iterations (and at the start and end); 0: start and end only.")
    seed: int = Field(1234, description="Sampling seed of evaluation edits (fixed across the run).")
    reward: dict[str, Any] | None = Field(None, description="Reward spec for evaluation; None: the training reward.")


class LogConfig(RefineConfig):
    """Outputs: metrics, samples, checkpoints."""

    output_dir: str = Field("runs/edit_r1", description="Folder of metrics.jsonl, samples/, checkpoints and the final LoRA.")
    tensorboard: bool = Field(False, description="Also write TensorBoard events to output_dir/tensorboard.")
    wandb_project: str | None = Field(None, description="Also log the metric rows to this wandb project (needs `pip install wandb`).")
    sample_every: int = Field(0, ge=0, description="Save a grid of evaluation edits every N iterations; 0: never.")
    sample_requests: int = Field(4, ge=1, description="Requests in each sample grid.")
    checkpoint_every: int = Field(10, ge=0, description="Checkpoint every N iterations (and at the end); 0: end only.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    resume: bool = Field(True, description="Continue from output_dir's latest checkpoint when there is one.")
    progress: bool = Field(True, description="Show a progress bar.")


class EditR1Config(RefineConfig):
    """An Edit-R1 run: backbone, reward, data, rollouts, NFT loss, policies, optimiser, loop, logs."""

    backbone: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "shapes"},
        description="Backbone spec: {kind: <registry backbone kind>, ...its arguments} (shapes, qwen_image_edit, flux_kontext).",
    )
    reward: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "composite", "rewards": {"if": {"kind": "shapes_if"}, "cc": {"kind": "shapes_cc"}}},
        description="Reward spec: {kind: <registry reward kind>, ...}. Default: ShapeEdit's judge, mean of IF and CC (CPU); "
        "the GPU presets use the paper's MLLM judge {kind: mllm, mode: score_logit, backend: {kind: openai, base_url: ...}}.",
    )
    track_rewards: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Rewards scored on every training rollout beside `reward` and only logged (metrics `track_<name>_mean`, "
        "per sample in rollouts/rank<r>.jsonl), never in the advantages: {name: reward spec}, e.g. "
        "{o: {kind: shapes_overall}} to see an MLLM reward being hacked while the exact judge's O falls (Edit-R1 Fig. 8).",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Training requests.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Group rollouts.")
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig, description="Rewards to optimality.")
    filter: RewardFilterConfig = Field(default_factory=RewardFilterConfig, description="Low-std group filtering.")
    objective: Literal["nft", "grpo"] = Field(
        "nft", description="nft: DiffusionNFT on the forward process (the paper); grpo: Flow-GRPO on SDE rollouts (needs rollout.sampler=sde)."
    )
    nft: NFTConfig = Field(default_factory=NFTConfig, description="DiffusionNFT loss (objective=nft).")
    grpo: GRPOConfig = Field(default_factory=GRPOConfig, description="Flow-GRPO loss (objective=grpo).")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Old policy and EMA.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="LoRA settings (train.finetune=lora).")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Loop settings.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation.")
    log: LogConfig = Field(default_factory=LogConfig, description="Metrics, samples, checkpoints.")

    @model_validator(mode="after")
    def _check(self) -> "EditR1Config":
        for name in ("backbone", "reward"):
            spec = getattr(self, name)
            if "kind" not in spec:
                raise ValueError(f"{name} needs a 'kind' (e.g. {name}.kind={'shapes' if name == 'backbone' else 'shapes_overall'})")
            registry.check_spec(name, spec, where=name)  # a typo fails at load, not after the model loads
        for name, spec in self.track_rewards.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"track_rewards.{name}: a tracked reward's name becomes a metric key; use letters, digits and _")
            if "kind" not in spec:
                raise ValueError(f"track_rewards.{name} needs a 'kind' (e.g. track_rewards.{name}.kind=shapes_overall)")
            registry.check_spec("reward", spec, where=f"track_rewards.{name}")
        if self.objective == "grpo" and self.rollout.sampler != "sde":
            raise ValueError(
                f"objective=grpo needs per-step log-probabilities: set rollout.sampler=sde (got {self.rollout.sampler})"
            )
        if self.rollout.sampler == "sde" and self.rollout.noise_level == 0 and self.objective == "grpo":
            raise ValueError("objective=grpo needs stochastic steps: set rollout.noise_level > 0 (Flow-GRPO: 0.7)")
        if self.rollout.sde_window is not None:
            start, end = self.rollout.sde_window
            if self.rollout.sampler != "sde" or not 0 <= start < end <= self.rollout.steps:
                raise ValueError(
                    f"rollout.sde_window={list(self.rollout.sde_window)} needs rollout.sampler=sde and 0 <= start < end <= "
                    f"rollout.steps={self.rollout.steps}; e.g. rollout.sde_window=[0,{min(2, self.rollout.steps)}]"
                )
        if self.uses_cfg_free_rollouts() and self.rollout.guidance not in (None, 1.0):
            raise ValueError(
                f"nft.cfg=free samples without CFG, so rollout.guidance={self.rollout.guidance} contradicts it: "
                "drop rollout.guidance (or set it to 1), or set nft.cfg=consistent to train the guided velocity"
            )
        self.check_processes(1)
        return self

    def uses_cfg_free_rollouts(self) -> bool:
        """True when rollouts and loss use the conditional velocity alone (objective=nft, nft.cfg=free)."""
        return self.objective == "nft" and self.nft.cfg == "free"

    def check_processes(self, processes: int) -> None:
        """Raise ValueError when an iteration's samples cannot be split evenly over `processes` processes."""
        groups, size, micro = self.rollout.groups_per_iteration, self.rollout.group_size, self.train.micro_batch
        samples = groups * size
        if samples % processes:
            raise ValueError(
                f"the {samples} samples of an iteration (rollout.groups_per_iteration={groups} x rollout.group_size={size}) "
                f"do not split evenly over {processes} processes; make their product a multiple of {processes}"
            )
        per_process = samples // processes
        if per_process % micro:
            divisors = [d for d in range(1, per_process + 1) if per_process % d == 0][:6]
            raise ValueError(
                f"train.micro_batch={micro} does not divide the {per_process} samples a process trains on per iteration "
                f"(rollout.groups_per_iteration={groups} x rollout.group_size={size} / {processes} "
                f"process{'es' if processes > 1 else ''}); pick a divisor such as {', '.join(map(str, divisors))}"
            )

    def micro_batches_per_iteration(self, processes: int = 1) -> int:
        """Micro-batches one process runs per inner epoch."""
        return self.rollout.groups_per_iteration * self.rollout.group_size // processes // self.train.micro_batch

    def accumulation_steps(self, processes: int = 1) -> int:
        """Micro-batches per optimizer step (0 in the config means one step per inner epoch)."""
        per_epoch = self.micro_batches_per_iteration(processes)
        steps = self.train.gradient_accumulation or per_epoch
        return min(steps, per_epoch)
