"""Tiny random-weight Qwen-Image-Edit and FLUX.1 Kontext pipelines, saved like the real checkpoints.

Example:
    >>> from refine.testing.tiny_diffusers import tiny_qwen_image_edit_dir
    >>> from refine.backbones.qwen_image_edit import QwenImageEditBackbone
    >>> backbone = QwenImageEditBackbone.from_pretrained(tiny_qwen_image_edit_dir(), pixel_area=32 * 32)  # doctest: +SKIP
    >>> backbone.transformer.config.num_layers                                                            # doctest: +SKIP
    2

Each `save_tiny_*` builds every component in code with seeded random weights, wraps them in the
diffusers pipeline class the real checkpoint uses and writes it with `save_pretrained`, so the
folder has the real layout (``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/`` ...) and loads through the same `from_pretrained` code as the real
weights. Sizes (diffusers' own test sizes): 2-layer MM-DiTs with 16-dim heads; 32x32 images.

* Qwen-Image-Edit: `QwenImageTransformer2DModel`, `AutoencoderKLQwenImage` (4x spatial, 4 latent
  channels, non-trivial latent mean/std), the tiny Qwen2.5-VL text encoder and its processor from
  `refine.testing.tiny_vlm` (BPE tokenizer trained in code) wrapped as a `Qwen2VLProcessor` like
  the real checkpoint, `FlowMatchEulerDiscreteScheduler` with Qwen-Image's dynamic shift.
  ``variant``: ``"edit"`` (QwenImageEditPipeline), ``"plus"`` (QwenImageEditPlusPipeline, as
  2509) and ``"2511"`` (Plus pipeline whose transformer has ``zero_cond_t``).
* FLUX.1 Kontext: `FluxTransformer2DModel` with guidance embedding, `AutoencoderKL` (2x spatial),
  tiny `CLIPTextModel` + `CLIPTokenizer` and `T5EncoderModel` + `T5Tokenizer` whose vocabularies
  are made in code (characters and a few words: any text encodes without unknown tokens).

`tiny_qwen_image_edit_dir(variant)` / `tiny_flux_kontext_dir()` build once per process into a
temporary folder removed at exit.
"""

from __future__ import annotations

import string
import tempfile
from functools import lru_cache
from pathlib import Path

from refine._compat import ensure_torchvision_importable
from refine.errors import ConfigError
from refine.testing.tiny_vlm import process_temp_dir, save_tiny_qwen2_5_vl

QWEN_VARIANTS = ("edit", "plus", "2511")
TEXT_HIDDEN = 64  # hidden size of the tiny Qwen2.5-VL (tiny_vlm's default) = the MM-DiT's joint dim


def save_tiny_qwen_image_edit(path: str | Path, *, variant: str = "edit", seed: int = 0) -> Path:
    """Build a tiny Qwen-Image-Edit pipeline of `variant` and `save_pretrained` it to `path`.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:                                   # doctest: +SKIP
    ...     print(save_tiny_qwen_image_edit(folder).joinpath("model_index.json").is_file())
    True
    """
    if variant not in QWEN_VARIANTS:
        raise ConfigError(f"unknown tiny Qwen-Image-Edit variant {variant!r}; choose one of {', '.join(QWEN_VARIANTS)}")
    ensure_torchvision_importable()
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2VLProcessor

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="refine-tiny-qwen-vl-") as vl_dir:
        save_tiny_qwen2_5_vl(vl_dir, seed=seed, hidden_size=TEXT_HIDDEN)
        text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_dir).eval()
        vl_processor = AutoProcessor.from_pretrained(vl_dir)
    # The real checkpoints ship a Qwen2VLProcessor (the pipelines' declared type): same pieces.
    processor = Qwen2VLProcessor(
        image_processor=vl_processor.image_processor,
        tokenizer=vl_processor.tokenizer,
        video_processor=vl_processor.video_processor,
    )
    z_dim = 4
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * z_dim,
        out_channels=z_dim,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_HIDDEN,
        axes_dims_rope=(8, 4, 4),
        zero_cond_t=variant == "2511",
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.8, 1.2, 2.0],
    )
    # Qwen-Image's scheduler settings (dynamic shift from the image sequence length).
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        use_dynamic_shifting=True,
        time_shift_type="exponential",
    )
    pipeline_class = QwenImageEditPipeline if variant == "edit" else QwenImageEditPlusPipeline
    pipeline = pipeline_class(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=processor.tokenizer,
        processor=processor,
        transformer=transformer,
    )
    pipeline.save_pretrained(path)
    return path


def save_tiny_flux_kontext(path: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny FLUX.1 Kontext pipeline and `save_pretrained` it to `path`.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:                                   # doctest: +SKIP
    ...     print(save_tiny_flux_kontext(folder).joinpath("tokenizer_2").is_dir())
    True
    """
    ensure_torchvision_importable()
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    path = Path(path)
    clip_tokenizer, t5_tokenizer = build_clip_tokenizer(), build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=32,
            max_position_embeddings=77,
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(seed)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id,
            decoder_start_token_id=t5_tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
        sample_size=32,
    )
    # FLUX.1's scheduler settings (dynamic shift from the image sequence length).
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=4096,
        max_shift=1.15,
        shift=3.0,
        use_dynamic_shifting=True,
    )
    pipeline = FluxKontextPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipeline.save_pretrained(path)
    return path


# Words frequent in editing instructions get their own token; everything else splits into
# characters, so no text is ever unknown.
_WORDS = "add remove replace make turn change the a an of to in on and red blue green yellow circle square background"


def build_clip_tokenizer():
    """A `CLIPTokenizer` over a vocabulary made in code: printable characters (byte-level) + words."""
    from transformers import CLIPTokenizer

    # CLIP's pre-tokenizer drops whitespace and maps bytes to characters (GPT-2's byte-level
    # alphabet), which leaves printable ASCII unchanged.
    alphabet = [c for c in string.printable if not c.isspace()]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet:
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS.split():
        # merge the word left to right; the last merge produces "word</w>"
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_t5_tokenizer():
    """A `T5Tokenizer` (Unigram) over characters and a few whole words, made in code."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -1.0) for word in _WORDS.split()]
    pieces += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


@lru_cache(maxsize=None)
def tiny_qwen_image_edit_dir(variant: str = "edit") -> Path:
    """A folder holding the tiny Qwen-Image-Edit pipeline of `variant`, built once per process."""
    return save_tiny_qwen_image_edit(process_temp_dir(f"refine-tiny-qwen-image-{variant}-"), variant=variant)


@lru_cache(maxsize=None)
def tiny_flux_kontext_dir() -> Path:
    """A folder holding the tiny FLUX.1 Kontext pipeline, built once per process."""
    return save_tiny_flux_kontext(process_temp_dir("refine-tiny-flux-kontext-"))
