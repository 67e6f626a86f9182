"""Think-while-Edit (EditThinker): a thinker critiques each edit and rewrites the instruction until it is right.

Example:
    >>> from refine.editor import compose
    >>> from refine.shapes.data import load_split
    >>> from refine.thinker import ShapeExpertThinker, ThinkWhileEdit
    >>> from refine.types import EditResult
    >>> class DirectOnly:                   # an editor that only understands the direct phrasing
    ...     def edit(self, requests):
    ...         return [EditResult(case.target_image if r.instruction == case.direct_instruction else r.image, r.instruction)
    ...                 for r, case in ((r, next(c for c in bench if c.id == r.meta["case_id"])) for r in requests)]
    >>> bench = [c for c in load_split("shapes-bench") if c.phrasing == "indirect"][:2]
    >>> editor = compose(DirectOnly(), ThinkWhileEdit(ShapeExpertThinker(), max_turns=5))
    >>> [r.meta["thinker"]["stop_reason"] for r in editor.edit([c.to_request(seed=0) for c in bench])]
    ['thinker_stop', 'thinker_stop']

Pieces (one concept per module):

* `format`: the `<think>…</think><score>[sem, qual]</score><answer>…</answer>` format, a tolerant
  parser that reports its repairs, and the serializer (SFT targets).
* `protocol`: `ThinkRequest` -> `Thinker.think` -> `Thought`.
* `loop`: `ThinkWhileEdit`, the black-box refiner running the loop over any editor (`LoopConfig`).
* `vlm`: `VLMThinker` on the rewards layer's VLM backends; `prompts`: the thinker/expert prompts.
* `shape_expert`: `ShapeExpertThinker`, ShapeEdit's oracle expert.
* `traces`: `TraceWriter` / `read_turns` / `read_requests`, loop traces as training data.
* `config`: `ThinkerConfig` and `build_thinker_refiner` (the registry's `thinker` refiner).
* `cli_support`: what `refine edit --thinker ... --max-turns N` calls.
* `trajectories`, `filters`, `trl_rows`, `data`: the training-data pipeline (paper Sec. 4,
  `refine thinker data`); `train_config`, `train`, `grpo`, `grpo_rewards`: SFT and GRPO with TRL
  (`refine train thinker --stage sft|grpo`). Imported from their modules (they pull in
  `datasets` / TRL, which `import refine.thinker` does not).
"""

from refine.thinker.config import ThinkerConfig, build_thinker, build_thinker_refiner
from refine.thinker.format import ParseResult, ThinkerOutput, format_thinker_output, parse_thinker_output, parse_thinker_output_strict
from refine.thinker.loop import STOP_REASONS, LoopConfig, ThinkWhileEdit, ThinkWhileEditEditor, TurnEvent
from refine.thinker.prompts import PromptSet, get_prompts
from refine.thinker.protocol import Thinker, ThinkRequest, Thought, thought_from_text
from refine.thinker.shape_expert import ShapeExpertThinker
from refine.thinker.traces import TraceWriter, TurnRecord, read_requests, read_turns
from refine.thinker.vlm import VLMThinker

__all__ = [
    "STOP_REASONS",
    "LoopConfig",
    "ParseResult",
    "PromptSet",
    "ShapeExpertThinker",
    "ThinkRequest",
    "ThinkWhileEdit",
    "ThinkWhileEditEditor",
    "Thinker",
    "ThinkerConfig",
    "ThinkerOutput",
    "Thought",
    "TraceWriter",
    "TurnEvent",
    "TurnRecord",
    "VLMThinker",
    "build_thinker",
    "build_thinker_refiner",
    "format_thinker_output",
    "get_prompts",
    "parse_thinker_output",
    "parse_thinker_output_strict",
    "read_requests",
    "read_turns",
    "thought_from_text",
]
