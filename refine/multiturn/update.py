"""The update phases of MT-EditFlow (NFT or Flow-GRPO): every (trajectory, turn) edit is one training sample.

Example (flattening n trajectories x K turns into samples, turn-major within a trajectory):
    >>> import torch
    >>> from refine.multiturn.update import flatten_turns
    >>> flatten_turns(torch.arange(6).view(3, 2)).tolist()     # (n=3, K=2) -> (n * K,)
    [0, 1, 2, 3, 4, 5]

Sample (i, k) is the edit of turn k of trajectory i: its data point is that turn's final latents
x0[i, k], its condition the image trajectory i fed into turn k plus instruction k, and its
optimality ``r = 1/2 + 1/2 clip(A[i, k] / c, -1, 1)`` comes from the (broadcast or per-turn)
advantage. The loss is DiffusionNFT's (`refine.rollout.objectives.nft_loss`) on the forward
process, so any sampler may have produced the rollouts. Per micro-batch and training time:
1. fresh noise and a time t drawn from the rollout schedule, ``x_t = (1 - t) x0 + t noise``;
2. v_old under the old policy and v_ref with the adapters disabled (no gradient);
3. v_θ under the trained policy; the NFT loss, scaled by 1 / (times x micro-batches), backward.
Every `accumulation` micro-batches (default: a whole pass) the gradients are clipped and the
optimizer steps; `epochs` passes over the iteration's samples.

Flow-GRPO (`grpo_update`) trains on the recorded SDE steps instead: for each stochastic step i of
a turn's trajectory, the log-probability of the recorded transition x_i -> x_{i+1} is recomputed
under the trained weights with the rollout's own velocity (guided when the rollout was, both CFG
branches through the LoRA; dropout off), the fp32 ratio to the rollout's log-probability is clipped
(`refine.rollout.objectives.grpo_loss`) and weighted by the (clipped) advantage of its (trajectory,
turn). The rollout runs with the trained weights, so the first inner step's ratio is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch

from refine.backbones.base import Condition, FlowBackbone
from refine.rollout.objectives import grpo_loss, nft_loss
from refine.rollout.samplers import SamplerConfig, gaussian_log_prob, sde_mean_std
from refine.rollout.trajectory import Trajectory
from refine.training.ddp import forward_through, maybe_no_sync
from refine.training.dropout import dropout_off
from refine.training.nft_samples import NFTSamples
from refine.training.shadows import ShadowWeights
from refine.training.timesteps import draw_times


def flatten_turns(values: torch.Tensor) -> torch.Tensor:
    """(n, K, ...) per-trajectory, per-turn values -> (n * K, ...) samples, sample i * K + k."""
    return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])


TurnSamples = NFTSamples
"""The (trajectory, turn) samples of an iteration: sample i * K + k is turn k of trajectory i."""


def nft_update(
    backbone: FlowBackbone,
    params: Sequence[torch.nn.Parameter],
    old: ShadowWeights,
    reference: Callable[[], ContextManager] | None,
    samples: TurnSamples,
    *,
    accelerator,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    micro_batch: int,
    accumulation: int = 0,
    epochs: int = 1,
    times_per_sample: int | None = None,
    beta: float = 1.0,
    kl_weight: float = 0.0,
    grad_clip: float | None = None,
    model: torch.nn.Module | None = None,
) -> dict[str, float]:
    """One update phase (see the module docstring); returns mean loss parts and optimizer steps.

    `accumulation` micro-batches make one optimizer step (0: all of a pass, one step per epoch).
    `model` is the transformer as `accelerator.prepare` returned it (the DDP wrapper under several
    processes): the trained forward runs through it so that gradients are all-reduced, once per
    optimizer step. Every process must run the same number of micro-batches.
    """
    totals = {"loss": 0.0, "loss_policy": 0.0, "kl": 0.0, "grad_norm": 0.0}
    points, steps = 0, 0
    model = model if model is not None else backbone.transformer
    if not bool(samples.keep.any()) and accelerator.num_processes == 1:  # several: every process must step together
        return {**totals, "optimizer_steps": 0}
    size, device = len(samples), backbone.device
    count = min(times_per_sample or samples.times.numel(), samples.times.numel())
    chunks = [list(range(start, min(start + micro_batch, size))) for start in range(0, size, micro_batch)]
    per_step = accumulation or len(chunks)
    for _ in range(epochs):
        order = torch.randperm(size, generator=generator)
        for position, rows in enumerate([int(order[p]) for p in chunk] for chunk in chunks):
            index = torch.tensor(rows)
            x0 = samples.x0[index].to(device)  # (b, N, C)
            cond = samples.cond.select(index).to(device)
            r, keep = samples.r[index].to(device), samples.keep[index].to(device)
            times = draw_times(samples.times, len(rows), count, generator)  # (count, b)
            for j in range(count):
                t = times[j].to(device)
                noise = torch.randn(x0.shape, generator=generator).to(device)
                shape = (-1,) + (1,) * (x0.dim() - 1)
                x_t, target = (1 - t.view(shape)) * x0 + t.view(shape) * noise, noise - x0  # x_t = (1-t) x0 + t noise, v = noise - x0
                with torch.no_grad(), accelerator.autocast():
                    with old.swapped_into(params):
                        v_old = backbone.velocity(x_t, t, cond).float()
                    v_ref = None
                    if reference is not None and kl_weight > 0:
                        with reference():
                            v_ref = backbone.velocity(x_t, t, cond).float()
                in_step = min(per_step, len(chunks) - (position // per_step) * per_step)  # micro-batches of this step
                sync = j == count - 1 and ((position + 1) % per_step == 0 or position == len(chunks) - 1)
                with maybe_no_sync(accelerator, model, sync), forward_through(backbone, model):
                    with accelerator.autocast():
                        v_theta = backbone.velocity(x_t, t, cond).float()
                        out = nft_loss(v_theta, v_old, target, r, beta=beta, keep=keep, v_ref=v_ref, kl_weight=kl_weight)
                    accelerator.backward(out.loss / (count * in_step))
                totals["loss"] += float(out.loss.detach()) * len(rows)
                totals["loss_policy"] += float(out.policy.detach()) * len(rows)
                totals["kl"] += float(out.kl.detach()) * len(rows)
                points += len(rows)
            if (position + 1) % per_step == 0 or position == len(chunks) - 1:
                if grad_clip is not None:
                    totals["grad_norm"] += float(accelerator.clip_grad_norm_(params, grad_clip))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
    return {
        "loss": totals["loss"] / max(points, 1),
        "loss_policy": totals["loss_policy"] / max(points, 1),
        "kl": totals["kl"] / max(points, 1),
        "grad_norm": totals["grad_norm"] / max(steps, 1),
        "optimizer_steps": steps,
    }


@dataclass
class TurnSteps:
    """The recorded SDE trajectories of an iteration's (trajectory, turn) samples, for Flow-GRPO.

    Attributes:
        trajectory: m samples' recorded x_t, times and rollout log-probs (`Trajectory`).
        cond: each sample's condition with its CFG negative (what the rollout's sampler saw).
        advantages: (m,) advantages, already clipped.
        keep: (m,) bool, False for samples whose trajectory could not be scored.
        guidance: the rollout's CFG scale (None: unguided).
    """

    trajectory: Trajectory
    cond: Condition
    advantages: torch.Tensor
    keep: torch.Tensor
    guidance: float | None

    def __len__(self) -> int:
        return len(self.trajectory)


def grpo_update(
    backbone: FlowBackbone,
    params: Sequence[torch.nn.Parameter],
    reference: Callable[[], ContextManager] | None,
    samples: TurnSteps,
    *,
    accelerator,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    micro_batch: int,
    accumulation: int = 0,
    epochs: int = 1,
    clip_range: float = 1e-4,
    kl_weight: float = 0.0,
    timestep_fraction: float = 1.0,
    grad_clip: float | None = None,
    model: torch.nn.Module | None = None,
) -> dict[str, float]:
    """One Flow-GRPO update phase (see the module docstring); returns mean loss parts and ratio statistics.

    `model`: as in `nft_update` (the DDP wrapper under several processes).
    """
    totals = {"loss": 0.0, "loss_policy": 0.0, "kl": 0.0, "grad_norm": 0.0}
    points, steps, clipped, deviation = 0, 0, 0, 0.0
    model = model if model is not None else backbone.transformer
    stochastic = samples.trajectory.stochastic_indices
    if not stochastic:
        raise ValueError("the rollout has no stochastic step: Flow-GRPO needs rollout.sampler=sde with noise_level > 0")
    if not bool(samples.keep.any()) and accelerator.num_processes == 1:  # several: every process must step together
        return {**totals, "optimizer_steps": 0, "clipped_fraction": 0.0, "ratio_deviation": 0.0}
    sampler = SamplerConfig.model_validate(samples.trajectory.info["sampler"])
    size, device = len(samples), backbone.device
    chunks = [list(range(start, min(start + micro_batch, size))) for start in range(0, size, micro_batch)]
    per_step = accumulation or len(chunks)
    with dropout_off(backbone.transformer):
        for _ in range(epochs):
            order = torch.randperm(size, generator=generator)
            for position, chunk in enumerate(chunks):
                rows = order[chunk]
                trajectory = samples.trajectory.select(rows).to(device)
                cond = samples.cond.select(rows).to(device)
                advantages, keep = samples.advantages[rows].to(device), samples.keep[rows].to(device)
                count = max(1, round(timestep_fraction * len(stochastic)))
                chosen = sorted(stochastic[int(i)] for i in torch.randperm(len(stochastic), generator=generator)[:count])
                in_step = min(per_step, len(chunks) - (position // per_step) * per_step)
                last_of_step = (position + 1) % per_step == 0 or position == len(chunks) - 1
                for i in chosen:
                    x, t, x_next, t_next = trajectory.step(i)  # (b, N, C), (b,), (b, N, C), (b,)
                    mean_ref = None
                    if reference is not None and kl_weight > 0:
                        with torch.no_grad(), accelerator.autocast(), reference():
                            v_ref = backbone.predict_velocity(x, t, cond, samples.guidance)
                            mean_ref, _ = sde_mean_std(x, v_ref, t[0], t_next[0], sampler.noise_level, sampler.coefficient_preserving)
                    sync = last_of_step and i == chosen[-1]
                    with maybe_no_sync(accelerator, model, sync), forward_through(backbone, model):
                        with accelerator.autocast():
                            velocity = backbone.predict_velocity(x, t, cond, samples.guidance)  # the rollout's (guided) velocity
                            mean, std = sde_mean_std(x, velocity, t[0], t_next[0], sampler.noise_level, sampler.coefficient_preserving)
                            log_prob = gaussian_log_prob(x_next, mean, std, sampler.log_prob_reduce)  # (b,) fp32
                            out = grpo_loss(
                                log_prob, trajectory.log_probs[:, i], advantages, clip_range=clip_range, keep=keep,
                                mean=mean if mean_ref is not None else None, mean_ref=mean_ref,
                                std=std if mean_ref is not None else None, kl_weight=kl_weight,
                            )
                        accelerator.backward(out.loss / (len(chosen) * in_step))
                    kept = keep.bool()
                    totals["loss"] += float(out.loss.detach()) * len(rows)
                    totals["loss_policy"] += float(out.policy.detach()) * len(rows)
                    totals["kl"] += float(out.kl.detach()) * len(rows)
                    points += len(rows)
                    clipped += int((out.clipped & kept).sum())
                    if kept.any():
                        deviation = max(deviation, float((out.ratio[kept] - 1).abs().max()))
                if (position + 1) % per_step == 0 or position == len(chunks) - 1:
                    if grad_clip is not None:
                        totals["grad_norm"] += float(accelerator.clip_grad_norm_(params, grad_clip))
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    steps += 1
    return {
        "loss": totals["loss"] / max(points, 1),
        "loss_policy": totals["loss_policy"] / max(points, 1),
        "kl": totals["kl"] / max(points, 1),
        "grad_norm": totals["grad_norm"] / max(steps, 1),
        "optimizer_steps": steps,
        "clipped_fraction": clipped / max(points, 1),
        "ratio_deviation": deviation,  # max |ρ - 1| over kept samples: ~0 on the first inner step
    }
