"""Where an MLLM judge's model runs: locally with transformers, or behind an OpenAI-compatible server.

Example:
    >>> from refine.rewards.backends import build_backend
    >>> build_backend({"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "judge"}).name
    'openai:http://127.0.0.1:8000/v1'

Both implement `VLMBackend` (`refine.rewards.backends.base`): batched `generate` and
`next_token_probs` over chat conversations with PIL images.
"""

from refine.rewards.backends.base import Conversation, PartialBatchError, ProbResult, VLMBackend, build_backend
from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
from refine.rewards.backends.transformers_vlm import TransformersVLM

__all__ = [
    "Conversation",
    "OpenAICompatibleVLM",
    "PartialBatchError",
    "ProbResult",
    "TransformersVLM",
    "VLMBackend",
    "build_backend",
]
