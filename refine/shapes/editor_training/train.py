"""Base training of ShapeEdit's editor: rectified flow on the ShapeEdit stream, with accelerate.

Example (a tiny run; the real one is `refine train base --config examples/configs/base/shapes.yaml`):
    >>> from refine.shapes.editor_training import BaseTrainConfig, train
    >>> config = BaseTrainConfig(output_dir="/tmp/base-demo", max_steps=2, warmup_steps=0, decay_steps=1,
    ...                          batch_size=2, model={"layers": 1, "width": 32, "heads": 2}, eval={"every": 0})
    >>> config.model.layers, config.eval.every
    (1, 0)
    >>> summary = train(config)                                   # doctest: +SKIP
    >>> summary["step"], summary["final_dir"]                     # doctest: +SKIP
    (2, '/tmp/base-demo/final')

The loop, top to bottom (`train`):
1. Devices and threads (`refine.training.accelerate_setup`: device, mixed precision, processes);
   a resume checks the saved config first (`refine.training.resume`, safe fields in `RESUME_SAFE`).
2. The editor (`build_shapes_backbone`, or `init_from`), an EMA of its weights
   (`refine.training.shadows.ShadowWeights` with diffusers' warm-up schedule: the EMA is what
   evaluation samples with and what is exported), AdamW and the learning-rate schedule.
3. Resume: model, EMA, optimizer, schedule, RNG and step from a checkpoint.
4. Data: batch k is a pure function of (seed, k) (`ShapesBatches`), so the data position after
   a resume is the step itself and nothing is replayed.
5. Steps: rectified-flow loss ``|| v(x_t, t) - (noise - x_0) ||^2`` with x_t = (1 - t) x_0 + t noise,
   t logit-normal (or uniform), the instruction dropped with probability `cfg_dropout`
   (so classifier-free guidance works); clip, step, EMA update (`objective.py`).
6. Every `log_every` steps a line in metrics.jsonl; every `eval.every` steps the EMA editor is
   scored by the ShapeEdit judge on a fixed subset (`refine.shapes.evaluate`), by its
   flow-matching loss on a fixed held-out batch (`validation_loss`) and by its one-step x0 errors at
   t = 1 on the edited and the kept pixels of that batch (`one_step_errors`); every
   `checkpoint_every` steps an atomic checkpoint.
7. The EMA editor is exported to `output_dir/final` (a folder `load_shapes_backbone` reads).

Checkpoints (`output_dir/checkpoints/checkpoint-001000/`) are written by the shared
`refine.training.checkpoint.CheckpointWriter` (complete or absent; `latest` names the newest):
`model` and `ema` (safetensors by parameter name), `optimizer.pt`, `scheduler.pt`, `rng-rank{r}.pt`
(global generators and the loop's own), `state.json` (step, seconds), and `editor/`, the EMA
weights as a loadable editor folder.

This module imports torch inside its functions: the CLI imports it for `refine --help`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import typer

from refine.errors import ArtifactError
from refine.shapes.editor_training.config import BaseTrainConfig

if TYPE_CHECKING:
    import torch

    from refine.backbones.shapes import ShapesBackbone
    from refine.training.shadows import ShadowWeights

__all__ = ["RESUME_SAFE", "cli", "find_checkpoint", "load_checkpoint", "save_checkpoint", "train"]

RESUME_SAFE: tuple[str, ...] = (
    "max_steps",  # upward only (fewer than done is refused); the schedule stretches to the new length
    "output_dir",
    "resume_from",
    "log_every",
    "wandb_project",
    "checkpoint_every",
    "keep_checkpoints",
    "save_dtype",
    "num_threads",
    "num_workers",
    "progress",
    "eval.*",  # evaluation reads the EMA and changes no training state
)
"""Config fields a resumed run may change; any other change is refused (`refine.training.resume`)."""


# ----------------------------------------------------------------------------------------------
# Checkpoints (the shared layer's writer; this trainer's files)
# ----------------------------------------------------------------------------------------------


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    backbone: "ShapesBackbone",
    ema: "ShadowWeights",
    optimizer: Any,
    scheduler: Any,
    generator: "torch.Generator",
    accelerator: Any,
    keep_last: int | None = None,
    save_dtype: str = "float16",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a resumable checkpoint `root/checkpoint-{step}` atomically (files in the module docstring)."""
    import torch

    from refine.training.checkpoint import CheckpointWriter, rng_state

    names, params = zip(*backbone.named_parameters())
    main = accelerator.is_main_process
    with CheckpointWriter(root, step, is_main=main, barrier=accelerator.wait_for_everyone, keep_last=keep_last) as writer:
        writer.save_torch(f"rng-rank{accelerator.process_index}", rng_state({"train": generator}), every_rank=True)
        writer.save_tensors("model", backbone.state_dict())
        writer.save_tensors("ema", ema.state_dict(names))
        writer.save_torch("optimizer", optimizer.state_dict())
        writer.save_torch("scheduler", scheduler.state_dict())
        writer.save_json("state", {"step": step, **(extra or {})})
        if main:
            with ema.swapped_into(list(params)):
                backbone.save_pretrained(writer.path / "editor", dtype=getattr(torch, save_dtype))
    return writer.final


def load_checkpoint(
    folder: str | Path, *, backbone: "ShapesBackbone", ema: "ShadowWeights", optimizer: Any, scheduler: Any,
    generator: "torch.Generator", rank: int = 0,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote, in place; returns the trainer state (with `step`)."""
    from refine.training.checkpoint import read_json, read_tensors, read_torch, set_rng_state

    names = [name for name, _ in backbone.named_parameters()]
    try:
        backbone.load_state_dict(read_tensors(folder, "model"))
        ema.load_state_dict(read_tensors(folder, "ema"), names)
    except (KeyError, RuntimeError) as err:
        raise ArtifactError(f"{folder}: does not fit this editor ({str(err).splitlines()[0]}); is it from another model size?") from None
    optimizer.load_state_dict(read_torch(folder, "optimizer"))
    scheduler.load_state_dict(read_torch(folder, "scheduler"))
    set_rng_state(read_torch(folder, f"rng-rank{rank}"), {"train": generator})
    return read_json(folder, "state")


def find_checkpoint(output_dir: str | Path, resume_from: str) -> Path:
    """The checkpoint folder named by `resume_from`: 'latest' (in output_dir/checkpoints) or a path."""
    from refine.training.checkpoint import is_complete, latest_checkpoint

    if resume_from != "latest":
        if not is_complete(resume_from):
            raise ArtifactError(f"resume_from={resume_from!r} is not a complete checkpoint folder (no COMPLETE marker)")
        return Path(resume_from)
    found = latest_checkpoint(Path(output_dir) / "checkpoints")
    if found is None:
        raise ArtifactError(
            f"--resume: no checkpoint in {Path(output_dir) / 'checkpoints'}; run without --resume to start fresh"
        )
    return found


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def train(config: BaseTrainConfig, *, make_stream: Callable[..., Iterator[Any]] | None = None, eval_cases: Sequence[Any] | None = None) -> dict[str, Any]:
    """Run the base training described by `config` (steps in the module docstring); returns a summary.

    `make_stream` replaces `refine.shapes.data.training_stream` and `eval_cases` the shapes-val
    subset (tests pass small ones). `config.num_threads` applies for the run only.
    """
    import torch

    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(config, make_stream, eval_cases)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: BaseTrainConfig, make_stream: Callable[..., Iterator[Any]] | None, eval_cases: Sequence[Any] | None) -> dict[str, Any]:
    import torch

    from refine.backbones.shapes import ShapesBackbone, build_shapes_backbone  # first: it makes diffusers importable

    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from refine.shapes.editor_training.data import ShapesBatches
    from refine.shapes.editor_training.objective import flow_matching_loss, one_step_errors, training_inputs, validation_loss
    from refine.shapes.evaluate import bench_subset, evaluate_editor
    from refine.training.accelerate_setup import make_accelerator
    from refine.training.checkpoint import read_json
    from refine.training.metrics import MetricsLogger
    from refine.training.resume import SAVED, check_resume_config
    from refine.training.shadows import ShadowWeights, warmup_decay

    # 1. Devices and threads (a missing checkpoint or a changed config fails before anything is built).
    checkpoint = find_checkpoint(config.output_dir, config.resume_from) if config.resume_from else None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    accelerator = make_accelerator(config.mixed_precision)
    output_dir = Path(config.output_dir)
    is_main = accelerator.is_main_process
    if checkpoint is not None:
        done = int(read_json(checkpoint, "state")["step"])
        check_resume_config(output_dir, config, safe=RESUME_SAFE, progress=("max_steps", done), write=is_main)
    if is_main and (checkpoint is None or not (output_dir / SAVED).is_file()):  # fresh, or resumed from another run's folder
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / SAVED).write_text(config.to_yaml())

    # 2. Editor, EMA, optimizer, schedule.
    if config.init_from:
        backbone = ShapesBackbone.from_pretrained(config.init_from)
    else:
        m = config.model
        backbone = build_shapes_backbone(
            m.layers, m.width, m.heads, text_layers=m.text_layers, max_text_length=m.max_text_length,
            default_guidance=m.default_guidance, default_steps=m.default_steps, shift=m.shift, prediction=m.prediction,
            qk_norm_init=m.qk_norm_init, seed=config.seed,
        )
    backbone.to(accelerator.device).train()
    params = list(backbone.parameters())
    ema = ShadowWeights(params)  # swapped into the editor for evaluation and export
    optimizer = torch.optim.AdamW(
        backbone.parameters(), lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay
    )
    processes = accelerator.num_processes
    # accelerate steps a prepared scheduler once per process per optimizer step.
    if config.lr_scheduler == "warmup_stable_decay":
        from transformers.optimization import get_wsd_schedule

        scheduler = get_wsd_schedule(
            optimizer, num_warmup_steps=config.warmup_steps * processes, num_decay_steps=config.decay_steps * processes,
            num_training_steps=config.max_steps * processes, decay_type="linear",
        )
    else:
        scheduler = get_scheduler(
            config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps * processes,
            num_training_steps=config.max_steps * processes,
        )
    model, optimizer, scheduler = accelerator.prepare(backbone, optimizer, scheduler)
    generator = torch.Generator().manual_seed(config.seed * 1000 + accelerator.process_index)

    # 3. Resume.
    step = 0
    state: dict[str, Any] = {}
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, backbone=backbone, ema=ema, optimizer=optimizer, scheduler=scheduler, generator=generator,
                                rank=accelerator.process_index)
        step = int(state["step"])
        accelerator.print(f"resumed from {checkpoint} at step {step}")
    metrics = MetricsLogger(output_dir, enabled=is_main, step_key="step", wandb_project=config.wandb_project,
                            run_config=config.model_dump(mode="json"))
    metrics.resume_at(step if checkpoint is not None else None)

    # 4. Data: batch index = step * processes + rank, so resuming at `step` is exact.
    batches = ShapesBatches(
        config.seed, config.batch_size, backbone.tokenizer, config.indirect_fraction, backbone.image_size, make_stream
    )
    indices = range(step * processes + accelerator.process_index, config.max_steps * processes, processes)
    # Its own generator: worker seeding must not draw from the global RNG that checkpoints restore.
    loader = DataLoader(
        batches, batch_size=None, sampler=indices, num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed)
    )
    empty = backbone.tokenize([""])
    empty = (empty[0].cpu(), empty[1].cpu())

    cases = val_batch = None
    if config.eval.every > 0 and is_main:
        cases = list(eval_cases) if eval_cases is not None else bench_subset(config.eval.direct_cases, config.eval.indirect_cases)
        if config.eval.loss_cases:
            # Held out: another base seed, so this batch is independent of every training batch.
            val_batch = ShapesBatches(
                config.seed + 1_000_003, config.eval.loss_cases, backbone.tokenizer, config.indirect_fraction, backbone.image_size, make_stream
            )[0]

    def run_eval() -> dict[str, Any]:
        with ema.swapped_into(params):  # the editor samples with the EMA weights; its own come back after
            result = evaluate_editor(
                backbone, cases, steps=config.eval.steps, guidance=config.eval.guidance, sampler=config.eval.sampler,
                seed=config.eval.seed, batch_size=config.eval.batch_size,
            )
            if val_batch is not None:
                result["val_loss"] = validation_loss(backbone, val_batch, seed=config.eval.seed)
                result.update(one_step_errors(backbone, val_batch, seed=config.eval.seed))
        metrics.write({"step": step, "eval": result})
        return result

    def checkpoint() -> None:
        save_checkpoint(
            output_dir / "checkpoints", step, backbone=backbone, ema=ema, optimizer=optimizer, scheduler=scheduler,
            generator=generator, accelerator=accelerator, keep_last=config.keep_checkpoints, save_dtype=config.save_dtype,
            extra={"seconds": seconds_before + time.perf_counter() - started},
        )

    # 5-6. Steps, logs, evaluations, checkpoints.
    seconds_before = float(state.get("seconds", 0.0))
    started = time.perf_counter()
    window_start, window_losses, grad_norm, last_eval = time.perf_counter(), [], None, None
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and is_main), mininterval=5, dynamic_ncols=True)
    for batch in loader:
        source, target, ids, mask, t, noise = training_inputs(
            batch, empty, generator, accelerator.device, cfg_dropout=config.cfg_dropout, timesteps=config.timesteps
        )
        loss = flow_matching_loss(
            model, source, target, ids, mask, t, noise, backbone,
            object_weight=config.object_weight, edit_weight=config.edit_weight,
        )
        accelerator.backward(loss)
        if config.max_grad_norm is not None:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update_(params, warmup_decay(step, config.ema_decay))  # update number `step` (0-based)
        step += 1
        window_losses.append(accelerator.reduce(loss.detach(), "mean").item())
        bar.update(1)

        if step % config.log_every == 0 or step == config.max_steps:
            now = time.perf_counter()
            record = {
                "step": step,
                "loss": sum(window_losses) / len(window_losses),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "steps_per_second": len(window_losses) / max(now - window_start, 1e-9),
                "minutes": round((seconds_before + now - started) / 60, 2),
            }
            metrics.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            window_start, window_losses = now, []
        if cases is not None and (step % config.eval.every == 0 or step == config.max_steps):
            last_eval = run_eval()
            val = (
                f", val_loss {last_eval['val_loss']:.4f}, edit_error {last_eval['edit_error']:.3f}" if "val_loss" in last_eval else ""
            )
            bar.write(f"step {step}: eval overall {last_eval['overall']:.3f} success {last_eval['success']:.3f}{val}")
        if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.max_steps:
            checkpoint()
    bar.close()

    # 7. Export the EMA editor.
    accelerator.wait_for_everyone()
    final_dir = output_dir / "final"
    summary = {"step": step, "final_dir": str(final_dir), "eval": last_eval,
               "minutes": round((seconds_before + time.perf_counter() - started) / 60, 2)}
    if is_main:
        tmp = output_dir / "final.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        with ema.swapped_into(params):
            backbone.save_pretrained(tmp, dtype=getattr(torch, config.save_dtype))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp, final_dir)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    accelerator.end_training()
    return summary


def cli(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name, e.g. examples/configs/base/shapes.yaml."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. max_steps=100 model.layers=2."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir (exact: model, EMA, optimizer, schedule, RNG, data)."),
) -> None:
    """Train ShapeEdit's editor by rectified flow (writes metrics.jsonl, checkpoints/ and final/ to output_dir)."""
    from refine.config import load_config
    from refine.paths import check_output_dir
    from refine.presets import find_preset
    from refine.training.resume import resume_from_flag

    cfg = load_config(BaseTrainConfig, find_preset(config), overrides or [])
    check_output_dir(cfg.output_dir, "output_dir")  # before any compute
    cfg.resume_from = resume_from_flag(resume, cfg.resume_from)
    summary = train(cfg)
    typer.echo(json.dumps(summary, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to summary.json")
