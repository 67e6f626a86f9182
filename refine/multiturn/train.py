"""MT-EditFlow training: multi-turn group rollouts, per-turn rewards, fused advantages broadcast over turns, NFT.

Example (the rewards a config describes; `refine train multiturn --config ...` runs the loop):
    >>> from refine.config import load_config
    >>> from refine.multiturn.config import MultiTurnConfig
    >>> from refine.multiturn.train import build_rewards
    >>> build_rewards(load_config(MultiTurnConfig, overrides=["reward.quality.kind=shapes"])).names
    ('if', 'cc', 'quality')

From Python::

    from refine.config import load_config
    from refine.multiturn import MultiTurnConfig, train
    config = load_config(MultiTurnConfig, "examples/configs/multiturn/shapes.yaml", ["train.iterations=4"])
    result = train(config)
    print(result.eval_history, result.lora_path)

One iteration of the loop in `train` (numbered as in the code):
1. take the iteration's S sequences (position-addressed: resume-safe);
2. roll out G independent K-turn trajectories per sequence with the OLD policy, each turn
   editing the trajectory's previous output (`refine.rollout.multiturn.rollout_turns`; noise
   seeded by (seed, iteration, sequence, sample, turn));
3. score every turn: IF, CC against the original, optional quality (`rewards.TurnRewards`);
4. advantages, in the pinned order: aggregate over turns per reward -> normalise per reward
   within the group -> fuse with weights (1 - λ_CC, λ_CC) -> broadcast over the turns
   (`refine.rollout.advantages.multiturn_advantages`); optimality r per (trajectory, turn);
5. NFT update on every (trajectory, turn) sample (`update.nft_update`);
6. the old policy follows the trained one; the EMA too;
7. log per-turn rewards, O and success; evaluate the EMA on shapes-mt-val sequences (with
   `eval.reward` when set: ShapeEdit's exact O held out while an MLLM judge is the reward);
8. checkpoint atomically (trained/old/EMA weights, optimizer, scheduler, RNG, counters); stop
   early, after a checkpoint, when `train.max_cpu_seconds` is spent (rerun to resume).
A resumed run repeats exactly what the uninterrupted run would have done (tested bitwise).

Several processes (accelerate DDP: `accelerate launch --multi_gpu ...`, or `torchrun`): each
process rolls out the trajectories of its S / P sequences (whole groups, seeded by their global
sequence index, so the noise does not depend on P), the per-turn rewards of all processes are
gathered and the advantages computed over the whole iteration exactly as on one process, and each
process trains on its own samples with the forward through the DDP wrapper (gradients averaged
once per optimizer step). The main process evaluates, logs, checkpoints and exports. Sharded
training (FSDP2) is Edit-R1's only; MT-EditFlow refuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from refine.backbones.base import concat_conditions
from refine.errors import BackendError, ConfigError
from refine.multiturn.config import MultiTurnConfig
from refine.multiturn.data import SequenceSource, evaluation_sequences
from refine.multiturn.evaluate import evaluate, score_batch, turn_summary
from refine.multiturn.rewards import TurnRewards
from refine.multiturn.update import TurnSamples, TurnSteps, flatten_turns, grpo_update, nft_update
from refine.registry import registry
from refine.rollout.advantages import multiturn_advantages
from refine.rollout.cfg import ConditionalOnly
from refine.rollout.group import sample_seed
from refine.rollout.multiturn import rollout_turns
from refine.rollout.trajectory import Trajectory
from refine.rollout.objectives import optimality
from refine.training.accelerate_setup import make_accelerator, require_replicated
from refine.training.checkpoint import CheckpointWriter, latest_checkpoint, read_json, read_torch, rng_state, set_rng_state
from refine.training.lora import ATTENTION_TARGETS, save_lora
from refine.training.metrics import MetricsLogger
from refine.training.policies import setup_policies
from refine.training.resume import check_resume_config
from refine.training.shadows import decay_at
from refine.training.timesteps import training_times

# What a resumed run may change (anything else would silently disagree with the restored state).
RESUME_SAFE = ("train.iterations", "train.max_cpu_seconds", "log.*", "eval.every")


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        output_dir: where everything was written.
        iterations: iterations completed (including those of a resumed-from checkpoint).
        metrics: the per-iteration rows of this invocation.
        eval_history: (iteration, held-out O at the last turn) pairs.
        lora_path: the exported EMA LoRA folder (None when the run stopped at its CPU cap).
        weights_digest: SHA-256 of the trained parameters at the end.
        stopped_early: True when `train.max_cpu_seconds` stopped the run before `train.iterations`.
    """

    output_dir: Path
    iterations: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    lora_path: Path | None = None
    weights_digest: str = ""
    stopped_early: bool = False


def build_rewards(config: MultiTurnConfig, scale: float | None = None) -> TurnRewards:
    """The per-turn rewards the config describes (`scale` None: the config's sign)."""
    spec = config.reward
    return TurnRewards(
        spec.instruction, spec.consistency, spec.quality, if_scale=spec.if_scale, binary_threshold=spec.binary_threshold,
        scale=spec.scale if scale is None else scale,
    )


def train(config: MultiTurnConfig, *, backbone=None, rewards: TurnRewards | None = None, accelerator=None) -> TrainResult:
    """Run (or resume) the MT-EditFlow training described by `config`.

    `backbone` / `rewards` replace the ones the config would build (tests pass objects).
    """
    # ---- setup ---------------------------------------------------------------------------------
    cpu_started = time.process_time()
    accelerator = accelerator or make_accelerator(config.train.mixed_precision, find_unused_parameters=True)
    rank, processes, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    require_replicated(accelerator, "refine train multiturn", hint="launch with DDP (accelerate launch --multi_gpu, or torchrun)")
    if config.rollout.sequences_per_iteration % processes:
        raise ConfigError(
            f"rollout.sequences_per_iteration={config.rollout.sequences_per_iteration} does not split over {processes} processes "
            "(each process rolls out whole groups); make it a multiple of the process count"
        )
    out = Path(config.log.output_dir)
    resume_from = latest_checkpoint(out) if config.log.resume else None
    if resume_from is not None:
        check_resume_config(out, config.to_yaml(), safe=RESUME_SAFE, progress=("train.iterations", read_json(resume_from, "state")["iteration"]),
                            write=main)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            (out / "config.yaml").write_text(config.to_yaml())
    accelerator.wait_for_everyone()
    grpo = config.objective.kind == "grpo"
    sampler = config.rollout.sampler_config()
    eval_sampler = "euler" if config.rollout.sampler == "sde" else config.rollout.sampler  # evaluate deterministically
    seed, S, G, K = config.train.seed, config.rollout.sequences_per_iteration, config.rollout.group_size, config.rollout.turns
    share = S // processes
    items = [(s, g) for s in range(rank * share, (rank + 1) * share) for g in range(G)]  # this process's whole groups
    mine = slice(rank * len(items), (rank + 1) * len(items))  # its rows among the gathered trajectories
    group_ids = torch.arange(S).repeat_interleave(G)  # (S * G,) the gathered trajectories' groups

    backbone = backbone if backbone is not None else registry.build("backbone", config.backbone)
    rewards = rewards if rewards is not None else build_rewards(config)
    # Evaluation scores unscaled; eval.reward replaces the training rewards (the exact judge held out beside an MLLM one).
    held_out = config.eval.reward
    eval_rewards = TurnRewards(
        held_out.instruction if held_out else rewards.scorers["if"], held_out.consistency if held_out else rewards.scorers["cc"],
        held_out.quality if held_out else rewards.scorers.get("quality"),
        if_scale=rewards.if_scale, binary_threshold=rewards.binary_threshold, scale=1.0,
    )
    weights = config.reward.weights()
    if set(weights) != set(rewards.names):
        weights = {name: weights.get(name, 0.0) for name in rewards.names}
    backbone.to(accelerator.device)
    # rollout.cfg=free: sample (and evaluate) the conditional velocity alone, the policy NFT's loss
    # models; the view shares the transformer, so LoRA and shadow swaps apply to it.
    policy_view = ConditionalOnly(backbone) if config.rollout.cfg == "free" else backbone
    state = setup_policies(
        backbone, finetune="lora", lora_rank=config.lora.rank, lora_alpha=config.lora.alpha,
        lora_targets=config.lora.targets or list(ATTENTION_TARGETS), lora_dropout=config.lora.dropout,
        kl=(config.objective.grpo_kl_weight if grpo else config.objective.kl_weight) > 0, seed=seed,
    )
    if config.train.gradient_checkpointing:
        state.transformer.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(state.params, lr=config.optim.lr, betas=config.optim.betas, weight_decay=config.optim.weight_decay, eps=config.optim.eps)
    scheduler = get_scheduler(config.optim.scheduler, optimizer, num_warmup_steps=config.optim.warmup_steps,
                              num_training_steps=max(config.train.iterations * config.train.inner_epochs * _steps_per_pass(config, processes), 1))
    # Only the transformer and the optimizer go through accelerate (the DDP wrapper); the scheduler
    # is stepped by the update, once per optimizer step (accelerate's wrapper would step it per process).
    model, optimizer = accelerator.prepare(state.transformer, optimizer)
    source = SequenceSource(config.data.kind, seed=config.data.seed, path=config.data.path, turns=K)
    eval_set = evaluation_sequences(config.eval.benchmark, config.eval.sequences) if config.eval.benchmark else []
    eval_turns = config.eval.turns or K  # the K ablation trains on fewer turns and is judged at the same turn
    logger = MetricsLogger(out, tensorboard=config.log.tensorboard, enabled=main)

    # ---- resume ----------------------------------------------------------------------------------
    start, counters, eval_history = 0, {"consecutive_reward_failures": 0}, []
    if resume_from is not None:
        state.load(resume_from)
        optimizer.load_state_dict(read_torch(resume_from, "optimizer"))
        scheduler.load_state_dict(read_torch(resume_from, "scheduler"))
        set_rng_state(read_torch(resume_from, f"rng-rank{rank}"))
        saved = read_json(resume_from, "state")
        start, counters, eval_history = saved["iteration"], saved["counters"], [tuple(e) for e in saved["eval_history"]]
    logger.resume_at(start if resume_from is not None else None)

    def run_eval(iteration: int, row: dict[str, Any]) -> None:
        if not eval_set or not main:  # the main process evaluates; the others wait at the next collective
            return
        with state.ema.swapped_into(state.params):
            summary, _ = evaluate(policy_view, eval_set, eval_rewards, turns=eval_turns, sampler=eval_sampler, steps=config.rollout.steps,
                                  guidance=config.rollout.guidance, seed=config.eval.seed, max_batch=config.rollout.max_batch)
        row.update(summary)
        eval_history.append((iteration, summary["eval_o_last"]))

    def checkpoint(iteration: int) -> None:
        with CheckpointWriter(out, iteration, is_main=main, barrier=accelerator.wait_for_everyone, keep_last=config.log.keep_last) as writer:
            writer.save_torch(f"rng-rank{rank}", rng_state(), every_rank=True)
            state.save(writer)
            writer.save_torch("optimizer", optimizer.state_dict())
            writer.save_torch("scheduler", scheduler.state_dict())
            writer.save_json("state", {"iteration": iteration, "counters": counters, "eval_history": eval_history})
            if main:
                with state.ema.swapped_into(state.params):
                    save_lora(state.transformer, writer.path / "lora")

    metrics: list[dict[str, Any]] = []
    if start == 0 and eval_set:
        row = {"iteration": 0}
        run_eval(0, row)
        logger.write(row)
        metrics.append(row)

    # ---- the loop --------------------------------------------------------------------------------
    stopped = False
    progress = tqdm(range(start, config.train.iterations), initial=start, total=config.train.iterations,
                    disable=not (config.log.progress and main), desc="multiturn")
    for k in progress:
        started = time.perf_counter()
        # 1. The iteration's sequences.
        sequences = source.take(k * S, S)  # every process sees all S; it rolls out its own groups

        # 2. G trajectories of K turns per sequence: NFT rolls out the old policy, Flow-GRPO the trained
        #    one (its ratio compares the trained policy with the one that sampled, recorded per SDE step).
        with contextlib.nullcontext() if grpo else state.old.swapped_into(state.params):
            batch = rollout_turns(policy_view, sequences, items=items, sampler=sampler, seed=sample_seed(seed, k, 0),
                                  max_batch=config.rollout.max_batch, turns=K, record=grpo)

        # 3. Per-turn rewards, this process's trajectories, then all processes' (in sequence order).
        scored = score_batch(rewards, batch)  # name -> (n_local, K)
        gathered = {name: _gather(accelerator, values) for name, values in scored.rewards.items()}  # name -> (S * G, K)
        success = _gather(accelerator, scored.success)
        failed = int(_gather(accelerator, torch.tensor([float(scored.failed)])).sum())

        # 4. Aggregate -> normalise in the group -> fuse -> broadcast (or per turn).
        advantages = multiturn_advantages(
            gathered, group_ids, weights, aggregate=config.advantage.aggregate, level=config.advantage.level,
            credit=config.advantage.credit, std=config.advantage.std, clip=config.advantage.clip,
            success_threshold=config.reward.binary_threshold,
        )[mine]  # (n_local, K): this process's trajectories
        scored_any = torch.stack([~torch.isnan(r) for r in gathered.values()]).any(0)  # (S * G, K)
        keep = scored_any[mine].any(dim=1, keepdim=True).expand(-1, K)  # a trajectory that was scored at all trains every turn
        # 5. Update on every (trajectory, turn) sample.
        update_started = time.perf_counter()
        generator = torch.Generator().manual_seed(sample_seed(seed + 1, k, rank))
        common = dict(accelerator=accelerator, optimizer=optimizer, scheduler=scheduler, generator=generator, model=model,
                      micro_batch=config.train.micro_batch, accumulation=config.train.gradient_accumulation,
                      epochs=config.train.inner_epochs, grad_clip=config.optim.grad_clip)
        if grpo:
            stats = grpo_update(backbone, state.params, state.reference_context(), _turn_steps(batch, advantages, keep, config), **common,
                                clip_range=config.objective.clip_range, kl_weight=config.objective.grpo_kl_weight,
                                timestep_fraction=config.objective.timestep_fraction)
        else:
            samples = TurnSamples(
                x0=flatten_turns(batch.x0),
                cond=batch.flat_training_conditions(),
                r=flatten_turns(optimality(advantages, config.objective.optimality_clip)),
                keep=flatten_turns(keep.contiguous()),
                times=training_times(batch.schedule, config.objective.timestep_min, key="objective.timestep_min"),
            )
            stats = nft_update(backbone, state.params, state.old, state.reference_context(), samples, **common,
                               times_per_sample=config.objective.timesteps_per_sample, beta=config.objective.beta,
                               kl_weight=config.objective.kl_weight)
        update_seconds = time.perf_counter() - update_started

        # 6. Old policy and EMA follow the trained weights.
        decay = decay_at(k, flat=config.policy.old_decay_flat, rate=config.policy.old_decay_rate, maximum=config.policy.old_decay_max)
        state.old.update_(state.params, decay)
        state.ema.update_(state.params, config.policy.ema_decay)

        # 7. Log and evaluate.
        iteration = k + 1
        all_failed = not bool(scored_any.any())
        counters["consecutive_reward_failures"] = counters["consecutive_reward_failures"] + 1 if all_failed else 0
        row = {
            "iteration": iteration,
            **turn_summary(gathered, success, prefix="train_"),
            "advantage_abs": float(advantages.abs().mean()),
            "failed_scores": failed,
            **stats,
            "lr": scheduler.get_last_lr()[0],
            "old_decay": decay,
            "seconds_rollout": batch.seconds,
            "seconds_reward": scored.seconds,
            "seconds_update": update_seconds,
        }
        if (config.eval.every and iteration % config.eval.every == 0) or iteration == config.train.iterations:
            run_eval(iteration, row)
        row["seconds_iteration"] = time.perf_counter() - started
        row["cpu_seconds_total"] = time.process_time() - cpu_started
        logger.write(row)
        metrics.append(row)
        progress.set_postfix(o_last=f"{row.get(f'train_o_t{K}', float('nan')):.3f}")

        # 8. Checkpoint; stop on repeated reward failures or at the CPU cap.
        if config.train.max_reward_failures and counters["consecutive_reward_failures"] >= config.train.max_reward_failures:
            raise BackendError(
                f"every reward failed in {counters['consecutive_reward_failures']} iterations in a row (last: {scored.errors[:1]}); "
                f"checkpoint {latest_checkpoint(out) or '(none yet)'} is intact: fix the reward backend and rerun to resume"
            )
        cap = config.train.max_cpu_seconds
        stopped = cap is not None and time.process_time() - cpu_started >= cap and iteration < config.train.iterations
        stopped = bool(_gather(accelerator, torch.tensor([float(stopped)])).any())  # one process over its cap stops them all
        every = config.log.checkpoint_every
        if (every and iteration % every == 0) or iteration == config.train.iterations or stopped:
            checkpoint(iteration)
        if stopped:
            break

    # ---- export ----------------------------------------------------------------------------------
    lora_path = None
    if not stopped:
        lora_path = out / "lora"
        if main:
            with state.ema.swapped_into(state.params):
                save_lora(state.transformer, lora_path)
        accelerator.wait_for_everyone()
    logger.close()
    digest = hashlib.sha256(b"".join(p.detach().cpu().contiguous().numpy().tobytes() for p in state.params)).hexdigest()
    done = metrics[-1]["iteration"] if metrics else start
    return TrainResult(out, done, metrics, eval_history, lora_path, digest, stopped)


def _turn_steps(batch, advantages: torch.Tensor, keep: torch.Tensor, config: MultiTurnConfig) -> TurnSteps:
    """Flow-GRPO's samples, sample i * K + k: trajectory i's recorded SDE steps at turn k, with its guided condition."""
    n, turns = len(batch), batch.turns
    per_turn = [batch.trajectories[k] for k in range(turns)]
    trajectory = Trajectory.cat(per_turn).select([k * n + i for i in range(n) for k in range(turns)])
    cond = concat_conditions([c for per_item in batch.conditions for c in per_item])
    clip = config.objective.advantage_clip
    return TurnSteps(trajectory, cond, flatten_turns(advantages.clamp(-clip, clip)), flatten_turns(keep.contiguous()), batch.guidance)


def _gather(accelerator, values: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows, in process order (one process: the tensor itself)."""
    if accelerator.num_processes == 1:
        return values
    return accelerator.gather(values.to(accelerator.device)).cpu()


def _steps_per_pass(config: MultiTurnConfig, processes: int = 1) -> int:
    """Optimizer steps per pass over a process's share of an iteration's S * G * K samples."""
    samples = config.rollout.sequences_per_iteration // processes * config.rollout.group_size * config.rollout.turns
    chunks = math.ceil(samples / config.train.micro_batch)
    return math.ceil(chunks / (config.train.gradient_accumulation or chunks))
