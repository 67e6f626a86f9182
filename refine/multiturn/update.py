"""The NFT update phase of MT-EditFlow: every (trajectory, turn) edit is one training sample.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch

from refine.backbones.base import Condition, FlowBackbone
from refine.rollout.objectives import nft_loss
from refine.training.shadows import ShadowWeights


def flatten_turns(values: torch.Tensor) -> torch.Tensor:
    """(n, K, ...) per-trajectory, per-turn values -> (n * K, ...) samples, sample i * K + k."""
    return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])


def training_times(schedule: torch.Tensor, minimum: float = 0.0) -> torch.Tensor:
    """The times of a sampling schedule (T + 1,) usable for training: t > `minimum`, t = 0 excluded.

    >>> training_times(torch.tensor([1.0, 0.5, 0.25, 0.0]), minimum=0.3).tolist()
    [1.0, 0.5]
    """
    times = schedule.float().flatten()
    times = times[(times > minimum) & (times > 0)]
    if times.numel() == 0:
        raise ValueError(f"no training time above {minimum} in the schedule {schedule.tolist()}; lower objective.timestep_min")
    return times


@dataclass
class TurnSamples:
    """The (trajectory, turn) samples of an iteration.

    Attributes:
        x0: (m, N, C) float32 final latents of each turn's edit.
        cond: the positive condition of each sample (m items).
        r: (m,) optimality in [0, 1].
        keep: (m,) bool, False for samples whose trajectory could not be scored.
        times: (T_all,) the schedule times a training point may use.
    """

    x0: torch.Tensor
    cond: Condition
    r: torch.Tensor
    keep: torch.Tensor
    times: torch.Tensor

    def __len__(self) -> int:
        return self.x0.shape[0]


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
) -> dict[str, float]:
    """One update phase (see the module docstring); returns mean loss parts and optimizer steps.

    `accumulation` micro-batches make one optimizer step (0: all of a pass, one step per epoch).
    """
    totals = {"loss": 0.0, "loss_policy": 0.0, "kl": 0.0, "grad_norm": 0.0}
    points, steps = 0, 0
    if not bool(samples.keep.any()):
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
            times = samples.times[torch.stack([torch.randperm(samples.times.numel(), generator=generator)[:count] for _ in rows], dim=1)]  # (count, b)
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
                with accelerator.autocast():
                    v_theta = backbone.velocity(x_t, t, cond).float()
                    out = nft_loss(v_theta, v_old, target, r, beta=beta, keep=keep, v_ref=v_ref, kl_weight=kl_weight)
                in_step = min(per_step, len(chunks) - (position // per_step) * per_step)  # micro-batches of this step
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
