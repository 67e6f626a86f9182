"""A tiny byte-level BPE tokenizer with the Qwen chat special tokens, trained in code (no hub).

Example:
    >>> from refine.testing.tokenizer import build_qwen_tokenizer
    >>> tok = build_qwen_tokenizer()
    >>> [tok.convert_ids_to_tokens(tok.encode(w)) for w in ("Yes", "No", "5")]
    [['Yes'], ['No'], ['5']]
    >>> tok.convert_ids_to_tokens(tok.encode("<|im_start|>user"))[0]
    '<|im_start|>'

The tokenizer is a real `Qwen2Tokenizer` (the class `AutoTokenizer` picks for Qwen2-VL, Qwen2.5-VL
and Qwen3-VL checkpoints), with Qwen's pre-tokenizer (digits split one by one, byte-level
alphabet), so every digit is one token as in the real models, and the training corpus repeats the
words judges answer with ("Yes", "No", "Score"...) so they become single tokens too. Special tokens
are added with the same spelling as Qwen's, which the processors and chat templates look up by name.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

# The Qwen2.5-VL / Qwen3-VL control tokens. Processors look up `<|image_pad|>`, `<|video_pad|>`,
# `<|vision_start|>` and `<|vision_end|>` by name; chat templates use `<|im_start|>`/`<|im_end|>`.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Words judges and editors use: frequent in the corpus so BPE merges them into single tokens.
_JUDGE_WORDS = (
    "Yes No yes no Score Judgement Reasoning rating Turn1Score Turn2Score Turn3Score Thought "
    "Here are two images: the original and the edited version. Please evaluate the edited image "
    "based on the following editing instructions and requirements. Instruction: Requirements: "
    "You need to rate the editing result from 0 to 5 based on the accuracy and quality of the edit. "
    "The correct object was edited, the requirements were met, and the visual result is high quality. "
    "add remove replace recolor move resize background the red blue green yellow circle square "
    "triangle shape image edit make turn change left right top bottom small large "
)


def default_corpus() -> list[str]:
    """A few hundred lines of judge/editing text plus rendered chat turns (enough for ~500 merges)."""
    lines = []
    for repeat in range(40):
        lines.append(_JUDGE_WORDS)
        lines.append('"Score": [[' + str(repeat % 6) + ']] "Judgement": [[Yes]] "Judgement": [[No]]')
        lines.append("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nYes or No?<|im_end|>\n")
    return lines


def train_byte_level_bpe(
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    special_tokens: Sequence[str] = QWEN_SPECIAL_TOKENS,
):
    """Train a byte-level BPE `tokenizers.Tokenizer` with Qwen's pre-tokenizer; deterministic.

    Special tokens take the first ids (0..len(special_tokens)-1); every byte is in the alphabet,
    so any text encodes without unknown tokens.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus if corpus is not None else default_corpus()), trainer)
    return tokenizer


def build_qwen_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 512):
    """A `transformers` `Qwen2Tokenizer` from a BPE trained in code (eos `<|im_end|>`, pad `<|endoftext|>`)."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    trained = train_byte_level_bpe(corpus, vocab_size=vocab_size)
    model = json.loads(trained.to_str())["model"]
    return Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(pair) for pair in model["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS),
    )
