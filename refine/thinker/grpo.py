"""Stage grpo of `refine train thinker`: TRL's `GRPOTrainer` with EditThinker's rewards (paper Sec. 3.3.2).

Example (the TRL settings a config turns into; the paper's are the stage's defaults):
    >>> from refine.thinker.grpo import grpo_arguments
    >>> from refine.thinker.train_config import ThinkerTrainConfig
    >>> config = ThinkerTrainConfig(model="m", dataset="d", stage="grpo", per_device_batch_size=16)
    >>> args = grpo_arguments(config, "/tmp/refine-grpo-doctest", accumulation=8)
    >>> args.num_generations, args.beta, args.loss_type, args.learning_rate, args.generation_batch_size
    (8, 0.001, 'grpo', 2e-06, 128)
    >>> args.reward_weights
    [0.1, 0.3, 0.6]

Run it with `refine train thinker --config thinker_train/shapes-grpo --stage grpo` (CPU, the
bundled ShapeEdit editor) or, the paper's setting, `thinker_train/qwen3-vl-8b-grpo` (its header
gives the `trl vllm-serve` and `accelerate launch` commands).

What happens, in order:

1. Rows: the `rl` split of `refine thinker data` (`refine.thinker.trl_rows`): `prompt` (system +
   user with image placeholders), `images` = [I_src, I_{t-1}], and the columns the rewards read
   (`semantic`, `quality`, `instruction`, `meta`, `seed`, `trajectory_id`, `step`). The expert's
   `completion` is dropped: GRPO samples its own. With `image_size`, every prompt image is
   pad-resized to that size (aspect kept, black borders) and the stored ones travel on as
   `original_images` for the editor and the judge.
2. Model: the SFT model (`model`: its final/), vision tower frozen by default. TRL builds the
   reference model for the KL term itself (`beta` > 0).
3. Rewards (`refine.thinker.grpo_rewards`): `format_reward`, `critic_reward` and
   `EditReward(editor, judge)`; the editor is `editor` (an `EditorSpec`, as in
   `refine thinker data`), the judge `judge` (a rewards-layer spec, built by the registry).
   `edit_reward: reference_match` puts `ReferenceMatchReward` in R_edit's place instead (rows
   with a `reference` column, e.g. `refine thinker first-turn`'s; no editor is loaded).
4. `GRPOTrainer` with the paper's settings passed explicitly (TRL's defaults differ: beta 0,
   loss "dapo"): `num_generations` rollouts per prompt, `batch_size` completions per optimizer
   step (gradient accumulation computed from the processes, as in SFT), `loss_type="grpo"`,
   `scale_rewards="group"`, `beta`, `reward_weights` = (alpha, beta, gamma).
5. `output_dir/final` (model + processor, a transformers folder), `metrics.jsonl` (loss, KL,
   each reward's mean and std, `edit/judge_before` / `edit/judge_after`, editor calls) and
   `summary.json`.

**TRL's known limits with VLM GRPO, and what this code does about them** (TRL 1.16):

* Image placeholders expanded twice with vLLM (huggingface/trl#6294, open; fixes proposed in
  huggingface/trl#6718 and #6719): TRL hands vLLM the *processor-expanded* prompt token IDs.
  In server mode, `VLLMGeneration._place_features` re-locates each image's features from the
  runs of image tokens in those IDs, and the server computes the features with its own
  processor: when the server's resize of an image gives another token count than the trainer's
  (mixed image sizes, other min/max pixels), the features no longer fit their placeholders, and
  generation fails or the rollouts are garbage. Handling: `image_size` pad-resizes every prompt
  image to one size (choose sides that are multiples of the model's patch x merge size, 28 for
  Qwen2.5-VL, 32 for Qwen3-VL, inside its min/max pixels, so both processors keep it unchanged),
  and a run with `use_vllm`, server mode and images of several sizes without `image_size` is
  refused with a `ConfigError` that says to set it. Start the server with the same processor
  settings as the checkpoint (it reads them from the same folder).
* Large images can stall server-mode generation (huggingface/trl#5361: base64 payloads);
  `image_size` bounds them too (the paper caps images at 1024 x 1024 pixels).
* Several images per prompt need grid metadata to split `pixel_values` per sample
  (huggingface/trl#4488, fixed for Qwen-style `image_grid_thw` models, which ours are).
* A learned thinker sees padded images at training time; serve it the same way
  (`VLMThinker(image_size=...)`, or `image_size` in the `thinker` refiner's config, pads with the
  same `fit_image`) or train with `image_size: null` when all images already have one size
  (ShapeEdit's do: 32 x 32).

Think before edit (`refine.thinker.first_turn_rows`, preset `thinker_train/shapes-grpo-before`):
rows that show only the source, a rewrite-only prompt set (`prompt: shapes-rewrite`, the reply is
the instruction) and R_edit against the plain edit with the same seed.

Tests: the rewards on hand-built replies, one GRPO step on the tiny random Qwen2.5-VL that writes
a loadable final/, and one learning test of the think-before-edit path (an editor that pays short
instructions: E(I^t) rises). What GRPO does to the ShapeEdit VLM's rewrite: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from refine._compat import ensure_torchvision_importable
from refine.errors import ConfigError
from refine.registry import registry
from refine.thinker.data import build_editor
from refine.thinker.grpo_rewards import (
    EditReward,
    ReferenceMatchReward,
    answer_format_reward,
    answer_instruction,
    critic_reward,
    format_reward,
    no_critic_reward,
)
from refine.thinker.prompts import get_prompts
from refine.thinker.train_config import ThinkerTrainConfig, accumulation_steps, freeze_vision_tower, load_rows, shared_trainer_arguments
from refine.thinker.vlm import KEEP_REPLY, fit_image

ensure_torchvision_importable()  # before transformers' processors import torchvision (see refine._compat)

from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from refine.training.metrics import MetricsLogger  # noqa: E402
from refine.training.trainer_checkpoint import load_checkpoint_weights, resume_argument  # noqa: E402
from refine.training.trainer_metrics import MetricsCallback  # noqa: E402

# What the rewards read from each row (refine.thinker.grpo_rewards), besides prompt and images.
REWARD_COLUMNS = ("semantic", "quality", "instruction", "meta", "seed", "trajectory_id", "step")


class _GRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` whose resume reads the checkpoint's weights through `from_pretrained` (`refine.training.trainer_checkpoint`)."""

    _load_from_checkpoint = load_checkpoint_weights


def grpo_rows(config: ThinkerTrainConfig) -> Dataset:
    """The rows GRPO trains on (step 1 of the module docstring); refuses what TRL cannot run."""
    references = ("reference",) if config.edit_reward == "reference_match" else ()
    rows = load_rows(config, columns=("prompt", "images") + REWARD_COLUMNS + references)
    if len(rows) == 0:
        raise ConfigError(f"{config.dataset}: split {config.split!r} is empty; lower variance_threshold in refine thinker data to send trajectories to RL")
    if "completion" in rows.column_names:
        rows = rows.remove_columns("completion")
    if config.image_size is not None:
        size = tuple(config.image_size)
        rows = rows.map(lambda row: {"original_images": row["images"], "images": [fit_image(i, size) for i in row["images"]]})
    elif config.use_vllm and config.vllm_mode == "server":
        sizes = sorted({image.size for images in rows["images"] for image in images})
        if len(sizes) > 1:
            raise ConfigError(f"the prompt images have {len(sizes)} sizes (e.g. {sizes[:3]}); vLLM server mode needs one: "
                              "set image_size: [W, H] (see refine.thinker.grpo, TRL issue 6294)")
    return rows


def build_judge(spec: Any):
    """E of R_edit: a rewards-layer reward from its spec (a kind name or {kind: ..., ...})."""
    return registry.build("reward", spec)


def build_rewards(config: ThinkerTrainConfig) -> list:
    """[R_format, R_critic, R_edit] in the order of `reward_weights` (the editor loads here, unless R_edit is `reference_match`).

    A rewrite-only prompt set (`output_style="answer"`) is read as the loop reads it: the reply is
    the instruction, and it holds no score to criticise.
    """
    style = get_prompts(config.prompt).output_style
    if style == "think":
        raise ConfigError(f"prompt={config.prompt!r} (output_style 'think': <think> then <answer>, no score) has no GRPO "
                          "reward reader yet; use a prompt set with scores or shapes-rewrite")
    reader = {"answer_of": answer_instruction, "keep": KEEP_REPLY} if style == "answer" else {}  # read replies as the loop does
    if config.edit_reward == "reference_match":  # no editor to load
        edit = ReferenceMatchReward(**reader)
    else:
        edit = EditReward(build_editor(config.editor), build_judge(config.judge), **reader)
    return [answer_format_reward, no_critic_reward, edit] if style == "answer" else [format_reward, critic_reward, edit]


def grpo_arguments(config: ThinkerTrainConfig, output_dir: str | Path, accumulation: int) -> GRPOConfig:
    """TRL's `GRPOConfig` for `config`, every setting the paper fixes passed explicitly."""
    weights = config.reward_weights
    return GRPOConfig(
        **shared_trainer_arguments(config, output_dir, accumulation),
        generation_batch_size=config.generation_batch_size,
        num_generations=config.num_generations,
        beta=config.beta,  # explicit: TRL's default is 0 (no KL, no reference model)
        loss_type=config.loss_type,  # explicit: TRL's default is "dapo"
        scale_rewards=config.scale_rewards,
        epsilon=config.epsilon,
        num_iterations=config.num_iterations,
        reward_weights=[weights.format, weights.critic, weights.edit],
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        vllm_server_base_url=config.vllm_server_base_url,
        remove_unused_columns=False,  # the rewards read the extra columns
    )


def train_grpo(config: ThinkerTrainConfig) -> dict[str, Any]:
    """Run stage grpo (see the module docstring); returns the summary written to summary.json."""
    torch.set_num_threads(config.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = grpo_rows(config)
    model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.bfloat16 if config.bf16 else torch.float32)
    processor = AutoProcessor.from_pretrained(config.model, padding_side="left")  # as TRL loads it: rollouts are left-padded
    frozen = freeze_vision_tower(model) if config.freeze_vision else None
    processes = max(1, int(os.environ.get("WORLD_SIZE", "1")))  # set by accelerate / torchrun
    accumulation = accumulation_steps(config, processes)
    rewards = build_rewards(config)
    trainer = _GRPOTrainer(model=model, reward_funcs=rewards, args=grpo_arguments(config, output_dir, accumulation),
                           train_dataset=rows, processing_class=processor,
                           callbacks=[MetricsCallback(MetricsLogger(output_dir, step_key="step"))])
    if not config.progress:
        trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=resume_argument(config.resume_from, output_dir / "checkpoints"))
    final = output_dir / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    logs = [log for log in trainer.state.log_history if "reward" in log]
    reward_keys = [key for key in (logs[-1] if logs else {}) if key.startswith("rewards/") and key.endswith("/mean")]
    summary = {"stage": config.stage, "global_step": trainer.state.global_step, "train_loss": result.training_loss,
               "rows": len(rows), "num_generations": config.num_generations, "gradient_accumulation_steps": accumulation,
               "frozen": frozen, "first_reward": logs[0]["reward"] if logs else None, "last_reward": logs[-1]["reward"] if logs else None,
               "last_rewards": {key: logs[-1][key] for key in reward_keys}, "final": str(final)}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
