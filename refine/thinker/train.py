"""Train EditThinker with TRL: `refine train thinker --config thinker_train/shapes-sft --stage sft`.

Example (the tiny random Qwen2.5-VL, two steps on two rows):
    >>> import tempfile
    >>> from PIL import Image
    >>> from refine.testing.tiny_vlm import tiny_vlm_dir
    >>> from refine.thinker.filters import Sample
    >>> from refine.thinker.train import ThinkerTrainConfig, train
    >>> from refine.thinker.trl_rows import samples_to_dataset
    >>> image = Image.new("RGB", (32, 32), "white")
    >>> rows = samples_to_dataset([Sample("t", 1, "add", image, image, "add a cat", "add a cat", "no cat", 0.0, 9.0, "add a black cat")] * 2)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = rows.save_to_disk(f"{folder}/data")
    ...     config = ThinkerTrainConfig(output_dir=f"{folder}/run", model=str(tiny_vlm_dir()), dataset=f"{folder}/data",
    ...                                 split=None, max_steps=2, batch_size=2, per_device_batch_size=1, progress=False)
    ...     summary = train(config)
    >>> summary["global_step"], summary["gradient_accumulation_steps"]
    (2, 2)

Stage `sft` (paper Sec. 3.3.1, the cold start): TRL's `SFTTrainer` on the `sft` split that
`refine thinker data` wrote (TRL's conversational prompt-completion format with images; the
loss is on the completion, the EditThinker-format target). The vision tower (and its merger) is
frozen by default (`freeze_vision`): SFT teaches the format, the critique and the rewrite, not
new visual features, and the paper's 8B model keeps a pretrained tower. The paper's settings are
the defaults: 1 epoch, learning rate 2e-5, global batch 32 (`batch_size`, reached by gradient
accumulation over `per_device_batch_size` x processes). The trained model and its processor go to
`output_dir/final`, a standard transformers folder that `VLMThinker.from_spec(folder)`,
`transformers serve` and vLLM load.

Stage `grpo` (Sec. 3.3.2, the edit/critic/format rewards) is not implemented yet (issue 24,
section 2); asking for it is a `ConfigError` that says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from datasets import Dataset, DatasetDict, load_from_disk
from pydantic import Field

from refine._compat import ensure_torchvision_importable
from refine.config import RefineConfig
from refine.errors import ConfigError

ensure_torchvision_importable()  # before transformers' processors import torchvision (see refine._compat)

from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from refine.training.metrics import MetricsLogger  # noqa: E402
from refine.training.trainer_metrics import MetricsCallback  # noqa: E402

VISION_MODULES = ("visual", "vision_tower", "vision_model")  # Qwen-VL, LLaVA-style, Idefics-style names


class ThinkerTrainConfig(RefineConfig):
    """Settings of `refine train thinker` (see the module docstring)."""

    output_dir: str = Field("runs/thinker-sft", description="Where checkpoints/, final/, metrics.jsonl and summary.json go.")
    stage: Literal["sft", "grpo"] = Field("sft", description="sft (SFTTrainer); grpo is not implemented yet.")
    model: str = Field(..., description="The VLM to start from: a transformers folder or hub id (e.g. the ShapeEdit VLM's final/).")
    dataset: str = Field(..., description="A `refine thinker data` dataset folder (output_dir/dataset) or any datasets.save_to_disk folder.")
    split: Optional[str] = Field("sft", description="The split of a DatasetDict to train on (None: the folder holds one Dataset).")
    freeze_vision: bool = Field(True, description="Freeze the vision tower and its merger (the paper's model keeps a pretrained tower).")
    epochs: float = Field(1.0, gt=0, description="Passes over the data (paper: 1).")
    max_steps: int = Field(-1, description="Optimizer steps; -1: as many as `epochs` gives.")
    learning_rate: float = Field(2e-5, gt=0, description="Peak AdamW learning rate (paper: 2e-5).")
    batch_size: int = Field(32, ge=1, description="Global batch: per_device_batch_size x processes x accumulation (paper: 32).")
    per_device_batch_size: int = Field(4, ge=1, description="Rows per forward pass on one device.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps with linear warm-up, then cosine decay.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    bf16: bool = Field(False, description="bf16 mixed precision (GPUs). False on CPU: fp32, and no process-wide bf16 autocast.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (real models).")
    max_length: Optional[int] = Field(None, ge=16, description="Truncate rows to this many tokens (None: never cut a target).")
    logging_steps: int = Field(10, ge=1, description="Log the loss every this many steps (metrics.jsonl).")
    save_steps: int = Field(500, ge=1, description="Checkpoint every this many steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    seed: int = Field(0, description="Data order and initialisation seed.")
    num_threads: int = Field(1, ge=1, description="torch threads on CPU.")
    progress: bool = Field(True, description="Progress bars and log lines.")


def freeze_vision_tower(model) -> str:
    """Freeze the first module named like a vision tower (`VISION_MODULES`); returns its name."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in VISION_MODULES:
            module.requires_grad_(False)
            return name
    raise ConfigError(f"{type(model).__name__} has no module named {' / '.join(VISION_MODULES)}; set freeze_vision=false")


def load_rows(config: ThinkerTrainConfig) -> Dataset:
    data = load_from_disk(config.dataset)
    if isinstance(data, DatasetDict):
        if config.split is None or config.split not in data:
            raise ConfigError(f"{config.dataset} holds the splits {sorted(data)}; set split to one of them (refine thinker data writes sft and rl)")
        data = data[config.split]
    if not {"prompt", "completion", "images"} <= set(data.column_names):
        raise ConfigError(f"{config.dataset}: rows need prompt, completion and images columns (refine thinker data writes them); got {data.column_names}")
    return data


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


def train(config: ThinkerTrainConfig) -> dict[str, Any]:
    """Run one stage (see the module docstring); returns a summary (global_step, losses, final/ path)."""
    if config.stage == "grpo":
        raise ConfigError("stage grpo is not implemented yet (issue 24, section 2): run stage sft")
    torch.set_num_threads(config.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_rows(config)
    model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.bfloat16 if config.bf16 else torch.float32)
    processor = AutoProcessor.from_pretrained(config.model)
    frozen = freeze_vision_tower(model) if config.freeze_vision else None
    processes = max(1, int(os.environ.get("WORLD_SIZE", "1")))  # set by accelerate / torchrun
    accumulation = accumulation_steps(config, processes)
    args = SFTConfig(
        output_dir=str(output_dir / "checkpoints"),
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
        max_length=config.max_length,
        dataloader_num_workers=0,
        disable_tqdm=not config.progress,
        completion_only_loss=True,  # the loss is on the EditThinker target, never on the prompt
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         callbacks=[MetricsCallback(MetricsLogger(output_dir, step_key="step"))])
    if not config.progress:
        trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    final = output_dir / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    summary = {"stage": config.stage, "global_step": trainer.state.global_step, "train_loss": result.training_loss,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "rows": len(dataset), "gradient_accumulation_steps": accumulation, "frozen": frozen, "final": str(final)}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

