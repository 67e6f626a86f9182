"""Joint text/image attention with a critic token that can be hidden from every other token (paper eq. 5).

Joint token order seen by `QwenCriticAttnProcessor` (diffusers' Qwen-Image processor order, text first):

    [ text_0 ... text_{L-1}, critic, noise_0 ... noise_{N-1}, source_0 ... source_{M-1} ]
      \_____________ text stream (L + 1) _____________/  \________ image stream (N + M) ________/

The critic is the *last* text-stream token: the critic pre-hook appends it after any padding, so
every original text token keeps its index and its RoPE position (text RoPE positions are
`max_vid_index + index`, so only the critic gets a new one). Its joint index is therefore `L`.

Example:
    >>> import torch
    >>> from refine.inline_critic.processor import critic_joint_attention
    >>> q = k = v = torch.randn(1, 5, 2, 4)                      # (B, S, heads, head_dim); critic at 2
    >>> hidden = critic_joint_attention(q, k, v, critic_index=2, key_mask=None, hide_critic=True)
    >>> keep = [0, 1, 3, 4]                                      # without the critic at all:
    >>> plain = critic_joint_attention(q[:, keep], k[:, keep], v[:, keep], critic_index=None, key_mask=None)
    >>> torch.allclose(hidden[:, keep], plain, atol=1e-6)
    True

Masking (eq. 5): M[q, c] = -inf for every query q != c, 0 elsewhere. It is implemented without an
(S, S) mask (which would cost S^2 memory on a 1024^2 edit): all queries attend with a key mask
that drops the critic's key column, then the critic's single query row is recomputed against all
keys. Two attention calls, the second with one query, so hiding costs ~1/S of an attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from refine._compat import ensure_torchvision_importable

# diffusers imports transformers/peft, which import torchvision; on CPU machines with a CUDA
# torchvision wheel that import fails unless its C++ op registrations are skipped first.
ensure_torchvision_importable()

from diffusers.models.attention_dispatch import dispatch_attention_fn  # noqa: E402
from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen  # noqa: E402


@dataclass
class CriticState:
    """Shared switchboard between the critic pre-hook and the processors of one transformer.

    enabled: the critic token is appended in the next forwards (False: everything runs as stock).
    hide_critic: eq. 5 masking on (stage 2, causal analyses) or off (stage 3, inference).
    text_len: text-stream length *including* the critic in the current forward (set by the pre-hook);
        processors check it so a forward that bypassed the pre-hook fails instead of masking the wrong token.
    record_scores: store, per layer, the summed pre-softmax score each image-stream key receives
        (analysis experiment A) in `scores`.
    """

    enabled: bool = True
    hide_critic: bool = False
    text_len: int | None = None
    record_scores: bool = False
    scores: dict[int, torch.Tensor] = field(default_factory=dict)


def critic_joint_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    critic_index: int | None,
    key_mask: torch.Tensor | None,
    hide_critic: bool = False,
    attend: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Joint attention over (B, S, H, D) tensors, optionally hiding the key at `critic_index`.

    `key_mask` is (B, 1, 1, S) bool (True = may be attended) or None. With `hide_critic`, every
    query except the critic's own ignores the critic key; the critic query still sees every valid
    key. `attend(q, k, v, attn_mask=...)` defaults to diffusers' `dispatch_attention_fn`.
    Returns (B, S, H, D).
    """
    attend = attend or (lambda q, k, v, attn_mask: dispatch_attention_fn(q, k, v, attn_mask=attn_mask))
    if not hide_critic or critic_index is None:
        return attend(query, key, value, attn_mask=key_mask)
    batch, seq = key.shape[:2]
    hidden_mask = torch.ones(batch, 1, 1, seq, dtype=torch.bool, device=key.device) if key_mask is None else key_mask.clone()
    hidden_mask[..., critic_index] = False
    out = attend(query, key, value, attn_mask=hidden_mask)  # (B, S, H, D), critic row wrong (it cannot see itself)
    critic_row = attend(query[:, critic_index : critic_index + 1], key, value, attn_mask=key_mask)  # (B, 1, H, D)
    return torch.cat([out[:, :critic_index], critic_row, out[:, critic_index + 1 :]], dim=1)


def record_key_scores(query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor | None, seq_txt: int) -> torch.Tensor:
    """(B, S_img) summed pre-softmax score each image-stream key receives from all valid queries (experiment A).

    Example:
        >>> import torch
        >>> from refine.inline_critic.processor import record_key_scores
        >>> q = k = torch.randn(1, 5, 2, 4)                          # (B, S, H, D): 2 text tokens, 3 image tokens
        >>> record_key_scores(q, k, key_mask=None, seq_txt=2).shape
        torch.Size([1, 3])

    query/key are (B, S, H, D) in joint order [text (seq_txt, critic included), image]; `key_mask`
    as in `critic_joint_attention` (padding tokens are not real queries either). Shared by every
    model family's critic processor.
    """
    # sum_q q.k_i / sqrt(d) == (sum_q q) . k_i / sqrt(d): O(S D) instead of the O(S^2 D) score matrix.
    scale = query.shape[-1] ** -0.5
    q = query.float()
    if key_mask is not None:
        q = q * key_mask[:, 0, 0, :, None, None].to(q.dtype)
    received = torch.einsum("bhd,bshd->bs", q.sum(dim=1), key[:, seq_txt:].float()) * scale  # (B, S_img)
    return received.detach()


class QwenCriticAttnProcessor:
    """Drop-in for diffusers' `QwenDoubleStreamAttnProcessor2_0` that knows about the critic token.

    Example:
        >>> from refine.inline_critic.processor import CriticState, QwenCriticAttnProcessor
        >>> from refine.inline_critic.testing import tiny_qwen_transformer
        >>> transformer = tiny_qwen_transformer()
        >>> state = CriticState(enabled=False)
        >>> transformer.set_attn_processor({n: QwenCriticAttnProcessor(state, i) for i, n in enumerate(transformer.attn_processors)})
        >>> type(transformer.transformer_blocks[0].attn.processor).__name__
        'QwenCriticAttnProcessor'

    With `state.enabled` False it computes exactly what the stock processor computes (same
    projections, norms, RoPE and attention dispatch), so it can stay installed on a transformer
    that other editors share. Installed by `refine.inline_critic.attach.attach_critic`.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: CriticState, layer: int) -> None:
        if not hasattr(F, "scaled_dot_product_attention"):
            raise ImportError("QwenCriticAttnProcessor requires PyTorch >= 2.0 (scaled_dot_product_attention)")
        self.state = state
        self.layer = layer

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,  # (B, S_img, D) image stream: noise tokens then source tokens
        encoder_hidden_states: torch.Tensor | None = None,  # (B, L(+1), D) text stream (+ critic)
        encoder_hidden_states_mask: torch.Tensor | None = None,  # (B, L(+1)) bool, True = real token
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # 1. Check inputs: fail early on what this processor cannot honour.
        if encoder_hidden_states is None:
            raise ValueError("QwenCriticAttnProcessor needs encoder_hidden_states (the text stream carrying the critic)")
        if attention_mask is not None:
            raise ValueError(
                "QwenCriticAttnProcessor builds its own joint mask; pass encoder_hidden_states_mask, not attention_mask"
            )
        seq_txt = encoder_hidden_states.shape[1]
        with_critic = self.state.enabled and self.state.text_len is not None
        if with_critic and seq_txt != self.state.text_len:
            raise ValueError(
                f"text stream has {seq_txt} tokens but the critic pre-hook appended up to {self.state.text_len}; "
                "call the transformer itself (its forward pre-hook appends the critic), not a block directly"
            )
        key_mask = None
        if encoder_hidden_states_mask is not None:
            image_mask = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            key_mask = torch.cat([encoder_hidden_states_mask.bool(), image_mask], dim=1)[:, None, None, :]  # (B, 1, 1, S)

        # 2. Project both streams, normalise q/k, rotate (identical to the stock processor).
        head_dim = attn.inner_dim // attn.heads
        img_q, img_k, img_v = (proj(hidden_states).unflatten(-1, (-1, head_dim)) for proj in (attn.to_q, attn.to_k, attn.to_v))
        txt_q, txt_k, txt_v = (
            proj(encoder_hidden_states).unflatten(-1, (-1, head_dim)) for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        )
        if attn.norm_q is not None:
            img_q = attn.norm_q(img_q)
        if attn.norm_k is not None:
            img_k = attn.norm_k(img_k)
        if attn.norm_added_q is not None:
            txt_q = attn.norm_added_q(txt_q)
        if attn.norm_added_k is not None:
            txt_k = attn.norm_added_k(txt_k)
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            img_q = apply_rotary_emb_qwen(img_q, img_freqs, use_real=False)
            img_k = apply_rotary_emb_qwen(img_k, img_freqs, use_real=False)
            txt_q = apply_rotary_emb_qwen(txt_q, txt_freqs, use_real=False)
            txt_k = apply_rotary_emb_qwen(txt_k, txt_freqs, use_real=False)
        query = torch.cat([txt_q, img_q], dim=1)  # (B, S, H, Dh), order [text, critic, image]
        key = torch.cat([txt_k, img_k], dim=1)
        value = torch.cat([txt_v, img_v], dim=1)

        # 3. Joint attention; the critic (joint index seq_txt - 1) hidden from the others on request.
        if with_critic and self.state.record_scores:
            self.state.scores[self.layer] = record_key_scores(query, key, key_mask, seq_txt)
        out = critic_joint_attention(
            query,
            key,
            value,
            critic_index=seq_txt - 1 if with_critic else None,
            key_mask=key_mask,
            hide_critic=with_critic and self.state.hide_critic,
            attend=self._attend,
        )
        out = out.flatten(2, 3).to(query.dtype)  # (B, S, H * Dh)

        # 4. Split back into streams and project out.
        txt_out, img_out = out[:, :seq_txt], out[:, seq_txt:]
        img_out = attn.to_out[0](img_out.contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)
        txt_out = attn.to_add_out(txt_out.contiguous())
        return img_out, txt_out

    def _attend(self, query, key, value, attn_mask):
        return dispatch_attention_fn(
            query, key, value, attn_mask=attn_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config,
        )
