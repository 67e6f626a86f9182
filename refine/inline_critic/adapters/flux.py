"""Inline-critic adapter for diffusers' `FluxTransformer2DModel` (FLUX.1 [dev], FLUX.1 Kontext).

Example:
    >>> import torch
    >>> from refine.inline_critic.adapters.flux import FluxAdapter
    >>> adapter = FluxAdapter()
    >>> args, kwargs = adapter.append_token((), {
    ...     "encoder_hidden_states": torch.zeros(2, 3, 32), "txt_ids": torch.zeros(3, 3)}, torch.ones(32))
    >>> kwargs["encoder_hidden_states"].shape, kwargs["txt_ids"][-1].tolist()
    (torch.Size([2, 4, 32]), [0.0, 0.0, 0.0])
    >>> img_ids = torch.cat([torch.zeros(4, 3), torch.ones(4, 3)])       # Kontext: 4 noise, then 4 source tokens
    >>> adapter.num_noise_tokens((), {"img_ids": img_ids})
    4

How the pieces map onto diffusers' model (transformer_flux.py, diffusers >= 0.35):

* Critic token: appended to `encoder_hidden_states` (T5 width `joint_attention_dim`, *before*
  `context_embedder`, so it is embedded like any T5 token). FLUX derives RoPE from explicit ids
  (`ids = cat(txt_ids, img_ids)`, one row per joint token, each token's rotation computed from its
  own row only), so the critic also needs a `txt_ids` row: we append **zeros**, FLUX's convention
  for every T5 token (the pipelines pass `txt_ids = zeros(L, 3)`: text is not rotated, its order
  lives in the T5 embeddings). The critic thus sits in the frozen model's attention geometry
  exactly where a text token sits; a fresh coordinate (say first axis 2, next to Kontext's 1 for
  source tokens) would put it at a rotary offset no text token was trained with. Appending a row
  changes no other token's ids, so every original token keeps its rotation. The critic is the last
  text token: joint index `L` in every attention (token order as in `refine.inline_critic.processor`).
* Masks: FLUX has no text padding mask (T5 padding is attended), so the only mask is the
  critic-hiding one (eq. 5): a (B, 1, 1, S) key mask whose single masked column is the critic's,
  i.e. an additive -inf on that column for every query (SDPA applies a bool mask that way), and
  the critic's own query row is recomputed against all keys (`critic_joint_attention`). No (S, S)
  mask is built. A caller-supplied `attention_mask` is passed through while the critic is off and
  refused while it is on (it would not cover the critic's column).
* Blocks: FLUX has `num_layers` double-stream `transformer_blocks` (separate text/image weights,
  joint attention) followed by `num_single_layers` single-stream `single_transformer_blocks` (one
  attention over `cat([text, image])`, shared weights). In diffusers >= 0.35 *both* return
  `(encoder_hidden_states, hidden_states)` = (text, image), so every block is a probe-able layer:
  layer `l` is `transformer_blocks[l]` for `l < num_layers`, else
  `single_transformer_blocks[l - num_layers]`; `CriticDims.num_layers` is the sum (57 for the real
  model). Every attention of both kinds mixes text and image, so every one gets a
  `FluxCriticAttnProcessor` and the critic can be hidden everywhere (feed-forwards are per token,
  adaLN reads only `temb`, so nothing else can carry the critic to other tokens).
* Noise tokens: Kontext appends the source-image tokens after the noise tokens in `hidden_states`
  and marks them with first id coordinate 1 in `img_ids` (noise tokens: 0;
  `refine.backbones.flux_kontext._position_ids`, diffusers' `FluxKontextPipeline`). The noise
  tokens are the leading `img_ids` rows whose first coordinate is 0: all of them for text-to-image
  FLUX, the first `(H/16) * (W/16)` for Kontext.
* Time embedding: the output of `time_text_embed` (`CombinedTimestepGuidanceTextProjEmbeddings`
  with `guidance_embeds`, else `CombinedTimestepTextProjEmbeddings`), (B, inner_dim) with
  inner_dim = heads * head_dim (3072 for the real model). It is timestep + guidance + pooled CLIP
  embedding: exactly the `temb` every block (and `norm_out`) is modulated with, so the probes'
  adaLN sees what the final read-out sees.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from refine.errors import ConfigError
from refine.inline_critic.adapters.base import CriticDims, mmdit_dims
from refine.inline_critic.processor import CriticState, critic_joint_attention, record_key_scores

# The processor import above has made diffusers importable (its torchvision workaround).
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import _get_qkv_projections  # plain or fused QKV, as the stock processor


class FluxCriticAttnProcessor:
    """Drop-in for diffusers' `FluxAttnProcessor` (both block kinds) that knows about the critic token.

    Example:
        >>> from diffusers import FluxTransformer2DModel
        >>> from refine.inline_critic.adapters.flux import FluxAdapter
        >>> from refine.inline_critic.processor import CriticState
        >>> transformer = FluxTransformer2DModel(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        ...                                      num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        ...                                      axes_dims_rope=[4, 4, 8])
        >>> processors = FluxAdapter().critic_processors(transformer, CriticState(enabled=False))
        >>> {name: p.layer for name, p in processors.items()}        # probe layer index of each attention
        {'transformer_blocks.0.attn.processor': 0, 'single_transformer_blocks.0.attn.processor': 1}
        >>> transformer.set_attn_processor(processors)

    Double-stream blocks call it with the two streams apart (`encoder_hidden_states` = text + critic);
    single-stream blocks with one joint stream `[text, critic, image]` and no `encoder_hidden_states`,
    so there the text length (critic included) comes from `state.text_len`, set by the critic
    pre-hook. With the critic off it computes exactly what the stock processor computes.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: CriticState, layer: int) -> None:
        if not hasattr(F, "scaled_dot_product_attention"):
            raise ImportError("FluxCriticAttnProcessor requires PyTorch >= 2.0 (scaled_dot_product_attention)")
        self.state = state
        self.layer = layer

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,  # (B, S_img, D) double-stream; (B, L(+1) + S_img, D) single-stream
        encoder_hidden_states: torch.Tensor | None = None,  # (B, L(+1), D) text (+ critic), double-stream only
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin over the joint sequence
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # 1. Check inputs: where the critic is, and what this processor cannot honour.
        with_critic = self.state.enabled and self.state.text_len is not None
        two_streams = encoder_hidden_states is not None
        if with_critic:
            if attention_mask is not None:
                raise ValueError(
                    "FluxCriticAttnProcessor builds its own critic mask; an attention_mask would not cover the critic "
                    "token, so run without joint_attention_kwargs['attention_mask'] while the critic is on"
                )
            seq_txt = encoder_hidden_states.shape[1] if two_streams else self.state.text_len
            if seq_txt != self.state.text_len or (not two_streams and hidden_states.shape[1] <= seq_txt):
                raise ValueError(
                    f"text stream has {seq_txt} tokens but the critic pre-hook appended up to {self.state.text_len}; "
                    "call the transformer itself (its forward pre-hook appends the critic), not a block directly"
                )

        # 2. Project, normalise q/k, join [text, image], rotate (identical to the stock processor).
        query, key, value, txt_q, txt_k, txt_v = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (query, key, value))  # (B, S, H, Dh)
        query, key = attn.norm_q(query), attn.norm_k(key)
        if two_streams and attn.added_kv_proj_dim is not None:
            txt_q, txt_k, txt_v = (x.unflatten(-1, (-1, attn.head_dim)) for x in (txt_q, txt_k, txt_v))
            txt_q, txt_k = attn.norm_added_q(txt_q), attn.norm_added_k(txt_k)
            query, key, value = (torch.cat(pair, dim=1) for pair in ((txt_q, query), (txt_k, key), (txt_v, value)))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        # 3. Joint attention; the critic (joint index text_len - 1) hidden from the others on request.
        critic_index = self.state.text_len - 1 if with_critic else None
        if with_critic and self.state.record_scores:
            self.state.scores[self.layer] = record_key_scores(query, key, None, self.state.text_len)
        out = critic_joint_attention(
            query,
            key,
            value,
            critic_index=critic_index,
            key_mask=attention_mask,
            hide_critic=with_critic and self.state.hide_critic,
            attend=self._attend,
        )
        out = out.flatten(2, 3).to(query.dtype)  # (B, S, H * Dh)

        # 4. Single-stream blocks take the joint output as is; double-stream ones split and project out.
        if not two_streams:
            return out
        seq_txt = encoder_hidden_states.shape[1]
        txt_out, img_out = out[:, :seq_txt], out[:, seq_txt:]
        img_out = attn.to_out[1](attn.to_out[0](img_out.contiguous()))
        txt_out = attn.to_add_out(txt_out.contiguous())
        return img_out, txt_out

    def _attend(self, query, key, value, attn_mask):
        return dispatch_attention_fn(
            query, key, value, attn_mask=attn_mask, backend=self._attention_backend, parallel_config=self._parallel_config
        )


class FluxAdapter:
    """`MMDiTAdapter` for `FluxTransformer2DModel` (see the module docstring for the mapping).

    Example:
        >>> from refine.inline_critic.adapters import adapter_for
        >>> from refine.inline_critic.adapters.flux import FluxAdapter
        >>> from diffusers import FluxTransformer2DModel
        >>> transformer = FluxTransformer2DModel(in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
        ...                                      num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=8,
        ...                                      axes_dims_rope=[2, 2, 4])
        >>> isinstance(adapter_for(transformer), FluxAdapter), adapter_for(transformer).dims(transformer)
        (True, CriticDims(text_dim=24, hidden_dim=16, time_dim=16, velocity_dim=16, num_layers=3))
    """

    name = "flux"

    def matches(self, transformer: Any) -> bool:
        from diffusers import FluxTransformer2DModel

        return isinstance(transformer, FluxTransformer2DModel)

    def dims(self, transformer: Any) -> CriticDims:
        config = transformer.config
        return mmdit_dims(config, num_layers=config.num_layers + config.num_single_layers)

    def blocks(self, transformer: Any) -> list:
        return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]  # double-stream first

    def time_embedder(self, transformer: Any):
        return transformer.time_text_embed

    def time_embedding(self, output: torch.Tensor, batch_size: int) -> torch.Tensor:
        # (B, D); a (1, D) embedding (one timestep for the batch) broadcasts in the blocks, so expand it
        return output if output.shape[0] == batch_size else output.expand(batch_size, -1)

    def append_token(self, args: tuple, kwargs: dict, token: torch.Tensor) -> tuple[tuple, dict]:
        if args or "encoder_hidden_states" not in kwargs or kwargs.get("txt_ids") is None:
            raise ValueError(
                "the inline critic needs the FLUX transformer called with keyword arguments including "
                "encoder_hidden_states and txt_ids, as diffusers' FLUX pipelines and FluxKontextBackbone do"
            )
        text = kwargs["encoder_hidden_states"]  # (B, L, D_text)
        critic = token.to(device=text.device, dtype=text.dtype).expand(text.shape[0], 1, -1)  # (B, 1, D_text)
        ids = kwargs["txt_ids"]  # (L, 3), or (B, L, 3) in diffusers' deprecated form
        critic_ids = ids.new_zeros(*ids.shape[:-2], 1, ids.shape[-1])  # zeros: FLUX's text-token position
        return args, {
            **kwargs,
            "encoder_hidden_states": torch.cat([text, critic], dim=1),
            "txt_ids": torch.cat([ids, critic_ids], dim=-2),
        }

    def num_noise_tokens(self, args: tuple, kwargs: dict) -> int:
        ids = kwargs.get("img_ids")
        if ids is None:
            raise ValueError("the inline critic needs img_ids in the FLUX transformer call to find the noise tokens")
        first = ids[0, :, 0] if ids.ndim == 3 else ids[:, 0]  # (S_img,) 0 = noise token, >0 = condition image
        conditions = torch.nonzero(first != 0)
        return int(conditions[0, 0]) if len(conditions) else first.shape[0]

    def split_block_output(self, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not (isinstance(output, tuple) and len(output) == 2):
            raise ConfigError(
                "FLUX blocks must return (encoder_hidden_states, hidden_states) as in diffusers >= 0.35; "
                f"got {type(output).__name__}: upgrade diffusers"
            )
        text, image = output
        return text, image

    def critic_processors(self, transformer: Any, state: CriticState) -> dict[str, FluxCriticAttnProcessor]:
        first_single = transformer.config.num_layers
        processors = {}
        for name in transformer.attn_processors:  # "{transformer_blocks|single_transformer_blocks}.{i}.attn.processor"
            kind, index = name.split(".")[:2]
            if kind not in ("transformer_blocks", "single_transformer_blocks"):
                raise ConfigError(f"unexpected attention module {name!r} in a FLUX transformer; the critic cannot hide itself there")
            layer = int(index) + (first_single if kind == "single_transformer_blocks" else 0)
            processors[name] = FluxCriticAttnProcessor(state, layer=layer)
        return processors
