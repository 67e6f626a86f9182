"""Content consistency: how much of the source image an edit kept (DINO features + pixels).

Example:
    >>> from PIL import Image, ImageDraw
    >>> from refine.rewards.consistency import ConsistencyReward
    >>> from refine.testing.tiny_vlm import tiny_dinov2_dir
    >>> reward = ConsistencyReward(tiny_dinov2_dir())               # any DINOv2 checkpoint folder or id
    >>> source = Image.new("RGB", (32, 32), "white")
    >>> edited = source.copy(); ImageDraw.Draw(edited).rectangle([0, 0, 15, 15], fill="red")
    >>> mask = Image.new("L", (32, 32)); ImageDraw.Draw(mask).rectangle([0, 0, 15, 15], fill=255)
    >>> out = reward([source, source, source], [source, edited, edited], ["", "", ""], [{}, {}, {"mask": mask}])
    >>> round(out.scores[0], 4), out.scores[1] < 0.9, round(out.scores[2], 4)   # same, changed, changed where allowed
    (1.0, True, 1.0)
    >>> sorted(out.details[1])
    ['cls', 'patch', 'pixel']

As in EdiVal-style evaluation, three similarities between the source and the output, each 1 for
identical images, combined with `weights` (a weighted mean):

* ``cls``: cosine similarity of the DINO CLS embeddings (global content and layout);
* ``patch``: mean cosine similarity of corresponding DINO patch embeddings (local content);
* ``pixel``: 1 - mean absolute pixel difference (in [0, 1] per channel).

Masks: ``meta["mask"]`` (a PIL image, array or tensor, nonzero where the edit is *supposed* to
change the image) removes that region from the comparison: the output's masked pixels are
replaced by the source's before the features are computed, patches touching the mask are left
out of the patch mean, and masked pixels are left out of the pixel term. An edit that changed
only the masked region therefore scores 1. An item whose mask covers everything is None.
An output of another size is resized to the source's size first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from refine.errors import ConfigError, InputError
from refine.images import load_image
from refine.rewards.base import RewardOutput, check_batch

COMPONENTS = ("cls", "patch", "pixel")


class ConsistencyReward:
    """Source/output consistency reward (see the module docstring).

    Args:
        model: a DINO-family checkpoint (folder or hub id) loadable with `AutoModel` and
            `AutoImageProcessor` (DINOv2, DINOv2 with registers...).
        device / dtype: where and in which precision the vision model runs.
        weights: component -> weight of the weighted mean (missing components weigh 0).
        mask_key: the meta key holding the "allowed to change" mask.
        batch_size: images per forward pass.
        name: key of this reward in composite details and logs.
    """

    def __init__(
        self,
        model: str | Path = "facebook/dinov2-small",
        device: str = "cpu",
        dtype: str = "float32",
        weights: dict[str, float] | None = None,
        mask_key: str = "mask",
        batch_size: int = 32,
        name: str = "consistency",
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        weights = dict(weights if weights is not None else {c: 1.0 for c in COMPONENTS})
        unknown = sorted(set(weights) - set(COMPONENTS))
        if unknown or sum(weights.values()) <= 0:
            raise ConfigError(f"consistency weights {weights}: use keys {COMPONENTS} with a positive total")
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(model))
            self.model = AutoModel.from_pretrained(str(model), dtype=getattr(torch, dtype)).to(device).eval()
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot load a DINO-family vision model from {str(model)!r}: {str(err).splitlines()[0]}") from None
        self.device = torch.device(device)
        self.weights = weights
        self.mask_key = mask_key
        self.batch_size = batch_size
        self.name = name
        self.patch_size = int(getattr(self.model.config, "patch_size", 14))
        self.num_registers = int(getattr(self.model.config, "num_register_tokens", 0) or 0)

    def __call__(self, sources, outputs, instructions, metas=None) -> RewardOutput:
        metas = check_batch(sources, outputs, instructions, metas)
        scores: list[float | None] = []
        details: list[dict[str, Any]] = []
        for start in range(0, len(outputs), self.batch_size):
            stop = start + self.batch_size
            part = self._score_batch(sources[start:stop], outputs[start:stop], metas[start:stop])
            scores.extend(part.scores)
            details.extend(part.details)
        return RewardOutput(scores, details)

    def _score_batch(self, sources, outputs, metas) -> RewardOutput:
        import torch

        items = []  # (source, composite output, pixel mask or None)
        for src, out, meta in zip(sources, outputs, metas):
            src, out = load_image(src), load_image(out)
            if out.size != src.size:
                out = out.resize(src.size, Image.BILINEAR)
            mask = _as_mask(meta.get(self.mask_key), src.size)
            if mask is not None:
                # Inside the allowed region the output is replaced by the source: the change there is not compared.
                out = Image.fromarray(np.where(mask[..., None], np.asarray(src), np.asarray(out)))
            items.append((src, out, mask))
        pixels = self.processor(images=[s for s, _, _ in items] + [o for _, o, _ in items], return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(pixel_values=pixels["pixel_values"].to(self.device, self.model.dtype)).last_hidden_state
        hidden = hidden.float()  # (2B, 1 + R + N, C): CLS, register tokens, patches
        n = len(items)
        cls = torch.nn.functional.cosine_similarity(hidden[:n, 0], hidden[n:, 0], dim=-1)  # (B,)
        patches = hidden[:, 1 + self.num_registers :]  # (2B, N, C)
        patch_cos = torch.nn.functional.cosine_similarity(patches[:n], patches[n:], dim=-1)  # (B, N)
        scores, details = [], []
        for i, (src, out, mask) in enumerate(items):
            keep = self._patch_keep(mask, patch_cos.shape[1])  # (N,) bool, None = all
            if mask is not None and (mask.all() or (keep is not None and not keep.any())):
                scores.append(None)
                details.append({"error": "mask covers the whole image"})
                continue
            values = {
                "cls": float(cls[i]),
                "patch": float(patch_cos[i].mean() if keep is None else patch_cos[i][keep].mean()),
                "pixel": _pixel_similarity(src, out, mask),
            }
            total = sum(self.weights.get(c, 0.0) for c in COMPONENTS)
            scores.append(sum(self.weights.get(c, 0.0) * values[c] for c in COMPONENTS) / total)
            details.append(values)
        return RewardOutput(scores, details)

    def _patch_keep(self, mask: np.ndarray | None, num_patches: int):
        """(N,) bool: patches whose processed-image area does not touch the mask (None without mask)."""
        if mask is None:
            return None
        import torch

        # Send the mask through the same resize/crop as the images, so it lines up with the patch grid.
        as_image = Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1))
        grid = self.processor(images=as_image, do_normalize=False, return_tensors="pt")["pixel_values"][:, :1]  # (1, 1, H, W)
        touched = torch.nn.functional.max_pool2d(grid.float(), self.patch_size) > 0.0  # (1, 1, h, w)
        touched = touched.flatten()
        if touched.numel() != num_patches:
            raise InputError(f"mask grid has {touched.numel()} patches but the model returned {num_patches}")
        return ~touched


def _as_mask(value: Any, size: tuple[int, int]) -> np.ndarray | None:
    """A (H, W) bool array at `size` (W, H) from a PIL image / array / tensor mask, or None."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        image = value.convert("L")
    else:
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        array = np.squeeze(array)
        if array.ndim != 2:
            raise InputError(f"mask of shape {array.shape} is not 2-D; give an (H, W) mask, nonzero where change is allowed")
        image = Image.fromarray(((array != 0) * 255).astype(np.uint8))
    if image.size != size:
        image = image.resize(size, Image.NEAREST)
    return np.asarray(image) > 0


def _pixel_similarity(src: Image.Image, out: Image.Image, mask: np.ndarray | None) -> float:
    a = np.asarray(src, dtype=np.float32) / 255.0  # (H, W, 3)
    b = np.asarray(out, dtype=np.float32) / 255.0
    diff = np.abs(a - b).mean(axis=-1)  # (H, W)
    if mask is not None:
        diff = diff[~mask]
    return float(1.0 - diff.mean())
