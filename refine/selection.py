"""Best-of-k: edit each request k times with different seeds, keep the edit a reward scores highest.

Example:
    >>> from PIL import Image
    >>> from refine.editor import compose
    >>> from refine.rewards import RewardOutput
    >>> from refine.selection import BestOfK
    >>> from refine.types import EditRequest, EditResult
    >>> class SeedPainter:                                 # an editor whose output depends on the seed
    ...     def edit(self, requests):
    ...         return [EditResult(Image.new("RGB", (4, 4), (10 * r.seed,) * 3), r.instruction) for r in requests]
    >>> def brightest(sources, outputs, instructions, metas):
    ...     return RewardOutput([o.getpixel((0, 0))[0] / 255 for o in outputs])
    >>> editor = compose(SeedPainter(), BestOfK(brightest, k=3))
    >>> result = editor.edit([EditRequest(Image.new("RGB", (4, 4)), "brighten it", seed=5)])[0]
    >>> result.meta["best_of_k"]["seeds"], result.meta["best_of_k"]["chosen"], result.image.getpixel((0, 0))
    ([5, 6, 7], 3, (70, 70, 70))

The baseline that separates "a critic rewrote the instruction" from "several edits were made and
the best one kept": the instruction is never changed, only the seed (request seed, seed + 1, ...,
seed + k - 1; the first candidate is exactly the plain editor's edit, so best-of-1 is the editor).
It is a black-box refiner: it calls `editor.edit` k times per batch (one call per seed offset,
each with the whole batch), so it composes after any editor or refiner, and it spends k editor
calls per request, the unit in which the thinker loop's cost is counted (`editor_calls`). Any
`Reward` from `refine.rewards` picks (a callable, a registry kind such as `"shapes_overall"`, or a
spec `{kind: mllm, ...}`); items the reward cannot score (None) lose to any scored one, and ties
go to the earliest candidate. A request without a seed gets k unseeded edits (the editor draws).

Every candidate is one "edit" step in `EditResult.steps` (its seed, its reward, the editor's own
steps), followed by one "rerank" step naming the chosen candidate; `meta["best_of_k"]` sums it up.
An entry using it is an oracle exactly when its reward is (`refine.oracle`): best-of-k picked by
ShapeEdit's judge reads the ground truth the way the expert thinker does.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from refine.editor import Editor
from refine.errors import BackendError, ConfigError
from refine.oracle import component_reads_ground_truth
from refine.registry import registry
from refine.rewards.base import Reward, reward_name
from refine.types import EditRequest, EditResult, Step


class BestOfK:
    """The best-of-k refiner: `BestOfK(reward, k)(editor)`; see the module docstring.

    Args:
        reward: a `Reward` (any callable `reward(sources, outputs, instructions, metas)`), a
            registered reward kind, or a spec `{kind: ..., **params}`.
        k: edits per request (>= 1). To match a thinker's compute, use the mean editor calls per
            case that `refine compare` reports for it, rounded to the nearest integer.
    """

    name = "best_of_k"
    needs_white_box = False
    returns_white_box = False

    def __init__(self, reward: Any, k: int = 2) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"best_of_k: k={k!r}; give a whole number of edits per request >= 1")
        if isinstance(reward, (str, dict)):
            spec = reward
            reward = registry.build("reward", spec)
        if not callable(reward):
            raise ConfigError(f"best_of_k: reward {reward!r} is not a Reward (a callable) nor a reward spec")
        self.reward: Reward = reward
        self.k = k
        # an instance answers for its built reward; the class-level function answers for a spec
        self.reads_ground_truth = component_reads_ground_truth("reward", reward)

    @staticmethod
    def reads_ground_truth(reward: Any = None, **_settings: Any) -> bool:
        """Whether a `best_of_k` spec picks with a reward that reads ground truth (`refine.oracle`)."""
        return reward is not None and component_reads_ground_truth("reward", reward)

    def __call__(self, editor: Editor) -> "BestOfKEditor":
        return BestOfKEditor(editor, self.reward, self.k, self.name)


class BestOfKEditor:
    """The editor `BestOfK(...)(editor)` returns."""

    def __init__(self, editor: Editor, reward: Reward, k: int, name: str = "best_of_k") -> None:
        self.editor, self.reward, self.k, self.name = editor, reward, k, name

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        if not requests:
            return []
        # 1. k editor calls, each over the whole batch, with seed offset j
        candidates: list[list[EditResult]] = []  # [j][i]: candidate j of request i
        seconds: list[float] = []
        for offset in range(self.k):
            batch = [
                EditRequest(r.image, r.instruction, seed=None if r.seed is None else r.seed + offset, meta=dict(r.meta))
                for r in requests
            ]
            start = time.perf_counter()
            results = self.editor.edit(batch)
            seconds.append((time.perf_counter() - start) / len(batch))
            if len(results) != len(batch):
                raise BackendError(f"{self.name}: the editor returned {len(results)} results for {len(batch)} requests")
            candidates.append(results)
        # 2. one reward call over every candidate, flattened request-major: item i * k + j
        flat = [(request, candidates[j][i]) for i, request in enumerate(requests) for j in range(self.k)]
        scored = self.reward(
            [r.image for r, _ in flat], [c.image for _, c in flat], [r.instruction for r, _ in flat], [dict(r.meta) for r, _ in flat]
        )
        if len(scored.scores) != len(flat):
            raise BackendError(f"{self.name}: reward {reward_name(self.reward)!r} returned {len(scored.scores)} scores for {len(flat)} edits")
        # 3. per request, the best-scored candidate (unscorable ones lose; ties go to the earliest)
        out = []
        for i, request in enumerate(requests):
            scores = scored.scores[i * self.k : (i + 1) * self.k]
            keys = [-math.inf if s is None or math.isnan(s) else s for s in scores]
            chosen = keys.index(max(keys))
            out.append(self._result(request, [candidates[j][i] for j in range(self.k)], scores, chosen, seconds))
        return out

    def _result(self, request: EditRequest, candidates: list[EditResult], scores: list, chosen: int, seconds: list[float]) -> EditResult:
        seeds = [None if request.seed is None else request.seed + j for j in range(self.k)]
        label = reward_name(self.reward)
        steps = [
            Step(
                kind="edit",
                source=self.name,
                instruction=candidate.instruction,
                scores={} if score is None else {label: float(score)},
                image=candidate.image,
                seconds=seconds[j],
                info={"candidate": j + 1, "seed": seeds[j], "editor_steps": [s.to_json() for s in candidate.steps]},
            )
            for j, (candidate, score) in enumerate(zip(candidates, scores))
        ]
        steps.append(Step(kind="rerank", source=self.name, scores=dict(steps[chosen].scores), info={"chosen": chosen + 1, "k": self.k}))
        picked = candidates[chosen]
        summary = {
            "k": self.k,
            "chosen": chosen + 1,
            "seeds": seeds,
            "scores": [None if s is None else float(s) for s in scores],
            "reward": label,
            "editor_calls": self.k,
        }
        return EditResult(image=picked.image, instruction=picked.instruction, steps=steps, meta={**picked.meta, "best_of_k": summary})
