"""A tiny, random-weight Grounding DINO (transformers) with its processor, built offline for tests.

Example:
    >>> from PIL import Image
    >>> from refine.testing.tiny_detector import tiny_grounding_dino_dir
    >>> path = tiny_grounding_dino_dir()                               # built once per process
    >>> from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor
    >>> processor = GroundingDinoProcessor.from_pretrained(path)
    >>> model = GroundingDinoForObjectDetection.from_pretrained(path)
    >>> inputs = processor(images=Image.new("RGB", (64, 64)), text="bench .", return_tensors="pt")
    >>> model(**inputs).pred_boxes.shape                               # (batch, queries, cx cy w h)
    torch.Size([1, 10, 4])

The checkpoint is complete: config (a 4-stage Swin backbone of width 8, a 1-layer BERT text
encoder of width 32, 1 encoder and 2 decoder layers, 10 queries), seeded safetensors weights, and
a `GroundingDinoProcessor` whose tokenizer is a real `BertTokenizer` over a WordPiece vocabulary
written in code (special tokens, ".", a few object words, and every letter and digit with its
"##" continuation, so any lower-case name encodes without unknown tokens). The image processor
resizes to 64x64. Random weights detect arbitrary boxes: tests check the pipeline and the rules,
not detection quality.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

from refine._compat import ensure_torchvision_importable
from refine.testing.tiny_vlm import process_temp_dir

WORDS = ("bench", "bear", "square", "circle", "tree", "leaf", "pattern", "park", "forest", "the", "of", "a")


def tiny_bert_vocab() -> list[str]:
    """The WordPiece vocabulary of the tiny detector's tokenizer (ids in list order)."""
    letters = list(string.ascii_lowercase + string.digits)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'", *WORDS, *letters, *("##" + c for c in letters)]


def save_tiny_grounding_dino(path: str | Path, *, seed: int = 0, image_size: int = 64) -> Path:
    """Build a random-weight `GroundingDinoForObjectDetection` and its processor; save both to `path`."""
    ensure_torchvision_importable()
    import torch
    from transformers import (
        BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
        GroundingDinoProcessor, SwinConfig,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = tiny_bert_vocab()
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64,
        ),
        d_model=32,  # a multiple of 32: the model's GroupNorms use 32 groups
        encoder_layers=1,
        decoder_layers=2,  # the box heads of decoder layers > 0 are tied to layer 0's: needs two
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_feature_levels=3,  # no extra stride-2 level: at 64 pixels it would be 1x1, which GroupNorm refuses for one image
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(path)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


@lru_cache(maxsize=None)
def tiny_grounding_dino_dir() -> Path:
    """A folder holding the tiny Grounding DINO and its processor, built once per process."""
    return save_tiny_grounding_dino(process_temp_dir("refine-tiny-grounding-dino-"))
