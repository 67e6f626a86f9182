"""Reusable builders for offline tests: tiny models saved to temp dirs, loaded by the real code.

Example:
    >>> from refine.testing import build_qwen_tokenizer
    >>> build_qwen_tokenizer().convert_ids_to_tokens(build_qwen_tokenizer().encode("Yes"))
    ['Yes']

* `refine.testing.tiny_vlm`: `save_tiny_qwen2_5_vl`, `save_tiny_qwen3_vl`, `save_tiny_dinov2` and
  the per-process cached folders `tiny_vlm_dir(family)`, `tiny_dinov2_dir()`.
* `refine.testing.tokenizer`: a byte-level BPE with the Qwen special tokens, trained in code.
* `refine.testing.serve`: `transformers_serve`, a local OpenAI-compatible server for tests.

Importing this package is cheap: torch and transformers are imported when a builder runs.
"""

from refine.testing.tiny_vlm import (
    save_tiny_dinov2,
    save_tiny_qwen2_5_vl,
    save_tiny_qwen3_vl,
    tiny_dinov2_dir,
    tiny_vlm_dir,
)
from refine.testing.tokenizer import QWEN_SPECIAL_TOKENS, build_qwen_tokenizer, train_byte_level_bpe

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "build_qwen_tokenizer",
    "save_tiny_dinov2",
    "save_tiny_qwen2_5_vl",
    "save_tiny_qwen3_vl",
    "tiny_dinov2_dir",
    "tiny_vlm_dir",
    "train_byte_level_bpe",
]
