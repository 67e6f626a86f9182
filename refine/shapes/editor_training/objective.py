"""The ShapeEdit editor's training objective: rectified flow in pixel-packed latents, with per-pixel weights.

Example:
    >>> import torch
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> from refine.shapes.editor_training.objective import flow_matching_loss
    >>> bb = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> ids, mask = bb.tokenize(["red"])
    >>> loss = flow_matching_loss(bb, torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), ids, mask,
    ...                           torch.tensor([0.5]), torch.randn(1, 64, 48))
    >>> loss.dim(), bool(loss > 0)
    (0, True)

Also the draws of one training step (`training_inputs`: CFG dropout, times, noise, in a fixed
order from one generator, so resumed runs repeat them) and two held-out diagnostics the trainer
logs at each evaluation (`validation_loss`, `one_step_errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from refine.backbones.shapes import pack_pixels
from refine.shapes.editor_training.config import TimestepConfig
from refine.training.timesteps import sample_timesteps

if TYPE_CHECKING:
    from refine.backbones.shapes import ShapesBackbone

__all__ = ["edited_pixel_mask", "flow_matching_loss", "one_step_errors", "source_object_mask", "training_inputs", "validation_loss"]


def flow_matching_loss(
    model: "torch.nn.Module",
    source: "torch.Tensor",
    target: "torch.Tensor",
    ids: "torch.Tensor",
    mask: "torch.Tensor",
    t: "torch.Tensor",
    noise: "torch.Tensor",
    backbone: "ShapesBackbone | None" = None,
    object_weight: float = 1.0,
    edit_weight: float = 1.0,
) -> "torch.Tensor":
    """Rectified-flow MSE for pixels (B, 3, H, W) in [0, 1], tokens (B, L), times (B,), noise (B, N, C).

    `model` is a `ShapesBackbone` or its accelerate-wrapped self (its `forward` is the training pass,
    returning a velocity whatever the backbone's `prediction`); `backbone` is the unwrapped editor
    when `model` is a wrapper (default: `model`). The loss lives in the space the backbone predicts
    (`ShapesBackbone.output_from_velocity` / `output_target`): ``velocity`` -> ||v - (noise - x0)||^2;
    ``x0`` -> ||x0_hat - x0||^2, i.e. the velocity loss weighted by max(t, x0_min_t)^2 -- uniform over
    t in x0 space (the x-prediction, x-loss variant of Li & He 2025).

    Per-pixel weights (both default 1, the plain mean): `object_weight` on the source's object pixels
    (`source_object_mask`), `edit_weight` on the pixels the edit changes (`edited_pixel_mask`); where
    both apply they add up: w = 1 + (object_weight - 1) * objects + (edit_weight - 1) * edited.

    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> bb = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> ids, mask = bb.tokenize(["red"])
    >>> loss = flow_matching_loss(bb, torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), ids, mask,
    ...                           torch.tensor([0.5]), torch.randn(1, 64, 48))
    >>> loss.dim(), bool(loss > 0)
    (0, True)
    """
    x0 = pack_pixels(target)  # (B, N, C) in [-1, 1]
    source_latents = pack_pixels(source)  # (B, N_src, C)
    t_ = t.view(-1, 1, 1)
    x_t = (1.0 - t_) * x0 + t_ * noise
    velocity = model(x_t, t, source_latents, ids, mask).float()  # (B, N, C)
    editor = model if backbone is None else backbone
    output, wanted = editor.output_from_velocity(velocity, x_t, t), editor.output_target(x0, noise)
    if object_weight == 1.0 and edit_weight == 1.0:
        return F.mse_loss(output, wanted)

    pixel_weight = torch.ones_like(source[:, :1])  # (B, 1, H, W); a mask is computed only when its weight is on
    if object_weight != 1.0:
        pixel_weight = pixel_weight + (object_weight - 1.0) * source_object_mask(source)
    if edit_weight != 1.0:
        pixel_weight = pixel_weight + (edit_weight - 1.0) * edited_pixel_mask(source, target)
    weight = (pack_pixels(pixel_weight.expand_as(source)) + 1.0) / 2.0  # pack maps [0, 1] to [-1, 1]: undo it
    return (weight * (output - wanted) ** 2).sum() / weight.sum()


def source_object_mask(source: "torch.Tensor") -> "torch.Tensor":
    """(B, 1, H, W) bool: the source pixels that differ from the image's most common colour (its background).

    Depends on the source only, so a loss weighted by it keeps its minimiser at the conditional mean
    (a weight that also looked at the target would pull the editor towards changing things).

    >>> import torch
    >>> image = torch.zeros(1, 3, 4, 4); image[0, 0, 1, 2] = 1.0
    >>> source_object_mask(image)[0, 0].nonzero().tolist()
    [[1, 2]]
    """
    codes = (source * 255).round().long()
    codes = codes[:, 0] * 65536 + codes[:, 1] * 256 + codes[:, 2]  # (B, H, W): one integer per colour
    background = torch.mode(codes.flatten(1), dim=1).values  # (B,)
    return (codes != background.view(-1, 1, 1)).unsqueeze(1)


def edited_pixel_mask(source: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
    """(B, 1, H, W) bool: the pixels where the target differs from the source (what the edit changes).

    Unlike `source_object_mask` this looks at the target, so a loss weighted by it is minimised by a
    weighted mean that leans towards changing pixels. On ShapeEdit the target is a deterministic
    function of (source, instruction) -- an "add" names shape, colour, size and cell -- so the
    conditional distribution is a point and the lean vanishes; what remains is the weight's purpose,
    a larger share of the gradient for the few pixels an edit touches (an added shape is ~2% of them).

    >>> import torch
    >>> source = torch.zeros(1, 3, 4, 4); target = source.clone(); target[0, 2, 3, 0] = 1.0
    >>> edited_pixel_mask(source, target)[0, 0].nonzero().tolist()
    [[3, 0]]
    """
    return (source != target).any(dim=1, keepdim=True)


def validation_loss(backbone: "ShapesBackbone", batch: dict[str, Any], seed: int = 0) -> float:
    """The flow-matching loss of `backbone` on a `ShapesBatches` item, with fixed noise and evenly spaced t.

    Times are the midpoints ``(i + 0.5) / n`` (each case its own), noise comes from `seed`: the same
    figure for the same weights, smooth across training steps (the per-step training loss is one
    random batch at random times).

    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> bb = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> from refine.shapes.editor_training.data import ShapesBatches
    >>> batch = ShapesBatches(seed=1, batch_size=4, tokenizer=bb.tokenizer)[0]
    >>> validation_loss(bb, batch) == validation_loss(bb, batch) > 0
    True
    """
    source = torch.from_numpy(batch["source"]).float().div_(255.0)
    target = torch.from_numpy(batch["target"]).float().div_(255.0)
    ids, mask = torch.from_numpy(batch["ids"]), torch.from_numpy(batch["mask"])
    n = ids.shape[0]
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    noise = torch.randn((n, *backbone.latent_shape), generator=torch.Generator().manual_seed(seed))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            device = backbone.device
            loss = flow_matching_loss(backbone, *(x.to(device) for x in (source, target, ids, mask, t, noise)))
    finally:
        backbone.train(was_training)
    return float(loss)


def one_step_errors(backbone: "ShapesBackbone", batch: dict[str, Any], seed: int = 0) -> dict[str, float]:
    """Where the editor stands at t = 1: its one-step x0 estimate from pure noise against the target.

    Returns the mean |x0_hat - x0| ([-1, 1] scale) over the pixels the edit changes (`edit_error`:
    has it grounded the instruction?) and over the others (`copy_error`: does it keep the source?).
    At t = 1 nothing of the target is in x_t, so the estimate shows what the editor decided to do
    before sampling commits to anything; the flow loss mixes both with denoising at every t and
    barely moves when only the edits improve.

    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> bb = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> from refine.shapes.editor_training.data import ShapesBatches
    >>> errors = one_step_errors(bb, ShapesBatches(seed=1, batch_size=4, tokenizer=bb.tokenizer)[0])
    >>> sorted(errors), all(v > 0 for v in errors.values())
    (['copy_error', 'edit_error'], True)
    """
    source = torch.from_numpy(batch["source"]).float().div_(255.0)
    target = torch.from_numpy(batch["target"]).float().div_(255.0)
    ids, mask = torch.from_numpy(batch["ids"]), torch.from_numpy(batch["mask"])
    noise = torch.randn((ids.shape[0], *backbone.latent_shape), generator=torch.Generator().manual_seed(seed))
    t = torch.ones(ids.shape[0])
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            device = backbone.device
            velocity = backbone(noise.to(device), t.to(device), pack_pixels(source).to(device), ids.to(device), mask.to(device))
    finally:
        backbone.train(was_training)
    error = (noise - velocity.float().cpu() - pack_pixels(target)).abs()  # x0_hat = x_1 - 1 * v
    changed = pack_pixels((source != target).any(dim=1, keepdim=True).expand_as(source).float()) > 0
    return {"edit_error": float(error[changed].mean()), "copy_error": float(error[~changed].mean())}


def training_inputs(
    batch: dict[str, "torch.Tensor"],
    empty: tuple["torch.Tensor", "torch.Tensor"],
    generator: "torch.Generator",
    device,
    *,
    cfg_dropout: float,
    timesteps: TimestepConfig,
):
    """Pixels, tokens (with CFG dropout), times and noise for one step; every draw from `generator`.

    `batch` is a `ShapesBatches` item as tensors (what the DataLoader yields); `empty` the
    tokenized empty instruction. Returns [source, target, ids, mask, t, noise] on `device`, the
    arguments `flow_matching_loss` takes after the model.
    """
    source = batch["source"].float().div_(255.0)
    target = batch["target"].float().div_(255.0)
    ids, mask = batch["ids"], batch["mask"]
    b = ids.shape[0]
    # A fixed order of draws (dropout, t, noise) keeps resumed runs bitwise identical.
    drop = torch.rand(b, generator=generator) < cfg_dropout
    t = sample_timesteps(b, generator, timesteps.sampling, timesteps.mean, timesteps.std)
    n = (source.shape[2] // 4) * (source.shape[3] // 4)
    noise = torch.randn((b, n, 48), generator=generator)
    ids = torch.where(drop[:, None], empty[0].expand_as(ids), ids)
    mask = torch.where(drop[:, None], empty[1].expand_as(mask), mask)
    return [x.to(device) for x in (source, target, ids, mask, t, noise)]

