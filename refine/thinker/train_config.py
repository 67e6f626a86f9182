"""`ThinkerTrainConfig`, the settings of `refine train thinker` (both stages), and what both stages share.

Example:
    >>> from refine.thinker.train_config import ThinkerTrainConfig
    >>> sft = ThinkerTrainConfig(model="m", dataset="d")
    >>> sft.stage, sft.split, sft.learning_rate, sft.batch_size
    ('sft', 'sft', 2e-05, 32)
    >>> grpo = ThinkerTrainConfig(model="m", dataset="d", stage="grpo")
    >>> grpo.split, grpo.learning_rate, grpo.batch_size, grpo.num_generations, grpo.beta, grpo.loss_type
    ('rl', 2e-06, 128, 8, 0.001, 'grpo')
    >>> grpo.reward_weights.model_dump()
    {'format': 0.1, 'critic': 0.3, 'edit': 0.6}

The paper's settings (Sec. 5.1) are the defaults of each stage: SFT 1 epoch, learning rate 2e-5,
batch 32; GRPO 1 epoch, learning rate 2e-6, global batch 128, 8 rollouts per prompt, KL
coefficient 1e-3, standard GRPO. `split`, `learning_rate` and `batch_size` left out of a config
take the stage's value (the `sft` / `rl` split that `refine thinker data` writes), and so does
`output_dir` (`runs/thinker-sft` / `runs/thinker-grpo`); an `output_dir` that holds the starting
model (GRPO from `runs/thinker-sft/final` into `runs/thinker-sft`) is refused, since final/ would
be written over. TRL's own GRPO defaults differ (beta 0, loss "dapo"), so `beta` and `loss_type`
are always passed explicitly.

Batch units: SFT counts rows; GRPO counts completions, as TRL does (`batch_size` 128 with 8
rollouts = 16 prompts per optimizer step). The paper does not say which unit its "global batch
size of 128" uses; in verl / EasyR1 the global batch counts prompts, which would be
`batch_size: 1024` here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk
from pydantic import Field, model_validator

from refine.config import RefineConfig
from refine.errors import ConfigError
from refine.thinker.data import EditorSpec
from refine.thinker.prompts import PROMPT_NAMES

VISION_MODULES = ("visual", "vision_tower", "vision_model")  # Qwen-VL, LLaVA-style, Idefics-style names

# The paper's settings per stage (Sec. 5.1), used for the fields a config leaves out.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {"output_dir": "runs/thinker-sft", "split": "sft", "learning_rate": 2e-5, "batch_size": 32},
    "grpo": {"output_dir": "runs/thinker-grpo", "split": "rl", "learning_rate": 2e-6, "batch_size": 128},
}


class RewardWeights(RefineConfig):
    """alpha, beta, gamma of the paper's Eq. 5: R = alpha R_format + beta R_critic + gamma R_edit, summing to 1.

    The paper gives no values. Defaults: the edit reward is "the primary reward" (Sec. 3.3.2), so it
    gets the most weight (0.6). R_format is 0/1 and nearly saturated after SFT (>= 95% valid):
    at 0.1 a malformed reply costs what a 1.7-point edit gain (0-10 scale) earns, enough to keep
    the format, not so much that one malformed reply in a group dominates the group's standard
    deviation (and so every advantage of the group). The critic gets 0.3: a 1-point error on both
    scores (R_critic -0.1) costs half of what a 1-point edit gain (R_edit +0.1) earns, so a better
    rewrite is never traded for calibration.
    """

    format: float = Field(0.1, ge=0, description="alpha: weight of R_format (strict format, 1/0).")
    critic: float = Field(0.3, ge=0, description="beta: weight of R_critic (minus the score error, [-1, 0]).")
    edit: float = Field(0.6, ge=0, description="gamma: weight of R_edit (judge gain E(I^t) - E(I^{t-1}), [-1, 1]).")

    @model_validator(mode="after")
    def _sum_to_one(self) -> "RewardWeights":
        total = self.format + self.critic + self.edit
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"reward_weights must sum to 1 (paper Eq. 5), got {self.format} + {self.critic} + {self.edit} = {total:g}")
        return self


class ThinkerTrainConfig(RefineConfig):
    """Settings of `refine train thinker` (see the module docstring and `refine.thinker.train`)."""

    output_dir: str = Field(None, description="Where checkpoints/, final/, metrics.jsonl and summary.json go (default: runs/thinker-sft or runs/thinker-grpo).")
    stage: Literal["sft", "grpo"] = Field("sft", description="sft (SFTTrainer, the cold start) or grpo (GRPOTrainer, Sec. 3.3.2).")
    model: str = Field(..., description="The VLM to start from: a transformers folder or hub id (SFT: the ShapeEdit VLM; GRPO: the SFT run's final/).")
    dataset: Union[str, list[str]] = Field(
        ..., description="A `refine thinker data` dataset folder (output_dir/dataset) or any datasets.save_to_disk folder; or a "
        "list of them, whose rows (the same split of each) are joined: e.g. real-editor trajectories plus candidate-output rows")
    prompt: Literal[PROMPT_NAMES] = Field(
        "thinker", description="GRPO: the prompt set the rows were built with; its output style says how a reply is read "
        "(the EditThinker tags, or a rewrite-only model's bare instruction: shapes-rewrite). SFT rows carry their own text.")
    split: Optional[str] = Field(None, description="The split of a DatasetDict to train on (default: sft for stage sft, rl for grpo; null: the folder holds one Dataset).")
    freeze_vision: bool = Field(True, description="Freeze the vision tower and its merger (the paper's model keeps a pretrained tower).")
    epochs: float = Field(1.0, gt=0, description="Passes over the data (paper: 1 for both stages).")
    max_steps: int = Field(-1, description="Optimizer steps; -1: as many as `epochs` gives.")
    learning_rate: float = Field(None, gt=0, description="Peak AdamW learning rate (default: the paper's 2e-5 for sft, 2e-6 for grpo).")
    batch_size: int = Field(None, ge=1, description="Global batch per optimizer step: per_device_batch_size x processes x accumulation (default: the paper's 32 rows for sft, 128 completions for grpo).")
    per_device_batch_size: int = Field(4, ge=1, description="Rows (SFT) or completions (GRPO) per forward pass on one device.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps with linear warm-up, then cosine decay.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    bf16: bool = Field(False, description="bf16 mixed precision (GPUs). False on CPU: fp32, and no process-wide bf16 autocast.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (real models).")
    max_length: Optional[int] = Field(None, ge=16, description="SFT: truncate rows to this many tokens (None: never cut a target).")
    logging_steps: int = Field(10, ge=1, description="Log the loss (and GRPO's rewards) every this many steps (metrics.jsonl).")
    save_steps: int = Field(500, ge=1, description="Checkpoint every this many steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    resume_from: Optional[str] = Field(
        None, description="'latest' (the newest checkpoint in output_dir/checkpoints; a fresh start if there is none) or a "
        "checkpoint folder: weights, optimizer, schedule, RNG and data position continue from there (`--resume`)")
    seed: int = Field(0, description="Data order, initialisation and sampling seed.")
    num_threads: int = Field(1, ge=1, description="torch threads on CPU.")
    progress: bool = Field(True, description="Progress bars and log lines.")

    # GRPO (stage grpo; ignored by sft). Sec. 3.3.2 and refine.thinker.grpo_rewards.
    num_generations: int = Field(8, ge=2, description="GRPO: rollouts per prompt, one group (paper: 8).")
    generation_batch_size: Optional[int] = Field(None, ge=2, description="GRPO: completions generated at once (None: batch_size, one generation per optimizer step).")
    beta: float = Field(1e-3, ge=0, description="GRPO: KL coefficient against the starting model (paper: 1e-3; TRL's default is 0).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field("grpo", description="GRPO: loss aggregation; grpo = standard GRPO, the paper's (TRL's default is dapo).")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="GRPO: advantage = (r - group mean) / group std (group, standard GRPO), batch std, or no scaling.")
    epsilon: float = Field(0.2, gt=0, description="GRPO: PPO clip range of the importance ratio.")
    num_iterations: int = Field(1, ge=1, description="GRPO: optimizer passes per generated batch (mu).")
    max_completion_length: int = Field(512, ge=8, description="GRPO: most tokens per rollout (reasoning included).")
    temperature: float = Field(1.0, gt=0, description="GRPO: sampling temperature of the rollouts.")
    reward_weights: RewardWeights = Field(default_factory=RewardWeights, description="GRPO: alpha (format), beta (critic), gamma (edit) of Eq. 5.")
    edit_reward: Literal["editor", "reference_match"] = Field(
        "editor",
        description="GRPO: what fills R_edit's place: editor (Eq. 4: the judge's gain of the editor's output on the rollout's "
        "instruction) or reference_match (1 when the rollout's instruction is the row's `reference` column, else 0: rows of "
        "`refine thinker first-turn`; no editor, not in the paper; see refine.thinker.grpo_rewards.ReferenceMatchReward).",
    )
    judge: Union[str, dict[str, Any]] = Field(
        "shapes_overall",
        description="GRPO: E, the judge of R_edit, a rewards-layer reward spec with scores in [0, 1]: shapes_overall (ShapeEdit's exact judge, "
                    "reads the case's ground truth) or e.g. {kind: mllm, backend: {kind: openai, base_url: ..., model: ...}}.",
    )
    editor: EditorSpec = Field(
        default_factory=lambda: EditorSpec(name="grpo-editor", steps=8),
        description="GRPO: the editor R_edit runs the rewritten instruction with (default: the bundled ShapeEdit editor, Euler 8 steps).",
    )
    image_size: Optional[tuple[int, int]] = Field(
        None, description="GRPO: pad-resize every prompt image to this (width, height) (None: as stored). Needed for vLLM server mode with mixed sizes; see refine.thinker.grpo.",
    )
    use_vllm: bool = Field(False, description="GRPO: generate the rollouts with vLLM (needs the vllm package).")
    vllm_mode: Literal["server", "colocate"] = Field("server", description="GRPO: server (a `trl vllm-serve` process on other GPUs) or colocate.")
    vllm_server_base_url: Optional[str] = Field(None, description="GRPO: the `trl vllm-serve` URL, e.g. http://10.0.0.2:8000 (None: TRL's default host and port).")

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            stage = data.get("stage", "sft")
            defaults = STAGE_DEFAULTS.get(stage, STAGE_DEFAULTS["sft"])
            data = {**{k: v for k, v in defaults.items() if k not in data}, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ThinkerTrainConfig":
        out, start = Path(self.output_dir).resolve(), Path(self.model).resolve()
        # (an output_dir of "." would "hold" every hub id: only a folder below the working directory counts)
        if (start == out or out in start.parents) and out != Path.cwd().resolve():
            raise ValueError(f"output_dir={self.output_dir!r} holds the starting model {self.model!r} (its final/ would be written over); "
                             "use another output_dir, e.g. runs/thinker-grpo")
        if not self.dataset:
            raise ValueError("dataset is empty: give a dataset folder or a list of them")
        if self.stage != "grpo":
            return self
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size={self.batch_size} must hold whole groups: make it a multiple of num_generations={self.num_generations}")
        if self.generation_batch_size is not None and self.generation_batch_size % self.num_generations:
            raise ValueError(f"generation_batch_size={self.generation_batch_size} must be a multiple of num_generations={self.num_generations}")
        if self.image_size is not None and min(self.image_size) < 1:
            raise ValueError(f"image_size={self.image_size}: give a positive (width, height), e.g. [448, 448]")
        return self


def freeze_vision_tower(model) -> str:
    """Freeze the first module named like a vision tower (`VISION_MODULES`); returns its name."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in VISION_MODULES:
            module.requires_grad_(False)
            return name
    raise ConfigError(f"{type(model).__name__} has no module named {' / '.join(VISION_MODULES)}; set freeze_vision=false")


def load_rows(config: ThinkerTrainConfig, columns: tuple[str, ...] = ("prompt", "completion", "images")) -> Dataset:
    """The config's split of its dataset folder (of each folder, joined on `columns`), checked to hold `columns`.

    Folders are joined on the columns training reads, so a thinker dataset can be mixed with other
    conversational rows that carry other metadata (e.g. the ShapeEdit VLM's rewrite rows, which keep
    the rewrite alive while the thinker learns its format).
    """
    folders = [config.dataset] if isinstance(config.dataset, str) else config.dataset
    parts = []
    for folder in folders:
        data = load_from_disk(folder)
        if isinstance(data, DatasetDict):
            if config.split is None or config.split not in data:
                raise ConfigError(f"{folder} holds the splits {sorted(data)}; set split to one of them (refine thinker data writes sft and rl)")
            data = data[config.split]
        missing = sorted(set(columns) - set(data.column_names))
        if missing:
            raise ConfigError(f"{folder}: rows need the columns {list(columns)} (refine thinker data writes them); {missing} missing, got {data.column_names}")
        parts.append(data)
    return parts[0] if len(parts) == 1 else concatenate_datasets([part.select_columns(list(columns)) for part in parts])


def accumulation_steps(config: ThinkerTrainConfig, processes: int) -> int:
    """Gradient accumulation that reaches the global `batch_size` on `processes` devices.

    Example:
        >>> accumulation_steps(ThinkerTrainConfig(model="m", dataset="d", batch_size=32, per_device_batch_size=4), processes=8)
        1
    """
    per_step = config.per_device_batch_size * processes
    if config.batch_size % per_step:
        raise ConfigError(f"batch_size={config.batch_size} is not a multiple of per_device_batch_size x processes = {per_step}; change one of them")
    return config.batch_size // per_step


def shared_trainer_arguments(config: ThinkerTrainConfig, output_dir: str | Path, accumulation: int) -> dict[str, Any]:
    """The TrainingArguments both stages (SFTConfig, GRPOConfig) take from `config` the same way.

    Example:
        >>> shared_trainer_arguments(ThinkerTrainConfig(model="m", dataset="d"), "runs/x", 4)["gradient_accumulation_steps"]
        4
    """
    return dict(
        output_dir=str(Path(output_dir) / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # transformers 5: a float in [0, 1) is a share of the steps
        weight_decay=config.weight_decay,
        bf16=config.bf16,  # explicit: TRL's default (bf16) would set accelerate's process-wide autocast on CPU
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=not config.progress,
    )
