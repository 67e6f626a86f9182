"""ShapeEdit's programmatic judge as rewards: IF, CC, PQ and overall (the verifiable CPU reward).

Example:
    >>> from refine.rewards.shapes_judge import ShapesCC, ShapesIF
    >>> from refine.shapes.data import load_split
    >>> case = load_split("shapes-bench")[0]
    >>> request = case.to_request()
    >>> reward = ShapesIF()
    >>> reward([request.image] * 2, [case.target_image, case.source_image], [request.instruction] * 2,
    ...        [request.meta] * 2).scores                    # perfect edit, then "did nothing"
    [1.0, 0.0]
    >>> ShapesCC()([request.image], [case.source_image], [request.instruction], [request.meta]).scores
    [1.0]

Each item's `meta` must come from `ShapeCase.to_request()` (it carries the exact case in
`meta["shapes_case"]`); other items get None ("not applicable"), so a ShapeEdit reward can sit in
a composite next to MLLM rewards on mixed data. The judge parses the output image back into a
scene and compares it with the case's exact source and target (`refine.shapes.judge`):

* `ShapesIF`: instruction following in [0, 1] (1 = every required change fully right);
* `ShapesCC`: content consistency in [0, 1] (share of what must stay that stayed);
* `ShapesPQ`: perceptual quality in [0, 1] (noise, off-palette colour, blur, stray pixels);
* `ShapesOverall`: sqrt(IF * CC), ShapeEdit's O;
* `ShapesGatedIF`: IF gated by CC, ``IF * min(1, CC / gate)``: full IF credit while the content
  is kept to the gate, scaled down below it.

Rewards for RL: mean(IF, CC) pays 0.5 for returning the source unchanged (IF 0, CC 1), so a policy
can raise it by changing less. sqrt(IF * CC) and the gated IF are 0 for a no-op and need both a
right edit and kept content; they cannot be won by changing less or by changing everything.

details[i] holds all four numbers and the judge's breakdown (one line per checked item). Parsing
an output is shared: the four rewards of one process cache judge results by (output pixels,
case), so a composite of IF and CC parses each output once.
"""

from __future__ import annotations

import json
from typing import Any

from refine.errors import ConfigError
from refine.images import load_image
from refine.rewards.base import RewardOutput, ScoreCache, check_batch, image_digest

METRICS = {"if": "if_", "cc": "cc", "pq": "pq", "overall": "overall"}

# One cache for every ShapeEdit reward of the process: (output digest, case) -> judge summary.
_JUDGED = ScoreCache(max_items=16_384)


class ShapesJudgeReward:
    """A reward reading one metric ("if", "cc", "pq" or "overall") of the ShapeEdit judge."""

    metric = "overall"
    reads_ground_truth = True  # compares with the case's exact target: an oracle (refine.oracle)

    def __init__(self, metric: str | None = None, name: str | None = None, breakdown: bool = True) -> None:
        self.metric = metric or self.metric
        if self.metric not in METRICS:
            raise ConfigError(f"ShapeEdit metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        self.name = name or f"shapes_{self.metric}"
        self.breakdown = breakdown

    def __call__(self, sources, outputs, instructions, metas=None) -> RewardOutput:
        metas = check_batch(sources, outputs, instructions, metas)
        scores: list[float | None] = []
        details: list[dict[str, Any]] = []
        for output, meta in zip(outputs, metas):
            if "shapes_case" not in meta:
                scores.append(None)
                details.append({"error": "not a ShapeEdit request (meta has no 'shapes_case')"})
                continue
            judged = judge_cached(meta, output)
            scores.append(judged[self.metric])
            details.append(judged if self.breakdown else {k: v for k, v in judged.items() if k != "breakdown"})
        return RewardOutput(scores, details)


def judge_cached(meta: dict[str, Any], output: Any) -> dict[str, Any]:
    """{"if", "cc", "pq", "overall", "breakdown"} of `refine.shapes.judge.judge_meta`, cached per process."""
    from refine.shapes.judge import judge_meta

    output = load_image(output)
    key = (image_digest(output), json.dumps(meta["shapes_case"], sort_keys=True, default=str))
    judged = _JUDGED.get(key)
    if judged is None:
        score = judge_meta(meta, output)
        judged = {name: float(getattr(score, attr)) for name, attr in METRICS.items()}
        judged["breakdown"] = list(score.breakdown)
        _JUDGED.put(key, judged)
    return dict(judged)


class ShapesIF(ShapesJudgeReward):
    """ShapeEdit instruction following (IF) in [0, 1]."""

    metric = "if"


class ShapesCC(ShapesJudgeReward):
    """ShapeEdit content consistency (CC) in [0, 1]."""

    metric = "cc"


class ShapesPQ(ShapesJudgeReward):
    """ShapeEdit perceptual quality (PQ) in [0, 1]."""

    metric = "pq"


class ShapesOverall(ShapesJudgeReward):
    """ShapeEdit overall score sqrt(IF * CC) in [0, 1]."""

    metric = "overall"


class ShapesGatedIF(ShapesJudgeReward):
    """IF gated by CC: ``IF * min(1, CC / gate)`` in [0, 1] (a no-op scores 0, a wrecked scene little).

    Example:
        >>> reward = ShapesGatedIF(gate=0.8)
        >>> reward.combine(if_=1.0, cc=0.9), reward.combine(if_=1.0, cc=0.4), reward.combine(if_=0.0, cc=1.0)
        (1.0, 0.5, 0.0)
    """

    metric = "if"

    def __init__(self, gate: float = 0.8, name: str | None = None, breakdown: bool = True) -> None:
        if not 0 < gate <= 1:
            raise ConfigError(f"shapes_gated_if: gate={gate} must be in (0, 1]; e.g. gate: 0.8")
        super().__init__("if", name or "shapes_gated_if", breakdown)
        self.gate = float(gate)

    def combine(self, if_: float, cc: float) -> float:
        return if_ * min(1.0, cc / self.gate)

    def __call__(self, sources, outputs, instructions, metas=None) -> RewardOutput:
        out = super().__call__(sources, outputs, instructions, metas)
        scores = [None if s is None else self.combine(d["if"], d["cc"]) for s, d in zip(out.scores, out.details)]
        return RewardOutput(scores, out.details)
