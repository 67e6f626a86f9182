"""Samples as rows of TRL's conversational prompt-completion format with images (HF `datasets`).

Example:
    >>> from PIL import Image
    >>> from refine.thinker.filters import Sample
    >>> from refine.thinker.trl_rows import sample_row
    >>> red, gray = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "gray")
    >>> row = sample_row(Sample("t0", 1, "recolor", red, gray, "paint it like the sky", "paint it like the sky",
    ...                         "the circle is still red", 0.0, 9.0, "make the red circle blue"))
    >>> [m["role"] for m in row["prompt"]], [p["type"] for p in row["prompt"][1]["content"]], len(row["images"])
    (['system', 'user'], ['image', 'image', 'text'], 2)
    >>> row["completion"][0]["content"][0]["text"]
    '<think>the circle is still red</think><score>[0, 9]</score><answer>make the red circle blue</answer>'

The layout `SFTTrainer` and `GRPOTrainer` read (TRL's "conversational" type with an `images`
column): `prompt` is the system and user messages whose image parts are placeholders
`{"type": "image"}`, filled in order from `images` = [I_src, I_k]; `completion` is the assistant
message holding the target in the EditThinker format. The messages come from the thinker's own
`thinker_conversation` (`refine.thinker.vlm`) with the paper's EditThinker prompt, so a model
trained on these rows is prompted at inference with the same text (a test renders both through
one chat template). Content is always a list of parts (the system text too) so that every row has
one Arrow schema.

The other columns are for reward functions and analysis (`GRPOTrainer` passes every extra column
to reward functions as a keyword argument): `instruction` (T_s), `previous_instruction` (P_k),
`semantic` and `quality` (the scorer's scores of I_k, the image shown: R_critic's targets),
`answer`, `task`, `trajectory_id`, `step`, `terminal`, `editor`, `seed`, `next_semantic` (the
score of the edit `answer` produced; NaN on terminal samples) and `meta` (JSON: e.g. the ShapeEdit
case the judge needs for R_edit).
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from datasets import Dataset
from PIL import Image

from refine.thinker.filters import Sample
from refine.thinker.prompts import PromptSet, get_prompts
from refine.thinker.protocol import ThinkRequest
from refine.thinker.trajectories import Trajectory
from refine.thinker.vlm import thinker_conversation


def prompt_messages(chat: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """(messages with image placeholders and list-of-parts content, the images in order) of a chat."""
    messages, images = [], []
    for message in chat:
        content = message["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = []
            for part in content:
                if part["type"] == "image":
                    images.append(part["image"])
                    parts.append({"type": "image", "text": None})
                else:
                    parts.append({"type": "text", "text": part["text"]})
        messages.append({"role": message["role"], "content": parts})
    return messages, images


def sample_row(sample: Sample, prompts: PromptSet | None = None, decimals: int = 1, load=None) -> dict[str, Any]:
    """One dataset row for `sample` (see the module docstring); `load(sample, ref)` opens image refs."""
    prompts = prompts or get_prompts("thinker")
    source, image = (sample.source, sample.image) if load is None else (load(sample, sample.source), load(sample, sample.image))
    request = ThinkRequest(source, image, sample.instruction, sample.previous_instruction, sample.step)
    prompt, images = prompt_messages(thinker_conversation(prompts, request))
    completion = [{"role": "assistant", "content": [{"type": "text", "text": sample.target_text(decimals)}]}]
    next_semantic = (sample.next_scores or {}).get("semantic")
    return {
        "prompt": prompt,
        "completion": completion,
        "images": images,
        "instruction": sample.instruction,
        "previous_instruction": sample.previous_instruction,
        "answer": sample.answer,
        "semantic": float(sample.semantic),
        "quality": float(sample.quality) if sample.quality is not None else math.nan,
        "task": sample.task,
        "trajectory_id": sample.trajectory_id,
        "step": sample.step,
        "terminal": sample.terminal,
        "editor": sample.editor,
        "seed": sample.seed if sample.seed is not None else -1,
        "next_semantic": float(next_semantic) if next_semantic is not None else math.nan,
        "meta": json.dumps(sample.meta, sort_keys=True),
    }


def load_sample_image(sample: Sample, ref: Any):
    """Open an image reference of `sample` (a PIL image, or a path relative to its trace root)."""
    return Trajectory(sample.trajectory_id, ref, "", "", (), root=sample.root).image(ref)


def samples_to_dataset(samples: Sequence[Sample], prompts: PromptSet | None = None, decimals: int = 1) -> Dataset:
    """A `datasets.Dataset` of `sample_row`s (images stored in the dataset, not as paths)."""
    if not samples:
        # An empty split keeps the schema of a full one (a trainer reading it fails on its length,
        # not on a missing column): one placeholder row, then none.
        blank = Image.new("RGB", (1, 1))
        placeholder = Sample("", 1, "", blank, blank, "", "", "", 0.0, 0.0, "", next_scores={"semantic": 0.0})
        return Dataset.from_list([sample_row(placeholder, prompts, decimals)]).select([])
    return Dataset.from_list([sample_row(s, prompts, decimals, load=load_sample_image) for s in samples])
