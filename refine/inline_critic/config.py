"""`InlineCriticConfig`: one config for the three-stage recipe and the paper's ablation baselines.

Example:
    >>> from refine.inline_critic.config import InlineCriticConfig
    >>> cfg = InlineCriticConfig(method="three_stage", num_probes=2)
    >>> cfg.stage1.steps, cfg.stage3.lambda_critic
    (300, 0.1)
    >>> try:  # our part of pydantic's message; its wrapper text and URL change between releases
    ...     InlineCriticConfig(method="lora", lora=None)
    ... except ValueError as err:
    ...     print("method 'lora' needs a lora section" in str(err))
    True

Methods (paper Tab. 5):
* three_stage: stage 1 probes -> stage 2 masked critic -> stage 3 unmasked joint training.
* single_stage: stage 3 alone from scratch (probes, projections and token trained jointly at once).
* learnable_token: the same appended token, always visible, trained with the generation loss only.
* lora: LoRA adapters on the transformer's attention projections, generation loss only.
The backbone is frozen for every method except lora (whose adapters are the trainable part).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from refine.config import RefineConfig
from refine.registry import registry
from refine.training.lora import ATTENTION_TARGETS


class StageConfig(RefineConfig):
    """Optimisation of one stage (AdamW + diffusers' cosine schedule with linear warmup)."""

    steps: int = Field(300, ge=0, description="optimizer steps of this stage (0 skips it)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(10, ge=0, description="linear warmup steps before the cosine decay")
    lambda_critic: float = Field(0.1, ge=0, description="stage 3: weight of the critic loss (eq. 8); ignored elsewhere")
    lambda_probe: float = Field(0.1, ge=0, description="stage 3: weight of the probe loss (eq. 8); ignored elsewhere")


class DataConfig(RefineConfig):
    """Where (source, instruction, target) triples come from.

    kind=shapes: the procedural ShapeEdit stream (`refine.shapes.data.training_stream`).
    kind=folder: `path/<case>/source.png, target.png, instruction.txt` (any image extension).
    kind=jsonl: a JSONL file, one `{"source": ..., "target": ..., "instruction": ...}` per line,
        image paths relative to the file's folder.
    """

    kind: Literal["shapes", "folder", "jsonl"] = Field("shapes", description="data source (see class docs)")
    path: str | None = Field(None, description="folder or JSONL file for kind=folder/jsonl")
    seed: int = Field(0, description="seed of the ShapeEdit stream / shuffling")
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the ShapeEdit stream")
    validation_cases: int = Field(32, ge=0, description="held-out cases for the validation flow-matching loss")
    validation_seed: int = Field(10_000, description="seed of the held-out validation cases (disjoint from training)")

    @model_validator(mode="after")
    def _path_needed(self) -> "DataConfig":
        if self.kind in ("folder", "jsonl") and not self.path:
            raise ValueError(f"data.kind={self.kind!r} needs data.path (a {'folder' if self.kind == 'folder' else 'JSONL file'})")
        # stages draw ShapeEdit streams seeded seed + 7919 * stage (+ 104729 * rank): keep validation apart
        if self.kind == "shapes" and (self.validation_seed - self.seed) % 7919 == 0 and 0 <= (self.validation_seed - self.seed) // 7919 < 3:
            raise ValueError(
                f"data.validation_seed={self.validation_seed} equals a training stream seed of data.seed={self.seed}; pick another"
            )
        return self


class LoraSettings(RefineConfig):
    """LoRA baseline (peft) on the transformer's joint attention projections."""

    rank: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha (scale = alpha / rank)")
    target_modules: list[str] = Field(
        default_factory=lambda: list(ATTENTION_TARGETS),
        description="module names inside each attention block to adapt",
    )


class InlineCriticConfig(RefineConfig):
    """Everything `refine train inline-critic` needs (see the module docstring for the methods)."""

    backbone: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "shapes"},
        description="registry spec of the frozen backbone, e.g. {kind: shapes} or {kind: qwen_image_edit, path: ...}",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="training / validation data")
    method: Literal["three_stage", "single_stage", "learnable_token", "lora"] = Field(
        "three_stage", description="the recipe or one of the paper's ablation baselines"
    )
    probe_layers: list[int] | None = Field(None, description="explicit probed block indices (default: uniform, see num_probes)")
    num_probes: int = Field(4, ge=1, description="number of probed blocks picked uniformly when probe_layers is not set")
    probe_mlp_dim: int | None = Field(None, description="hidden width of the probe heads (default: the transformer width)")
    proj_dim: int = Field(64, ge=1, description="output width of each projection head (inner-product space of eq. 4)")
    proj_mlp_dim: int | None = Field(None, description="hidden width of the projection heads (default: the transformer width)")
    error_rescale: Literal["log", "log1p", "none"] = Field(
        "log", description="rescaling of the probe error target (eq. 6); see refine.inline_critic.losses"
    )
    error_eps: float = Field(1e-3, gt=0, description="floor added before the log for error_rescale=log")
    token_init_std: float = Field(0.02, gt=0, description="std of the critic token's random init")
    stage1: StageConfig = Field(default_factory=lambda: StageConfig(steps=300, lr=1e-3), description="probe training")
    stage2: StageConfig = Field(default_factory=lambda: StageConfig(steps=300, lr=1e-3), description="masked critic")
    stage3: StageConfig = Field(
        default_factory=lambda: StageConfig(steps=300, lr=3e-4),
        description="unmasked joint training; also the single stage of single_stage/learnable_token/lora",
    )
    lora: LoraSettings | None = Field(default_factory=LoraSettings, description="LoRA baseline settings (method=lora)")
    batch_size: int = Field(8, ge=1, description="edits per optimizer step (per process)")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    timestep_sampling: Literal["uniform", "logit_normal"] = Field(
        "logit_normal", description="how training t in (0, 1) is drawn (logit-normal as in SD3 / Qwen-Image)"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="accelerate mixed precision")
    seed: int = Field(0, description="global seed (torch, numpy, python)")
    output_dir: str = Field("runs/inline_critic", description="where checkpoints, logs and the final critic weights go")
    save_every: int = Field(100, ge=1, description="checkpoint every N optimizer steps (and at the end of each stage)")
    log_every: int = Field(10, ge=1, description="log metrics to metrics.jsonl every N steps")
    wandb_project: str | None = Field(None, description="also log the metric rows to this wandb project (needs `pip install wandb`)")
    eval_every: int = Field(0, ge=0, description="validation flow-matching loss every N steps (0: only at stage ends)")
    resume: bool = Field(True, description="resume from the newest checkpoint in output_dir/checkpoints/ and skip finished stages")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="after")
    def _cross_field(self) -> "InlineCriticConfig":
        if self.method == "lora" and self.lora is None:
            raise ValueError("method 'lora' needs a lora section (rank, alpha, target_modules); add `lora: {rank: 8}`")
        if "kind" not in self.backbone:
            raise ValueError("backbone needs a 'kind' (e.g. backbone: {kind: shapes})")
        registry.check_spec("backbone", self.backbone, where="backbone")  # a typo fails at load
        if self.probe_layers is not None and len(set(self.probe_layers)) != len(self.probe_layers):
            raise ValueError(f"probe_layers {self.probe_layers} repeats a layer; list each block once")
        if self.method != "three_stage" and self.stage3.steps == 0:
            raise ValueError(f"method {self.method!r} trains in stage3; set stage3.steps > 0")
        return self
