"""A thinker's own score of an edit as a reward: what a compute-matched best-of-k picks with.

Example:
    >>> from PIL import Image
    >>> from refine.thinker.score_reward import ThinkerScore
    >>> class Canned:                                   # any Thinker
    ...     name = "canned"
    ...     def think(self, requests):
    ...         from refine.thinker.protocol import Thought
    ...         return [Thought(instruction=r.instruction, scores={"semantic": 7.0, "quality": 9.0}) for r in requests]
    >>> reward = ThinkerScore(Canned())
    >>> image = Image.new("RGB", (32, 32))
    >>> out = reward([image], [image], ["make the circle blue"], [{}])
    >>> out.scores, out.details[0]["quality"]
    ([0.7], 9.0)

EditThinker's loop keeps the edit its thinker scores best (`select="best"`), so "the thinker
helped" must be told apart from "choosing among several edits helped": a best-of-k over k edits
of the original instruction, picked by the same thinker's score, is the control (issue 24). This
reward asks the thinker to critique each edit as the loop's first turn does (the original
instruction is also the instruction that made the edit) and returns its semantic score / 10;
a reply without a semantic score scores None (it loses to any scored edit in `BestOfK`).

From a config: `{kind: best_of_k, k: 2, reward: {kind: thinker_score, thinker: "vlm:runs/thinker-sft/final"}}`.
The spec takes every `ThinkerConfig` field the thinker needs (`thinker`, `max_new_tokens`, ...).
"""

from __future__ import annotations

from typing import Any, Sequence

from refine.config import validate_config
from refine.rewards.base import RewardOutput, check_batch
from refine.thinker.config import ThinkerConfig, build_thinker, thinker_reads_ground_truth
from refine.thinker.protocol import Thinker, ThinkRequest


class ThinkerScore:
    """Reward = the thinker's semantic score (0-10) of the edit, divided by 10.

    Args:
        thinker: a `Thinker`, or a thinker spec as in `ThinkerConfig.thinker` ("vlm:FOLDER", "expert", ...).
        name: the reward's name in logs.
        **settings: other `ThinkerConfig` fields used to build a thinker from a spec (`max_new_tokens`, ...).
    """

    # An oracle exactly when its thinker is (the expert reads the case's target).
    reads_ground_truth = staticmethod(thinker_reads_ground_truth)

    def __init__(self, thinker: Thinker | str = "expert", name: str = "thinker_score", **settings: Any) -> None:
        if isinstance(thinker, str):
            config = validate_config(ThinkerConfig, {"thinker": thinker, **settings})
            self.reads_ground_truth = thinker_reads_ground_truth(thinker)
            thinker = build_thinker(config)
        else:
            self.reads_ground_truth = getattr(thinker, "reads_ground_truth", False) is True
        self.thinker = thinker
        self.name = name

    def __call__(self, sources: Sequence, outputs: Sequence, instructions: Sequence[str], metas=None) -> RewardOutput:
        metas = check_batch(sources, outputs, instructions, metas)
        requests = [ThinkRequest(source, output, text, text, turn=1, meta=meta)
                    for source, output, text, meta in zip(sources, outputs, instructions, metas)]
        thoughts = self.thinker.think(requests)
        scores: list[float | None] = []
        details: list[dict[str, Any]] = []
        for thought in thoughts:
            semantic = thought.scores.get("semantic")
            scores.append(None if semantic is None else max(0.0, min(1.0, semantic / 10)))
            details.append({"semantic": semantic, "quality": thought.scores.get("quality"), "error": thought.error})
        return RewardOutput(scores, details)
