"""Build the ShapeEdit VLM: a Qwen2.5-VL-architecture model and processor sized for 32x32 scenes.

Example:
    >>> import tempfile
    >>> from transformers import AutoModelForImageTextToText, AutoProcessor
    >>> from refine.shapes.vlm.model import VLMSize, build_shapes_vlm
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = build_shapes_vlm(folder, VLMSize.tiny())
    ...     model = AutoModelForImageTextToText.from_pretrained(folder)      # plain transformers
    ...     processor = AutoProcessor.from_pretrained(folder)
    >>> type(model).__name__, processor.image_processor.patch_size
    ('Qwen2_5_VLForConditionalGeneration', 4)

Vision geometry (the choice the issue asks for): a ShapeEdit scene is 32x32 pixels on a 3x3 grid
of 10-pixel cells. The Qwen processor's defaults (14-pixel patches, min_pixels 56x56) would turn it
into 4 tokens after upscaling. Here patches are 4 pixels and `min_pixels = max_pixels = 32 x 32`:
the image is not resampled (no interpolation smears the 1-pixel gaps between shapes), the vision
tower sees 8 x 8 patches, and the 2 x 2 merger hands the language model 4 x 4 = 16 tokens per image,
more than one per grid cell. A larger image is resized to 32 x 32 first (`max_pixels`), so a 64x64
ShapeEdit render also gives 16 tokens.

Cell-aligned tokens (`VLMSize(image_side=48, patch_size=8)`): the processor upsamples a scene to
48 x 48, the tower sees 6 x 6 patches of 8 pixels, and the merger hands over 3 x 3 = 9 tokens of
16 pixels, one per grid cell (a cell's 10 pixels map to 15, so a token's edges fall within 1.5
pixels of the cell's). Then "what is in the top-right cell" is the content of one token, read at
one position, instead of a mix of two to four tokens that straddle cells (the 16-token geometry).

Everything is saved in the standard layout (config.json, model.safetensors, generation_config.json,
tokenizer and processor files with a chat template), so `AutoModelForImageTextToText` /
`AutoProcessor`, `transformers serve` and vLLM load it without this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before transformers' vision classes import torchvision (see refine._compat)

from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor  # noqa: E402
from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor  # noqa: E402

from refine.errors import ConfigError
from refine.shapes.vlm.tokenizer import build_shapes_tokenizer
from refine.testing.tiny_vlm import QWEN2_5_VL_CHAT_TEMPLATE

PATCH_SIZE = 4
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2  # Qwen2.5-VL's images are two identical frames
TOKENS_PER_SCENE = (32 // PATCH_SIZE // MERGE_SIZE) ** 2  # 16


@dataclass(frozen=True)
class VLMSize:
    """Widths and depths of the language model and the vision tower."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_hidden_size: int = 128
    vision_depth: int = 4
    vision_heads: int = 4
    vocab_size: int = 1024
    # Rotary frequencies of the language model cycled over (time, height, width) one by one, instead
    # of Qwen2.5-VL's three blocks (time, then height, then width); see `_mrope`.
    interleaved_mrope: bool = False
    # Side the processor resizes every image to, and the tower's patch size: (32, 4) keeps a scene's
    # pixels (16 tokens); (48, 8) gives one token per grid cell (see the module docstring).
    image_side: int = 32
    patch_size: int = PATCH_SIZE

    @property
    def tokens_per_image(self) -> int:
        """Visual tokens the language model gets per image (after the 2 x 2 merger)."""
        return (self.image_side // self.patch_size // MERGE_SIZE) ** 2

    @classmethod
    def tiny(cls) -> "VLMSize":
        """Test size: builds and trains a step in well under a second."""
        return cls(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, vision_hidden_size=32, vision_depth=2,
                   vision_heads=2, vocab_size=600)


def _mrope(head_dim: int, interleaved: bool = False) -> list[int]:
    """Split head_dim / 2 rotary frequencies into (time, height, width) sections.

    Blocks (Qwen2.5-VL's layout): time gets the fastest half, height the next quarter, width the
    slowest. At this model's head size (64, theta 1e4) the height frequencies are 0.01-0.0013 and
    the width ones 0.001-0.00013 radians per position, so tokens 1-3 rows or columns apart rotate
    by at most 0.03 radians: the language model cannot tell one visual token's cell from another's
    and sees the 16 as an unordered set (the background is learnt, the cells are not).
    Interleaved: sections of one frequency each, which transformers' Qwen2.5-VL rotary embedding
    assigns to time, height, width, time, ... in turn (`split(mrope_section)`, chunk i -> axis i % 3),
    so each axis gets fast and slow frequencies; text, whose three position ids are equal, is
    rotated exactly as before.

    >>> _mrope(64), len(_mrope(64, interleaved=True)), sum(_mrope(64, interleaved=True))
    ([16, 8, 8], 32, 32)
    """
    half = head_dim // 2
    if interleaved:
        return [1] * half
    spatial = half // 4
    return [half - 2 * spatial, spatial, spatial]


def torch_default_init(language_model: torch.nn.Module, lm_head: torch.nn.Linear) -> None:
    """Re-initialise a language model the way PyTorch's layers do by default, in place: every `nn.Linear`
    kaiming-uniform (std 1 / sqrt(3 fan_in)), biases included, every `nn.Embedding` N(0, 1), and `lm_head`
    like a linear layer (so the head must not be tied to the embedding: a N(0, 1) head gives logits of
    std ~sqrt(hidden)).

    Why (stop 48, `benchmarks/RESULTS.md`, "The lookup's plateau is the initialisation"): with transformers'
    own initialisation (every weight N(0, 0.02), tied embeddings) this language model stays at chance on
    associative recall ("k1 v1; k2 v2; ... k2 ->" v2) for thousands of steps, at any learning rate tried,
    and so does GPT-2's; the same architecture with PyTorch's defaults learns it in 500 steps. Only the two
    together do it: large token embeddings keep each token's identity in the residual stream through the
    layers, and kaiming-sized projections let attention form sharp patterns early.

    >>> from transformers import Qwen2Config, Qwen2ForCausalLM
    >>> model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
    ...                                      num_hidden_layers=1, intermediate_size=64, tie_word_embeddings=False))
    >>> torch_default_init(model.model, model.lm_head)
    >>> round(model.model.embed_tokens.weight.std().item(), 1), model.lm_head.weight.abs().max().item() <= 32 ** -0.5
    (1.0, True)
    """
    if lm_head.weight is language_model.get_input_embeddings().weight:
        raise ConfigError("torch_default_init needs an untied lm_head (tie_word_embeddings=False)")
    for module in [*language_model.modules(), lm_head]:
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.reset_parameters()


def reinit_language_model(model: Qwen2_5_VLForConditionalGeneration, seed: int = 0) -> None:
    """Untie a VLM's head and re-initialise its language model with `torch_default_init`, in place; the vision
    tower and merger keep their weights. The config says the head is untied, so `save_pretrained` and
    `from_pretrained` keep it that way.

    Why (stop 49, `benchmarks/RESULTS.md`, "The lookup from the image"): a language model with PyTorch's
    initialisation on a tower that already sees the cells, without rebuilding and retraining the tower.

    >>> import tempfile
    >>> from transformers import AutoModelForImageTextToText
    >>> model = AutoModelForImageTextToText.from_pretrained(build_shapes_vlm(tempfile.mkdtemp(), VLMSize.tiny()))
    >>> reinit_language_model(model)
    >>> model.lm_head.weight is model.model.language_model.embed_tokens.weight, model.config.tie_word_embeddings
    (False, False)
    """
    torch.manual_seed(seed)
    model.config.tie_word_embeddings = model.config.text_config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    torch_default_init(model.model.language_model, model.lm_head)


def build_shapes_vlm(path: str | Path, size: VLMSize = VLMSize(), seed: int = 0) -> Path:
    """Build a random-weight ShapeEdit VLM of `size` and its processor (tokenizer trained now); save to `path`."""
    path = Path(path)
    tokenizer = build_shapes_tokenizer(vocab_size=size.vocab_size)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    if size.image_side % (size.patch_size * MERGE_SIZE):
        raise ConfigError(f"image_side {size.image_side} is not a multiple of patch_size x {MERGE_SIZE} = "
                          f"{size.patch_size * MERGE_SIZE}: the processor would round it to another size")
    pixels = {"min_pixels": size.image_side**2, "max_pixels": size.image_side**2}
    geometry = {"patch_size": size.patch_size, "merge_size": MERGE_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**geometry, **pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**geometry, **pixels),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,  # Qwen's format, default system prompt included
    )
    head_dim = size.hidden_size // size.num_heads
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=size.hidden_size,
            intermediate_size=4 * size.hidden_size,
            num_hidden_layers=size.num_layers,
            num_attention_heads=size.num_heads,
            num_key_value_heads=size.num_kv_heads,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0, "mrope_section": _mrope(head_dim, size.interleaved_mrope)},
        ),
        vision_config=dict(
            depth=size.vision_depth,
            hidden_size=size.vision_hidden_size,
            intermediate_size=4 * size.vision_hidden_size,
            num_heads=size.vision_heads,
            patch_size=size.patch_size,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=TEMPORAL_PATCH_SIZE,
            out_hidden_size=size.hidden_size,
            # Window attention over the whole patch grid (the window is in pixels): every block sees the full scene.
            window_size=size.image_side,
            fullatt_block_indexes=[size.vision_depth - 1],
        ),
        tie_word_embeddings=True,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # Stop on either end marker, as the real instruct checkpoints do; greedy unless asked otherwise.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"], do_sample=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
