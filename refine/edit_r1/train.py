"""Edit-R1 training: DiffusionNFT (or Flow-GRPO) on a flow editor with a judge reward and low-std group filtering.

Example (the command line; `refine train edit-r1 --help` lists the options):
    >>> from typer.testing import CliRunner
    >>> from refine.cli import app
    >>> "--config" in CliRunner().invoke(app, ["train", "edit-r1", "--help"]).output
    True

From Python (`train` returns the metrics and where the LoRA was written)::

    from refine.config import load_config
    from refine.edit_r1 import EditR1Config, train
    config = load_config(EditR1Config, "examples/configs/edit_r1/shapes.yaml", ["train.iterations=10"])
    result = train(config)
    print(result.eval_history, result.lora_path)

One iteration of the loop in `train` (numbered as in the code):
1. take the iteration's requests (position-addressed: resume-safe);
2. roll out this process's slice of the G edits per request with the OLD policy (DPM-Solver;
   CFG-free under nft.cfg=free, else at rollout.guidance; Flow-GRPO: the SDE sampler, recording
   every step's log-probability; each sample seeded by (iteration, request, sample), whatever the
   process);
3. score them with the reward (failures -> NaN, counted, masked); when no sample of the iteration
   got a reward, nothing is trained or saved and the iteration is tried again (at most
   `train.max_reward_failures` times in a row, then the run stops naming the reward);
4. gather the raw rewards of all processes; group-normalise them (global or group std) into
   advantages, filter low-std groups, map to optimality r (eq. 7) (GRPO: clip the advantages to ±5);
5. update the trained policy: the NFT loss on the forward process (`update.nft_update`), or the
   clipped-ratio Flow-GRPO loss on the recorded SDE steps (`update.grpo_update`);
6. move the old policy towards the trained one (decay schedule; GRPO is on-policy: the old policy
   becomes the trained one) and update the EMA;
7. score the rollouts with the `track_rewards` too (logged as `track_<name>_mean`, never in the
   advantages: the exact judge beside an MLLM reward shows reward hacking), log metrics
   (JSONL/TensorBoard), evaluate the EMA on held-out requests, save sample grids;
8. checkpoint atomically (trained/old/EMA weights, optimizer, scheduler, RNG, step, counters;
   `refine.training`). A resume first compares the config with the saved one (`RESUME_SAFE`).

Sharded (accelerate FSDP2, `examples/accelerate/edit_r1_fsdp2.yaml`): the transformer is made
trainable, then `accelerator.prepare` shards it (a `fully_shard` per block), and only then are
the old policy and EMA built, from the shards: each process keeps 1/N of every policy and swaps
and updates them locally. Checkpoints hold the policies and the optimizer as torch distributed
checkpoints (each process writes its shards); the LoRA export gathers the whole adapter on every
process before the main one writes it. `train.frozen=shard` shards the frozen text encoder/VAE too.
All randomness is derived from (seed, iteration, request, sample) for rollouts and (seed,
iteration, process) for training noise, so a resumed run repeats exactly what the uninterrupted
run would have done.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from refine.edit_r1.config import EditR1Config
from refine.errors import BackendError, ConfigError


RESUME_SAFE: tuple[str, ...] = (
    "train.iterations",  # upward only (fewer than done is refused); a decaying lr schedule stretches to the new length
    "train.max_reward_failures",
    "eval.every",
    "log.*",  # output folder spelling, TensorBoard, samples, checkpoint cadence, progress bar
    "track_rewards*",  # logged only, never in the advantages
)
"""Config fields a resumed run may change; any other change is refused (`refine.training.resume`)."""


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        output_dir: where everything was written.
        iterations: iterations completed (including those of a resumed-from checkpoint).
        metrics: the per-iteration metric rows of this process's run (main process: also on disk).
        eval_history: (iteration, mean held-out judge score of the EMA weights) pairs.
        lora_path: the exported EMA LoRA folder (finetune=lora), else the exported transformer folder.
        weights_digest: SHA-256 of the full trained parameters at the end (equal on every process; gathered under FSDP2).
    """

    output_dir: Path
    iterations: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    lora_path: Path | None = None
    weights_digest: str = ""


def train(
    config: EditR1Config,
    *,
    backbone=None,
    reward: Callable | None = None,
    eval_reward: Callable | None = None,
    accelerator=None,
) -> TrainResult:
    """Run (or resume) the Edit-R1 training described by `config`.

    `backbone` / `reward` / `eval_reward` replace the ones the config's specs would build (tests
    and notebooks pass objects); `accelerator` an `accelerate.Accelerator` to use.
    """
    import torch
    from tqdm.auto import tqdm

    from refine.training import checkpoint as ckpt
    from refine.training.accelerate_setup import is_sharded, make_accelerator, require_supported
    from refine.training.sharding import load_optimizer_state, shard_frozen
    from refine.training.resume import SAVED, check_resume_config
    from refine.edit_r1.collect import process_items, rollout, score
    from refine.edit_r1.data import RequestSource, evaluation_requests
    from refine.edit_r1.evaluate import evaluate
    from refine.training.metrics import MetricsLogger
    from refine.training.shadows import decay_at
    from refine.edit_r1.samples import save_sample_grid
    from refine.training.policies import build_policies, frozen_modules, make_trainable
    from refine.edit_r1.update import GRPOBatch, TrainingBatch, grpo_update, nft_update
    from refine.training.timesteps import training_times
    from refine.registry import registry
    from refine.rollout.advantages import group_advantages, group_stats, low_std_keep_mask
    from refine.rollout.cfg import ConditionalOnly
    from refine.rollout.group import sample_seed
    from refine.rollout.objectives import optimality
    from refine.rollout.samplers import SamplerConfig

    # ---- setup ---------------------------------------------------------------------------------
    if accelerator is None:
        # find_unused_parameters: the last MM-DiT block's text-stream output (`to_add_out`) feeds
        # nothing, so its LoRA gets no gradient; DDP would otherwise never reduce that bucket and
        # the processes' weights would drift apart.
        accelerator = make_accelerator(config.train.mixed_precision, find_unused_parameters=True)
    rank, processes, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    require_supported(accelerator, "Edit-R1")  # single process, DDP or FSDP2
    sharded = is_sharded(accelerator)
    try:
        config.check_processes(processes)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    out = Path(config.log.output_dir)
    # A resume is checked before anything is built: a changed lora.rank must not reach the tensors.
    resume_from = ckpt.latest_checkpoint(out) if config.log.resume else None
    if resume_from is not None:
        done = ckpt.read_json(resume_from, "state")["iteration"]
        check_resume_config(out, config, safe=RESUME_SAFE, progress=("train.iterations", done), write=main)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        (out / SAVED).write_text(config.to_yaml())
    seed, groups, size = config.train.seed, config.rollout.groups_per_iteration, config.rollout.group_size
    items = process_items(groups, size, rank, processes)  # this process's (request, sample) slice
    mine = slice(rank * len(items), (rank + 1) * len(items))

    backbone = backbone if backbone is not None else registry.build("backbone", config.backbone)
    reward = reward if reward is not None else registry.build("reward", config.reward)
    if eval_reward is None:
        eval_reward = registry.build("reward", config.eval.reward) if config.eval.reward else reward
    trackers = {name: registry.build("reward", spec) for name, spec in config.track_rewards.items()}
    backbone.to(accelerator.device)
    trainable = make_trainable(
        backbone,
        finetune=config.train.finetune,
        lora_rank=config.lora.rank,
        lora_alpha=config.lora.alpha,
        lora_targets=config.lora.targets,
        lora_dropout=config.lora.dropout,
        seed=seed,
    )
    if config.train.gradient_checkpointing:
        backbone.transformer.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(
        trainable, lr=config.optim.lr, betas=config.optim.betas, weight_decay=config.optim.weight_decay, eps=config.optim.eps
    )
    accumulation = config.accumulation_steps(processes)
    steps_per_iteration = config.train.inner_epochs * math.ceil(config.micro_batches_per_iteration(processes) / accumulation)
    scheduler = _make_scheduler(config, optimizer, steps_per_iteration * config.train.iterations)
    # Only the transformer and the optimizer go through accelerate (DDP wrapper, mixed precision,
    # gradient scaling); the scheduler is stepped once per optimizer step by us (accelerate's
    # wrapper would step it once per process).
    model, optimizer = accelerator.prepare(backbone.transformer, optimizer)
    if sharded:
        # fully_shard works in place: the backbone's transformer is the sharded module
        if model is not backbone.transformer:
            raise ConfigError("accelerate's FSDP2 prepare returned a new module; Edit-R1 needs fully_shard in place (check the accelerate version)")
        if config.train.frozen == "shard":
            shard_frozen(frozen_modules(backbone), mesh=getattr(accelerator, "torch_device_mesh", None))
    # The shadows come from the prepared parameters: under FSDP2, this process's shards.
    kl = (config.grpo.kl_weight if config.objective == "grpo" else config.nft.kl_weight) > 0
    state = build_policies(backbone.transformer, finetune=config.train.finetune, kl=kl)

    source = RequestSource(config.data)
    eval_set = (
        evaluation_requests(config.eval.benchmark, config.eval.cases, config.eval.seed, config.eval.categories)
        if config.eval.benchmark
        else []
    )
    logger = MetricsLogger(out, tensorboard=config.log.tensorboard, wandb_project=config.log.wandb_project, enabled=main,
                           run_config=config.model_dump(mode="json"))
    rollout_log = MetricsLogger(out / "rollouts", filename=f"rank{rank}.jsonl")

    # ---- resume ----------------------------------------------------------------------------------
    start, counters, eval_history = 0, {"consecutive_reward_failures": 0, "filtered_groups_total": 0, "failed_groups_total": 0}, []
    if resume_from is not None:
        state.load(resume_from)
        if sharded:
            load_optimizer_state(model, optimizer, resume_from)
        else:
            optimizer.load_state_dict(ckpt.read_torch(resume_from, "optimizer"))
        scheduler.load_state_dict(ckpt.read_torch(resume_from, "scheduler"))
        ckpt.set_rng_state(ckpt.read_torch(resume_from, f"rng-rank{rank}"))
        saved = ckpt.read_json(resume_from, "state")
        start, counters, eval_history = saved["iteration"], saved["counters"], [tuple(e) for e in saved["eval_history"]]
    logger.resume_at(start if resume_from is not None else None)
    rollout_log.resume_at(start if resume_from is not None else None)
    accelerator.wait_for_everyone()

    # Rollout and evaluation policies. CFG-free (nft.cfg=free): sample the conditional velocity the
    # loss models, through a view of the backbone. Evaluation is deterministic (sde -> euler) and,
    # unless eval.guidance says otherwise, scores the policy that was trained.
    cfg_free = config.uses_cfg_free_rollouts()
    rollout_backbone = ConditionalOnly(backbone) if cfg_free else backbone
    rollout_sampler = SamplerConfig(
        name=config.rollout.sampler, steps=config.rollout.steps, noise_level=config.rollout.noise_level,
        sde_window=config.rollout.sde_window, guidance=config.rollout.guidance,
    )
    eval_backbone = rollout_backbone if config.eval.guidance is None else backbone
    eval_guidance = config.rollout.guidance if config.eval.guidance is None else config.eval.guidance
    eval_sampler = config.eval.sampler or ("euler" if config.rollout.sampler == "sde" else config.rollout.sampler)
    eval_steps = config.eval.steps or config.rollout.steps
    grpo = config.objective == "grpo"

    def run_eval(iteration: int, row: dict[str, Any]) -> None:
        if not eval_set:
            return
        eval_started = time.perf_counter()
        with state.ema.swapped_into(state.params):
            result = evaluate(
                eval_backbone, eval_set, eval_reward, sampler=eval_sampler, steps=eval_steps,
                guidance=eval_guidance, batch_size=config.rollout.max_batch, accelerator=accelerator,
            )
        row["eval_reward"] = result.mean
        row["seconds_eval"] = time.perf_counter() - eval_started
        eval_history.append((iteration, result.mean))
        wanted = config.log.sample_every and (iteration % config.log.sample_every == 0 or iteration == config.train.iterations)
        if main and wanted:
            count = min(config.log.sample_requests, len(result.images))
            save_sample_grid(out / "samples", iteration, result.sources[:count], result.images[:count])

    metrics: list[dict[str, Any]] = []
    if start == 0 and eval_set:
        row = {"iteration": 0}
        run_eval(0, row)
        logger.write(row)
        metrics.append(row)

    # ---- the loop --------------------------------------------------------------------------------
    progress = tqdm(initial=start, total=config.train.iterations, disable=not (main and config.log.progress), desc="edit-r1")
    reward_name = _reward_name(reward, config.reward)
    k = start  # iterations done; an iteration whose reward failed everywhere is retried, not counted
    while k < config.train.iterations:
        started, cpu_started = time.perf_counter(), time.process_time()
        # 1. The iteration's requests (every process sees all; it draws only its items).
        requests = source.take(k * groups, groups)

        # 2. Roll out with the old policy (GRPO: under the training forward's autocast, so that the
        # recorded log-probabilities are those the training forward replays).
        with state.old.swapped_into(state.params), (accelerator.autocast() if grpo else contextlib.nullcontext()):
            batch = rollout(
                rollout_backbone, requests, items, sampler=rollout_sampler, steps=None,
                seed=sample_seed(seed, k, 0), max_batch=config.rollout.max_batch, record=grpo,
            )

        # 3. Reward.
        scored = score(reward, batch, scale=config.advantage.reward_scale)

        # 4. Advantages over all samples of the iteration (the processes' slices, in order).
        rewards = accelerator.gather(scored.rewards.to(accelerator.device)).cpu()  # (groups * G,) request-major
        if bool(torch.isnan(rewards).all()):
            # Nothing to learn from: no update, no shadow move, no checkpoint; the same iteration
            # (same requests and seeds) is tried again, up to train.max_reward_failures times in a row.
            counters["consecutive_reward_failures"] += 1
            counters["reward_failed_attempts_total"] = counters.get("reward_failed_attempts_total", 0) + 1
            rollout_log.write({"iteration": k + 1, "rank": rank, "counted": False, "reward_error": scored.error})
            limit = config.train.max_reward_failures
            if limit and counters["consecutive_reward_failures"] >= limit:
                last = ckpt.latest_checkpoint(out)
                cause = (scored.error or "every score was None").splitlines()[0]
                raise BackendError(
                    f"reward {reward_name!r} gave no score in {counters['consecutive_reward_failures']} attempts in a row at "
                    f"iteration {k + 1} ({cause}); {k} iterations are done and {last or 'no checkpoint'} is intact: "
                    "fix the reward and rerun the same command to resume"
                )
            continue
        retries, counters["consecutive_reward_failures"] = counters["consecutive_reward_failures"], 0
        group_ids = torch.arange(groups).repeat_interleave(size)
        advantages = group_advantages(
            rewards, group_ids, std=config.advantage.std, clip=config.grpo.advantage_clip if grpo else None
        )
        valid = ~torch.isnan(rewards)
        mean, std, _ = group_stats(rewards, group_ids)
        confident = (mean > config.filter.tau_mu) & (std < config.filter.tau_sigma)  # per sample, of its group
        if config.filter.enabled:
            keep = low_std_keep_mask(rewards, group_ids, tau_mu=config.filter.tau_mu, tau_sigma=config.filter.tau_sigma) & valid
        else:
            keep = valid.clone()
        # The loss models the policy that sampled: the guided velocity unless rollouts were CFG-free.
        loss_guidance = None if cfg_free else batch.guidance

        # 5. Update (skipped on every process alike when no sample is left).
        update_started = time.perf_counter()
        generator = torch.Generator().manual_seed(sample_seed(seed + 1, k, rank))
        common = dict(
            accelerator=accelerator, optimizer=optimizer, scheduler=scheduler, generator=generator,
            micro_batch=config.train.micro_batch, accumulation=accumulation, epochs=config.train.inner_epochs,
            grad_clip=config.optim.grad_clip, skip=not bool(keep.any()),
        )
        if grpo:
            training = GRPOBatch(
                trajectory=batch.trajectory, cond=batch.training_conditions(negative=loss_guidance is not None),
                advantages=advantages[mine], keep=keep[mine], guidance=loss_guidance,
            )
            stats = grpo_update(
                backbone, model, state.params, state.reference_context(), training, clip_range=config.grpo.clip_range,
                kl_weight=config.grpo.kl_weight, timestep_fraction=config.grpo.timestep_fraction, **common,
            )
        else:
            r = optimality(advantages, config.advantage.clip)
            training = TrainingBatch(
                x0=batch.x0, cond=batch.training_conditions(negative=loss_guidance is not None), r=r[mine], keep=keep[mine],
                times=training_times(batch.schedule, config.nft.timestep_min, key="nft.timestep_min"),
            )
            stats = nft_update(
                backbone, model, state.params, state.old, state.reference_context(), training,
                times_per_sample=config.nft.timesteps_per_sample, beta=config.nft.beta, kl_weight=config.nft.kl_weight,
                weighting=config.nft.weighting, guidance=loss_guidance, **common,
            )
        update_seconds = time.perf_counter() - update_started

        # 6. Old policy follows the trained one (GRPO: is the trained one); EMA for evaluation and export.
        decay = 0.0 if grpo else decay_at(
            k, flat=config.policy.old_decay_flat, rate=config.policy.old_decay_rate, maximum=config.policy.old_decay_max
        )
        state.old.update_(state.params, decay)
        state.ema.update_(state.params, config.policy.ema_decay)

        # 7. Tracked rewards (the same rollouts, logged only), log, evaluate, samples.
        tracked = {name: score(tracker, batch) for name, tracker in trackers.items()}
        tracked_all = {name: accelerator.gather(t.rewards.to(accelerator.device)).cpu() for name, t in tracked.items()}
        failed_groups = int((~valid).view(groups, size).any(dim=1).sum())
        filtered_groups = int(confident.view(groups, size)[:, 0].sum()) if config.filter.enabled else 0
        counters["filtered_groups_total"] += filtered_groups
        counters["failed_groups_total"] += failed_groups
        row = {
            "iteration": k + 1,
            "reward_mean": float(rewards[valid].mean()) if valid.any() else float("nan"),
            "reward_std": float(rewards[valid].std(unbiased=False)) if valid.any() else float("nan"),
            **{f"track_{name}_mean": float(values.nanmean()) for name, values in tracked_all.items()},
            "filtered_groups": filtered_groups,
            "filtered_fraction": filtered_groups / groups,
            "failed_groups": failed_groups,
            "reward_retries": retries,
            "kept_fraction": float(keep.float().mean()),
            **stats.as_metrics(),
            "lr": scheduler.get_last_lr()[0],
            "old_decay": decay,
            "seconds_rollout": batch.seconds,
            "seconds_reward": scored.seconds,
            **({"seconds_track": sum(t.seconds for t in tracked.values())} if tracked else {}),
            "seconds_update": update_seconds,
        }
        iteration = k + 1
        row["cpu_seconds"] = time.process_time() - cpu_started  # all threads of this process, evaluation excluded
        eval_due = (config.eval.every and iteration % config.eval.every == 0) or iteration == config.train.iterations
        samples_due = config.log.sample_every and iteration % config.log.sample_every == 0
        if eval_due or samples_due:
            run_eval(iteration, row)
        row["seconds_iteration"] = time.perf_counter() - started
        logger.write(row)
        metrics.append(row)
        rollout_log.write({
            "iteration": iteration, "rank": rank,
            "requests": [requests[i].meta.get("case_id", requests[i].instruction) for i in sorted({r for r, _ in items})],
            "rewards": [None if math.isnan(v) else v for v in scored.rewards.tolist()],
            "reward_error": scored.error,
            **({"track": {name: [None if math.isnan(v) else v for v in t.rewards.tolist()] for name, t in tracked.items()}}
               if tracked else {}),
        })
        progress.set_postfix(reward=f"{row['reward_mean']:.3f}", filtered=filtered_groups)

        # 8. Checkpoint.
        every = config.log.checkpoint_every
        if (every and iteration % every == 0) or iteration == config.train.iterations:
            _save_checkpoint(out, iteration, state, model, optimizer, scheduler, counters, eval_history, accelerator, config)
        k = iteration
        progress.update(1)

    # ---- export ----------------------------------------------------------------------------------
    export = _export(out, state, backbone, config, main)
    accelerator.wait_for_everyone()
    logger.close()
    digest = weights_digest(state.params)
    return TrainResult(out, config.train.iterations, metrics, eval_history, export, digest)


def _reward_name(reward, spec) -> str:
    """What to call the reward in an error: its `name`, its config kind, or its Python name."""
    name = getattr(reward, "name", None) or (spec.get("kind") if isinstance(spec, dict) else getattr(spec, "kind", None))
    return str(name or getattr(reward, "__name__", None) or type(reward).__name__)


def _make_scheduler(config: EditR1Config, optimizer, total_steps: int):
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        config.optim.scheduler, optimizer, num_warmup_steps=config.optim.warmup_steps, num_training_steps=max(total_steps, 1)
    )


def weights_digest(params) -> str:
    """SHA-256 of the full trained parameters (gathered first when sharded; a collective then)."""
    from refine.training.sharding import full_tensors

    full = full_tensors({str(i): p for i, p in enumerate(params)})
    return hashlib.sha256(b"".join(full[str(i)].numpy().tobytes() for i in range(len(params)))).hexdigest()


def _save_checkpoint(out, iteration, state, model, optimizer, scheduler, counters, eval_history, accelerator, config) -> None:
    from refine.training.checkpoint import CheckpointWriter, rng_state
    from refine.training.lora import save_lora
    from refine.training.sharding import optimizer_state

    main = accelerator.is_main_process
    with CheckpointWriter(out, iteration, is_main=main, barrier=accelerator.wait_for_everyone, keep_last=config.log.keep_last) as writer:
        writer.save_torch(f"rng-rank{accelerator.process_index}", rng_state(), every_rank=True)
        state.save(writer)
        if state.sharded:
            writer.save_distributed("optimizer", optimizer_state(model, optimizer))
        else:
            writer.save_torch("optimizer", optimizer.state_dict())
        writer.save_torch("scheduler", scheduler.state_dict())
        writer.save_json("state", {"iteration": iteration, "counters": counters, "eval_history": eval_history,
                                   "processes": accelerator.num_processes})
        if config.train.finetune == "lora" and (main or state.sharded):
            with state.ema.swapped_into(state.params):  # the EMA adapter, ready for the Refiner (gathered when sharded)
                save_lora(state.transformer, writer.path / "lora", write=main)


def _export(out: Path, state, backbone, config: EditR1Config, main: bool) -> Path:
    """The EMA weights as a diffusers LoRA folder (or, for full fine-tuning, a transformer folder)."""
    from refine.training.lora import save_lora

    from refine.training.sharding import full_model_state, save_full_transformer

    target = out / ("lora" if config.train.finetune == "lora" else "transformer")
    if not (main or state.sharded):
        return target
    # Sharded: every process takes part in the gather, the main one writes.
    with state.ema.swapped_into(state.params):
        if config.train.finetune == "lora":
            save_lora(state.transformer, target, write=main)
        elif state.sharded:
            full = full_model_state(state.transformer)
            if main:
                save_full_transformer(state.transformer, full, target)
        else:
            state.transformer.save_pretrained(target, safe_serialization=True)
    return target


def cli(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name (e.g. edit_r1/shapes = examples/configs/edit_r1/shapes.yaml)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. train.iterations=20 log.output_dir=runs/x"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the memory plan per GPU for this config and exit (loads nothing; docs/scaling.md)."),
    gpus: int = typer.Option(0, "--gpus", help="GPUs the --dry-run plan assumes (default: $WORLD_SIZE, else 8)."),
    gpu_gib: float = typer.Option(80.0, "--gpu-gib", help="Memory of one GPU in GiB for --dry-run."),
) -> None:
    """Post-train an editor with Edit-R1 (DiffusionNFT + judge reward + low-std group filtering).

    Several processes: `accelerate launch --config_file examples/accelerate/edit_r1_ddp.yaml -m refine.edit_r1.train
    --config ...` (see examples/configs/edit_r1/README.md and docs/scaling.md).
    """
    from refine.config import load_config
    from refine.paths import check_output_dir
    from refine.presets import find_preset

    settings = load_config(EditR1Config, find_preset(config), overrides or [])
    if dry_run:
        from refine.training.memory_plan import dry_run_report

        world = gpus or int(os.environ.get("WORLD_SIZE", 0)) or 8
        typer.echo(dry_run_report(settings.backbone, finetune=settings.train.finetune, lora_rank=settings.lora.rank,
                                  micro_batch=settings.train.micro_batch, gpus=world, gpu_gib=gpu_gib))
        return
    check_output_dir(settings.log.output_dir, "log.output_dir")  # before any compute
    result = train(settings)
    if result.eval_history:
        first, last = result.eval_history[0], result.eval_history[-1]
        typer.echo(f"held-out judge reward: {first[1]:.4f} (iteration {first[0]}) -> {last[1]:.4f} (iteration {last[0]})")
    typer.echo(f"weights: {result.lora_path}")


if __name__ == "__main__":  # `torchrun -m refine.edit_r1.train --config ...` / `accelerate launch -m ...`
    import sys

    from refine.cli import main as _main

    _main(["train", "edit-r1", *sys.argv[1:]])
