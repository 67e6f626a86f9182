"""The Thinker protocol: critique an edit and refine its instruction, for a batch of requests.

Example:
    >>> from PIL import Image
    >>> from refine.thinker.protocol import ThinkRequest, Thought, thought_from_text
    >>> class Shouter:                                  # the smallest Thinker
    ...     name = "shouter"
    ...     def think(self, requests):
    ...         return [Thought(instruction=r.instruction.upper(), scores={"semantic": 2.0}) for r in requests]
    >>> source = Image.new("RGB", (8, 8))
    >>> request = ThinkRequest(source, edited=source, instruction="add a cat", previous_instruction="add a cat", turn=1)
    >>> Shouter().think([request])[0].instruction
    'ADD A CAT'
    >>> thought_from_text("<think>no cat</think><score>[2, 9]</score><answer>add a black cat</answer>").scores
    {'semantic': 2.0, 'quality': 9.0}

At turn t the thinker sees the tuple of the paper's Eq. (1): the source image I_src, the current
edit I_edit^t, the original instruction T_s and the instruction T_t that produced the edit; it
returns scores S (about the current edit), reasoning R and the refined instruction T_{t+1}.
`edited is None` asks for a rewrite before any edit ("think before edit", the paper's ablation).

A thinker never raises because a model said something unusable: it returns a `Thought` whose
`error` says why (the loop then stops that request with reason "thinker_failed"). Unreachable
backends and bad configs still raise `BackendError` / `ConfigError`: those need the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from PIL import Image

from refine.thinker.format import ParseResult, parse_thinker_output


@dataclass
class ThinkRequest:
    """The thinker's input for one request at one turn (paper Eq. 1).

    `meta` is the request's `EditRequest.meta` (programmatic thinkers read ground truth there,
    e.g. `meta["shapes_case"]`); `turn` is the index of the edit being critiqued (0: none yet);
    `edits_from` says which image the refined instruction will be applied to: the source (the
    paper's loop) or the current edit (`LoopConfig.edit_from="current"`).
    """

    source: Image.Image
    edited: Image.Image | None
    instruction: str
    previous_instruction: str
    turn: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    edits_from: Literal["source", "current"] = "source"


@dataclass
class Thought:
    """A thinker's answer for one request.

    Attributes:
        instruction: the refined instruction T_{t+1}; None when the thinker failed or only stops.
        reasoning: the critique R (free text).
        scores: "semantic" and/or "quality" on 0-10 about the critiqued edit ({} if none given).
        stop: the expert's stop flag; None when this thinker does not decide (scores do).
        error: why the thinker failed (unparseable output...); None when it succeeded.
        raw: the raw text the model produced (kept for traces and debugging).
        repairs: what the tolerant parser had to fix in `raw`.
        seconds: wall time spent on this request (a batch's time is shared evenly).
        confidence: how sure the thinker is of `instruction`: the smallest probability its model gave a
            token of the refined instruction (`VLMThinker(confidence=True)`); None when not measured.
    """

    instruction: str | None = None
    reasoning: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    stop: bool | None = None
    error: str | None = None
    raw: str | None = None
    repairs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    confidence: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Thinker(Protocol):
    """Critiques edits and refines instructions, one `Thought` per `ThinkRequest`, in order."""

    name: str

    def think(self, requests: Sequence[ThinkRequest]) -> list[Thought]: ...


def thought_from_parse(parsed: ParseResult, raw: str | None = None) -> Thought:
    """A `Thought` from a `ParseResult` (errors carried over, never raised)."""
    out = parsed.output
    return Thought(
        instruction=out.answer if parsed.ok else None,
        reasoning=out.reasoning,
        scores=out.scores,
        stop=out.stop,
        error=parsed.error,
        raw=raw,
        repairs=list(parsed.repairs),
    )


def thought_from_text(text: str) -> Thought:
    """Parse a model's raw text (EditThinker format) into a `Thought`."""
    return thought_from_parse(parse_thinker_output(text), raw=text)
