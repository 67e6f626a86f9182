"""What the inline critic needs to know about one MM-DiT family, and how to find the adapter for a model.

Example:
    >>> import torch
    >>> from refine.inline_critic.adapters import adapter_for
    >>> from refine.inline_critic.testing import tiny_qwen_transformer
    >>> adapter = adapter_for(tiny_qwen_transformer())
    >>> adapter.name, adapter.dims(tiny_qwen_transformer()).num_layers
    ('qwen_image', 2)

Everything model-specific lives behind `MMDiTAdapter`: how the critic token is appended to the
text stream (and the mask/positions that go with it), how many leading image-stream tokens are
noise tokens, which module produces the time embedding, how a block's output splits into text and
image streams, and the attention processor that can hide the critic. Adding another MM-DiT (FLUX)
is one file in this folder implementing the protocol plus one line in `ADAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

from refine.errors import ConfigError


@dataclass(frozen=True)
class CriticDims:
    """Sizes the critic's modules are built from, read off the transformer's config.

    text_dim: width of the text-stream *input* (where the critic token is appended).
    hidden_dim: width of the joint stream inside the blocks (what probes and projections read).
    time_dim: width of the time embedding the probes' adaLN is conditioned on.
    velocity_dim: channels of one packed velocity token (what probes predict).
    num_layers: number of joint blocks (probe layers are indices into them).
    """

    text_dim: int
    hidden_dim: int
    time_dim: int
    velocity_dim: int
    num_layers: int


def mmdit_dims(config: Any, num_layers: int) -> CriticDims:
    """`CriticDims` of a diffusers MM-DiT config (Qwen-Image and FLUX name these fields alike).

    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(num_attention_heads=2, attention_head_dim=8, out_channels=None, in_channels=4,
    ...                       joint_attention_dim=24, patch_size=2)
    >>> mmdit_dims(cfg, num_layers=3)
    CriticDims(text_dim=24, hidden_dim=16, time_dim=16, velocity_dim=16, num_layers=3)
    """
    inner = config.num_attention_heads * config.attention_head_dim
    out_channels = config.out_channels or config.in_channels
    return CriticDims(
        text_dim=config.joint_attention_dim,
        hidden_dim=inner,
        time_dim=inner,  # the time embedding has the blocks' width in both families
        velocity_dim=config.patch_size * config.patch_size * out_channels,
        num_layers=num_layers,
    )


@runtime_checkable
class MMDiTAdapter(Protocol):
    """The model-specific half of the inline critic (see `refine.inline_critic.adapters.qwen_image`)."""

    name: str

    def matches(self, transformer: Any) -> bool:
        """True when this adapter knows `transformer`'s class."""

    def dims(self, transformer: Any) -> CriticDims: ...

    def blocks(self, transformer: Any) -> Sequence[Any]:
        """The joint blocks, in forward order; probe layer `l` is the output of `blocks[l]`."""

    def time_embedder(self, transformer: Any) -> Any:
        """The module whose output is the time embedding (read by a forward hook)."""

    def time_embedding(self, output: Any, batch_size: int) -> Any:
        """(B, time_dim) time embedding from `time_embedder`'s output."""

    def append_token(self, args: tuple, kwargs: dict, token: Any) -> tuple[tuple, dict]:
        """Transformer forward inputs with `token` (text_dim,) appended as the last text-stream token."""

    def num_noise_tokens(self, args: tuple, kwargs: dict) -> int:
        """How many leading image-stream tokens are noise tokens (the rest are source-image tokens)."""

    def split_block_output(self, output: Any) -> tuple[Any, Any]:
        """(text (B, L, D), image (B, S, D)) from one block's output."""

    def critic_processors(self, transformer: Any, state: Any) -> dict[str, Any]:
        """One critic attention processor per attention module, keyed like `transformer.attn_processors`."""


# name -> "module:Class"; imported on first use so listing adapters stays cheap.
ADAPTERS: dict[str, str] = {
    "qwen_image": "refine.inline_critic.adapters.qwen_image:QwenImageAdapter",
    "flux": "refine.inline_critic.adapters.flux:FluxAdapter",
}


def adapter_for(transformer: Any) -> MMDiTAdapter:
    """The adapter that knows `transformer`; `ConfigError` naming the class when none does."""
    from refine.registry import import_object

    for target in ADAPTERS.values():
        adapter = import_object(target)()
        if adapter.matches(transformer):
            return adapter
    raise ConfigError(
        f"the inline critic has no adapter for {type(transformer).__name__}; supported: {', '.join(ADAPTERS)} "
        "(add one file to refine/inline_critic/adapters/ implementing MMDiTAdapter)"
    )
