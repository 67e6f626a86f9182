"""CFG-free sampling: a view of a backbone whose sampling velocity is its conditional velocity alone.

Example:
    >>> import torch
    >>> from PIL import Image
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> from refine.rollout.cfg import ConditionalOnly
    >>> backbone = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])  # CFG 2 by default
    >>> free = ConditionalOnly(backbone)
    >>> cond = free.encode_condition([Image.new("RGB", (32, 32))], ["red"])
    >>> cond.negative is None                          # no unconditional branch is even encoded
    True
    >>> x, t = torch.randn(1, 64, 48), torch.tensor([0.5])
    >>> torch.equal(free.predict_velocity(x, t, cond), backbone.velocity(x, t, cond))
    True

Why a view and not "guidance 1": what guidance means depends on the backbone. For ShapeEdit and
Qwen-Image-Edit it is a true CFG scale (1 switches the second branch off); for FLUX.1 Kontext it
is the value fed to the guidance embedding (1 would change the policy, not remove a branch). The
policy that DiffusionNFT's loss models is `FlowBackbone.velocity` on a condition without a
negative branch, whatever the backbone; sampling through this view draws from exactly that
policy, so its rollouts are on-policy for the CFG-free loss. Every other attribute is the
backbone's own (the same transformer, LoRA and shadow weights included).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
from PIL import Image

from refine.backbones.base import Condition, FlowBackbone


class ConditionalOnly:
    """Wrap `backbone` so that sampling uses ``backbone.velocity(x, t, cond)`` with no negative branch."""

    def __init__(self, backbone: FlowBackbone) -> None:
        self.backbone = backbone

    def __getattr__(self, name: str) -> Any:
        # Only called for names this view does not define: everything else is the backbone's.
        return getattr(self.__dict__["backbone"], name)

    def encode_condition(
        self, images: Sequence[Image.Image], instructions: Sequence[str], *, guidance: float | None = None
    ) -> Condition:
        """The backbone's condition, without the negative branch (an embedded guidance stays in `extras`)."""
        return replace(self.backbone.encode_condition(images, instructions, guidance=guidance), negative=None)

    def predict_velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = None
    ) -> torch.Tensor:
        """(B, N, C) conditional velocity; `guidance` is ignored (this view never guides)."""
        return self.backbone.velocity(x_t, t, replace(cond, negative=None))
