"""Multi-turn group rollouts: G independent K-turn trajectories per sequence, each turn editing the last output.

Example (a tiny random editor, 2 sequences x G=2 trajectories x K=2 turns):
    >>> from PIL import Image
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> from refine.rollout.multiturn import SequenceRequest, rollout_turns
    >>> backbone = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red", "blue"])
    >>> sequences = [SequenceRequest(Image.new("RGB", (32, 32), c), ["red", "blue"]) for c in ("white", "black")]
    >>> batch = rollout_turns(backbone, sequences, group_size=2, sampler="euler", steps=2, seed=0)
    >>> tuple(batch.x0.shape), batch.items, batch.group_ids.tolist()       # (n = S * G, K, N, C)
    ((4, 2, 64, 48), [(0, 0), (0, 1), (1, 0), (1, 1)], [0, 0, 1, 1])
    >>> len(batch.images[0]), batch.turns
    (2, 2)

Notation (the whole multi-turn stack uses it): S sequences per iteration, G trajectories per
sequence (the group), K turns per trajectory, T sampling steps per turn; n = S * G items.

How a rollout runs (`rollout_turns`), read top to bottom:
1. Items are the (sequence s, sample g) pairs, sequence-major; every item starts from the
   sequence's original image (turn 0's source).
2. For turn k = 1..K: encode each item's condition from (its own image after turn k-1, the
   sequence's k-th instruction) -- conditions differ per item after turn 1, since each trajectory
   edits its own previous output -- then denoise every item of the turn in memory-bounded chunks
   (`refine.rollout.group.run_items`, batched across sequences).
3. Item (s, g) at turn k draws all of its noise from a generator seeded with
   `turn_seed(seed, s, g, k)`: what a trajectory looks like depends only on (seed, s, g) -- the
   caller folds the iteration into `seed` -- not on the process that drew it, its batch neighbours
   or whether the run was resumed.
4. Record per turn: the output image, the final latents x0 (the NFT objective trains on them), the
   condition (for the training forward) and, with `record=True`, the sampler trajectory with its
   per-step log-probs (Flow-GRPO's ratio needs them).

Groups are independent full trajectories (no branching): all G samples of a group share the
original image and every instruction, which is what a group-normalised trajectory advantage
broadcast over the turns assumes. Branching (G continuations from one shared prefix) is not
implemented; the paper does not say it branches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from refine.backbones.base import Condition, FlowBackbone, concat_conditions
from refine.errors import InputError
from refine.images import load_image
from refine.rollout.group import resolve_sampler, run_items
from refine.rollout.samplers import SamplerConfig
from refine.rollout.trajectory import Trajectory


@dataclass
class SequenceRequest:
    """One multi-turn task: the original image and K instructions (with one meta dict per turn).

    `metas[k]` goes to the rewards of turn k (ShapeEdit puts the exact case of that turn there);
    `meta` describes the whole sequence (its id, and for ShapeEdit the sequence itself).
    """

    image: Image.Image
    instructions: list[str]
    metas: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = load_image(self.image)
        self.instructions = [str(i).strip() for i in self.instructions]
        if not self.instructions or not all(self.instructions):
            raise InputError(f"a multi-turn request needs one non-empty instruction per turn, got {self.instructions!r}")
        if not self.metas:
            self.metas = [{} for _ in self.instructions]
        if len(self.metas) != len(self.instructions):
            raise InputError(f"{len(self.metas)} turn metas for {len(self.instructions)} instructions; give one per turn")

    @property
    def turns(self) -> int:
        return len(self.instructions)


def turn_seed(seed: int, sequence: int, sample: int, turn: int) -> int:
    """The generator seed of turn `turn` of trajectory `sample` of sequence `sequence` (63 bits).

    >>> turn_seed(0, 1, 2, 0) == turn_seed(0, 1, 2, 0) != turn_seed(0, 1, 2, 1)
    True
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, int(sequence), int(sample), int(turn)])
    a, b = state.generate_state(2)
    return int((int(a) << 31) ^ int(b))


@dataclass
class MultiTurnBatch:
    """The n items one process drew in an iteration, recorded per turn.

    Attributes:
        sequences: every sequence of the iteration (all processes see the same list).
        items: the (sequence index, sample index) pairs drawn here, in order (n of them).
        images: images[i][k], the RGB output of item i after turn k (K per item).
        sources: sources[i][k], the image item i edited at turn k (the original for k = 0).
        x0: (n, K, N, C) float32 final latents of every turn.
        conditions: conditions[i][k], the encoded condition (batch of one, with CFG negative).
        trajectories: per turn k, the recorded `Trajectory` of the n items (record=True), else None.
        schedule: (T + 1,) sampling times of the first turn (training draws its times from them).
        guidance: the CFG scale the rollout used.
        seconds: wall time.
    """

    sequences: list[SequenceRequest]
    items: list[tuple[int, int]]
    images: list[list[Image.Image]]
    sources: list[list[Image.Image]]
    x0: torch.Tensor
    conditions: list[list[Condition]]
    trajectories: list[Trajectory] | None
    schedule: torch.Tensor
    guidance: float | None
    seconds: float

    def __len__(self) -> int:
        return len(self.items)

    @property
    def turns(self) -> int:
        return self.x0.shape[1]

    @property
    def group_ids(self) -> torch.Tensor:
        """(n,) long: the sequence index of each item (items of one sequence form a group)."""
        return torch.tensor([s for s, _ in self.items], dtype=torch.long)

    def training_conditions(self, turn: int) -> Condition:
        """The positive-branch condition of every item at `turn` (n items) for a training forward."""
        return concat_conditions([replace(c[turn], negative=None) for c in self.conditions])

    def flat_training_conditions(self) -> Condition:
        """The positive-branch condition of every (item, turn) sample, sample i * K + k (n * K items)."""
        return concat_conditions([replace(c, negative=None) for per_item in self.conditions for c in per_item])

    def guided_conditions(self, turn: int) -> Condition:
        """Every item's condition at `turn` with its CFG negative (for recomputing guided log-probs)."""
        return concat_conditions([c[turn] for c in self.conditions])


def rollout_turns(
    backbone: FlowBackbone,
    sequences: Sequence[SequenceRequest],
    group_size: int | None = None,
    *,
    items: Sequence[tuple[int, int]] | None = None,
    sampler: str | SamplerConfig = "dpm",
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    max_batch: int = 8,
    record: bool = False,
    turns: int | None = None,
) -> MultiTurnBatch:
    """Draw K-turn trajectories with the backbone's current weights (see the module docstring).

    Give `group_size` (every sequence x G samples) or an explicit `items` list (a process's
    slice). `turns` plays only the first K turns of each sequence (default: all; sequences must
    agree). The caller swaps in the policy to roll out (the old policy) and folds the iteration
    into `seed`.
    """
    started = time.perf_counter()
    if not sequences:
        raise InputError("rollout_turns got no sequences; pass at least one SequenceRequest")
    if items is None:
        if not group_size or group_size < 1:
            raise InputError(f"group_size={group_size}; give a group size >= 1 or an explicit items list")
        items = [(s, g) for s in range(len(sequences)) for g in range(group_size)]
    items = list(items)
    lengths = {sequences[s].turns for s, _ in items}
    if turns is None:
        if len(lengths) != 1:
            raise InputError(f"the sequences have {sorted(lengths)} turns; pass turns=K to play the first K of each")
        turns = next(iter(lengths))
    if turns < 1 or turns > min(lengths):
        raise InputError(f"turns={turns} but the shortest sequence has {min(lengths)}; pick 1..{min(lengths)}")
    config = resolve_sampler(sampler, steps, guidance)
    guidance = config.guidance if config.guidance is not None else backbone.default_guidance

    current = [sequences[s].image for s, _ in items]  # 1. every trajectory starts at the original
    images: list[list[Image.Image]] = [[] for _ in items]
    sources: list[list[Image.Image]] = [[] for _ in items]
    conditions: list[list[Condition]] = [[] for _ in items]
    latents: list[list[torch.Tensor]] = [[] for _ in items]
    recorded: list[Trajectory] = []
    schedule = None
    with torch.no_grad():
        for k in range(turns):  # 2. one batched denoising pass per turn
            conds = [
                backbone.encode_condition([current[i]], [sequences[s].instructions[k]], guidance=guidance)
                for i, (s, _) in enumerate(items)
            ]
            seeds = [turn_seed(seed, s, g, k) for s, g in items]  # 3. per-trajectory, per-turn noise
            results = run_items(backbone, conds, [(i, g) for i, (_, g) in enumerate(items)], seeds, config, guidance, max_batch, record)
            for i, out in enumerate(results):  # 4. record the turn
                sources[i].append(current[i])
                images[i].append(out["image"])
                latents[i].append(out["latents"].float().cpu())
                conditions[i].append(conds[i])
            if record:
                recorded.append(_turn_trajectory(results, items, guidance, config))
            if schedule is None:
                schedule = backbone.sigmas(config.steps, conds[0]).float().cpu()
            current = [out["image"] for out in results]
    x0 = torch.stack([torch.stack(per_turn) for per_turn in latents])  # (n, K, N, C)
    return MultiTurnBatch(
        sequences=list(sequences),
        items=items,
        images=images,
        sources=sources,
        x0=x0,
        conditions=conditions,
        trajectories=recorded if record else None,
        schedule=schedule,
        guidance=guidance,
        seconds=time.perf_counter() - started,
    )


def _turn_trajectory(results: list[dict], items: list[tuple[int, int]], guidance, config) -> Trajectory:
    pieces = [r["trajectory"] for r in results]
    return Trajectory(
        latents=torch.stack([p["latents"] for p in pieces]).cpu(),
        sigmas=torch.stack([p["sigmas"] for p in pieces]).cpu(),
        log_probs=torch.stack([p["log_probs"] for p in pieces]).cpu(),
        stochastic=pieces[0]["stochastic"].clone().cpu(),
        request_index=torch.tensor([s for s, _ in items], dtype=torch.long),
        sample_index=torch.tensor([g for _, g in items], dtype=torch.long),
        guidance=guidance,
        info={"sampler": config.model_dump(mode="json")},
    )
