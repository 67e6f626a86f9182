"""The VLM backend protocol every judge talks to, with its result record and partial-batch error.

Example:
    >>> from refine.rewards.backends.base import ProbResult, renormalize
    >>> renormalize({"Yes": 0.6, "No": 0.2})            # the candidates held 80% of the mass
    ProbResult(probs={'Yes': 0.75, 'No': 0.25}, mass=0.8)

A conversation is a list of chat messages in the transformers format, images as PIL objects:
``[{"role": "user", "content": [{"type": "image", "image": pil}, {"type": "text", "text": "..."}]}]``.
Backends translate it for their model (a local processor's chat template, or OpenAI-style
``image_url`` data URLs for an HTTP server).

Two calls, both batched (one result per conversation, in order):
* ``generate(conversations, max_new_tokens, temperature) -> list[str]``: the assistant's reply.
* ``generate_scored(conversations, max_new_tokens, temperature) -> list[ScoredText]`` (optional):
  the reply with each generated token's text and probability, for callers that gate on the
  model's confidence (`refine.thinker.vlm.VLMThinker(confidence=True)`).
* ``next_token_probs(conversations, candidates, prefill) -> list[ProbResult]``: the assistant turn
  is started with ``prefill`` (e.g. ``'"Score": [['``; one string for all, or one per conversation)
  and the distribution of the *next* token is
  read once, restricted to ``candidates`` (each must be one token, e.g. "0".."5") and renormalised;
  ``mass`` says how much probability the candidates held, so a judge can tell a confident score
  from a model that wanted to say something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from refine.errors import BackendError, ConfigError

Conversation = list[dict[str, Any]]


@dataclass
class ProbResult:
    """Next-token probabilities renormalised over the candidates, and the mass they held (0..1).

    `probs` is empty when the candidates held no mass at all (nothing to renormalise).
    """

    probs: dict[str, float]
    mass: float


@dataclass
class ScoredText:
    """A generated reply, token by token: `pieces` concatenate to `text`; `probs[i]` is the probability of piece i.

    >>> reply = ScoredText("make it blue", ["make", " it", " blue"], [0.99, 0.9, 0.4])
    >>> reply.min_prob(8, 12), reply.min_prob(0, 4), reply.min_prob()
    (0.4, 0.99, 0.4)
    """

    text: str
    pieces: list[str]
    probs: list[float]

    def min_prob(self, start: int = 0, end: int | None = None) -> float:
        """The smallest probability of the tokens that overlap characters [start, end) of `text` (1.0 if none do)."""
        end = len(self.text) if end is None else end
        lowest, offset = 1.0, 0
        for piece, prob in zip(self.pieces, self.probs):
            if offset < end and offset + len(piece) > start:
                lowest = min(lowest, prob)
            offset += len(piece)
        return lowest


def renormalize(raw: Mapping[str, float]) -> ProbResult:
    """Candidate -> raw probability, to a `ProbResult` (probabilities rounded to 12 digits)."""
    mass = float(sum(raw.values()))
    if mass <= 0.0:
        return ProbResult({}, 0.0)
    return ProbResult({k: round(float(v) / mass, 12) for k, v in raw.items()}, round(mass, 12))


@runtime_checkable
class VLMBackend(Protocol):
    """A vision-language model that can reply to and score batches of conversations."""

    name: str

    def generate(
        self, conversations: Sequence[Conversation], max_new_tokens: int = 128, temperature: float = 0.0
    ) -> list[str]: ...

    def next_token_probs(
        self, conversations: Sequence[Conversation], candidates: Sequence[str], prefill: str | Sequence[str] = ""
    ) -> list[ProbResult]: ...


def expand_prefill(prefill: str | Sequence[str], n: int) -> list[str]:
    """One prefill per conversation: a string is shared, a sequence must have one entry per item."""
    if isinstance(prefill, str):
        return [prefill] * n
    prefill = list(prefill)
    if len(prefill) != n:
        raise ConfigError(f"{len(prefill)} prefills for {n} conversations; give one string or one per conversation")
    return prefill


class PartialBatchError(BackendError):
    """The backend failed part-way through a batch; `results` holds what was finished (None elsewhere).

    Raised only for failures of the server or model (unreachable after retries, refused), never
    for content the model produced.
    """

    def __init__(self, message: str, results: list[Any]) -> None:
        super().__init__(message)
        self.results = results


def build_backend(spec: Any) -> VLMBackend:
    """A backend object as is, or one built from a `{"kind": "transformers" | "openai" | dotted path, ...}` spec.

    >>> build_backend({"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}).name
    'openai:http://127.0.0.1:8000/v1'
    """
    if isinstance(spec, str):
        spec = {"kind": spec}
    if isinstance(spec, Mapping):
        from refine.registry import registry

        return registry.build("vlm_backend", dict(spec))
    if not (hasattr(spec, "generate") and hasattr(spec, "next_token_probs")):
        raise ConfigError(
            f"backend {spec!r} is not a VLM backend (it needs generate() and next_token_probs()); "
            "pass an object or a spec like {'kind': 'transformers', 'model': 'path/to/model'}"
        )
    return spec
