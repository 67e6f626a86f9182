"""Whether the ShapeEdit VLM still sees: how much its vision output depends on the image.

Example:
    >>> import tempfile
    >>> from refine.shapes.vlm.model import VLMSize, build_shapes_vlm   # makes transformers' vision classes importable
    >>> from transformers import AutoModelForImageTextToText, AutoProcessor
    >>> from refine.shapes.vlm.probes import image_dependence, probe_scenes
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = build_shapes_vlm(folder, VLMSize.tiny())
    ...     model, processor = AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    ...     dependence = image_dependence(model, processor, probe_scenes(4))
    >>> dependence > 0.1                 # a fresh tower's output varies with the image
    True

Judge training can make the vision tower's output an image-independent constant (the language
model then scores from the instruction alone); this number shows it while training runs
(`VLMTrainConfig.probe_every`) and in `benchmarks/shapes_vlm_judge.py`.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from PIL import Image

from refine.shapes.data import training_stream

PROBE_STREAM_SEED = 99_999  # a stream of its own: none of these scenes is a training example of the presets


def probe_scenes(count: int = 8, seed: int = PROBE_STREAM_SEED) -> list[Image.Image]:
    """`count` source images of training-stream cases of `seed` (held out from the presets' streams)."""
    return [case.source_image for case in itertools.islice(training_stream(seed), count)]


def image_dependence(model, processor, images: Sequence[Image.Image]) -> float:
    """Mean over visual-token positions of (std across `images`) / (norm of the mean across `images`).

    ~1-2 for a fresh model; near 0 means the features no longer depend on the image.
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        stacked = visual_tokens(model, processor, images)  # (images, tokens, hidden)
    model.train(was_training)
    return float((stacked.std(0).norm(dim=-1) / stacked.mean(0).norm(dim=-1)).mean())


def visual_tokens(model, processor, images: Sequence[Image.Image]) -> torch.Tensor:
    """The merger's output for `images`: (images, tokens per image, width), tokens in reading order."""
    inputs = processor.image_processor(list(images), return_tensors="pt")
    features = model.model.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    tokens = features.pooler_output if hasattr(features, "pooler_output") else features
    tokens = torch.cat(list(tokens)) if isinstance(tokens, (list, tuple)) else tokens
    return tokens.reshape(len(images), -1, tokens.shape[-1])
