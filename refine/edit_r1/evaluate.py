"""Held-out evaluation: edit fixed requests with the EMA weights and score them with the judge.

Example:
    >>> from PIL import Image
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> from refine.edit_r1.evaluate import evaluate
    >>> from refine.rewards.base import RewardOutput
    >>> from refine.types import EditRequest
    >>> backbone = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> requests = [EditRequest(Image.new("RGB", (32, 32), "white"), "red", seed=i) for i in range(2)]
    >>> ones = lambda s, o, i, m: RewardOutput([1.0] * len(o))
    >>> out = evaluate(backbone, requests, ones, sampler="dpm", steps=2)
    >>> out.mean, len(out.images)
    (1.0, 2)

Each request carries its own seed, so its edit does not depend on which process evaluates it or
on its batch neighbours: the same weights give the same score with 1 or 8 processes. Process p
evaluates requests p, p + P, ...; scores are gathered on every process. Under FSDP2 every
forward is a collective (the shards are gathered layer by layer), so each process edits the same
number of requests: a shorter share is padded with repeats of a request, whose outputs are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from refine.errors import BackendError
from refine.rollout.flow_editor import FlowEditor
from refine.training.accelerate_setup import is_sharded
from refine.types import EditRequest


@dataclass
class EvalResult:
    """Mean judge score (NaN if nothing was scored), per-request scores in request order, this process's images."""

    mean: float
    scores: list[float | None]
    images: list[Image.Image]
    sources: list[Image.Image]


def evaluate(
    backbone,
    requests: Sequence[EditRequest],
    reward: Callable,
    *,
    sampler: str = "dpm",
    steps: int = 6,
    guidance: float | None = None,
    batch_size: int = 8,
    accelerator=None,
) -> EvalResult:
    """Edit `requests` with the backbone's current weights and score them (see the module docstring)."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    positions = list(range(rank, len(requests), world))
    shard = [requests[i] for i in positions]
    lockstep = accelerator is not None and world > 1 and is_sharded(accelerator)
    padding = [requests[0]] * (math.ceil(len(requests) / world) - len(shard)) if lockstep else []
    editor = FlowEditor(backbone, sampler=sampler, steps=steps, guidance=guidance, batch_size=batch_size)
    with torch.no_grad():
        results = editor.edit(shard + padding)[: len(shard)] if shard or padding else []
    scores: list[float | None] = [None] * len(shard)
    if shard:
        try:
            output = reward([r.image for r in shard], [r.image for r in results], [r.instruction for r in shard], [r.meta for r in shard])
            scores = [None if s is None or not math.isfinite(float(s)) else float(s) for s in output.scores]
        except BackendError:
            pass  # an unreachable judge gives no evaluation this time, not a dead run
    pairs = list(zip(positions, scores))
    if world > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
    ordered: list[float | None] = [None] * len(requests)
    for position, value in pairs:
        ordered[position] = value
    valid = [s for s in ordered if s is not None]
    mean = sum(valid) / len(valid) if valid else float("nan")
    return EvalResult(mean, ordered, [r.image for r in results], [r.image for r in shard])
