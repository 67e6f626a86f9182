"""FLUX.1 Kontext as a `FlowBackbone`, over diffusers' `FluxKontextPipeline` components.

Example:
    >>> import torch
    >>> from refine.backbones.flux_kontext import FluxKontextBackbone
    >>> from refine.rollout.flow_editor import FlowEditor
    >>> backbone = FluxKontextBackbone.from_pretrained("black-forest-labs/FLUX.1-Kontext-dev",   # doctest: +SKIP
    ...                                                torch_dtype=torch.bfloat16, device="cuda")
    >>> editor = FlowEditor(backbone, steps=28)          # guidance 2.5 (embedded) by default      # doctest: +SKIP

As for Qwen-Image-Edit, the components live in the diffusers pipeline (`backbone.pipeline`) and
its helpers are reused (CLIP + T5 prompt encoding, VAE shift/scale, packing, position ids); this
class exposes the white-box split (condition once, velocity per step, decode). The frozen parts
(text encoders, VAE) run without gradients; `velocity` keeps them. With float32 weights a seed
gives the pipeline's image (tests/backbones/test_flux_kontext.py documents the tolerance).

What FLUX.1 Kontext conditions on:
* text: T5 token embeddings (padded to `max_sequence_length`, no mask: FLUX attends to padding,
  so every item of every batch has the same text length) and CLIP's pooled embedding
  (``extras["pooled"]``);
* the source image: VAE latents packed into tokens appended after the noise tokens, with position
  ids whose first coordinate is 1 (noise tokens use 0);
* guidance: FLUX.1 [dev] models are guidance-distilled, so `guidance` is the value fed to the
  guidance embedding (``extras["guidance"]``, default 2.5 as Kontext's model card), not CFG. True
  CFG with a negative prompt is available (`true_cfg_scale` > 1), as in the pipeline.

Image policy (`prepare_images`): with `auto_resize` (default, as the pipeline) an image goes to
the Kontext training resolution closest to its aspect ratio (about 1 MP); otherwise it is scaled,
aspect ratio kept, to about `max_area` pixels. Both sides are then floored to a multiple of
2 x the VAE factor (16 for the real model). The edit is generated at that size.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from refine._compat import ensure_torchvision_importable
from refine.backbones import diffusers_dtype_kwargs, resolve_dtype
from refine.backbones.base import Condition
from refine.backbones.diffusers_common import cfg_velocities, prepare_edit_batch, resize_images, shifted_sigmas
from refine.errors import ArtifactError, ConfigError, InputError

ensure_torchvision_importable()  # transformers' tokenizer/model modules import torchvision

from diffusers import FluxKontextPipeline  # noqa: E402
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402


class FluxKontextBackbone:
    """White-box FLUX.1 Kontext. Build with `from_pretrained`, `from_pipeline` or the components.

    Args:
        transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, scheduler: the
            pipeline components (`FluxTransformer2DModel`, `AutoencoderKL`, CLIP text model and
            tokenizer, T5 encoder and tokenizer, `FlowMatchEulerDiscreteScheduler`).
        auto_resize / max_area: the image policy (module docstring).
        max_sequence_length: T5 tokens (512 as the pipeline; shorter is faster for short prompts).
        default_guidance: embedded guidance when callers pass none.
        true_cfg_scale / negative_prompt: optional true CFG on top (1.0: off, as the pipeline).
    """

    name = "flux_kontext"
    default_steps = 28  # the pipeline's num_inference_steps default

    def __init__(
        self,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        scheduler,
        *,
        auto_resize: bool = True,
        max_area: int = 1024**2,
        max_sequence_length: int = 512,
        default_guidance: float | None = 2.5,
        true_cfg_scale: float = 1.0,
        negative_prompt: str = "",
    ) -> None:
        pipeline = FluxKontextPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            transformer=transformer,
        )
        self._init(pipeline, auto_resize, max_area, max_sequence_length, default_guidance, true_cfg_scale, negative_prompt)

    def _init(self, pipeline, auto_resize, max_area, max_sequence_length, default_guidance, true_cfg_scale, negative_prompt) -> None:
        if not 1 <= max_sequence_length <= 512:
            raise ConfigError(f"max_sequence_length={max_sequence_length} must be in [1, 512] (T5's limit in FLUX)")
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline
        self.auto_resize = auto_resize
        self.max_area = int(max_area)
        self.max_sequence_length = int(max_sequence_length)
        self.default_guidance = default_guidance
        self.true_cfg_scale = float(true_cfg_scale)
        self.negative_prompt = negative_prompt
        self.transformer = pipeline.transformer
        self.vae = pipeline.vae
        self.vae_scale_factor = pipeline.vae_scale_factor
        self.multiple_of = pipeline.vae_scale_factor * 2

    @classmethod
    def from_pipeline(cls, pipeline: FluxKontextPipeline, **kwargs) -> "FluxKontextBackbone":
        """Wrap an already loaded `FluxKontextPipeline` (shares its modules)."""
        if not isinstance(pipeline, FluxKontextPipeline):
            raise ConfigError(f"{type(pipeline).__name__} is not a FluxKontextPipeline")
        options = dict(auto_resize=True, max_area=1024**2, max_sequence_length=512, default_guidance=2.5, true_cfg_scale=1.0, negative_prompt="")
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise ConfigError(f"unknown FluxKontextBackbone options {unknown}; valid: {sorted(options)}")
        options.update(kwargs)
        self = cls.__new__(cls)
        self._init(pipeline, **options)
        return self

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        torch_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
        weights_variant: str | None = None,
        **kwargs,
    ) -> "FluxKontextBackbone":
        """Load a FLUX.1 Kontext checkpoint (folder or hub id) through diffusers' `from_pretrained`.

        `weights_variant` is diffusers' ``variant=`` (e.g. ``"fp16"`` reads ``*.fp16.safetensors``).
        """
        loading = diffusers_dtype_kwargs(torch_dtype) | ({"variant": weights_variant} if weights_variant else {})
        try:
            pipeline = FluxKontextPipeline.from_pretrained(str(path_or_id), **loading)
        except (OSError, ValueError) as err:
            raise ArtifactError(f"cannot load FLUX.1 Kontext from {path_or_id}: {str(err).splitlines()[0]}") from None
        if device is not None:
            pipeline.to(device)
        return cls.from_pipeline(pipeline, **kwargs)

    # --- protocol --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def to(self, device: torch.device | str) -> "FluxKontextBackbone":
        self.pipeline.to(device)
        return self

    def output_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) an image of this size is edited at (see the module's image policy)."""
        width, height = image.size
        aspect = width / height
        if self.auto_resize:
            _, width, height = min((abs(aspect - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
        else:
            width, height = round((self.max_area * aspect) ** 0.5), round((self.max_area / aspect) ** 0.5)
        m = self.multiple_of
        return max(m, width // m * m), max(m, height // m * m)

    def prepare_images(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        return resize_images(images, self.output_size, self.pipeline.image_processor)

    @torch.no_grad()
    def encode_condition(
        self, images: Sequence[Image.Image], instructions: Sequence[str], *, guidance: float | None = None
    ) -> Condition:
        # 1. Check inputs and prepare the images (one shared size per batch).
        images, instructions = prepare_edit_batch(self.prepare_images, images, instructions)
        width, height = images[0].size

        # 2. Source image tokens: VAE latents, shifted/scaled, packed (B, N_src, C).
        image_latents = self._encode_packed(images)

        # 3. Prompts: T5 tokens (B, L, D) + CLIP pooled (B, P); the distilled guidance per item.
        guidance = self.default_guidance if guidance is None else guidance
        common = dict(
            image_latents=image_latents,
            latent_shape=(image_latents.shape[1], self.transformer.config.in_channels),
            image_size=(height, width),
        )
        negative = None
        if self.true_cfg_scale > 1:
            negative = self._text_condition([self.negative_prompt] * len(images), guidance, common)
        return replace(self._text_condition(instructions, guidance, common), negative=negative)

    def prepare_noise(self, cond: Condition, generator: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
        # Drawn exactly as the pipeline's `prepare_latents` draws them (unpacked shape, then packed).
        height, width = (2 * (s // (self.vae_scale_factor * 2)) for s in cond.image_size)
        channels = self.transformer.config.in_channels // 4
        generator = list(generator) if isinstance(generator, (list, tuple)) else generator
        noise = randn_tensor((cond.batch_size, channels, height, width), generator=generator, device=self.device, dtype=torch.float32)
        return self.pipeline._pack_latents(noise, cond.batch_size, channels, height, width)  # (B, N, C)

    def sigmas(self, steps: int, cond: Condition) -> torch.Tensor:
        return shifted_sigmas(self.pipeline.scheduler.config, steps, image_seq_len=cond.latent_shape[0])

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        tokens = x_t.shape[1]
        hidden = torch.cat([x_t.to(self.dtype), cond.image_latents.to(self.dtype)], dim=1)  # (B, N + N_src, C)
        guidance = cond.extras.get("guidance") if self.transformer.config.guidance_embeds else None
        out = self.transformer(
            hidden_states=hidden,
            timestep=t.to(self.dtype),
            guidance=guidance,
            pooled_projections=cond.extras["pooled"].to(self.dtype),
            encoder_hidden_states=cond.text.to(self.dtype),
            txt_ids=torch.zeros(cond.text.shape[1], 3, device=self.device, dtype=self.dtype),
            img_ids=self._position_ids(cond.image_size),
            return_dict=False,
        )[0]
        return out[:, :tokens]  # (B, N, C)

    def predict_velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = None
    ) -> torch.Tensor:
        if guidance is not None:
            cond = _with_guidance(cond, guidance)
        if cond.negative is None:
            return self.velocity(x_t, t, cond)
        v_cond, v_neg = cfg_velocities(self.velocity, x_t, t, cond)
        return v_neg + self.true_cfg_scale * (v_cond - v_neg)

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor):  # (B, 3, H, W) in [0, 1] at a valid size
            if images.shape[-1] % self.multiple_of or images.shape[-2] % self.multiple_of:
                raise InputError(f"image tensor of size {tuple(images.shape[-2:])} is not a multiple of {self.multiple_of}; use prepare_images")
            return self._encode_packed(images * 2 - 1)
        return self._encode_packed(self.prepare_images(images))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, cond: Condition) -> torch.Tensor:
        height, width = cond.image_size
        latents = self.pipeline._unpack_latents(latents, height, width, self.vae_scale_factor).to(self.vae.dtype)
        latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        pixels = self.vae.decode(latents, return_dict=False)[0]  # (B, 3, H, W) in [-1, 1]
        return (pixels.float() / 2 + 0.5).clamp(0, 1)

    # --- helpers ---------------------------------------------------------------------------

    def _text_condition(self, prompts: list[str], guidance: float | None, common: dict) -> Condition:
        text, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        batch = text.shape[0]
        extras = {"pooled": pooled}  # (B, P)
        if guidance is not None:
            extras["guidance"] = torch.full((batch,), float(guidance), device=self.device, dtype=torch.float32)
        mask = torch.ones(text.shape[:2], dtype=torch.long, device=text.device)
        return Condition(text=text, text_mask=mask, extras=extras, **common)

    def _encode_packed(self, images: list[Image.Image] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, list):
            width, height = images[0].size
            pixels = self.pipeline.image_processor.preprocess(images, height, width)  # (B, 3, H, W) in [-1, 1]
        else:
            pixels = images
        pixels = pixels.to(device=self.device, dtype=self.vae.dtype)
        latents = self.pipeline._encode_vae_image(pixels, generator=None)  # shifted and scaled (B, c, h, w)
        batch, channels, height, width = latents.shape
        return self.pipeline._pack_latents(latents, batch, channels, height, width)  # (B, N, 4c)

    def _position_ids(self, image_size: tuple[int, int]) -> torch.Tensor:
        """(N + N_src, 3) RoPE ids: noise tokens (0, row, col), then source tokens (1, row, col)."""
        height, width = (s // self.vae_scale_factor // 2 for s in image_size)
        ids = self.pipeline._prepare_latent_image_ids(1, height, width, self.device, self.dtype)
        source = ids.clone()
        source[..., 0] = 1
        return torch.cat([ids, source], dim=0)


def _with_guidance(cond: Condition, guidance: float) -> Condition:
    """`cond` (and its negative) with the embedded guidance set to `guidance` for every item."""
    value = torch.full((cond.batch_size,), float(guidance), device=cond.text.device, dtype=torch.float32)
    negative = None if cond.negative is None else _with_guidance(cond.negative, guidance)
    return replace(cond, extras={**cond.extras, "guidance": value}, negative=negative)


def load_flux_kontext(path: str, dtype: str | None = None, device: str | None = None, **options) -> FluxKontextBackbone:
    """Registry/CLI loader: `FluxKontextBackbone.from_pretrained` with a dtype name.

    `dtype` None: bfloat16 on CUDA, float32 elsewhere. `options` go to the constructor
    (auto_resize, max_area, max_sequence_length, default_guidance, true_cfg_scale, negative_prompt).
    """
    return FluxKontextBackbone.from_pretrained(path, torch_dtype=resolve_dtype(dtype, device), device=device, **options)
