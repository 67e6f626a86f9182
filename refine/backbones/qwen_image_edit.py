"""Qwen-Image-Edit (plain, and Plus: 2509 / 2511) as a `FlowBackbone`, over diffusers' components.

Example:
    >>> import torch
    >>> from refine.backbones.qwen_image_edit import QwenImageEditBackbone
    >>> from refine.rollout.flow_editor import FlowEditor
    >>> backbone = QwenImageEditBackbone.from_pretrained("Qwen/Qwen-Image-Edit-2509",     # doctest: +SKIP
    ...                                                  torch_dtype=torch.bfloat16, device="cuda")
    >>> backbone.variant                                                                  # doctest: +SKIP
    'plus'
    >>> editor = FlowEditor(backbone, steps=50)           # true CFG 4.0 by default         # doctest: +SKIP

The components live in the diffusers pipeline object (`backbone.pipeline`): loading, device
moves, LoRA loading (`pipeline.load_lora_weights`) and the pipeline's own helpers (prompt
encoding with the source image, VAE normalisation, latent packing, the image processor) are
diffusers'. What this class adds is the white-box split of the pipeline's `__call__`: encode a
condition once, predict a (guided) velocity for any x_t and t, decode; the sampling loop lives in
`refine.rollout`; the frozen parts (text encoder, VAE) run without gradients, `velocity` keeps
them (losses differentiate it). Seeded noise is drawn as the pipeline draws it, so with float32 weights a seed
gives the pipeline's image (see tests/backbones/test_qwen_image_edit.py for the tolerance).

Variants (`variant`):
* ``"edit"`` (Qwen-Image-Edit): the Qwen2.5-VL sees the prepared source image itself.
* ``"plus"`` (2509, 2511): the VL sees the original source resized to `vl_pixel_area` (384² by default)
  and its prompt names it "Picture 1"; 2511's transformer (``zero_cond_t``) needs nothing more.

Image policy (`prepare_images`): each image is resized, aspect ratio kept, to about
`pixel_area` pixels (1024² by default, as the pipelines) with both sides rounded to a multiple of
32 (diffusers' `calculate_dimensions`), at least 32; the edit is generated at that size. Requests of one batch
must end up with the same size (callers group them, as `refine.rollout` does).

Output size: by default the edit has the prepared source's size. `height` / `width` set it apart
from the source, as the pipelines' ``height=`` / ``width=`` do (rounded down to a multiple of 16,
the source still conditions at `pixel_area`); the RoPE shapes then name both grids.

Guidance is Qwen-Image's true CFG: the negative prompt (with the source image) is encoded too,
both branches run in one batched pass, and the guided velocity is rescaled to the conditional
velocity's norm per token, as the pipeline does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch
from PIL import Image

from refine._compat import ensure_torchvision_importable
from refine.backbones import diffusers_dtype_kwargs, resolve_dtype
from refine.backbones.base import Condition, concat_conditions
from refine.backbones.diffusers_common import cfg_velocities, prepare_edit_batch, resize_images, shifted_sigmas
from refine.errors import ArtifactError, ConfigError, InputError
from refine.images import load_image

ensure_torchvision_importable()  # transformers' image processors import torchvision

from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline  # noqa: E402
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (  # noqa: E402
    CONDITION_IMAGE_SIZE,
    VAE_IMAGE_SIZE,
    calculate_dimensions,
)
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

Variant = Literal["edit", "plus"]
PIPELINES: dict[str, type] = {"edit": QwenImageEditPipeline, "plus": QwenImageEditPlusPipeline}


class QwenImageEditBackbone:
    """White-box Qwen-Image-Edit. Build with `from_pretrained`, `from_pipeline` or the components.

    Args:
        transformer, vae, text_encoder, tokenizer, processor, scheduler: the pipeline components
            (`QwenImageTransformer2DModel`, `AutoencoderKLQwenImage`, Qwen2.5-VL, its tokenizer and
            `Qwen2VLProcessor`, `FlowMatchEulerDiscreteScheduler`).
        variant: ``"edit"`` or ``"plus"`` (2509 / 2511); see the module docstring.
        pixel_area: target pixel count of prepared images (and of the edit).
        vl_pixel_area: pixel count of the image the VL encoder sees (``"plus"`` only).
        negative_prompt: the CFG negative prompt (the pipeline needs one to enable true CFG).
        default_guidance: true-CFG scale used when callers pass none; <= 1 disables CFG.
        height, width: size of the generated image (None: the prepared source's), as the
            pipelines' arguments of the same names.
    """

    name = "qwen_image_edit"
    default_steps = 50  # the pipelines' num_inference_steps default

    def __init__(
        self,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        processor,
        scheduler,
        *,
        variant: Variant = "edit",
        pixel_area: int = VAE_IMAGE_SIZE,
        vl_pixel_area: int = CONDITION_IMAGE_SIZE,
        negative_prompt: str = " ",
        default_guidance: float | None = 4.0,
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        if variant not in PIPELINES:
            raise ConfigError(f"unknown Qwen-Image-Edit variant {variant!r}; use 'edit' (Qwen-Image-Edit) or 'plus' (2509, 2511)")
        pipeline = PIPELINES[variant](
            scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, processor=processor, transformer=transformer
        )
        self._init(pipeline, variant, pixel_area, vl_pixel_area, negative_prompt, default_guidance, height, width)

    def _init(self, pipeline, variant, pixel_area, vl_pixel_area, negative_prompt, default_guidance, height=None, width=None) -> None:
        if pixel_area < 32 * 32 or vl_pixel_area < 28 * 28:
            raise ConfigError(f"pixel_area={pixel_area} / vl_pixel_area={vl_pixel_area} are too small; use at least 32*32")
        multiple = pipeline.vae_scale_factor * 2
        for name, value in (("height", height), ("width", width)):
            if value is not None and value < multiple:
                raise ConfigError(f"{name}={value} is below {multiple}; give at least {multiple} (it is rounded down to a multiple of {multiple})")
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline
        self.variant = variant
        self.pixel_area = int(pixel_area)
        self.vl_pixel_area = int(vl_pixel_area)
        self.negative_prompt = negative_prompt
        self.default_guidance = default_guidance
        self.height, self.width = height, width
        self.transformer = pipeline.transformer
        self.vae = pipeline.vae
        self.vae_scale_factor = pipeline.vae_scale_factor
        self.latent_channels = pipeline.latent_channels

    @classmethod
    def from_pipeline(cls, pipeline, **kwargs) -> "QwenImageEditBackbone":
        """Wrap an already loaded `QwenImageEditPipeline` / `QwenImageEditPlusPipeline` (shares its modules)."""
        variant = kwargs.pop("variant", None) or _variant_of(type(pipeline).__name__)
        self = cls.__new__(cls)
        self._init(
            pipeline,
            variant,
            kwargs.pop("pixel_area", VAE_IMAGE_SIZE),
            kwargs.pop("vl_pixel_area", CONDITION_IMAGE_SIZE),
            kwargs.pop("negative_prompt", " "),
            kwargs.pop("default_guidance", 4.0),
            kwargs.pop("height", None),
            kwargs.pop("width", None),
        )
        if kwargs:
            raise ConfigError(f"unknown QwenImageEditBackbone options {sorted(kwargs)}")
        return self

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        torch_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
        variant: Variant | None = None,
        weights_variant: str | None = None,
        **kwargs,
    ) -> "QwenImageEditBackbone":
        """Load a Qwen-Image-Edit checkpoint (folder or hub id) through diffusers' `from_pretrained`.

        `variant` defaults to what the checkpoint's `model_index.json` names (Plus pipeline ->
        ``"plus"``). `weights_variant` is diffusers' own ``variant=`` (which weight files to read,
        e.g. ``"fp16"`` for ``*.fp16.safetensors``). Other keyword arguments are the constructor's
        options (pixel_area, height...).
        """
        class_name = _pipeline_class_name(path_or_id)
        variant = variant or _variant_of(class_name)
        loading = diffusers_dtype_kwargs(torch_dtype) | ({"variant": weights_variant} if weights_variant else {})
        try:
            pipeline = PIPELINES[variant].from_pretrained(str(path_or_id), **loading)
        except (OSError, ValueError) as err:
            raise ArtifactError(f"cannot load Qwen-Image-Edit from {path_or_id}: {str(err).splitlines()[0]}") from None
        if device is not None:
            pipeline.to(device)
        return cls.from_pipeline(pipeline, variant=variant, **kwargs)

    # --- protocol --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def to(self, device: torch.device | str) -> "QwenImageEditBackbone":
        self.pipeline.to(device)
        return self

    def output_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) an image of this size is edited at (see the module's image policy)."""
        width, height = calculate_dimensions(self.pixel_area, image.width / image.height)[:2]
        return max(32, width), max(32, height)  # extreme aspect ratios would round a side to 0

    def prepare_images(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        return resize_images(images, self.output_size, self.pipeline.image_processor)

    @torch.no_grad()
    def encode_condition(
        self, images: Sequence[Image.Image], instructions: Sequence[str], *, guidance: float | None = None
    ) -> Condition:
        # 1. Check inputs and prepare the images (one shared size per batch).
        originals = [load_image(image) for image in images]  # Plus resizes the VL's picture from these
        images, instructions = prepare_edit_batch(self.prepare_images, originals, instructions)
        source_width, source_height = images[0].size
        multiple = self.vae_scale_factor * 2  # the pipelines round a requested size down to this
        height = (self.height or source_height) // multiple * multiple
        width = (self.width or source_width) // multiple * multiple
        vl_images = images if self.variant == "edit" else [self._vl_image(image) for image in originals]

        # 2. Encode the source images once: VAE latents, normalised and packed (B, N_src, C).
        image_latents = self._encode_packed(images)

        # 3. Encode prompts with the image (and the negative prompt when CFG is on).
        guidance = self.default_guidance if guidance is None else guidance
        text, mask = self._encode_prompts(instructions, vl_images)
        grid = (1, height // multiple, width // multiple)
        source_grid = (1, source_height // multiple, source_width // multiple)
        common = dict(
            image_latents=image_latents,
            latent_shape=(grid[1] * grid[2], self.transformer.config.in_channels),
            image_size=(height, width),  # of the edit (noise, decode); the source's may differ
            extras={"img_shapes": [[grid, source_grid] for _ in images]},  # RoPE: noise grid, then source grid
        )
        negative = None
        if guidance is not None and guidance > 1:
            negative_text, negative_mask = self._encode_prompts([self.negative_prompt] * len(images), vl_images)
            negative = Condition(text=negative_text, text_mask=negative_mask, **common)
        return Condition(text=text, text_mask=mask, negative=negative, **common)

    def prepare_noise(self, cond: Condition, generator: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
        # Drawn exactly as the pipeline's `prepare_latents` draws them (unpacked shape, then packed).
        height, width = (2 * (s // (self.vae_scale_factor * 2)) for s in cond.image_size)
        channels = self.transformer.config.in_channels // 4
        generator = list(generator) if isinstance(generator, (list, tuple)) else generator
        noise = randn_tensor((cond.batch_size, 1, channels, height, width), generator=generator, device=self.device, dtype=torch.float32)
        return self.pipeline._pack_latents(noise, cond.batch_size, channels, height, width)  # (B, N, C)

    def sigmas(self, steps: int, cond: Condition) -> torch.Tensor:
        # The pipeline's schedule: linspace(1, 1/steps), shifted with mu from the image sequence length.
        return shifted_sigmas(self.pipeline.scheduler.config, steps, image_seq_len=cond.latent_shape[0])

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        tokens = x_t.shape[1]
        hidden = torch.cat([x_t.to(self.dtype), cond.image_latents.to(self.dtype)], dim=1)  # (B, N + N_src, C)
        mask = cond.text_mask
        out = self.transformer(
            hidden_states=hidden,
            timestep=t.to(self.dtype),
            guidance=None,
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,  # as the pipeline: no mask when all valid
            encoder_hidden_states=cond.text.to(self.dtype),
            img_shapes=cond.extras["img_shapes"],
            return_dict=False,
        )[0]
        return out[:, :tokens]  # (B, N, C)

    def predict_velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: float | None = None
    ) -> torch.Tensor:
        guidance = self.default_guidance if guidance is None else guidance
        if cond.negative is None or guidance is None or guidance <= 1:
            return self.velocity(x_t, t, cond)
        v_cond, v_neg = cfg_velocities(self.velocity, x_t, t, cond)
        guided = v_neg + guidance * (v_cond - v_neg)
        # Qwen-Image's rescale: keep the conditional velocity's per-token norm.
        return guided * (v_cond.norm(dim=-1, keepdim=True) / guided.norm(dim=-1, keepdim=True))

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor):  # (B, 3, H, W) in [0, 1] at a valid size
            multiple = self.vae_scale_factor * 2
            if images.shape[-1] % multiple or images.shape[-2] % multiple:
                raise InputError(f"image tensor of size {tuple(images.shape[-2:])} is not a multiple of {multiple}; use prepare_images")
            return self._encode_packed(images * 2 - 1)
        return self._encode_packed(self.prepare_images(images))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, cond: Condition) -> torch.Tensor:
        height, width = cond.image_size
        latents = self.pipeline._unpack_latents(latents, height, width, self.vae_scale_factor).to(self.vae.dtype)
        mean, std = self._latent_stats(latents)
        pixels = self.vae.decode(latents * std + mean, return_dict=False)[0][:, :, 0]  # (B, 3, H, W) in [-1, 1]
        return (pixels.float() / 2 + 0.5).clamp(0, 1)

    # --- helpers ---------------------------------------------------------------------------

    def _vl_image(self, image: Image.Image) -> Image.Image:
        width, height = calculate_dimensions(self.vl_pixel_area, image.width / image.height)[:2]
        width, height = max(32, width), max(32, height)
        return self.pipeline.image_processor.resize(image, height, width)

    def _encode_prompts(self, prompts: list[str], vl_images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) embeddings + (B, L) mask, one prompt at a time with its own image.

        One call per prompt: the Plus pipeline reads a list of images as several pictures of ONE
        prompt, and a batch of one reproduces the pipeline's single-prompt encoding exactly.
        Text encoding happens once per request, so this loop is not on the sampling path.
        """
        embeds, masks = [], []
        for prompt, image in zip(prompts, vl_images):
            picture = [image] if self.variant == "plus" else image
            embed, mask = self.pipeline.encode_prompt(prompt=[prompt], image=picture, device=self.device)
            mask = torch.ones(embed.shape[:2], dtype=torch.long, device=embed.device) if mask is None else mask
            embeds.append(embed)
            masks.append(mask)
        conds = [Condition(e, m, None, (0, 0), (0, 0)) for e, m in zip(embeds, masks)]
        stacked = concat_conditions(conds)  # right-pads to the longest prompt, mask 0
        return stacked.text, stacked.text_mask

    def _encode_packed(self, images: list[Image.Image] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, list):
            width, height = images[0].size
            pixels = self.pipeline.image_processor.preprocess(images, height, width)  # (B, 3, H, W) in [-1, 1]
        else:
            pixels = images
        pixels = pixels.unsqueeze(2).to(device=self.device, dtype=self.vae.dtype)  # (B, 3, 1, H, W)
        latents = self.pipeline._encode_vae_image(pixels, generator=None)  # normalised, (B, z, 1, h, w)
        batch, channels, _, height, width = latents.shape
        return self.pipeline._pack_latents(latents, batch, channels, height, width)  # (B, N, 4z)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(like.device, like.dtype)
        std = torch.tensor(config.latents_std).view(shape).to(like.device, like.dtype)
        return mean, std


def _pipeline_class_name(path_or_id: str | Path) -> str:
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.load_config(str(path_or_id)).get("_class_name", "")
    except (OSError, ValueError) as err:
        raise ArtifactError(
            f"no diffusers pipeline at {path_or_id} ({str(err).splitlines()[0]}); give a folder with model_index.json or a hub id"
        ) from None


def _variant_of(class_name: str) -> Variant:
    if class_name in ("QwenImageEditPlusPipeline",):
        return "plus"
    if class_name in ("QwenImageEditPipeline", "", "QwenImageEditBackbone"):
        return "edit"
    raise ConfigError(f"{class_name} is not a Qwen-Image-Edit pipeline; expected QwenImageEditPipeline or QwenImageEditPlusPipeline")


def load_qwen_image_edit(
    path: str, dtype: str | None = None, device: str | None = None, **options
) -> QwenImageEditBackbone:
    """Registry/CLI loader: `QwenImageEditBackbone.from_pretrained` with a dtype name.

    `dtype` None: bfloat16 on CUDA, float32 elsewhere. `options` go to `from_pretrained`
    (weights_variant) and the constructor (variant, pixel_area, vl_pixel_area, negative_prompt,
    default_guidance, height, width).
    """
    return QwenImageEditBackbone.from_pretrained(path, torch_dtype=resolve_dtype(dtype, device), device=device, **options)
