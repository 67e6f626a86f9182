"""Simulated editor artefacts for testing judges and rewards: Gaussian noise, blur, pure noise images.

Example:
    >>> from refine.shapes.data import load_split
    >>> from refine.shapes.degrade import degrade
    >>> from refine.shapes.judge import judge_edit
    >>> case = load_split("shapes-bench")[0]
    >>> score = judge_edit(case.source_image, degrade(case.target_image, noise=8 / 255, blur=1.0, seed=0), case)
    >>> score.if_, score.cc, score.pq < 1.0
    (1.0, 1.0, True)

A small diffusion editor's output differs from the exact target by roughly this: per-pixel noise
and soft edges. All functions are deterministic given `seed` (numpy `default_rng`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from refine.images import load_image


def degrade(image: Any, noise: float = 8 / 255, blur: float = 1.0, seed: int = 0) -> Image.Image:
    """Gaussian blur of radius `blur` pixels (PIL), then Gaussian noise of std `noise` (in [0, 1] units)."""
    image = load_image(image)
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    if noise <= 0:
        return image
    array = np.asarray(image, dtype=np.float64)  # (H, W, 3)
    array = array + np.random.default_rng(seed).normal(0.0, noise * 255.0, array.shape)
    return Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8), "RGB")


def noise_image(size: int = 32, seed: int = 0) -> Image.Image:
    """Uniform random RGB noise: what an untrained editor outputs (the judge scores it near 0).

    >>> noise_image(32, seed=1).size
    (32, 32)
    """
    array = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(array, "RGB")
