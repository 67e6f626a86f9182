"""One update phase: NFT on the forward process (DiffusionNFT), or Flow-GRPO on the recorded SDE steps.

Example (the maths of a training point, no model needed):
    >>> import torch
    >>> from refine.edit_r1.update import noised
    >>> x0, noise = torch.zeros(1, 2, 1), torch.ones(1, 2, 1)
    >>> x_t, target = noised(x0, noise, torch.tensor([0.25]))
    >>> x_t.flatten().tolist(), target.flatten().tolist()      # x_t = (1 - t) x0 + t noise, v = noise - x0
    ([0.25, 0.25], [1.0, 1.0])

What happens per micro-batch (`nft_update`), for each of its training times:
1. draw fresh noise and a time t for each sample from the rollout schedule (DiffusionNFT trains
   on the forward process, not on the sampler's trajectory, so any solver could produce x0);
2. v_old: the old policy (its shadow weights swapped in), no gradient;
3. v_ref: the reference policy (adapters disabled / initial weights), no gradient, only when
   the KL weight is positive;
4. v_θ: the trained policy through the accelerate-wrapped transformer (DDP/FSDP sync gradients);
5. the NFT loss (`refine.rollout.objectives.nft_loss`), scaled by 1 / (times x accumulation), backward.
Every `accumulation` micro-batches the gradients are clipped and the optimizer steps.

Which velocity the NFT loss models (`guidance`): None is the CFG-free policy
(`FlowBackbone.velocity` on the positive condition, DiffusionNFT's default, whose rollouts come
from `refine.rollout.cfg.ConditionalOnly`); a float is the guided velocity
``backbone.predict_velocity(x_t, t, cond, guidance)`` with both CFG branches through the trained
weights (`nft.cfg=consistent`, rollouts at the same guidance, conditions with their negative).

Flow-GRPO (`grpo_update`), per micro-batch and for each trained SDE step i of the recorded
trajectories (a random `timestep_fraction` of the stochastic steps, shared by the micro-batch):
1. replay the rollout's forward on x_i: the same velocity function (guided when the rollout was),
   dropout off, so that before the first optimizer step the ratio is 1 to float rounding;
2. the transition's mean and std (`refine.rollout.samplers.sde_mean_std`) and the fp32
   log-probability of the recorded x_{i+1};
3. the reference's mean (adapters disabled, no gradient) when the KL weight is positive;
4. the clipped-ratio loss (`refine.rollout.objectives.grpo_loss`), backward.
The old log-probabilities are the ones stored at rollout time: GRPO is on-policy (the trainer
copies the trained weights into the old policy every iteration).

Every process always runs the same number of forward/backward passes (filtered samples are
masked, not removed): DDP would hang if one process skipped a backward the others ran.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ContextManager, Sequence

import torch

from refine.backbones.base import Condition, FlowBackbone
from refine.rollout.objectives import Weighting, grpo_loss, nft_loss
from refine.rollout.samplers import SamplerConfig, gaussian_log_prob, sde_mean_std
from refine.rollout.trajectory import Trajectory
from refine.training.ddp import forward_through, maybe_no_sync
from refine.training.dropout import dropout_off
from refine.training.nft_samples import NFTSamples
from refine.training.shadows import ShadowWeights
from refine.training.timesteps import draw_times


TrainingBatch = NFTSamples
"""The samples one process trains on in an iteration (one per rollout image)."""


@dataclass
class GRPOBatch:
    """The recorded SDE rollouts one process trains on with Flow-GRPO in an iteration.

    Attributes:
        trajectory: B recorded samples (x_t at every step, the rollout's per-step log-probs).
        cond: the condition of each sample (B items; with the CFG negative when `guidance` is set).
        advantages: (B,) group advantages, already clipped.
        keep: (B,) bool, False for samples that must not contribute (failed rewards).
        guidance: the rollout's guidance scale; None: the rollout sampled CFG-free (conditional velocity).
    """

    trajectory: Trajectory
    cond: Condition
    advantages: torch.Tensor
    keep: torch.Tensor
    guidance: float | None = None

    def __len__(self) -> int:
        return len(self.trajectory)


def policy_velocity(
    backbone: FlowBackbone, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None
) -> torch.Tensor:
    """(B, N, C) the policy's velocity: CFG-free ``velocity`` (guidance None) or the guided one.

    The guided velocity runs both branches through whatever weights the backbone holds (the LoRA
    included), exactly as the rollout's sampler called it.
    """
    if guidance is None:
        return backbone.velocity(x_t, t, cond if cond.negative is None else replace(cond, negative=None))
    return backbone.predict_velocity(x_t, t, cond, guidance)


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity) for (B, N, C) x0/noise and (B,) times: ``(1 - t) x0 + t noise``, ``noise - x0``."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    t = t.to(x0.dtype).reshape(shape)
    return (1.0 - t) * x0 + t * noise, noise - x0


@dataclass
class UpdateStats:
    """Sums over an update phase, for logging (means are taken by the caller)."""

    loss: float = 0.0
    policy: float = 0.0
    kl: float = 0.0
    positive: float = 0.0
    negative: float = 0.0
    points: int = 0
    kept_points: int = 0
    optimizer_steps: int = 0
    grad_norm: float = 0.0
    ratio_deviation: float = 0.0  # Flow-GRPO only: max |ratio - 1| over kept samples
    clipped: int = 0  # Flow-GRPO only: kept samples whose ratio left the clip range
    grpo: bool = False

    def as_metrics(self) -> dict[str, float]:
        n = max(self.points, 1)
        grpo = {"ratio_max_deviation": self.ratio_deviation, "clip_fraction": self.clipped / max(self.kept_points, 1)}
        return {
            **(grpo if self.grpo else {}),
            "loss": self.loss / n,
            "loss_policy": self.policy / n,
            "kl": self.kl / n,
            "loss_positive": self.positive / max(self.kept_points, 1),
            "loss_negative": self.negative / max(self.kept_points, 1),
            "optimizer_steps": self.optimizer_steps,
            "grad_norm": self.grad_norm / max(self.optimizer_steps, 1),
        }


def nft_update(
    backbone: FlowBackbone,
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    old: ShadowWeights,
    reference: Callable[[], ContextManager] | None,
    batch: TrainingBatch,
    *,
    accelerator,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    micro_batch: int,
    accumulation: int,
    epochs: int = 1,
    times_per_sample: int | None = None,
    beta: float = 1.0,
    kl_weight: float = 0.0,
    weighting: Weighting = "none",
    grad_clip: float | None = None,
    skip: bool = False,
    guidance: float | None = None,
) -> UpdateStats:
    """Run the NFT update phase of one iteration (see the module docstring); returns summed statistics.

    `model` is the accelerate-prepared transformer (the bare one with one process), `params` the
    trainable parameters, `reference()` a context manager under which the backbone computes the
    reference policy (None: no KL term). `skip=True` (every sample of every process masked) runs
    nothing, on every process alike, and leaves the weights untouched. `guidance`: None trains the
    CFG-free velocity (DiffusionNFT); a float the guided one (`batch.cond` must carry its negative).
    """
    stats = UpdateStats()
    if skip:
        return stats
    size = len(batch)
    count = times_per_sample or batch.times.numel()
    device = backbone.device
    micro_batches = [list(range(start, start + micro_batch)) for start in range(0, size, micro_batch)]
    for _ in range(epochs):
        order = torch.randperm(size, generator=generator)
        for index, positions in enumerate(micro_batches):
            rows = order[positions]
            x0 = batch.x0[rows].to(device)  # (b, N, C)
            cond = batch.cond.select(rows).to(device)
            r, keep = batch.r[rows].to(device), batch.keep[rows].to(device)
            times = draw_times(batch.times, len(rows), count, generator)  # (T, b)
            last_of_step = (index + 1) % accumulation == 0 or index == len(micro_batches) - 1
            for k in range(times.shape[0]):
                t = times[k].to(device)
                noise = torch.randn(x0.shape, generator=generator).to(device)
                x_t, target = noised(x0, noise, t)
                with torch.no_grad(), accelerator.autocast():
                    with old.swapped_into(params):
                        v_old = policy_velocity(backbone, x_t, t, cond, guidance).float()
                    v_ref = None
                    if reference is not None and kl_weight > 0:
                        with reference():
                            v_ref = policy_velocity(backbone, x_t, t, cond, guidance).float()
                sync = last_of_step and k == times.shape[0] - 1
                with maybe_no_sync(accelerator, model, sync), forward_through(backbone, model), accelerator.autocast():
                    v_theta = policy_velocity(backbone, x_t, t, cond, guidance).float()
                    out = nft_loss(
                        v_theta, v_old, target, r, beta=beta, keep=keep, v_ref=v_ref, kl_weight=kl_weight,
                        weighting=weighting, x_t=x_t, t=t, x0=x0,
                    )
                    accelerator.backward(out.loss / (times.shape[0] * accumulation))
                kept = keep.float()
                stats.loss += float(out.loss.detach()) * len(rows)
                stats.policy += float(out.policy.detach()) * len(rows)
                stats.kl += float(out.kl.detach()) * len(rows)
                stats.positive += float((out.positive * kept).sum())
                stats.negative += float((out.negative * kept).sum())
                stats.points += len(rows)
                stats.kept_points += int(kept.sum())
            if last_of_step:
                if grad_clip is not None:
                    norm = accelerator.clip_grad_norm_(params, grad_clip)
                    stats.grad_norm += float(norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                stats.optimizer_steps += 1
    return stats


def trained_steps(stochastic: Sequence[int], fraction: float, generator: torch.Generator) -> list[int]:
    """A random `fraction` (at least one) of the stochastic step indices, in sampling order.

    >>> trained_steps([0, 1, 2, 3], 1.0, torch.Generator().manual_seed(0))
    [0, 1, 2, 3]
    >>> len(trained_steps([0, 1, 2, 3], 0.5, torch.Generator().manual_seed(0)))
    2
    """
    stochastic = list(stochastic)
    count = max(1, round(fraction * len(stochastic)))
    if count >= len(stochastic):
        return stochastic
    chosen = torch.randperm(len(stochastic), generator=generator)[:count].sort().values
    return [stochastic[int(i)] for i in chosen]


def grpo_update(
    backbone: FlowBackbone,
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    reference: Callable[[], ContextManager] | None,
    batch: GRPOBatch,
    *,
    accelerator,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    micro_batch: int,
    accumulation: int,
    epochs: int = 1,
    clip_range: float = 1e-4,
    kl_weight: float = 0.0,
    timestep_fraction: float = 1.0,
    grad_clip: float | None = None,
    skip: bool = False,
) -> UpdateStats:
    """Run the Flow-GRPO update phase of one iteration (see the module docstring); returns summed statistics.

    Arguments as `nft_update`'s; `reference()` computes the reference policy for the KL term.
    """
    stats = UpdateStats(grpo=True)
    if skip:
        return stats
    sampler = SamplerConfig.model_validate(batch.trajectory.info["sampler"])
    stochastic = batch.trajectory.stochastic_indices
    if not stochastic:
        raise ValueError("the rollout has no stochastic step: Flow-GRPO needs rollout.sampler=sde with noise_level > 0")
    size, device = len(batch), backbone.device
    micro_batches = [list(range(start, start + micro_batch)) for start in range(0, size, micro_batch)]
    with dropout_off(model):
        for _ in range(epochs):
            order = torch.randperm(size, generator=generator)
            for index, positions in enumerate(micro_batches):
                rows = order[positions]
                trajectory = batch.trajectory.select(rows).to(device)
                cond = batch.cond.select(rows).to(device)
                advantages, keep = batch.advantages[rows].to(device), batch.keep[rows].to(device)
                steps = trained_steps(stochastic, timestep_fraction, generator)
                last_of_step = (index + 1) % accumulation == 0 or index == len(micro_batches) - 1
                for k, i in enumerate(steps):
                    x, t, x_next, t_next = trajectory.step(i)  # (b, N, C), (b,), (b, N, C), (b,)
                    old_log_prob = trajectory.log_probs[:, i]  # (b,) stored at rollout time
                    mean_ref = None
                    if reference is not None and kl_weight > 0:
                        with torch.no_grad(), accelerator.autocast(), reference():
                            v_ref = policy_velocity(backbone, x, t, cond, batch.guidance)
                            mean_ref, _ = sde_mean_std(x, v_ref, t[0], t_next[0], sampler.noise_level, sampler.coefficient_preserving)
                    sync = last_of_step and k == len(steps) - 1
                    with maybe_no_sync(accelerator, model, sync), forward_through(backbone, model), accelerator.autocast():
                        velocity = policy_velocity(backbone, x, t, cond, batch.guidance)
                        mean, std = sde_mean_std(x, velocity, t[0], t_next[0], sampler.noise_level, sampler.coefficient_preserving)
                        log_prob = gaussian_log_prob(x_next, mean, std, sampler.log_prob_reduce)  # (b,) fp32
                        out = grpo_loss(
                            log_prob, old_log_prob, advantages, clip_range=clip_range, keep=keep,
                            mean=mean if mean_ref is not None else None, mean_ref=mean_ref,
                            std=std if mean_ref is not None else None, kl_weight=kl_weight,
                        )
                        accelerator.backward(out.loss / (len(steps) * accumulation))
                    kept = keep.bool()
                    stats.loss += float(out.loss.detach()) * len(rows)
                    stats.policy += float(out.policy.detach()) * len(rows)
                    stats.kl += float(out.kl.detach()) * len(rows)
                    stats.points += len(rows)
                    stats.kept_points += int(kept.sum())
                    stats.clipped += int((out.clipped & kept).sum())
                    if kept.any():
                        stats.ratio_deviation = max(stats.ratio_deviation, float((out.ratio[kept] - 1).abs().max()))
                if last_of_step:
                    if grad_clip is not None:
                        norm = accelerator.clip_grad_norm_(params, grad_clip)
                        stats.grad_norm += float(norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    stats.optimizer_steps += 1
    return stats
