"""Attach the critic to a transformer: token pre-hook, critic processors, and taps on probed blocks.

Example:
    >>> import torch
    >>> from refine.inline_critic.attach import attach_critic
    >>> from refine.inline_critic.testing import tiny_qwen_transformer, tiny_transformer_inputs
    >>> transformer = tiny_qwen_transformer()
    >>> token = torch.nn.Parameter(torch.randn(16))
    >>> with attach_critic(transformer, token=token, layers=[0]) as critic:
    ...     _ = transformer(**tiny_transformer_inputs(batch=2))
    ...     critic.capture.noise_hidden[0].shape, critic.capture.critic_hidden[0].shape, critic.capture.temb.shape
    (torch.Size([2, 16, 16]), torch.Size([2, 16]), torch.Size([2, 16]))

How intermediate states are read without copying the model's forward (diffusers' forward is used
as is, so new diffusers releases and other backbones' call conventions keep working):
* a forward *pre-hook* on the transformer (with kwargs) appends the critic token to the text stream
  (through the adapter) and notes how many leading image tokens are noise tokens;
* a forward hook on the time embedder stores the time embedding the blocks are modulated with;
* a forward hook on each probed block stores its noise-token outputs (B, N, D) and the critic's
  text-stream output (B, D);
* the attention processors are swapped through diffusers' `set_attn_processor` for
  the adapter's critic processors (`QwenCriticAttnProcessor`, `FluxCriticAttnProcessor`: masking,
  score recording) and the originals are restored on `detach()`.
Hooks see activations with their autograd graph: the probes detach what they read (eq. 2), the
critic's projections read the critic hidden state with gradients (that is how the token learns).
With gradient checkpointing the block hooks fire again during recomputation and simply overwrite.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from refine.errors import ConfigError
from refine.inline_critic.adapters import MMDiTAdapter, adapter_for
from refine.inline_critic.processor import CriticState

_ATTACHED: "weakref.WeakKeyDictionary[torch.nn.Module, CriticAttachment]" = weakref.WeakKeyDictionary()


@dataclass
class Capture:
    """What the taps saw during the last transformer forward.

    noise_hidden: layer -> (B, N, D) noise-token outputs of that block.
    critic_hidden: layer -> (B, D) critic-token output of that block (only with a token).
    text_hidden: layer -> (B, L, D) text-stream outputs *without* the critic (for tests/analyses).
    temb: (B, D_t) time embedding.  num_noise: N.
    """

    noise_hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    critic_hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    text_hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    temb: torch.Tensor | None = None
    num_noise: int = 0
    batch_size: int = 0


class CriticAttachment:
    """Live attachment of the critic to one transformer; use `attach_critic` to create it.

    `enabled` switches the token on/off for the next forwards (off: the transformer computes exactly
    what it computes without the attachment); `hide_critic` toggles eq. 5 masking.
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        *,
        token: torch.Tensor | None,
        layers: Sequence[int],
        hide_critic: bool,
        keep_text: bool,
        adapter: MMDiTAdapter | None,
    ) -> None:
        self.transformer = transformer
        self.adapter = adapter or adapter_for(transformer)
        self.token = token
        self.dims = self.adapter.dims(transformer)
        bad = [layer for layer in layers if not 0 <= layer < self.dims.num_layers]
        if bad:
            raise ConfigError(f"probe layers {bad} outside the transformer's blocks 0..{self.dims.num_layers - 1}")
        if token is not None and token.shape != (self.dims.text_dim,):
            raise ConfigError(
                f"critic token of shape {tuple(token.shape)} does not fit this transformer's text stream "
                f"(joint_attention_dim={self.dims.text_dim}); were the weights trained for another backbone?"
            )
        self.layers = sorted(set(layers))
        self.keep_text = keep_text
        self.state = CriticState(enabled=token is not None, hide_critic=hide_critic)
        self.capture = Capture()
        self._handles: list = []
        self._saved_processors: dict | None = None

    # -- switches -------------------------------------------------------------------------------
    @property
    def hide_critic(self) -> bool:
        return self.state.hide_critic

    @hide_critic.setter
    def hide_critic(self, value: bool) -> None:
        self.state.hide_critic = bool(value)

    @property
    def enabled(self) -> bool:
        return self.state.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if value and self.token is None:
            raise ConfigError("cannot enable a critic attachment that has no token")
        self.state.enabled = bool(value)

    @contextmanager
    def scores(self) -> Iterator[dict[int, torch.Tensor]]:
        """Record, per layer, the summed pre-softmax score each image-stream key receives (experiment A)."""
        self.state.record_scores, self.state.scores = True, {}
        try:
            yield self.state.scores
        finally:
            self.state.record_scores = False

    # -- install / remove -----------------------------------------------------------------------
    def attach(self) -> "CriticAttachment":
        if self.transformer in _ATTACHED:
            raise ConfigError(
                "this transformer already has an inline critic attached; detach it first "
                "(an editor can carry one critic token, not two)"
            )
        adapter = self.adapter
        self._handles.append(self.transformer.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
        self._handles.append(adapter.time_embedder(self.transformer).register_forward_hook(self._on_time_embedding))
        blocks = adapter.blocks(self.transformer)
        for layer in self.layers:
            self._handles.append(blocks[layer].register_forward_hook(self._block_hook(layer)))
        if self.token is not None:
            self._saved_processors = dict(self.transformer.attn_processors)
            self.transformer.set_attn_processor(adapter.critic_processors(self.transformer, self.state))
        _ATTACHED[self.transformer] = self
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._saved_processors is not None:
            self.transformer.set_attn_processor(dict(self._saved_processors))
            self._saved_processors = None
        if _ATTACHED.get(self.transformer) is self:
            del _ATTACHED[self.transformer]

    def __enter__(self) -> "CriticAttachment":
        return self if self._handles else self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- hooks ----------------------------------------------------------------------------------
    def _pre_forward(self, module, args, kwargs):
        image = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, S_img, C)
        self.capture = Capture(num_noise=self.adapter.num_noise_tokens(args, kwargs), batch_size=image.shape[0])
        self.state.text_len = None
        if self.state.enabled:
            args, kwargs = self.adapter.append_token(args, kwargs, self.token)
            self.state.text_len = kwargs["encoder_hidden_states"].shape[1]
            return args, kwargs
        return None

    def _on_time_embedding(self, module, args, output) -> None:
        self.capture.temb = output

    def _block_hook(self, layer: int):
        def hook(module, args, output) -> None:
            text, image = self.adapter.split_block_output(output)
            self.capture.noise_hidden[layer] = image[:, : self.capture.num_noise]  # (B, N, D)
            with_critic = self.state.text_len is not None
            if with_critic:
                self.capture.critic_hidden[layer] = text[:, -1]  # (B, D)
            if self.keep_text:
                self.capture.text_hidden[layer] = text[:, :-1] if with_critic else text

        return hook

    @property
    def temb(self) -> torch.Tensor:
        """(B, D_t) time embedding of the last forward."""
        if self.capture.temb is None:
            raise RuntimeError("no forward has run through the attached transformer yet")
        return self.adapter.time_embedding(self.capture.temb, self.capture.batch_size)


def attach_critic(
    transformer: torch.nn.Module,
    *,
    token: torch.Tensor | None = None,
    layers: Sequence[int] = (),
    hide_critic: bool = False,
    keep_text: bool = False,
    adapter: MMDiTAdapter | None = None,
) -> CriticAttachment:
    """Attach (token, processors, taps) to `transformer`; use as a context manager or call `.detach()`.

    token: (text_dim,) critic token, or None to only tap hidden states (stage 1, LoRA baseline).
    layers: blocks whose outputs are captured (probe layers).
    hide_critic: start with eq. 5 masking on.  keep_text: also capture non-critic text outputs.
    """
    return CriticAttachment(
        transformer, token=token, layers=layers, hide_critic=hide_critic, keep_text=keep_text, adapter=adapter
    ).attach()
