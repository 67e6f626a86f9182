"""The records every editor and refiner exchanges: requests in, results with a trace of steps out.

Example:
    >>> from PIL import Image
    >>> from refine.types import EditRequest, EditResult, Step
    >>> req = EditRequest(Image.new("RGB", (32, 32)), "make the red circle blue", seed=0)
    >>> res = EditResult(image=req.image, instruction=req.instruction)
    >>> res.steps.append(Step(kind="edit", source="flow", instruction=req.instruction, seconds=0.1))
    >>> [s.kind for s in res.steps]
    ['edit']

A refiner never hides what it did: each turn, critique or rewrite is one `Step` in
`EditResult.steps`, in order, so a comparison report can show turns, scores and reasoning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from refine.errors import InputError
from refine.images import load_image


@dataclass
class EditRequest:
    """One edit to perform.

    `image` is converted to RGB by `refine.images.load_image` (so paths and tensors are accepted);
    an empty instruction is refused with `InputError`. `meta` carries what the task knows beyond the
    instruction (task type, benchmark case id, ground-truth handles) and is passed to rewards.
    """

    image: Image.Image
    instruction: str
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = load_image(self.image)
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise InputError(f"empty instruction for edit request (meta={self.meta!r}); give a non-empty text instruction")
        self.instruction = self.instruction.strip()


@dataclass
class Step:
    """One thing a refiner or editor did for a request: an edit, a critique, a rewrite...

    `kind` is a short verb ("edit", "think", "rerank"); `source` names who did it (the editor or
    refiner); `scores` holds named numbers in the scorer's own scale; `image` is the turn's output
    when there is one. Anything else goes into `info` (must be JSON-serialisable).
    """

    kind: str
    source: str
    instruction: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    reasoning: str | None = None
    image: Image.Image | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict without the image (images are written next to the JSONL by callers)."""
        data = asdict(self)
        data.pop("image")
        return data


@dataclass
class EditResult:
    """The outcome of one `EditRequest`.

    `instruction` is the instruction actually executed for `image` (a thinker may have rewritten
    it); `steps` is the ordered trace of everything refiners and the editor did.
    """

    image: Image.Image
    instruction: str
    steps: list[Step] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
