"""Per-turn rewards of multi-turn trajectories: instruction following, consistency with the ORIGINAL, quality.

Example (ShapeEdit's exact judge: the exact targets score IF 1 and CC 1 at every turn):
    >>> from refine.multiturn.data import sequence_request
    >>> from refine.multiturn.rewards import TurnRewards
    >>> from refine.shapes.data import load_split
    >>> sequence = load_split("shapes-mt-val")[0]
    >>> rewards = TurnRewards({"kind": "shapes"}, {"kind": "shapes"})
    >>> request = sequence_request(sequence)
    >>> scored = rewards([request.image], [sequence.target_images], [request.instructions], [request.metas], [request.meta])
    >>> scored.rewards["if"].tolist(), scored.rewards["cc"].tolist(), scored.success.tolist()
    ([[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]])

Each trajectory item is (original image, K turn outputs, K instructions, K turn metas, sequence
meta); `TurnRewards` returns, per reward name, an (n, K) float tensor with NaN where a turn could
not be scored (a judge failure never stops training: those turns drop out of the group
statistics, `refine.rollout.advantages`). Reward specs, one per slot:

* ``{"kind": "shapes"}``: ShapeEdit's exact judge over the whole sequence (`judge_sequence`):
  IF of turn k against that turn's exact source and target, CC against the ORIGINAL scene
  (everything that must stay through turns 1..k), PQ. Needs ``meta["shapes_sequence"]``.
* ``{"kind": "mllm_multiturn", ...}`` (IF only): MT-EditFlow's judge, one query per trajectory
  that sees the original and every turn (`refine.rewards.mllm.MultiTurnJudge`, thinking or
  direct mode, its 1-5 rubric mapped to [0, 1]).
* any other reward kind (``consistency`` for DINO + pixels, ``mllm``, ``shapes_if``...): called
  once per turn; IF and quality compare the turn's output with the image that turn edited, CC
  compares it with the ORIGINAL image (MT-EditFlow's CC is against the reference image).

`if_scale="binary"` turns IF into pass/fail (``IF >= binary_threshold``), the paper's binary
variant of the 1-5 scale (on ShapeEdit: bucketing the exact IF; threshold 1 = fully followed).
`success[i, k]` is 1 when turns 1..k of item i all have IF >= `binary_threshold` (EdiVal's
success at turn k), for logging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from PIL import Image

from refine.errors import BackendError, ConfigError
from refine.registry import registry
from refine.rewards.mllm import MultiTurnJudge

SLOTS = ("if", "cc", "quality")


@dataclass
class TurnScores:
    """Per-turn rewards of n trajectories.

    Attributes:
        rewards: name ("if", "cc", optionally "quality") -> (n, K) float32, NaN = not scored.
        success: (n, K) float32, 1 while every turn so far reached the IF threshold.
        failed: number of (item, turn, reward) scores that are NaN.
        seconds: wall time of the scoring.
        errors: one line per reward call that failed.
    """

    rewards: dict[str, torch.Tensor]
    success: torch.Tensor
    failed: int
    seconds: float
    errors: list[str] = field(default_factory=list)


class TurnRewards:
    """Scores K-turn trajectories per turn; see the module docstring for the reward specs.

    Args:
        instruction: IF reward spec (or a built reward object).
        consistency: CC reward spec (or object), always against the original image.
        quality: optional quality reward spec (or object); None: no quality reward.
        if_scale: "graded" (the judge's scale, in [0, 1]) or "binary" (IF >= binary_threshold).
        binary_threshold: the IF that counts as followed (binary scale, success).
        scale: multiplies every reward (-1 trains towards what the judge dislikes: a sign check).
    """

    def __init__(
        self,
        instruction: Mapping[str, Any] | Any,
        consistency: Mapping[str, Any] | Any,
        quality: Mapping[str, Any] | Any | None = None,
        *,
        if_scale: Literal["graded", "binary"] = "graded",
        binary_threshold: float = 1.0,
        scale: float = 1.0,
    ) -> None:
        if if_scale not in ("graded", "binary"):
            raise ConfigError(f"if_scale={if_scale!r}; use 'graded' or 'binary'")
        self.specs = {"if": instruction, "cc": consistency}
        if quality is not None:
            self.specs["quality"] = quality
        self.scorers = {slot: _build(slot, spec) for slot, spec in self.specs.items()}
        self.if_scale = if_scale
        self.binary_threshold = float(binary_threshold)
        self.scale = float(scale)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.scorers)

    def __call__(
        self,
        originals: Sequence[Image.Image],
        turn_images: Sequence[Sequence[Image.Image]],
        turn_instructions: Sequence[Sequence[str]],
        turn_metas: Sequence[Sequence[dict]],
        sequence_metas: Sequence[dict] | None = None,
    ) -> TurnScores:
        started = time.perf_counter()
        n, turns = len(originals), len(turn_images[0]) if turn_images else 0
        sequence_metas = list(sequence_metas or [{} for _ in originals])
        errors: list[str] = []
        judged: list[Any] | None = None
        rewards: dict[str, torch.Tensor] = {}
        for slot, scorer in self.scorers.items():
            if scorer == "shapes":
                if judged is None:
                    judged = [_judge_sequence(meta, images) for meta, images in zip(sequence_metas, turn_images)]
                values = [_shapes_metric(j, slot, turns) for j in judged]
            elif isinstance(scorer, MultiTurnJudge):
                values = _multiturn(scorer, originals, turn_images, turn_instructions, errors)
            else:
                values = _per_turn(scorer, slot, originals, turn_images, turn_instructions, turn_metas, errors)
            rewards[slot] = torch.tensor([[float("nan") if v is None else float(v) for v in row] for row in values], dtype=torch.float32).view(n, turns)
        followed = rewards["if"] >= self.binary_threshold  # NaN compares False: an unscored turn is not a success
        success = torch.cummin(followed.float(), dim=1).values if turns else followed.float()
        if self.if_scale == "binary":
            rewards["if"] = torch.where(torch.isnan(rewards["if"]), rewards["if"], followed.float())
        failed = int(sum(int(torch.isnan(r).sum()) for r in rewards.values()))
        rewards = {name: r * self.scale for name, r in rewards.items()}
        return TurnScores(rewards, success, failed, time.perf_counter() - started, errors)


def _build(slot: str, spec: Any) -> Any:
    if not isinstance(spec, Mapping):
        return spec  # an already built reward (tests, notebooks)
    kind = spec.get("kind")
    if kind is None:
        raise ConfigError(f"reward.{slot} needs a 'kind' (shapes, mllm_multiturn, consistency, or any reward kind)")
    if kind == "shapes":
        if set(spec) != {"kind"}:
            raise ConfigError(f"reward.{slot}.kind=shapes takes no other keys, got {sorted(set(spec) - {'kind'})}")
        return "shapes"
    if kind == "mllm_multiturn" and slot != "if":
        raise ConfigError(f"reward.{slot}: the multi-turn judge scores instruction following; use it for reward.if only")
    return registry.build("reward", dict(spec))


def _judge_sequence(meta: dict, images: Sequence[Image.Image]):
    from refine.shapes.data import ShapeSequence
    from refine.shapes.judge import judge_sequence

    if "shapes_sequence" not in meta:
        raise ConfigError("reward kind 'shapes' needs ShapeEdit sequences (data.kind=shapes); use an MLLM / consistency reward for other data")
    sequence = ShapeSequence.from_dict(meta["shapes_sequence"])
    cases = sequence.cases[: len(images)]
    return judge_sequence(ShapeSequence(sequence.id, tuple(cases)), list(images))


def _shapes_metric(judged, slot: str, turns: int) -> list[float]:
    if slot == "if":
        return list(judged.if_)
    if slot == "cc":
        return list(judged.cc_original)
    return [t.pq for t in judged.turns]


def _multiturn(judge: MultiTurnJudge, originals, turn_images, turn_instructions, errors: list[str]) -> list[list[float | None]]:
    """One query per trajectory; the per-turn scores are in details["turn_scores"] (in [0, 1])."""
    turns = len(turn_images[0])
    try:
        out = judge.score_turns(list(originals), [list(i) for i in turn_images], [list(i) for i in turn_instructions])
    except BackendError as err:
        errors.append(f"if: {err}")
        out = getattr(err, "partial", None)
        if out is None:
            return [[None] * turns for _ in originals]
    return [list(d.get("turn_scores") or [None] * turns) for d in out.details]


def _per_turn(reward: Callable, slot: str, originals, turn_images, turn_instructions, turn_metas, errors) -> list[list[float | None]]:
    """Call a single-turn reward on every (item, turn); CC compares with the original image."""
    turns = len(turn_images[0])
    sources, outputs, instructions, metas = [], [], [], []
    for original, images, texts, m in zip(originals, turn_images, turn_instructions, turn_metas):
        for k in range(turns):
            before = original if (slot == "cc" or k == 0) else images[k - 1]
            sources.append(before)
            outputs.append(images[k])
            instructions.append(texts[k])
            metas.append(dict(m[k]))
    try:
        scores = list(reward(sources, outputs, instructions, metas).scores)
    except BackendError as err:
        errors.append(f"{slot}: {err}")
        partial = getattr(err, "partial", None)
        scores = list(partial.scores) if partial is not None and len(partial.scores) == len(outputs) else [None] * len(outputs)
    return [scores[i * turns : (i + 1) * turns] for i in range(len(originals))]
