"""The ShapeEdit VLM's tokenizer: byte-level BPE trained in code on ShapeEdit's language and the judges' prompts.

Example:
    >>> from refine.shapes.vlm.tokenizer import build_shapes_tokenizer
    >>> tok = build_shapes_tokenizer()
    >>> all(len(tok.encode(s)) == 1 for s in [str(d) for d in range(10)] + ["10", "Yes", "No"])
    True
    >>> tok.convert_ids_to_tokens(tok.encode('"Score": [[10]]'))[-3:]
    ['Ġ[[', '10', ']]']

Every score a judge reads as one token must be one token: the digits 0-9 (Qwen's pre-tokenizer
splits digits one by one, as in the real Qwen2.5-VL) and "10", the top of EditThinker's 0-10
scale, which is added as a token of its own (so "100" reads "10", "0"; ShapeEdit says no such
numbers). The corpus is what the model will read and write: every judge prompt of
`refine.rewards.prompts` with every task requirement, the multi-turn prompt, EditThinker's tags,
ShapeEdit's instruction vocabulary, scene descriptions and the pretraining questions of
`refine.shapes.vlm.tasks`. BPE merges make its frequent words single tokens, so prompts are short.
"""

from __future__ import annotations

import itertools

from tokenizers import AddedToken
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

from refine.rewards.prompts import DEFAULT_REQUIREMENTS, JudgePrompts, MultiTurnPrompts
from refine.shapes.data import training_stream
from refine.shapes.instructions import VOCABULARY
from refine.shapes.vlm.tasks import QUESTIONS, describe_scene
from refine.testing.tokenizer import build_qwen_tokenizer

# EditThinker's output tags (refine.thinker.format.TAGS); written out here because the shapes
# package must not import a strategy.
THINKER_TAGS = ("<think>", "</think>", "<score>", "</score>", "<stop>", "</stop>", "<answer>", "</answer>")
# Scores that must be single tokens: digits come from the pre-tokenizer, "10" is added.
SCORE_TOKENS = tuple(str(d) for d in range(11))
VOCAB_SIZE = 1024


def shapes_corpus(cases: int = 400) -> list[str]:
    """Lines to train the tokenizer on: judge prompts, tags, vocabulary, and `cases` stream scenes.

    >>> len(shapes_corpus(cases=4)) > 50
    True
    """
    prompts, multi = JudgePrompts(), MultiTurnPrompts()
    lines = [prompts.system or ""]
    for kind, task in itertools.product(("yesno", "score", "score_cot"), DEFAULT_REQUIREMENTS):
        lines.append(prompts.user_text(kind, "{instruction}", task))
    lines += [multi.user_text(["a", "b", "c"], thinking=True), multi.user_text(["a", "b"], thinking=False)]
    lines += ['"Score": [[' + s + "]]" for s in SCORE_TOKENS] + ['"Judgement": [[Yes]]', '"Judgement": [[No]]']
    lines += [" ".join(THINKER_TAGS), "<score>[7, 10]</score>"] * 50 + [" ".join(VOCABULARY)]
    lines += list(QUESTIONS.values())
    for case in itertools.islice(training_stream(seed=10_000), cases):
        lines += [case.instruction, case.direct_instruction, describe_scene(case.source), describe_scene(case.target)]
    return lines


def build_shapes_tokenizer(vocab_size: int = VOCAB_SIZE, cases: int = 400) -> Qwen2Tokenizer:
    """A `Qwen2Tokenizer` (eos `<|im_end|>`, pad `<|endoftext|>`) trained on `shapes_corpus(cases)`; deterministic."""
    tokenizer = build_qwen_tokenizer(shapes_corpus(cases), vocab_size=vocab_size)  # Qwen's specials, as the tiny VLMs
    # Not special: decoded text keeps it, and the chat template may contain it.
    tokenizer.add_tokens([AddedToken("10", normalized=False, special=False)])
    return tokenizer
