"""Inline-critic adapter for diffusers' `QwenImageTransformer2DModel` (Qwen-Image-Edit, ShapeEdit's editor).

Example:
    >>> import torch
    >>> from refine.inline_critic.adapters.qwen_image import QwenImageAdapter
    >>> from refine.inline_critic.testing import tiny_qwen_transformer
    >>> adapter = QwenImageAdapter()
    >>> args, kwargs = adapter.append_token((), {
    ...     "encoder_hidden_states": torch.zeros(2, 3, 16), "encoder_hidden_states_mask": torch.ones(2, 3)}, torch.ones(16))
    >>> kwargs["encoder_hidden_states"].shape, kwargs["encoder_hidden_states_mask"][:, -1].tolist()
    (torch.Size([2, 4, 16]), [1.0, 1.0])

How the pieces map onto diffusers' model (transformer_qwenimage.py):
* Critic token: appended to `encoder_hidden_states` (width `joint_attention_dim`, *before* `txt_norm`
  and `txt_in`, so it is embedded like any text token) and to `encoder_hidden_states_mask` (a 1).
  The model derives the text RoPE length from the text-stream length, so the critic gets the next
  text position and every original token keeps its own.
* Noise tokens: the image stream is `[noise latents, source latents]` and `img_shapes[b][0]` is the
  (frames, h, w) of the noise latents, so the first `prod(img_shapes[0][0])` tokens are noise.
* Time embedding: output of `time_text_embed` (B, D); with `zero_cond_t` (2511) the model doubles
  the batch [t, 0] and we keep the first B rows, the real t.
* Block output: `QwenImageTransformerBlock` returns `(encoder_hidden_states, hidden_states)`.
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch

from refine.inline_critic.adapters.base import CriticDims, mmdit_dims
from refine.inline_critic.processor import CriticState, QwenCriticAttnProcessor


class QwenImageAdapter:
    """`MMDiTAdapter` for `QwenImageTransformer2DModel` (see the module docstring for the mapping)."""

    name = "qwen_image"

    def matches(self, transformer: Any) -> bool:
        from diffusers import QwenImageTransformer2DModel

        return isinstance(transformer, QwenImageTransformer2DModel)

    def dims(self, transformer: Any) -> CriticDims:
        config = transformer.config
        return mmdit_dims(config, num_layers=config.num_layers)

    def blocks(self, transformer: Any):
        return transformer.transformer_blocks

    def time_embedder(self, transformer: Any):
        return transformer.time_text_embed

    def time_embedding(self, output: torch.Tensor, batch_size: int) -> torch.Tensor:
        return output[:batch_size]  # (B, D); zero_cond_t models append a t=0 copy after the real batch

    def append_token(self, args: tuple, kwargs: dict, token: torch.Tensor) -> tuple[tuple, dict]:
        if args or "encoder_hidden_states" not in kwargs:
            raise ValueError(
                "the inline critic needs the transformer called with keyword arguments "
                "(hidden_states=..., encoder_hidden_states=..., ...), as diffusers' Qwen-Image pipelines do"
            )
        text = kwargs["encoder_hidden_states"]  # (B, L, D_text)
        critic = token.to(device=text.device, dtype=text.dtype).expand(text.shape[0], 1, -1)  # (B, 1, D_text)
        kwargs = {**kwargs, "encoder_hidden_states": torch.cat([text, critic], dim=1)}
        mask = kwargs.get("encoder_hidden_states_mask")
        if mask is not None:  # (B, L) -> (B, L + 1), the critic is a real token
            kwargs["encoder_hidden_states_mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        return args, kwargs

    def num_noise_tokens(self, args: tuple, kwargs: dict) -> int:
        shapes = kwargs.get("img_shapes")
        if not shapes:
            raise ValueError("the inline critic needs img_shapes in the transformer call to find the noise tokens")
        first = shapes[0][0] if isinstance(shapes[0], list) else shapes[0]
        return int(prod(first))

    def split_block_output(self, output: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        text, image = output
        return text, image

    def critic_processors(self, transformer: Any, state: CriticState) -> dict[str, QwenCriticAttnProcessor]:
        names = list(transformer.attn_processors)  # "transformer_blocks.{i}.attn.processor", in block order
        return {name: QwenCriticAttnProcessor(state, layer=int(name.split(".")[1])) for name in names}
