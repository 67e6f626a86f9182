"""VLMThinker: EditThinker (or an expert such as GPT-4.1) behind any VLM backend of the rewards layer.

Example:
    >>> from PIL import Image
    >>> from refine.thinker.protocol import ThinkRequest
    >>> from refine.thinker.vlm import VLMThinker
    >>> class Canned:                                   # any object with the backend's generate()
    ...     name = "canned"
    ...     def generate(self, conversations, max_new_tokens=128, temperature=0.0):
    ...         return ["<think>still red</think><score>[2, 8]</score><answer>make the circle blue</answer>"] * len(conversations)
    ...     def next_token_probs(self, conversations, candidates, prefill=""):
    ...         raise NotImplementedError
    >>> thinker = VLMThinker(Canned())
    >>> image = Image.new("RGB", (32, 32))
    >>> [thought] = thinker.think([ThinkRequest(image, image, "paint it like the sky", "paint it like the sky")])
    >>> thought.instruction, thought.scores
    ('make the circle blue', {'semantic': 2.0, 'quality': 8.0})

Backends (`refine.rewards.backends`): `TransformersVLM` for a local checkpoint (the trained
EditThinker-8B, or the tiny random fixture in tests) and `OpenAICompatibleVLM` for a served
model (vLLM serving EditThinker-8B, `transformers serve`, or a hosted expert such as GPT-4.1).
`VLMThinker.from_spec` picks one from a string: an http(s) URL (optionally `URL#model-name`) is
an endpoint, anything else a checkpoint folder.

One conversation per request, all sent in one batched `generate` call: a system message, then
the user turn [source image, edited image, prompt text] (the rewrite prompt before any edit has
the source image only). Whatever comes back goes through the tolerant parser; an unusable reply
becomes a `Thought` with `error` set, never an exception. A backend that cannot be reached raises
`BackendError` (that needs the user, not a retry of the thinker).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any, Sequence

from PIL import Image, ImageOps

from refine.errors import ConfigError
from refine.rewards.backends.base import ScoredText
from refine.thinker.format import MAX_ANSWER_CHARS
from refine.thinker.prompts import PromptSet, get_prompts, render
from refine.thinker.protocol import ThinkRequest, Thought, thought_from_text


class VLMThinker:
    """A `Thinker` that prompts a VLM backend and parses its EditThinker-format replies.

    Args:
        backend: any object with the rewards layer's `generate(conversations, max_new_tokens, temperature)`.
        prompts: a `PromptSet` or the name of a built-in one ("thinker": scores, "expert": stop flag).
        max_new_tokens: generation budget per reply (reasoning included).
        temperature: 0 for greedy decoding.
        name: shown in traces (default: "vlm:" + the backend's name).
        image_size: (width, height) every image is pad-resized to before it is sent (`fit_image`),
            as `refine train thinker --stage grpo` does with its `image_size`: a thinker trained on
            padded images is served them the same way. None sends the images as they are.
        confidence: also measure how sure the model is of each refined instruction (`Thought.confidence`,
            `answer_confidence`); needs a backend with `generate_scored` (`TransformersVLM`, or
            `OpenAICompatibleVLM` on a server that returns logprobs, e.g. vLLM). The loop's
            `min_confidence` gate reads it.
        confidence_over: which tokens the confidence is the smallest probability of: "answer" (the
            refined instruction alone, `answer_confidence`) or "reply" (every generated token,
            reasoning included). A thinker that looks objects up in its `<think>` before it writes the
            answer (`shapes-rewrite-find`) makes its mistakes there, and then copies them into the
            answer with confidence; "reply" sees them (`reply_confidence`). Measured on shapes-val
            (issue 24, stop 51): it tells right from wrong rewrites (AUC 0.86), but no gate on it beat
            no gate, because the unsure cases are the hard ones, where a right rewrite gains most.
    """

    def __init__(
        self,
        backend: Any,
        prompts: PromptSet | str = "thinker",
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        name: str | None = None,
        image_size: tuple[int, int] | None = None,
        confidence: bool = False,
        confidence_over: str = "answer",
    ) -> None:
        if not hasattr(backend, "generate"):
            raise ConfigError(f"VLMThinker needs a VLM backend with generate(conversations, ...), got {type(backend).__name__}")
        if confidence and not hasattr(backend, "generate_scored"):
            raise ConfigError(
                f"VLMThinker(confidence=True) needs token probabilities, which {type(backend).__name__} does not give "
                "(no generate_scored); use TransformersVLM or OpenAICompatibleVLM"
            )
        if confidence_over not in CONFIDENCE_SPANS:
            raise ConfigError(f"confidence_over={confidence_over!r}: use one of {', '.join(CONFIDENCE_SPANS)}")
        self.confidence = confidence
        self.confidence_over = confidence_over
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ConfigError(f"image_size={image_size}: give a positive (width, height), e.g. (448, 448)")
        self.image_size = tuple(image_size) if image_size is not None else None
        self.backend = backend
        self.prompts = get_prompts(prompts) if isinstance(prompts, str) else prompts
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.name = name or f"vlm:{getattr(backend, 'name', type(backend).__name__)}"

    @classmethod
    def from_spec(cls, spec: str, *, api_key_env: str | None = "OPENAI_API_KEY", backend_kwargs: dict[str, Any] | None = None,
                  **kwargs: Any) -> "VLMThinker":
        """A thinker on the backend `spec` names: `http(s)://host/v1[#model]` or a checkpoint folder.

        For an endpoint, the API key (if any) is read from the environment variable `api_key_env`.

        Example:
            >>> VLMThinker.from_spec("http://127.0.0.1:8000/v1#EditThinker-8B").backend.model
            'EditThinker-8B'
        """
        spec = spec.strip()
        if not spec:
            raise ConfigError("empty VLM spec; give a checkpoint folder or an http(s)://host/v1[#model] URL")
        options = dict(backend_kwargs or {})
        if spec.startswith(("http://", "https://")):
            from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM

            url, _, model = spec.partition("#")
            api_key = os.environ.get(api_key_env) if api_key_env else None
            backend = OpenAICompatibleVLM(url, model=model or None, api_key=api_key, **options)
        else:
            from refine.rewards.backends.transformers_vlm import TransformersVLM

            backend = TransformersVLM(spec, **options)
        return cls(backend, **kwargs)

    def conversation(self, request: ThinkRequest) -> list[dict[str, Any]]:
        """The chat sent for one request (transformers format, PIL images in content parts)."""
        if self.image_size is not None:
            edited = None if request.edited is None else fit_image(request.edited, self.image_size)
            request = replace(request, source=fit_image(request.source, self.image_size), edited=edited)
        return thinker_conversation(self.prompts, request)

    def think(self, requests: Sequence[ThinkRequest]) -> list[Thought]:
        if not requests:
            return []
        conversations = [self.conversation(r) for r in requests]
        if not self.confidence:
            replies = self.backend.generate(conversations, self.max_new_tokens, self.temperature)
            return [self._read(reply, r) for reply, r in zip(replies, requests)]
        scored = self.backend.generate_scored(conversations, self.max_new_tokens, self.temperature)
        measure = CONFIDENCE_SPANS[self.confidence_over]
        return [replace(self._read(reply.text, r), confidence=measure(reply)) for reply, r in zip(scored, requests)]

    def _read(self, text: str, request: ThinkRequest) -> Thought:
        if self.prompts.output_style == "answer":  # "keep" keeps the instruction the rewrite prompt showed
            return thought_from_answer(text, request.instruction)
        return thought_from_text(text)


# A rewrite-only reply that means "edit with the instruction as it is". One token, so a model can learn
# when to keep as a single decision; copying an indirect instruction word for word is a skill a rewrite
# model lacks (best-of SFT rows that kept by copying cost the rewrite 9-12 points of exactness and were
# almost never chosen: benchmarks/RESULTS.md, stop 42).
KEEP_REPLY = "keep"


def thought_from_answer(text: str, instruction: str | None = None) -> Thought:
    """A rewrite-only model's reply (`output_style="answer"`): the whole reply is the refined instruction.

    The reply `KEEP_REPLY` alone keeps `instruction` (the one the rewrite prompt showed), when given.

    Example:
        >>> thought_from_answer("  move the red circle to the top left ").instruction
        'move the red circle to the top left'
        >>> thought_from_answer("keep", instruction="paint it like the sky").instruction
        'paint it like the sky'
        >>> thought_from_answer("").error
        'empty reply: no instruction'
    """
    answer = (text or "").strip()
    if not answer:
        return Thought(error="empty reply: no instruction", raw=text)
    if answer == KEEP_REPLY and instruction is not None:
        return Thought(instruction=instruction, reasoning="kept the instruction", raw=text)
    if len(answer) > MAX_ANSWER_CHARS:
        return Thought(error=f"reply is {len(answer)} characters long (limit {MAX_ANSWER_CHARS}): a runaway generation", raw=text)
    return Thought(instruction=answer, raw=text)


_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


def answer_confidence(reply: ScoredText) -> float:
    """The smallest probability among the tokens of the reply's refined instruction (its <answer> text).

    A rewrite is as wrong as its least certain word: one wrong shape or cell spoils it, so the
    minimum, not the mean, is the confidence (issue 24, stop 38: on shapes-val the minimum tells a
    right rewrite from a wrong one with AUC 0.77). A reply without an <answer> tag is judged whole.

    Example:
        >>> from refine.rewards.backends.base import ScoredText
        >>> reply = ScoredText("<think>x</think><answer>make it red</answer>",
        ...                    ["<think>", "x", "</think>", "<answer>", "make", " it", " red", "</answer>"],
        ...                    [1.0, 0.1, 1.0, 1.0, 0.9, 0.95, 0.6, 1.0])
        >>> answer_confidence(reply)                     # the critique's 0.1 does not count
        0.6
    """
    match = _ANSWER.search(reply.text)
    if match is None:
        return reply.min_prob()
    start, end = match.span(1)
    if end == start:
        return 0.0  # an empty answer is no instruction at all
    return reply.min_prob(start, end)


def reply_confidence(reply: ScoredText) -> float:
    """The smallest probability among all the tokens of the reply, its reasoning included.

    Example:
        >>> from refine.rewards.backends.base import ScoredText
        >>> reply = ScoredText("<think>x</think><answer>make it red</answer>",
        ...                    ["<think>", "x", "</think>", "<answer>", "make", " it", " red", "</answer>"],
        ...                    [1.0, 0.1, 1.0, 1.0, 0.9, 0.95, 0.6, 1.0])
        >>> reply_confidence(reply)                      # the reasoning's 0.1 counts
        0.1
    """
    return reply.min_prob()


# `VLMThinker(confidence_over=...)`: what a rewrite's confidence is measured over
CONFIDENCE_SPANS = {"answer": answer_confidence, "reply": reply_confidence}


def fit_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` scaled to fit `size` (width, height), aspect kept, centred on black borders.

    The one resize the thinker's images get, at training (`refine.thinker.grpo`'s `image_size`)
    and at inference (`VLMThinker(image_size=...)`).

    Example:
        >>> fit_image(Image.new("RGB", (64, 32), "red"), (48, 48)).size
        (48, 48)
    """
    return ImageOps.pad(image.convert("RGB"), tuple(size), color=(0, 0, 0))


def thinker_conversation(prompts: PromptSet, request: ThinkRequest) -> list[dict[str, Any]]:
    """The chat a thinker gets for `request`: system, then [source, edited, prompt text] as the user.

    The one place the thinker's input is laid out: `VLMThinker` sends it, and the training data
    (`refine.thinker.trl_rows`) stores it with its images as placeholders, so training and inference
    render the same text. Before any edit (`edited is None`) the user turn has the source only.

    Example:
        >>> from PIL import Image
        >>> image = Image.new("RGB", (8, 8))
        >>> chat = thinker_conversation(get_prompts("thinker"), ThinkRequest(image, image, "add a cat", "add a cat"))
        >>> [m["role"] for m in chat], [part["type"] for part in chat[1]["content"]]
        (['system', 'user'], ['image', 'image', 'text'])
    """
    if request.edited is not None and prompts.rewrite_only:
        raise ConfigError(
            f"this prompt set only rewrites before the first edit (output_style={prompts.output_style!r}: no critique, no score); "
            "run it with think_before_edit=true, max_turns=1, select='last', critique_last_turn=false"
        )
    if request.edited is None:
        images = [request.source]
        text = render(prompts.rewrite, instruction=request.instruction, previous_instruction=request.previous_instruction)
    else:
        images = [request.source, request.edited]
        text = render(prompts.critique, instruction=request.instruction, previous_instruction=request.previous_instruction)
    pictures, question = [{"type": "image", "image": image} for image in images], [{"type": "text", "text": text}]
    content = question + pictures if prompts.text_first else pictures + question
    return [{"role": "system", "content": prompts.system}, {"role": "user", "content": content}]
