"""Train the ShapeEdit VLM with TRL's `SFTTrainer`: `refine train vlm --config examples/configs/vlm/shapes.yaml`.

Example (tiny sizes, two steps):
    >>> import tempfile
    >>> from refine.shapes.vlm.train import VLMTrainConfig, train
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     config = VLMTrainConfig(output_dir=folder, model={"tiny": True}, max_steps=2, batch_size=2, progress=False,
    ...                             data={"cases": 2, "seeing_per_case": 1, "judge_per_case": 1, "editor": False})
    ...     summary = train(config)
    >>> summary["global_step"]
    2

The recipe, top to bottom:
1. the model: `init_from` (a previous stage's `final/`), else a fresh `build_shapes_vlm` in `init/`,
   its language model re-initialised with an untied head if `reinit_language` (`model.reinit_language_model`),
   then deepened by `grow_depth` (`grow.py`: zero-output copies, the same answers);
   with `tower.steps`, its vision tower is first trained on per-cell heads (`tower.py`) and the
   model saved to `tower/` (reused by a resumed run), metrics in `tower_metrics.jsonl`;
2. the data: `output_dir/dataset` (built once from the training stream by `data.build_dataset`,
   then read back, so a resumed run trains on the same rows);
3. `SFTTrainer` on the conversational prompt-completion dataset with images: TRL's vision collator
   renders the chat template, fills the image placeholders, and puts the loss on the completion;
4. checkpoints every `save_steps` in `output_dir/checkpoints` (model, optimizer, scheduler, RNG,
   step: `--resume` continues exactly there), metrics in `output_dir/metrics.jsonl`;
5. the trained model and its processor in `output_dir/final`, a standard transformers folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import typer
from datasets import load_from_disk

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before transformers' processors import torchvision (see refine._compat)

from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from refine.errors import ConfigError  # noqa: E402
from refine.shapes.vlm.config import VLMTrainConfig  # noqa: E402
from refine.shapes.vlm.data import build_dataset  # noqa: E402
from refine.shapes.vlm.grow import grow_language_depth  # noqa: E402
from refine.shapes.vlm.model import build_shapes_vlm, reinit_language_model  # noqa: E402
from refine.shapes.vlm.probes import image_dependence, probe_scenes  # noqa: E402
from refine.shapes.vlm.tower import pretrain_tower  # noqa: E402
from refine.training.metrics import MetricsLogger  # noqa: E402
from refine.training.trainer_checkpoint import load_checkpoint_weights, resume_argument  # noqa: E402
from refine.training.resume import resume_from_flag  # noqa: E402
from refine.training.trainer_metrics import MetricsCallback  # noqa: E402


def _image_dependence_every(processor, probe_every: int):
    """`MetricsCallback.extra`: the model's `image_dependence` on held-out stream scenes every `probe_every` steps."""
    scenes = probe_scenes()

    def extra(state, model, row: dict) -> dict:
        if model is not None and "loss" in row and state.global_step % probe_every == 0:
            return {"image_dependence": image_dependence(model, processor, scenes)}
        return {}

    return extra


class _SFTTrainer(SFTTrainer):
    """`SFTTrainer` whose resume reads the checkpoint's weights through `from_pretrained`
    (`refine.training.trainer_checkpoint`), with a scaled learning rate for the vision tower."""

    vision_lr_scale: float = 1.0

    _load_from_checkpoint = load_checkpoint_weights

    def create_optimizer(self, model=None):
        """The Trainer's AdamW, with the vision parameters' learning rate scaled by `vision_lr_scale`.

        The Trainer's learning-rate schedule multiplies each group's own initial rate, so the
        vision groups keep the same warm-up and decay at a fraction of the peak.
        """
        if self.vision_lr_scale == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups.setdefault((name in decay, _is_vision(name)), []).append(parameter)
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        lr = self.args.learning_rate
        self.optimizer = optimizer_cls(
            [{"params": params, "weight_decay": self.args.weight_decay if decays else 0.0,
              "lr": lr * self.vision_lr_scale if vision else lr} for (decays, vision), params in groups.items()],
            **kwargs)
        return self.optimizer


def _is_vision(name: str) -> bool:
    """Whether a parameter belongs to the vision tower or its merger (`model.visual.*` in transformers 5)."""
    return ".visual." in f".{name}"


def freeze_vision_parameters(model, tower: bool, merger: bool) -> int:
    """Stop gradients into the vision tower (patch embedding, blocks) and/or its merger; returns how many tensors froze."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if not _is_vision(name):
            continue
        in_merger = ".merger." in name
        if (merger and in_merger) or (tower and not in_merger):
            parameter.requires_grad_(False)
            frozen += 1
    return frozen


def _pretrained_tower(model_dir: Path, output_dir: Path, config: VLMTrainConfig) -> Path:
    """`output_dir/tower`: the model of `model_dir` with its vision tower pretrained (once; a rerun reuses it)."""
    tower_dir = output_dir / "tower"
    if not (tower_dir / "config.json").is_file():
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(model_dir)
        with MetricsLogger(output_dir, filename="tower_metrics.jsonl", step_key="tower_step") as logger:
            logger.resume_at(None)
            pretrain_tower(model, processor, config.tower, logger=logger)
        model.save_pretrained(tower_dir)
        processor.save_pretrained(tower_dir)
    return tower_dir


def train(config: VLMTrainConfig) -> dict[str, Any]:
    """Run one SFT stage (see the module docstring); returns a summary (global_step, final loss, final/ path)."""
    torch.set_num_threads(config.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # 1. the model
    if config.init_from is not None:
        model_dir = Path(config.init_from)
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"init_from={config.init_from!r} has no config.json; give a previous stage's final/ folder")
    else:
        model_dir = output_dir / "init"
        if not (model_dir / "config.json").is_file():
            build_shapes_vlm(model_dir, config.model.size(), seed=config.seed)
    if config.tower.steps:
        model_dir = _pretrained_tower(model_dir, output_dir, config)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    # before any checkpoint is read: a resumed run loads its weights into the untied, grown model
    if config.reinit_language:
        reinit_language_model(model, seed=config.seed)
    grow_language_depth(model, config.grow_depth)
    processor = AutoProcessor.from_pretrained(model_dir)
    # a judge stage must not collapse a seeing tower (benchmarks/RESULTS.md, "The ShapeEdit VLM as a judge")
    freeze_vision_parameters(model, tower=config.freeze_vision or config.vision_lr_scale == 0,
                             merger=config.freeze_merger or config.vision_lr_scale == 0)
    # 2. the data (built once: a resumed run must see the same rows)
    data_dir = output_dir / "dataset"
    if not (data_dir / "dataset_info.json").is_file():
        build_dataset(config.data, progress=config.progress).save_to_disk(str(data_dir))
    dataset = load_from_disk(str(data_dir))
    # 3. TRL
    checkpoints = output_dir / "checkpoints"
    args = SFTConfig(
        output_dir=str(checkpoints),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=True,
        # fp32: TRL's SFTConfig defaults to bf16, which sets accelerate's process-wide state to bf16
        # autocast; every later Accelerator in the process (the RL trainers' make_accelerator("no"))
        # would then be refused, and a tiny CPU model gains nothing from bf16
        bf16=False,
        report_to=[],
        max_length=None,  # prompts are ~220 tokens; never truncate the answer away
        dataloader_num_workers=0,
        disable_tqdm=not config.progress,
        save_only_model=False,  # optimizer, scheduler and RNG too: exact resume
    )
    trainer = _SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         callbacks=[MetricsCallback(MetricsLogger(output_dir, step_key="step"),
                                                    extra=_image_dependence_every(processor, config.probe_every) if config.probe_every else None)])
    trainer.vision_lr_scale = config.vision_lr_scale
    if not config.progress:
        trainer.remove_callback(PrinterCallback)  # quiet means quiet: the logs are in metrics.jsonl
    # 4. train (resume: the newest checkpoint, or the one named)
    result = trainer.train(resume_from_checkpoint=resume_argument(config.resume_from, checkpoints))
    # 5. the final model, loadable with plain transformers
    final = output_dir / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None, "final": str(final)}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def cli(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name, e.g. examples/configs/vlm/shapes.yaml."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. max_steps=100 data.cases=200."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir/checkpoints."),
) -> None:
    """Train the ShapeEdit VLM with TRL's SFTTrainer (writes init/, dataset/, checkpoints/, final/, metrics.jsonl)."""
    from refine.config import load_config
    from refine.paths import check_output_dir
    from refine.presets import find_preset

    cfg = load_config(VLMTrainConfig, find_preset(config), overrides or [])
    check_output_dir(cfg.output_dir, "output_dir")  # before any compute
    cfg.resume_from = resume_from_flag(resume, cfg.resume_from)
    typer.echo(json.dumps(train(cfg), indent=2))
