"""One NFT update phase: forward-process training on the old policy's rollouts (DiffusionNFT).

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

Every process always runs the same number of forward/backward passes (filtered samples are
masked, not removed): DDP would hang if one process skipped a backward the others ran.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Sequence

import torch

from refine.backbones.base import Condition, FlowBackbone
from refine.rollout.objectives import Weighting, nft_loss
from refine.training.shadows import ShadowWeights


@dataclass
class TrainingBatch:
    """The samples one process trains on in an iteration.

    Attributes:
        x0: (B, N, C) float32 final latents of the rollouts (the "data" of the forward process).
        cond: the condition of each sample (B items, no negative branch).
        r: (B,) optimality probabilities.
        keep: (B,) bool, False for samples that must not contribute (filtered groups, failed rewards).
        times: (T_all,) the rollout schedule's times a training point may use (t in (0, 1]).
    """

    x0: torch.Tensor
    cond: Condition
    r: torch.Tensor
    keep: torch.Tensor
    times: torch.Tensor

    def __len__(self) -> int:
        return self.x0.shape[0]


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity) for (B, N, C) x0/noise and (B,) times: ``(1 - t) x0 + t noise``, ``noise - x0``."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    t = t.to(x0.dtype).reshape(shape)
    return (1.0 - t) * x0 + t * noise, noise - x0


def training_times(schedule: torch.Tensor, minimum: float = 0.0) -> torch.Tensor:
    """The times of a sampling schedule (S + 1,) usable for training: t > `minimum`, t = 0 excluded.

    >>> training_times(torch.tensor([1.0, 0.5, 0.25, 0.0]), minimum=0.3).tolist()
    [1.0, 0.5]
    """
    times = schedule.float().flatten()
    times = times[(times > minimum) & (times > 0)]
    if times.numel() == 0:
        raise ValueError(f"no training time above {minimum} in the schedule {schedule.tolist()}; lower nft.timestep_min")
    return times


def draw_times(times: torch.Tensor, batch: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, B) times: for each sample `count` distinct schedule times in random order.

    >>> g = torch.Generator().manual_seed(0)
    >>> drawn = draw_times(torch.tensor([1.0, 0.5, 0.25]), batch=2, count=3, generator=g)
    >>> sorted(drawn[:, 0].tolist()) == [0.25, 0.5, 1.0]
    True
    """
    count = min(count, times.numel())
    order = torch.stack([torch.randperm(times.numel(), generator=generator)[:count] for _ in range(batch)], dim=1)
    return times[order]  # (count, B)


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

    def as_metrics(self) -> dict[str, float]:
        n = max(self.points, 1)
        return {
            "loss": self.loss / n,
            "loss_policy": self.policy / n,
            "kl": self.kl / n,
            "loss_positive": self.positive / max(self.kept_points, 1),
            "loss_negative": self.negative / max(self.kept_points, 1),
            "optimizer_steps": self.optimizer_steps,
            "grad_norm": self.grad_norm / max(self.optimizer_steps, 1),
        }


@contextlib.contextmanager
def forward_through(backbone: FlowBackbone, module: torch.nn.Module) -> Iterator[None]:
    """Route calls of `backbone.transformer` through `module`, its DDP/FSDP wrapper, for a while.

    Gradients are synchronised only when the forward runs through the wrapper, but backbones call
    their bare `self.transformer(...)` and read attributes from it (`.dtype`, `.config`) that a
    wrapper does not have. So the bare model stays in place and its `forward` is redirected once:
    the call enters the wrapper, whose own call of the bare model then runs the real forward.
    Rollouts and the frozen (old/reference) passes run outside this block, on the bare model.
    """
    bare = backbone.transformer
    if module is bare:
        yield
        return
    own = "forward" in bare.__dict__  # accelerate's mixed precision installs an instance-level forward
    saved = bare.__dict__.get("forward")
    real_forward = bare.forward
    inside = [False]

    def routed(*args, **kwargs):
        if inside[0]:  # the wrapper calling the bare model: run the real forward
            return real_forward(*args, **kwargs)
        inside[0] = True
        try:
            return module(*args, **kwargs)
        finally:
            inside[0] = False

    bare.forward = routed
    try:
        yield
    finally:
        if own:
            bare.forward = saved
        else:
            del bare.forward


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
) -> UpdateStats:
    """Run the update phase of one iteration (see the module docstring); returns summed statistics.

    `model` is the accelerate-prepared transformer (the bare one with one process), `params` the
    trainable parameters, `reference()` a context manager under which the backbone computes the
    reference policy (None: no KL term). `skip=True` (every sample of every process masked) runs
    nothing, on every process alike, and leaves the weights untouched.
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
                        v_old = backbone.velocity(x_t, t, cond).float()
                    v_ref = None
                    if reference is not None and kl_weight > 0:
                        with reference():
                            v_ref = backbone.velocity(x_t, t, cond).float()
                sync = last_of_step and k == times.shape[0] - 1
                with _maybe_no_sync(accelerator, model, sync), forward_through(backbone, model), accelerator.autocast():
                    v_theta = backbone.velocity(x_t, t, cond).float()
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


def _maybe_no_sync(accelerator, model: torch.nn.Module, sync: bool) -> ContextManager:
    """Skip DDP's gradient all-reduce on all but the last backward of an optimizer step."""
    if sync or accelerator.num_processes == 1:
        return contextlib.nullcontext()
    return accelerator.no_sync(model)
