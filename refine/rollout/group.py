"""Group rollouts: G samples per request, each condition encoded once, samples and CFG batched.

Example:
    >>> from PIL import Image
    >>> from refine.types import EditRequest
    >>> from refine.rollout.group import sample_group
    >>> requests = [EditRequest(Image.new("RGB", (32, 32), "white"), "add a red circle")]
    >>> out = sample_group(backbone, requests, group_size=4, sampler="sde", steps=8,   # doctest: +SKIP
    ...                    seed=0, record=True, max_batch=8)
    >>> len(out.images[0]), out.trajectories[0].latents.shape                          # doctest: +SKIP
    (4, torch.Size([4, 9, N, C]))

How a rollout runs (`sample_group`):
1. Check inputs; resolve the sampler config and guidance (None: the backbone's default).
2. Encode each request's condition once (batch of one, so it never depends on its neighbours).
3. Make the work list of (request, sample) items with their seeds: sample ``g`` of request ``r``
   draws all of its noise (initial latents and every SDE step) from its own generator seeded with
   `sample_seed(seed, r, g)`, so images do not depend on how items are chunked.
4. Bucket items by latent shape (requests of another resolution cannot share a batch), cut each
   bucket into chunks of at most `max_batch` transformer items (a sample counts twice under CFG,
   whose two branches run in one pass), and denoise each chunk from t = 1 to 0, recording x_t,
   t and log-probs when asked.
5. Decode, regroup per request.

Chunking changes only which samples share a matrix multiply: results agree to float rounding
(~1e-6 on latents); chunks mixing requests pad their text to a common length (masked).
`recompute_log_probs` re-evaluates recorded SDE steps under the current model, which is what
policy-gradient RL differentiates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from refine.backbones.base import Condition, FlowBackbone, concat_conditions
from refine.config import validate_config
from refine.errors import InputError
from refine.images import to_pil
from refine.rollout.samplers import SamplerConfig, make_sampler, sde_step_log_prob
from refine.rollout.trajectory import Trajectory
from refine.types import EditRequest


def sample_seed(seed: int, request_index: int, sample_index: int) -> int:
    """The generator seed of sample `sample_index` of request `request_index` (well mixed, 63 bits).

    Example:
        >>> sample_seed(0, 0, 1) == sample_seed(0, 0, 1) != sample_seed(0, 1, 0)
        True
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(request_index), int(sample_index)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1]))


@dataclass
class GroupOutput:
    """What `sample_group` returns, indexed [request][sample].

    Attributes:
        images: RGB images at the backbone's resolution, `images[r][g]`.
        latents: per request, (G, N, C) float32 final latents.
        conditions: per request, its encoded condition (batch of one) — reuse it for training.
        seeds: per request, the generator seed of each sample.
        trajectories: per request, the recorded `Trajectory` of its G samples (when `record=True`).
        config: the sampler settings used; `guidance` the resolved guidance scale.
        seconds: wall time of the whole rollout.
    """

    images: list[list[Image.Image]]
    latents: list[torch.Tensor]
    conditions: list[Condition]
    seeds: list[list[int]]
    trajectories: list[Trajectory] | None
    config: SamplerConfig
    guidance: float | None
    seconds: float

    def flat_images(self) -> list[Image.Image]:
        """All images, request-major: [r0g0, r0g1, ..., r1g0, ...]."""
        return [image for group in self.images for image in group]

    def batch(self, requests: Sequence[int] | None = None) -> tuple[Trajectory, Condition]:
        """The stacked trajectory of `requests` (default: all) and the matching per-sample condition.

        Requests must share a resolution; the condition's text is padded to a common length.
        """
        if self.trajectories is None:
            raise ValueError("this rollout was not recorded; call sample_group(..., record=True)")
        requests = list(range(len(self.trajectories))) if requests is None else list(requests)
        trajectory = Trajectory.cat([self.trajectories[r] for r in requests])
        cond = concat_conditions([self.conditions[int(r)] for r in trajectory.request_index.tolist()])
        return trajectory, cond


def resolve_sampler(sampler: str | SamplerConfig, steps: int | None = None, guidance: float | None = None) -> SamplerConfig:
    """A `SamplerConfig` from a name or a config, with `steps`/`guidance` overriding when given.

    Example:
        >>> resolve_sampler("dpm", steps=6).model_dump(include={"name", "steps"})
        {'name': 'dpm', 'steps': 6}
    """
    data = {"name": sampler} if isinstance(sampler, str) else sampler.model_dump()
    if steps is not None:
        data["steps"] = steps
    if guidance is not None:
        data["guidance"] = guidance
    return validate_config(SamplerConfig, data, source="sampler")


def sample_group(
    backbone: FlowBackbone,
    requests: Sequence[EditRequest],
    group_size: int = 1,
    sampler: str | SamplerConfig = "euler",
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    record: bool = False,
    max_batch: int = 8,
) -> GroupOutput:
    """Draw `group_size` samples for every request; see the module docstring for the steps.

    `max_batch` bounds the transformer items per forward pass (the memory budget): a chunk holds
    ``max_batch // 2`` samples under CFG (at least one), ``max_batch`` otherwise.
    """
    # 1. Check inputs, resolve settings.
    started = time.perf_counter()
    if not requests:
        raise InputError("sample_group got no requests; pass at least one EditRequest")
    if group_size < 1 or max_batch < 1:
        raise InputError(f"group_size={group_size} and max_batch={max_batch} must both be >= 1")
    config = resolve_sampler(sampler, steps, guidance)
    guidance = config.guidance if config.guidance is not None else backbone.default_guidance

    # 2. Encode each condition once.
    with torch.no_grad():
        conditions = [backbone.encode_condition([r.image], [r.instruction], guidance=guidance) for r in requests]

    # 3. Work items with their seeds.
    seeds = [[sample_seed(seed, r, g) for g in range(group_size)] for r in range(len(requests))]
    items = [(r, g) for r in range(len(requests)) for g in range(group_size)]

    # 4-5. Denoise in shape buckets and memory-bounded chunks, then regroup per request.
    results = run_items(backbone, conditions, items, [seeds[r][g] for r, g in items], config, guidance, max_batch, record)
    images: list[list[Image.Image]] = [[None] * group_size for _ in requests]  # type: ignore[list-item]
    latents: list[list[torch.Tensor]] = [[None] * group_size for _ in requests]  # type: ignore[list-item]
    pieces: list[list[dict]] = [[None] * group_size for _ in requests]  # type: ignore[list-item]
    for (r, g), result in zip(items, results):
        images[r][g], latents[r][g], pieces[r][g] = result["image"], result["latents"], result.get("trajectory")
    trajectories = None
    if record:
        trajectories = [_stack_trajectory(pieces[r], r, guidance, config) for r in range(len(requests))]
    return GroupOutput(
        images=images,
        latents=[torch.stack(group) for group in latents],
        conditions=conditions,
        seeds=seeds,
        trajectories=trajectories,
        config=config,
        guidance=guidance,
        seconds=time.perf_counter() - started,
    )


def run_items(
    backbone: FlowBackbone,
    conditions: Sequence[Condition],
    items: Sequence[tuple[int, int]],
    seeds: Sequence[int],
    config: SamplerConfig,
    guidance: float | None,
    max_batch: int,
    record: bool = False,
) -> list[dict[str, Any]]:
    """Denoise `items` = (condition index, sample index) with one generator seed each.

    Returns one dict per item, in order: ``image`` (PIL), ``latents`` (N, C) and, when `record`,
    ``trajectory`` (the item's x_t / t / log-probs). Shared by `sample_group` and `FlowEditor`.
    """
    buckets: dict[tuple, list[int]] = {}
    for position, (c, _) in enumerate(items):
        # Sources of another size cannot share a batch either (an edit size set apart from the source's).
        source = conditions[c].image_latents
        key = (tuple(conditions[c].latent_shape), tuple(conditions[c].image_size), None if source is None else tuple(source.shape[1:]))
        buckets.setdefault(key, []).append(position)
    results: list[dict[str, Any]] = [{} for _ in items]
    for positions in buckets.values():
        branches = 2 if conditions[items[positions[0]][0]].negative is not None else 1
        per_chunk = max(1, max_batch // branches)
        for start in range(0, len(positions), per_chunk):
            chunk = positions[start : start + per_chunk]
            cond = concat_conditions([conditions[items[p][0]] for p in chunk])
            out = denoise(backbone, cond, [seeds[p] for p in chunk], config, guidance, record)
            for j, p in enumerate(chunk):
                results[p] = {"image": out["images"][j], "latents": out["latents"][j], "sample_index": items[p][1]}
                if record:
                    results[p]["trajectory"] = {k: v[j] for k, v in out["trajectory"].items()}
    return results


@torch.no_grad()
def denoise(
    backbone: FlowBackbone,
    cond: Condition,
    seeds: Sequence[int],
    config: SamplerConfig,
    guidance: float | None,
    record: bool = False,
) -> dict[str, Any]:
    """Run one batch (B = len(seeds)) from noise to images: the sampling loop, read top to bottom."""
    device = backbone.device
    batch = len(seeds)
    # Generators live on the CPU so a seed gives the same noise on every device.
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    # 1. Initial noise and the schedule (with the backbone's resolution-dependent shift).
    x = backbone.prepare_noise(cond, generators).to(device=device, dtype=torch.float32)  # (B, N, C)
    sigmas = backbone.sigmas(config.steps, cond).float().cpu()  # (S + 1,)
    sampler = make_sampler(config, sigmas)

    # 2. Integrate; stochastic steps draw their noise from each sample's own generator.
    xs, log_probs, stochastic = [x], torch.zeros(batch, sampler.steps, device=device), [False] * sampler.steps
    for i in range(sampler.steps):
        t = sigmas[i].to(device).expand(batch)
        velocity = backbone.predict_velocity(x, t, cond, guidance)  # (B, N, C)
        noise = _draw_noise(generators, x.shape[1:], device) if sampler.is_stochastic(i) else None
        step = sampler.step(i, x, velocity, noise)
        x = step.sample
        if record:
            xs.append(x)
            if step.log_prob is not None:
                log_probs[:, i], stochastic[i] = step.log_prob, True

    # 3. Decode.
    pixels = backbone.decode(x, cond)  # (B, 3, H, W) in [0, 1]
    out: dict[str, Any] = {"images": [to_pil(p) for p in pixels], "latents": x}
    if record:
        out["trajectory"] = {
            "latents": torch.stack(xs, dim=1),  # (B, S + 1, N, C)
            "sigmas": sigmas.to(device).expand(batch, -1),
            "log_probs": log_probs,
            "stochastic": torch.tensor(stochastic, device=device).expand(batch, -1),
        }
    return out


def recompute_log_probs(
    backbone: FlowBackbone,
    trajectory: Trajectory,
    cond: Condition,
    steps: Sequence[int] | None = None,
) -> torch.Tensor:
    """(B, len(steps)) log p(x_{i+1} | x_i) of recorded steps under the backbone's current velocity.

    `cond` holds one item per trajectory sample (`GroupOutput.batch()` builds both); `steps`
    defaults to the stochastic steps. Gradients flow when enabled: RL calls this inside its loss.
    With an unchanged model it reproduces `trajectory.log_probs` (to float rounding).
    """
    config = SamplerConfig.model_validate(trajectory.info["sampler"])
    steps = trajectory.stochastic_indices if steps is None else list(steps)
    device = backbone.device
    columns = []
    for i in steps:
        x, t, x_next, t_next = (v.to(device) for v in trajectory.step(i))
        if not bool(trajectory.stochastic[i]):
            raise ValueError(f"step {i} is deterministic (ODE): it has no log-probability; stochastic steps: {trajectory.stochastic_indices}")
        if not (bool((t == t[0]).all()) and bool((t_next == t_next[0]).all())):
            raise ValueError("recompute_log_probs needs samples on one schedule; select samples of one resolution")
        velocity = backbone.predict_velocity(x, t, cond, trajectory.guidance)
        columns.append(
            sde_step_log_prob(
                x, velocity, t[0], t_next[0], x_next, config.noise_level, config.coefficient_preserving, config.log_prob_reduce
            )
        )
    return torch.stack(columns, dim=1) if columns else torch.zeros(len(trajectory), 0, device=device)


def _draw_noise(generators: Sequence[torch.Generator], shape: torch.Size, device: torch.device) -> torch.Tensor:
    """(B, *shape) standard normal noise, row b from generator b (independent of the batch)."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device)


def _stack_trajectory(pieces: list[dict], request: int, guidance: float | None, config: SamplerConfig) -> Trajectory:
    stochastic = pieces[0]["stochastic"]
    return Trajectory(
        latents=torch.stack([p["latents"] for p in pieces]),
        sigmas=torch.stack([p["sigmas"] for p in pieces]),
        log_probs=torch.stack([p["log_probs"] for p in pieces]),
        stochastic=stochastic.clone(),
        request_index=torch.full((len(pieces),), request, dtype=torch.long),
        sample_index=torch.arange(len(pieces)),
        guidance=guidance,
        info={"sampler": config.model_dump(mode="json")},
    )
