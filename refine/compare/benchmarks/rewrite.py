"""The instruction-rewrite protocol flag: an MLLM restates each instruction before editing (KRIS-Bench, RISEBench).

Example:
    >>> from PIL import Image
    >>> from refine.compare.benchmarks.rewrite import InstructionRewriter, RewriteSpec
    >>> from refine.testing.scripted_vlm import ScriptedVLM
    >>> vlm = ScriptedVLM(answers={"sodium": "Show a violent fizzing reaction with flames on the water.\\n"})
    >>> rewrite = InstructionRewriter(RewriteSpec(backend={"kind": "scripted"}), backend=vlm)
    >>> rewrite(Image.new("RGB", (8, 8)), "Add a piece of solid sodium to the water")
    'Show a violent fizzing reaction with flames on the water.'
    >>> rewrite(Image.new("RGB", (8, 8)), "make it blue")      # an empty answer keeps the instruction
    'make it blue'

The Inline Critic paper evaluates KRIS-Bench and RISEBench with instructions rewritten by an MLLM
before editing (the reasoning these benchmarks test is then partly the MLLM's); EditThinker does
not. Set ``rewrite: {backend: {...}}`` on those benchmarks to follow the former protocol: every
entry edits from the rewritten instruction (in ``EditRequest.meta["original_instruction"]`` the
original stays), while the judge still sees the benchmark's own instruction. The prompt is ours
(`PROMPT`); greedy decoding keeps rewrites, and so the cached edits, reproducible; the rewrite
settings are part of the benchmark's cache key.
"""

from __future__ import annotations

from typing import Any

from PIL import Image
from pydantic import Field

from refine.config import RefineConfig

PROMPT = (
    "Rewrite this image-editing instruction so that an image editor can carry it out directly: work out any "
    "knowledge or reasoning it relies on from the image, and describe the visible result explicitly. "
    "Reply with the rewritten instruction only, in one sentence.\nInstruction: {instruction}"
)


class RewriteSpec(RefineConfig):
    """The `rewrite` of a benchmark: which MLLM rewrites instructions, and how it is asked."""

    backend: dict[str, Any] = Field(description="VLM backend spec, as a judge's (transformers or openai for vLLM / a hosted model).")
    prompt: str = Field(PROMPT, description="The question; {instruction} is replaced by the benchmark's instruction.")
    max_new_tokens: int = Field(128, ge=1, description="Generation budget of one rewrite.")


class InstructionRewriter:
    """Calls a VLM backend (built lazily from `spec.backend`) once per (image, instruction), greedily."""

    def __init__(self, spec: RewriteSpec, backend: Any | None = None) -> None:
        self.spec = spec
        self._backend = backend

    def __call__(self, image: Image.Image, instruction: str) -> str:
        if self._backend is None:
            from refine.rewards.backends.base import build_backend

            self._backend = build_backend(dict(self.spec.backend))
        question = self.spec.prompt.replace("{instruction}", instruction)
        conversation = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
        [answer] = self._backend.generate([conversation], self.spec.max_new_tokens, 0.0)
        lines = [line.strip() for line in (answer or "").strip().splitlines() if line.strip()]
        return lines[0] if lines else instruction
