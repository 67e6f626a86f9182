"""Rollout and reward for one iteration: G edits per request from the old policy, scored by the judge.

Example (any Reward works; here a brightness score on a tiny random editor):
    >>> from PIL import Image
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> from refine.edit_r1.collect import rollout, score
    >>> from refine.rewards.base import RewardOutput
    >>> from refine.types import EditRequest
    >>> backbone = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> requests = [EditRequest(Image.new("RGB", (32, 32), c), "red") for c in ("white", "black")]
    >>> batch = rollout(backbone, requests, [(0, 1), (1, 0)], sampler="dpm", steps=2, seed=0)  # 2 of the 2 x G items
    >>> tuple(batch.x0.shape), batch.group_ids.tolist()
    ((2, 64, 48), [0, 1])
    >>> bright = lambda s, o, i, m: RewardOutput([sum(x.convert("L").getdata()) / 255 / 1024 for x in o])
    >>> scored = score(bright, batch)
    >>> scored.rewards.shape, scored.failed_samples
    (torch.Size([2]), 0)

Work split: an iteration's samples are the (request r, sample g) items of all groups, in
request-major order; each process draws a contiguous slice of them (so a group may be split over
processes: 24 groups x 12 images = 288 samples fill 48 GPUs with 6 each, as in the paper). Sample g
of request r draws its noise from a generator seeded with `sample_seed(seed, r, g)`, so what an
item looks like does not depend on which process draws it or on its batch neighbours.

Reward failures never stop the iteration: a reward that raises `BackendError` (a judge server
down) marks every sample of the call as failed, except those a partial result (`.partial`, as
the MLLM judge attaches) still scored; a None score marks that sample. Failed samples are NaN
rewards: they drop out of group statistics and are masked out of the loss. Any other exception
is a bug and propagates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from refine.backbones.base import Condition, FlowBackbone, concat_conditions
from refine.errors import BackendError
from refine.rollout.group import resolve_sampler, run_items, sample_seed
from refine.rollout.samplers import SamplerConfig
from refine.rollout.trajectory import Trajectory
from refine.types import EditRequest


@dataclass
class RolloutBatch:
    """The items one process drew in an iteration.

    Attributes:
        requests: every request of the iteration (all processes see the same list).
        items: the (request index, sample index) pairs this process drew, in order.
        images: one RGB edit per item.
        x0: (n, N, C) float32 final latents, one per item.
        group_ids: (n,) long, the request index of each item (its group).
        conditions: request index -> its encoded condition (batch of one, with the CFG negative).
        schedule: (S + 1,) the sampling times (training draws its times from them).
        seconds: wall time of the rollout.
        guidance: the guidance scale the rollout sampled with (part of the policy).
        trajectory: every x_t and per-step log-probability of the n items (when recorded: Flow-GRPO).
    """

    requests: list[EditRequest]
    items: list[tuple[int, int]]
    images: list[Image.Image]
    x0: torch.Tensor
    group_ids: torch.Tensor
    conditions: dict[int, Condition]
    schedule: torch.Tensor
    seconds: float
    guidance: float | None = None
    trajectory: Trajectory | None = None

    def __len__(self) -> int:
        return len(self.items)

    def training_conditions(self, *, negative: bool = False) -> Condition:
        """The condition of every item (n items) for the training forward.

        `negative=False`: the positive branch only (a CFG-free loss); True: with the CFG negative
        branch as the rollout encoded it, so the training forward can replay the guided velocity.
        """
        chosen = self.conditions if negative else {r: replace(c, negative=None) for r, c in self.conditions.items()}
        return concat_conditions([chosen[r] for r, _ in self.items])


@dataclass
class ScoredBatch:
    """Raw rewards of a `RolloutBatch`: (n,) float32, NaN where the reward failed or was None."""

    rewards: torch.Tensor
    failed_samples: int
    seconds: float
    details: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def process_items(groups: int, group_size: int, rank: int, processes: int) -> list[tuple[int, int]]:
    """The contiguous slice of the request-major (request, sample) items that process `rank` draws.

    >>> process_items(groups=3, group_size=2, rank=1, processes=2)
    [(1, 1), (2, 0), (2, 1)]
    """
    items = [(r, g) for r in range(groups) for g in range(group_size)]
    share = len(items) // processes
    return items[rank * share : (rank + 1) * share]


def rollout(
    backbone: FlowBackbone,
    requests: Sequence[EditRequest],
    items: Sequence[tuple[int, int]],
    *,
    sampler: str | SamplerConfig = "dpm",
    steps: int | None = 6,
    guidance: float | None = None,
    seed: int = 0,
    max_batch: int = 8,
    record: bool = False,
) -> RolloutBatch:
    """Draw `items` with the backbone's current weights (the caller swaps the old policy in).

    Conditions are encoded once per request that has items here; noise is seeded per item
    (see the module docstring); `max_batch` bounds transformer items per forward pass. `sampler`
    is a name or a full `SamplerConfig` (SDE noise level, window); `record=True` keeps every x_t
    and the per-step log-probabilities (`RolloutBatch.trajectory`, what Flow-GRPO trains on).
    `backbone` may be a `refine.rollout.cfg.ConditionalOnly` view (CFG-free rollouts).
    """
    started = time.perf_counter()
    config = resolve_sampler(sampler, steps, guidance)
    guidance = config.guidance if config.guidance is not None else backbone.default_guidance
    used = sorted({r for r, _ in items})
    with torch.no_grad():
        conditions = {
            r: backbone.encode_condition([requests[r].image], [requests[r].instruction], guidance=guidance) for r in used
        }
        slot = {r: i for i, r in enumerate(used)}
        results = run_items(
            backbone,
            [conditions[r] for r in used],
            [(slot[r], g) for r, g in items],
            [sample_seed(seed, r, g) for r, g in items],
            config,
            guidance,
            max_batch,
            record,
        )
    x0 = torch.stack([out["latents"] for out in results]).float()  # (n, N, C)
    schedule = backbone.sigmas(config.steps, conditions[used[0]]).float().cpu()
    trajectory = None
    if record:
        pieces = [out["trajectory"] for out in results]
        trajectory = Trajectory(
            latents=torch.stack([p["latents"] for p in pieces]).float().cpu(),  # (n, S + 1, N, C)
            sigmas=torch.stack([p["sigmas"] for p in pieces]).float().cpu(),  # (n, S + 1)
            log_probs=torch.stack([p["log_probs"] for p in pieces]).float().cpu(),  # (n, S)
            stochastic=pieces[0]["stochastic"].cpu().clone(),
            request_index=torch.tensor([r for r, _ in items], dtype=torch.long),
            sample_index=torch.tensor([g for _, g in items], dtype=torch.long),
            guidance=guidance,
            info={"sampler": config.model_dump(mode="json")},
        )
    return RolloutBatch(
        requests=list(requests),
        items=list(items),
        images=[out["image"] for out in results],
        x0=x0,
        group_ids=torch.tensor([r for r, _ in items], dtype=torch.long),
        conditions=conditions,
        schedule=schedule,
        seconds=time.perf_counter() - started,
        guidance=guidance,
        trajectory=trajectory,
    )


def score(reward: Callable, batch: RolloutBatch, *, scale: float = 1.0) -> ScoredBatch:
    """Score every item's image against its request; failures become NaN (see the module docstring)."""
    started = time.perf_counter()
    requests = [batch.requests[r] for r, _ in batch.items]
    n = len(requests)
    error = None
    try:
        result = reward([q.image for q in requests], batch.images, [q.instruction for q in requests], [q.meta for q in requests])
        if len(result.scores) != n:
            raise BackendError(f"the reward returned {len(result.scores)} scores for {n} images")
        scores, details = list(result.scores), list(result.details)
    except BackendError as err:
        # A judge that failed part-way (refine.rewards.mllm.PartialRewardError) keeps what it scored.
        partial = getattr(err, "partial", None)
        if partial is not None and len(partial.scores) == n:
            scores, details = list(partial.scores), list(partial.details)
        else:
            scores, details = [None] * n, [{} for _ in range(n)]
        error = str(err)
    rewards = torch.tensor([float("nan") if s is None else float(s) * scale for s in scores], dtype=torch.float32)
    return ScoredBatch(rewards, int(torch.isnan(rewards).sum()), time.perf_counter() - started, details, error)
