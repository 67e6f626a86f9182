"""The tiny VLM / DINOv2 fixtures load through the real `from_pretrained` and run offline."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from refine._compat import ensure_torchvision_importable
from refine.errors import ConfigError
from refine.testing import (
    QWEN_SPECIAL_TOKENS,
    build_qwen_tokenizer,
    save_tiny_qwen2_5_vl,
    tiny_dinov2_dir,
    tiny_vlm_dir,
)

ensure_torchvision_importable()

SCORE_TOKENS = [str(d) for d in range(10)] + ["Yes", "No"]


def _messages(color: str = "red", text: str = "Rate the edit from 0 to 5.") -> list[dict]:
    image = Image.new("RGB", (32, 32), color)
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def test_tokenizer_has_single_token_scores_and_qwen_specials():
    tok = build_qwen_tokenizer()
    for word in SCORE_TOKENS:
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
    for special in QWEN_SPECIAL_TOKENS:
        assert tok.convert_ids_to_tokens(tok.encode(special, add_special_tokens=False)) == [special]
    text = 'Any text, even "Score": [[3]] or ünïcode, round-trips.'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_tiny_vlm_round_trips_and_scores_digits(family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_vlm_dir(family)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    assert model.config.model_type == family

    text = processor.apply_chat_template(_messages(), add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>Rate the edit" in text
    assert text.endswith("<|im_start|>assistant\n")

    processor.tokenizer.padding_side = "left"
    batch = [_messages("red"), _messages("blue", "A longer instruction with more tokens in it.")]
    inputs = processor.apply_chat_template(
        batch, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    # A 32x32 image is 4x4 patches of 8 px, merged 2x2: 4 image tokens.
    assert (inputs["input_ids"] == model.config.image_token_id).sum(dim=1).tolist() == [4, 4]
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]  # (B, V)
    digits = processor.tokenizer.convert_tokens_to_ids([str(d) for d in range(10)])
    probs = logits[:, digits].softmax(-1)
    assert torch.isfinite(logits).all() and logits.shape[-1] == len(processor.tokenizer)
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert not torch.allclose(probs[0], probs[1])  # the image and text reach the logits


def test_weights_are_seeded(tmp_path):
    from safetensors.torch import load_file

    a = load_file(save_tiny_qwen2_5_vl(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(save_tiny_qwen2_5_vl(tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(save_tiny_qwen2_5_vl(tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_tiny_vlm_dir_is_cached_and_checks_family():
    assert tiny_vlm_dir("qwen2_5_vl") == tiny_vlm_dir("qwen2_5_vl")
    with pytest.raises(ConfigError, match="qwen2_5_vl"):
        tiny_vlm_dir("llava")


def test_tiny_dinov2_round_trips():
    from transformers import AutoImageProcessor, AutoModel

    path = tiny_dinov2_dir()
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    pixels = processor(images=[Image.new("RGB", (48, 32), "red"), Image.new("RGB", (32, 32), "blue")], return_tensors="pt")
    assert tuple(pixels["pixel_values"].shape) == (2, 3, 32, 32)
    with torch.no_grad():
        hidden = model(**pixels).last_hidden_state  # (B, 1 + 16, C): CLS + 4x4 patches
    assert tuple(hidden.shape) == (2, 17, 32)
