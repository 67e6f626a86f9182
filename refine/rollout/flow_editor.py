"""FlowEditor: a flow-matching backbone plus sampler settings, as a batched white-box `Editor`.

Example:
    >>> from PIL import Image
    >>> from refine.types import EditRequest
    >>> from refine.rollout.flow_editor import FlowEditor
    >>> editor = FlowEditor(backbone, sampler="euler", steps=8, batch_size=4)            # doctest: +SKIP
    >>> [result] = editor.edit([EditRequest(Image.new("RGB", (32, 32)), "add a blue square", seed=0)])  # doctest: +SKIP
    >>> result.steps[0].kind, result.steps[0].source                                   # doctest: +SKIP
    ('edit', 'qwen_image_edit')

White-box refiners reach `editor.backbone` (the inline critic installs processors on
`backbone.transformer`, RL loads LoRA adapters into it). Output images have the backbone's
resolution (see its `prepare_images` policy), not necessarily the source's.
"""

from __future__ import annotations

import secrets
import time
from typing import Sequence

import torch

from refine.backbones.base import FlowBackbone
from refine.errors import InputError
from refine.rollout.group import resolve_sampler, run_items
from refine.rollout.samplers import SamplerConfig
from refine.types import EditRequest, EditResult, Step


class FlowEditor:
    """Edits batches of requests with `backbone`; implements `refine.editor.WhiteBoxEditor`.

    Args:
        backbone: any `FlowBackbone`.
        sampler: a sampler name (``euler``, ``dpm``, ``sde``) or a full `SamplerConfig`.
        steps, guidance: override the sampler config's values when given (guidance None: the
            backbone's default).
        batch_size: transformer items per forward pass (the memory budget; CFG counts twice).

    Each request's noise comes from a generator seeded with `EditRequest.seed` (a random seed,
    recorded in the step's info, when None), so a result does not depend on its batch neighbours.
    """

    def __init__(
        self,
        backbone: FlowBackbone,
        sampler: str | SamplerConfig = "euler",
        steps: int | None = None,
        guidance: float | None = None,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size} must be >= 1")
        self.backbone = backbone
        self.sampler = resolve_sampler(sampler, steps, guidance)
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def guidance(self) -> float | None:
        return self.sampler.guidance if self.sampler.guidance is not None else self.backbone.default_guidance

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        if not requests:
            return []
        started = time.perf_counter()
        seeds = [r.seed if r.seed is not None else secrets.randbits(31) for r in requests]
        guidance = self.guidance
        with torch.no_grad():
            conditions = [self.backbone.encode_condition([r.image], [r.instruction], guidance=guidance) for r in requests]
        outputs = run_items(
            self.backbone, conditions, [(i, 0) for i in range(len(requests))], seeds, self.sampler, guidance, self.batch_size
        )
        seconds = (time.perf_counter() - started) / len(requests)  # amortised over the batch
        info = {"sampler": self.sampler.name, "steps": self.sampler.steps, "guidance": guidance}
        return [
            EditResult(
                image=out["image"],
                instruction=request.instruction,
                steps=[
                    Step(
                        kind="edit",
                        source=self.backbone.name,
                        instruction=request.instruction,
                        image=out["image"],
                        seconds=seconds,
                        info={**info, "seed": seed},
                    )
                ],
                meta=dict(request.meta),
            )
            for request, out, seed in zip(requests, outputs, seeds)
        ]
