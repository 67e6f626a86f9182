"""Tiny offline builders for the inline critic's tests and doctests (random weights, no hub).

Example:
    >>> from refine.inline_critic.testing import tiny_qwen_transformer, tiny_transformer_inputs
    >>> transformer = tiny_qwen_transformer(num_layers=2)
    >>> transformer(**tiny_transformer_inputs(batch=1)).sample.shape    # (B, N_noise + N_source, C)
    torch.Size([1, 32, 16])

`tiny_qwen_transformer` is the exact class both real backbones use (Qwen-Image-Edit and the
ShapeEdit editor), at 2 layers / 16 dims, like diffusers' `get_dummy_components()`.
"""

from __future__ import annotations

import torch


def tiny_qwen_transformer(num_layers: int = 2, seed: int = 0, zero_cond_t: bool = False):
    """A `QwenImageTransformer2DModel` with 2 heads of 8 dims, 16-dim text, 16 packed channels."""
    from refine._compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # diffusers -> transformers -> torchvision (see that module)
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        axes_dims_rope=(2, 2, 4),
        zero_cond_t=zero_cond_t,
    ).eval()


def tiny_transformer_inputs(batch: int = 2, text_len: int = 5, side: int = 4, padded: int = 0, seed: int = 0) -> dict:
    """Keyword inputs of one edit forward: noise + source tokens (side x side each), text with
    `padded` padding tokens at the end of every item."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, text_len)
    if padded:
        mask[:, text_len - padded :] = 0
    return {
        "hidden_states": torch.randn(batch, 2 * side * side, 16, generator=generator),  # (B, N + M, C)
        "encoder_hidden_states": torch.randn(batch, text_len, 16, generator=generator),  # (B, L, D_text)
        "encoder_hidden_states_mask": mask,  # (B, L)
        "timestep": torch.rand(batch, generator=generator),
        "img_shapes": [[(1, side, side), (1, side, side)]] * batch,
    }
