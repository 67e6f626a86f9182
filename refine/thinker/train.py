"""Train EditThinker with TRL: `refine train thinker --config thinker_train/shapes-sft --stage sft` (or `--stage grpo`).

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

Stage `grpo` (Sec. 3.3.2): TRL's `GRPOTrainer` on the `rl` split, starting from the SFT model,
with the paper's rewards R = alpha R_format + beta R_critic + gamma R_edit
(`refine.thinker.grpo_rewards`; the stage's setup, image handling and TRL's VLM limits in
`refine.thinker.grpo`). The settings of both stages are one `ThinkerTrainConfig`
(`refine.thinker.train_config`): a field a config leaves out takes its stage's paper value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before transformers' processors import torchvision (see refine._compat)

from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from refine.thinker.grpo import train_grpo  # noqa: E402
from refine.thinker.train_config import (  # noqa: E402  (re-exported: the registry names refine.thinker.train:ThinkerTrainConfig)
    VISION_MODULES,
    ThinkerTrainConfig,
    accumulation_steps,
    freeze_vision_tower,
    load_rows,
    shared_trainer_arguments,
)
from refine.training.metrics import MetricsLogger  # noqa: E402
from refine.training.trainer_checkpoint import load_checkpoint_weights, resume_argument  # noqa: E402
from refine.training.trainer_metrics import MetricsCallback  # noqa: E402

__all__ = ["VISION_MODULES", "ThinkerTrainConfig", "accumulation_steps", "freeze_vision_tower", "load_rows", "train", "train_sft"]


class _SFTTrainer(SFTTrainer):
    """`SFTTrainer` whose resume reads the checkpoint's weights through `from_pretrained` (`refine.training.trainer_checkpoint`)."""

    _load_from_checkpoint = load_checkpoint_weights


def train(config: ThinkerTrainConfig) -> dict[str, Any]:
    """Run the config's stage (see the module docstring); returns a summary (global_step, losses, final/ path)."""
    return train_grpo(config) if config.stage == "grpo" else train_sft(config)


def train_sft(config: ThinkerTrainConfig) -> dict[str, Any]:
    """Stage sft: `SFTTrainer` on the sft split; writes output_dir/final and summary.json."""
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
        **shared_trainer_arguments(config, output_dir, accumulation),
        max_length=config.max_length,
        completion_only_loss=True,  # the loss is on the EditThinker target, never on the prompt
    )
    trainer = _SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                          callbacks=[MetricsCallback(MetricsLogger(output_dir, step_key="step"))])
    if not config.progress:
        trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=resume_argument(config.resume_from, output_dir / "checkpoints"))
    final = output_dir / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    summary = {"stage": config.stage, "global_step": trainer.state.global_step, "train_loss": result.training_loss,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "rows": len(dataset), "gradient_accumulation_steps": accumulation, "frozen": frozen, "final": str(final)}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

