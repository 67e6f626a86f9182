"""Deepen a trained VLM's language model without changing what it answers (`grow_depth` in a stage's config).

Example (the tiny model: 2 layers become 4, the logits stay the same):
    >>> import tempfile, torch
    >>> from transformers import AutoModelForImageTextToText
    >>> from refine.shapes.vlm.model import VLMSize, build_shapes_vlm
    >>> from refine.shapes.vlm.grow import grow_language_depth
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     model = AutoModelForImageTextToText.from_pretrained(build_shapes_vlm(folder, VLMSize.tiny()))
    >>> ids = torch.tensor([[5, 6, 7, 8]])
    >>> before = model(input_ids=ids).logits
    >>> grow_language_depth(model, 2).config.text_config.num_hidden_layers
    4
    >>> torch.allclose(model(input_ids=ids).logits, before)
    True

Why: the ShapeEdit rewrite model (4 language layers) reads the source grid right in 96% of
shapes-val scenes yet resolves a quarter of the indirect instructions wrong ("directly above the
green triangle" needs the triangle's cell, then the cell above it, then its name: several hops in
one forward pass). More layers give the hops room. Each layer is followed by `factor - 1` copies
of itself whose two output projections (attention `o_proj`, MLP `down_proj`) are zero: a zero
output projection adds nothing to the residual stream, so the grown model starts as the trained
one, and training then decides what the copies add (the identity-initialised depth up-scaling of
e.g. LLaMA Pro's block expansion; written here because no library grows a transformers model in
place). The vision tower is untouched.
"""

from __future__ import annotations

import copy

import torch

from refine.errors import ConfigError


def grow_language_depth(model, factor: int):
    """Follow each language-model layer of `model` by `factor - 1` zero-output copies, in place; returns `model`.

    The config's `num_hidden_layers` and `layer_types` follow, so `save_pretrained` writes a folder
    that plain transformers loads as the deeper model.
    """
    if factor < 1:
        raise ConfigError(f"grow_depth must be >= 1, got {factor}")
    if factor == 1:
        return model
    language = model.model.language_model
    text_config = model.config.text_config
    if len(set(text_config.layer_types)) != 1:
        # a copy must sit where a layer of its own kind would (sliding-window layers follow a pattern)
        raise ConfigError(f"grow_depth needs one attention kind in every layer, got {sorted(set(text_config.layer_types))}")
    layers = torch.nn.ModuleList()
    for layer in language.layers:
        layers.append(layer)
        for _ in range(factor - 1):
            twin = copy.deepcopy(layer)
            torch.nn.init.zeros_(twin.self_attn.o_proj.weight)
            torch.nn.init.zeros_(twin.mlp.down_proj.weight)
            layers.append(twin)
    for index, layer in enumerate(layers):
        layer.self_attn.layer_idx = index  # the KV cache is indexed by it
    language.layers = layers
    text_config.num_hidden_layers = len(layers)
    text_config.layer_types = [text_config.layer_types[0]] * len(layers)
    return model
