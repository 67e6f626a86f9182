"""Tiny, random-weight vision-language models (and a tiny DINOv2) built offline for tests.

Example:
    >>> from PIL import Image
    >>> from refine.testing.tiny_vlm import tiny_vlm_dir
    >>> path = tiny_vlm_dir("qwen2_5_vl")                      # built once per process
    >>> from transformers import AutoModelForImageTextToText, AutoProcessor
    >>> processor = AutoProcessor.from_pretrained(path)
    >>> model = AutoModelForImageTextToText.from_pretrained(path)
    >>> messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (32, 32))},
    ...                                          {"type": "text", "text": "Score it 0-5."}]}]
    >>> inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
    ...                                        return_dict=True, return_tensors="pt")
    >>> model(**inputs).logits.shape[-1] == len(processor.tokenizer)
    True

What is saved is a complete checkpoint folder, loaded back by the real `from_pretrained` code:
config + safetensors weights (seeded, so two builds are identical), a generation config, and a
processor: a byte-level BPE `Qwen2Tokenizer` trained in code (`refine.testing.tokenizer`) with the
Qwen special tokens, the Qwen2-VL image processor and the family's video processor, and a
Qwen-style chat template. Sizes are chosen for speed: text hidden 64 (2 layers), vision hidden 32
(2 blocks), 8-pixel patches merged 2x2, so a 32x32 image becomes 4 text-side tokens and a forward
pass over 32 prompts with one image each takes about 0.1 s on one idle CPU core.

`tiny_vlm_dir(family)` and `tiny_dinov2_dir()` build once per process into a temporary folder that
is removed at exit; `save_tiny_*` write into a folder you choose.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from refine._compat import ensure_torchvision_importable
from refine.errors import ConfigError
from refine.testing.tokenizer import build_qwen_tokenizer

FAMILIES = ("qwen2_5_vl", "qwen3_vl")

# Vision patch geometry shared by the image processor and the vision tower: 8-pixel patches,
# merged 2x2 into one text token, two frames per temporal patch (images are repeated to 2).
PATCH_SIZE = 8
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
# Pixel budget per image: a 32x32 image keeps its size (4 tokens), larger ones shrink to <= 64x64.
MIN_PIXELS = 16 * 16
MAX_PIXELS = 64 * 64


def _chat_template(default_system: str | None) -> str:
    """A Qwen-format chat template: `<|im_start|>role\\n...<|im_end|>\\n`, images as vision pads.

    Written for these tiny models (the real checkpoints ship their own template); everything is
    emitted through expressions so whitespace is exact. Content is a string or a list of parts
    {"type": "text"|"image"|"video"}.
    """
    system = (
        "{%- if messages[0]['role'] != 'system' -%}"
        "{{- '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' -}}"
        "{%- endif -%}"
        if default_system
        else ""
    )
    return (
        system
        + "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}"
        "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
        "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
        "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


QWEN2_5_VL_CHAT_TEMPLATE = _chat_template("You are a helpful assistant.")
QWEN3_VL_CHAT_TEMPLATE = _chat_template(None)  # Qwen3-VL adds no default system prompt


def save_tiny_qwen2_5_vl(path: str | Path, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                         vision_depth: int = 2, initializer_range: float = 0.02) -> Path:
    """Build a random-weight Qwen2.5-VL and its processor, save both to `path`, return `path`.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     print(save_tiny_qwen2_5_vl(folder).joinpath("config.json").is_file())
    True
    """
    ensure_torchvision_importable()
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    head_dim = hidden_size // 4
    return _save_tiny_qwen_vl(
        path,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        family="qwen2_5_vl",
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
        seed=seed,
        hidden_size=hidden_size,
        num_layers=num_layers,
        vision_depth=vision_depth,
        initializer_range=initializer_range,
        # M-RoPE splits head_dim / 2 rotary frequencies over (time, height, width).
        text=dict(rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": _mrope(head_dim)}),
        vision=dict(window_size=PATCH_SIZE * MERGE_SIZE * 2, fullatt_block_indexes=[vision_depth - 1]),
    )


def save_tiny_qwen3_vl(path: str | Path, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                       vision_depth: int = 2, initializer_range: float = 0.02) -> Path:
    """Build a random-weight Qwen3-VL (with one DeepStack layer) and its processor; save to `path`.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     print(save_tiny_qwen3_vl(folder).joinpath("model.safetensors").is_file())
    True
    """
    ensure_torchvision_importable()
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    head_dim = hidden_size // 4
    return _save_tiny_qwen_vl(
        path,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        family="qwen3_vl",
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
        seed=seed,
        hidden_size=hidden_size,
        num_layers=num_layers,
        vision_depth=vision_depth,
        initializer_range=initializer_range,
        text=dict(
            head_dim=head_dim,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": _mrope(head_dim),
                "mrope_interleaved": True,
            },
        ),
        vision=dict(
            # Learned position embeddings on an 8x8 grid, interpolated to each image's grid.
            num_position_embeddings=64,
            deepstack_visual_indexes=[vision_depth - 1],
        ),
    )


def save_tiny_dinov2(path: str | Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """Build a random-weight `Dinov2Model` (8-pixel patches) and its image processor; save to `path`.

    The processor resizes the shortest edge to `image_size` and center-crops a square, as DINOv2's
    does at 224, so a 32x32 image gives a CLS token plus 4x4 patch tokens.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     print(save_tiny_dinov2(folder).joinpath("preprocessor_config.json").is_file())
    True
    """
    ensure_torchvision_importable()
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=image_size,
        patch_size=PATCH_SIZE,
    )
    torch.manual_seed(seed)
    Dinov2Model(config).eval().save_pretrained(path)
    # DINOv2 checkpoints use the BiT image processor (resize shortest edge, center crop, normalise).
    BitImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],  # ImageNet statistics, as DINOv2's processor
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)
    return path


@lru_cache(maxsize=None)
def tiny_vlm_dir(family: str = "qwen2_5_vl") -> Path:
    """A folder holding the tiny VLM of `family` ("qwen2_5_vl" or "qwen3_vl"), built once per process."""
    builders = {"qwen2_5_vl": save_tiny_qwen2_5_vl, "qwen3_vl": save_tiny_qwen3_vl}
    if family not in builders:
        raise ConfigError(f"unknown tiny VLM family {family!r}; choose one of {', '.join(FAMILIES)}")
    return builders[family](process_temp_dir(f"refine-tiny-{family}-"))


@lru_cache(maxsize=None)
def tiny_dinov2_dir() -> Path:
    """A folder holding the tiny DINOv2 model and processor, built once per process."""
    return save_tiny_dinov2(process_temp_dir("refine-tiny-dinov2-"))


def process_temp_dir(prefix: str) -> Path:
    """A new temporary folder, removed when the process exits: where the `tiny_*_dir` builds go.

    >>> process_temp_dir("refine-doc-").is_dir()
    True
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _save_tiny_qwen_vl(
    path: str | Path,
    config_class,
    model_class,
    processor_class,
    *,
    family: str,
    chat_template: str,
    seed: int,
    hidden_size: int,
    num_layers: int,
    vision_depth: int,
    initializer_range: float,
    text: dict,
    vision: dict,
) -> Path:
    """What the Qwen-VL families share: tokenizer, processor, the common config sizes, seeded weights.

    `text` / `vision` add each family's own config entries (RoPE, window or DeepStack layers).
    """
    import torch

    tokenizer = build_qwen_tokenizer()
    ids = _special_ids(tokenizer)
    processor = processor_class(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        video_processor=_video_processor(family),
        chat_template=chat_template,
    )
    config = config_class(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            initializer_range=initializer_range,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            **text,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=PATCH_SIZE,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=TEMPORAL_PATCH_SIZE,
            out_hidden_size=hidden_size,
            initializer_range=initializer_range,
            **vision,
        ),
        **_vision_token_ids(ids),
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    return _save(model, processor, ids, path)


def _special_ids(tokenizer) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}


def _vision_token_ids(ids: dict[str, int]) -> dict[str, int]:
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _mrope(head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies into (time, height, width) sections, time largest."""
    half = head_dim // 2
    spatial = half // 4
    return [half - 2 * spatial, spatial, spatial]


def _image_processor():
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
    )


def _video_processor(family: str):
    pixels = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS * 4}
    if family == "qwen3_vl":
        from transformers import Qwen3VLVideoProcessor

        return Qwen3VLVideoProcessor(
            patch_size=PATCH_SIZE,
            merge_size=MERGE_SIZE,
            temporal_patch_size=TEMPORAL_PATCH_SIZE,
            size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS * 4},
        )
    from transformers import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor(
        patch_size=PATCH_SIZE, merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE, **pixels
    )


def _save(model, processor, ids: dict[str, int], path: str | Path) -> Path:
    from transformers import GenerationConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Stop on either end marker, as the real instruct checkpoints do; greedy unless asked otherwise.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
