"""Plumbing that the diffusers-pipeline backbones (Qwen-Image-Edit, FLUX.1 Kontext) do the same way.

Example:
    >>> from PIL import Image
    >>> from refine.backbones.diffusers_common import prepare_edit_batch
    >>> prepare_edit_batch(lambda images: images, [Image.new("RGB", (32, 32))], ["  "])
    Traceback (most recent call last):
    ...
    refine.errors.InputError: instruction 0 is empty; give a non-empty text instruction

Only plumbing lives here: batch checks, resizing by a backbone's image policy, the pipelines'
shifted flow-matching schedule and the batched two-branch CFG pass. What differs per model
(prompt encoding, latent layout, the guidance formula) stays in each model's own file, which
still reads top to bottom.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from refine._compat import ensure_torchvision_importable
from refine.backbones.base import Condition, concat_conditions
from refine.errors import InputError
from refine.images import load_image

ensure_torchvision_importable()  # diffusers' pipeline modules import transformers, which imports torchvision

# Both pipelines carry copies of FLUX's helpers ("Copied from ...pipeline_flux"): use the original.
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps  # noqa: E402


def prepare_edit_batch(
    prepare_images: Callable[[list], list[Image.Image]], images: Sequence, instructions: Sequence[str]
) -> tuple[list[Image.Image], list[str]]:
    """Check one non-empty instruction per image, prepare the images, insist on one shared size.

    `prepare_images` is the backbone's own (its image policy); the edit is generated at the
    returned images' size, so a batch must share it (callers group requests by size).
    """
    images, instructions = list(images), list(instructions)
    if len(images) != len(instructions) or not images:
        raise InputError(f"need one instruction per image, got {len(images)} images and {len(instructions)} instructions")
    for i, text in enumerate(instructions):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"instruction {i} is empty; give a non-empty text instruction")
    images = prepare_images(images)
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        raise InputError(f"images of one batch must share a size after preparation, got {sorted(sizes)}; group requests by size")
    return images, instructions


def resize_images(
    images: Sequence, output_size: Callable[[Image.Image], tuple[int, int]], image_processor
) -> list[Image.Image]:
    """Load each image as RGB and resize it to `output_size(image)` (width, height) with the pipeline's processor.

    >>> from diffusers.image_processor import VaeImageProcessor
    >>> resized = resize_images([Image.new("RGB", (64, 40))], lambda image: (32, 16), VaeImageProcessor())
    >>> resized[0].size
    (32, 16)
    """
    resized = []
    for image in images:
        image = load_image(image)
        width, height = output_size(image)
        resized.append(image_processor.resize(image, height, width))
    return resized


def shifted_sigmas(scheduler_config, steps: int, image_seq_len: int) -> torch.Tensor:
    """The pipelines' schedule: (steps + 1,) float32 times from 1 to 0, linspace(1, 1/steps) shifted by mu.

    mu grows with the image's token count as in the pipelines' `calculate_shift`; the scheduler
    (a fresh one from `scheduler_config`) applies the shift and appends the final 0.

    >>> sigmas = shifted_sigmas(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).config, 4, 256)
    >>> sigmas.shape, float(sigmas[0]), float(sigmas[-1])
    (torch.Size([5]), 1.0, 0.0)
    """
    if steps < 1:
        raise InputError(f"steps={steps}: need at least 1 sampling step")
    if steps == 1:  # one Euler step from noise; the shift (and its terminal stretch) is undefined
        return torch.tensor([1.0, 0.0])
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    config = scheduler.config
    mu = calculate_shift(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    retrieve_timesteps(scheduler, steps, "cpu", sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.sigmas.float()


def cfg_velocities(
    velocity: Callable[[torch.Tensor, torch.Tensor, Condition], torch.Tensor],
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: Condition,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_cond, v_neg), each (B, N, C) float32, from ONE batched pass over both CFG branches.

    `cond.negative` must be set; the caller combines the two with its model's guidance formula.
    """
    both = velocity(torch.cat([x_t, x_t]), torch.cat([t, t]), concat_conditions([replace(cond, negative=None), cond.negative]))
    v_cond, v_neg = both.float().chunk(2)  # (B, N, C) each
    return v_cond, v_neg
