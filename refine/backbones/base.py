"""The white-box view of a flow-matching editor that rollouts, RL and the inline critic share.

Example (any backbone; `shapes` is the CPU-scale one):
    >>> import torch
    >>> def euler_edit(backbone, images, instructions, steps=8, guidance=None):   # doctest: +SKIP
    ...     cond = backbone.encode_condition(images, instructions)               # once per request
    ...     x = backbone.prepare_noise(cond, generator=torch.Generator().manual_seed(0))
    ...     sigmas = backbone.sigmas(steps, cond)                                 # (steps + 1,) 1 -> 0
    ...     for t, t_next in zip(sigmas[:-1], sigmas[1:]):
    ...         v = backbone.predict_velocity(x, t.expand(len(x)), cond, guidance)
    ...         x = x + (t_next - t) * v
    ...     return backbone.decode(x, cond)                                       # (B, 3, H, W) in [0, 1]

Conventions, stated once for the whole project:
* Flow matching: ``x_t = (1 - t) * x_0 + t * noise`` with t in [0, 1] (t = 1 is pure noise) and
  velocity ``v = noise - x_0``; an Euler step from t to t_next is ``x + (t_next - t) * v``.
  Timesteps handed to the transformer are t in [0, 1] (diffusers' MM-DiTs scale by 1000 inside).
* Latents are *packed* tokens ``(B, N, C)``: what the MM-DiT consumes and what samplers update.
  `encode_images` maps pixels to packed latents, `decode` maps them back.
* Source images are resized to the backbone's pixel multiple by `prepare_images`, which each
  backbone documents (the policy is applied the same way by every caller).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from PIL import Image


@dataclass
class Condition:
    """Everything the denoiser needs besides ``x_t`` and ``t``, for a batch of B requests.

    Attributes:
        text: (B, L, D) text-stream embeddings fed to the MM-DiT.
        text_mask: (B, L) 1 for real tokens, 0 for padding.
        image_latents: (B, N_src, C) packed source-image latents, or None for text-only models.
        latent_shape: (N, C) of one item's packed *noise* latents (what the sampler integrates).
        image_size: (H, W) in pixels of the output (after `prepare_images`).
        negative: the unconditional/negative condition for classifier-free guidance, if any.
        extras: backbone-specific entries (pooled text, RoPE shapes...). Tensors whose first
            dimension is B are repeated and indexed with the batch; anything else is shared.
    """

    text: torch.Tensor
    text_mask: torch.Tensor
    image_latents: torch.Tensor | None
    latent_shape: tuple[int, int]
    image_size: tuple[int, int]
    negative: "Condition | None" = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.text.shape[0]

    def map(self, fn) -> "Condition":
        """Apply `fn` to every batch-first tensor (including the negative condition's)."""
        batch = self.batch_size

        def apply(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
                return fn(value)
            if isinstance(value, list) and len(value) == batch:
                return _map_list(value, fn)
            return value

        return replace(
            self,
            text=fn(self.text),
            text_mask=fn(self.text_mask),
            image_latents=None if self.image_latents is None else fn(self.image_latents),
            negative=None if self.negative is None else self.negative.map(fn),
            extras={k: apply(v) for k, v in self.extras.items()},
        )

    def repeat_interleave(self, repeats: int) -> "Condition":
        """Each item repeated `repeats` times in place: [a, b] -> [a, a, b, b] (group expansion)."""
        return self.map(lambda x: x.repeat_interleave(repeats, dim=0))

    def select(self, index: torch.Tensor | Sequence[int]) -> "Condition":
        """The items at `index`, in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        return self.map(lambda x: x.index_select(0, index.to(x.device)))

    def to(self, device: torch.device | str) -> "Condition":
        return self.map(lambda x: x.to(device))

    def detach(self) -> "Condition":
        return self.map(lambda x: x.detach())


def _map_list(values: list, fn) -> list:
    """Lists with one entry per item (e.g. RoPE image shapes) follow the batch through `fn`."""
    index = fn(torch.arange(len(values)))
    return [values[i] for i in index.tolist()]


def concat_conditions(conditions: Sequence[Condition]) -> Condition:
    """Stack conditions along the batch. Text streams of different lengths are right-padded with
    zeros (mask 0) to the longest, so backbones must honour `text_mask`; every other tensor must
    already match (callers group requests by image shape)."""
    first = conditions[0]
    if len(conditions) == 1:
        return first
    longest = max(c.text.shape[1] for c in conditions)
    batch_fields = {}
    for f in fields(first):
        if f.name in ("text", "text_mask", "image_latents"):
            values = [getattr(c, f.name) for c in conditions]
            if f.name != "image_latents":
                values = [_pad_tokens(v, longest) for v in values]
            batch_fields[f.name] = None if values[0] is None else torch.cat(values, dim=0)
    negative = None if first.negative is None else concat_conditions([c.negative for c in conditions])
    extras = {}
    for key, value in first.extras.items():
        values = [c.extras[key] for c in conditions]
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == first.batch_size:
            extras[key] = torch.cat(values, dim=0)
        elif isinstance(value, list) and len(value) == first.batch_size:
            extras[key] = [v for vs in values for v in vs]
        else:
            extras[key] = value
    return replace(first, negative=negative, extras=extras, **batch_fields)


def _pad_tokens(value: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dim 1 of a (B, L, ...) tensor with zeros to `length`."""
    missing = length - value.shape[1]
    if missing == 0:
        return value
    return torch.cat([value, value.new_zeros((value.shape[0], missing, *value.shape[2:]))], dim=1)


@runtime_checkable
class FlowBackbone(Protocol):
    """A flow-matching image editor opened up for sampling, training and in-forward refinement.

    Implementations: `refine.backbones.shapes` (ShapeEdit's small editor),
    `refine.backbones.qwen_image_edit`, `refine.backbones.flux_kontext`.
    """

    name: str
    transformer: torch.nn.Module  # the MM-DiT; critics install attention processors on its blocks
    default_guidance: float | None  # None: the backbone does not use CFG by default

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def prepare_images(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """Resize/crop RGB images to what the backbone accepts (policy documented per backbone)."""

    def encode_condition(
        self, images: Sequence[Image.Image], instructions: Sequence[str], *, guidance: float | None = None
    ) -> Condition:
        """Encode a batch once; includes `negative` when `guidance` (or the default) needs CFG."""

    def prepare_noise(self, cond: Condition, generator: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
        """Packed Gaussian noise (B, N, C) for `cond`; one generator per item makes samples independent of batching."""

    def sigmas(self, steps: int, cond: Condition) -> torch.Tensor:
        """(steps + 1,) float32 decreasing times from 1 to 0, with the backbone's timestep shift."""

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """One conditional transformer pass, no guidance: (B, N, C) velocity. What losses differentiate."""

    def predict_velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = None
    ) -> torch.Tensor:
        """Velocity with the backbone's guidance applied (CFG branches batched in one pass)."""

    def encode_images(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """Pixels -> packed latents x_0 (B, N, C) (targets for training)."""

    def decode(self, latents: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Packed latents (B, N, C) -> images (B, 3, H, W) float in [0, 1]."""
