"""Think-before-edit GRPO rows: one per ShapeEdit training-stream case, the thinker's first prompt over the source alone.

Example (two stream cases, the rewrite-only prompt set):
    >>> from refine.thinker.first_turn_rows import FirstTurnConfig, first_turn_rows
    >>> rows = first_turn_rows(FirstTurnConfig(output_dir="unused", cases=2))
    >>> len(rows), [len(images) for images in rows["images"]], [p["type"] for p in rows[0]["prompt"][1]["content"]]
    (2, [1, 1], ['image', 'text'])
    >>> rows[0]["step"], rows[0]["seed"]
    (0, 0)

`refine thinker first-turn --config thinker_data/shapes-first-turn` writes them to
`output_dir/dataset` (a `DatasetDict` with the split `rl`), the layout `refine train thinker
--stage grpo` reads. EditThinker's RL rows come from expert trajectories (`refine thinker data`)
and show [I_src, I_{t-1}]; these show only I_src, so the thinker's reply is the instruction the
*first* edit is made with (the paper's think-before-edit, its Table 4 ablation). `EditReward`
then measures a rollout against the plain edit: the editor on the user's instruction with the
row's seed (`refine.thinker.grpo_rewards`), so R_edit is exactly the gain
`benchmarks/thinker_learned.py` reports for a rewrite, and the model may learn to leave an
instruction it cannot rewrite well as it is (R_edit 0).

No expert and no editor run here: the rows hold the case (in `meta`, for the exact judge of the
reward, never shown to the model), the user's instruction, the editor seed and the case's canonical
direct phrasing (`reference`, never shown to the model either: read only by the `reference_match`
edit reward of `refine.thinker.grpo_rewards`). `semantic` and
`quality` are NaN (no image of an edit is shown, so there is no score to predict).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, DatasetDict
from pydantic import Field

from refine.config import RefineConfig
from refine.shapes.data import ShapeCase, stream_case
from refine.thinker.prompts import PROMPT_NAMES, PromptSet, get_prompts
from refine.thinker.protocol import ThinkRequest
from refine.thinker.trl_rows import prompt_messages
from refine.thinker.vlm import thinker_conversation


class FirstTurnConfig(RefineConfig):
    """Settings of `refine thinker first-turn` (see the module docstring)."""

    output_dir: str = Field(..., description="Where dataset/ (split rl) and summary.json go.")
    prompt: Literal[PROMPT_NAMES] = Field("shapes-rewrite", description="The prompt set the rows are written with; train and serve with the same.")
    stream_seed: int = Field(51, description="ShapeEdit training stream seed (cases train-{seed}-{n}; never a split's case).")
    cases: int = Field(4000, ge=1, description="Stream cases, one row each.")
    indirect_fraction: float = Field(0.8, ge=0, le=1, description="Share of indirect phrasings (the ones a rewrite can help).")
    categories: list[str] | None = Field(None, description="Only these ShapeEdit categories (None: all).")
    seed_offset: int = Field(0, ge=0, description="Row i is edited with seed seed_offset + i (one seed per group of rollouts).")


def first_turn_request(case: ShapeCase) -> ThinkRequest:
    """The thinker's request before any edit: the source alone, the user's instruction."""
    return ThinkRequest(case.source_image, None, case.instruction, case.instruction)


def first_turn_prompt(prompts: PromptSet, case: ShapeCase) -> tuple[list[dict[str, Any]], list[Any]]:
    """(TRL conversational prompt with image placeholders, its images) of `case`'s first-turn request."""
    return prompt_messages(thinker_conversation(prompts, first_turn_request(case)))


def first_turn_rows(config: FirstTurnConfig) -> Dataset:
    """The rows of `config` (TRL's conversational prompt format, images as placeholders filled from `images`)."""
    prompts = get_prompts(config.prompt)
    rows: list[dict[str, Any]] = []
    for i in range(config.cases):
        case = stream_case(config.stream_seed, i, indirect_fraction=config.indirect_fraction, categories=config.categories)
        seed = config.seed_offset + i
        prompt, images = first_turn_prompt(prompts, case)
        rows.append({"prompt": prompt, "images": images, "instruction": case.instruction, "previous_instruction": case.instruction,
                     "semantic": math.nan, "quality": math.nan, "task": case.category, "trajectory_id": case.id, "step": 0,
                     "seed": seed, "meta": json.dumps(case.to_request(seed=seed).meta, sort_keys=True),
                     "reference": case.direct_instruction})
    return Dataset.from_list(rows)


def write_first_turn_rows(config: FirstTurnConfig) -> dict[str, Any]:
    """Write `output_dir/dataset` (split rl) and `output_dir/summary.json`; returns the summary."""
    rows = first_turn_rows(config)
    root = Path(config.output_dir)
    DatasetDict({"rl": rows}).save_to_disk(str(root / "dataset"))
    summary = {"rows": len(rows), "prompt": config.prompt, "stream_seed": config.stream_seed,
               "indirect_fraction": config.indirect_fraction, "tasks": dict(sorted(Counter(rows["task"]).items()))}
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
