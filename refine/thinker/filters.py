"""The paper's data rules (Sec. 4.2-4.4): keep, truncate, unroll, balance, split by score variance.

Example:
    >>> from refine.thinker.filters import best_step, keeps, score_variance
    >>> keeps([4.0, 2.0, 7.0]), keeps([6.0, 5.0, 1.0]), best_step([4.0, 7.0, 7.0, 2.0])
    (True, False, 2)
    >>> score_variance([2.0, 4.0])
    1.0

The score S_k of edit k is the scorer's **semantic** score (0-10) of image I_k; the quality
score does not enter the filter (the paper's S is one number; instruction following is what the
loop is for). Every sample carries the scores of the image it shows the model and no other:

    sample of edit k:  input (I_src, I_k, T_s, P_k)  ->  target (R_k, S(I_k), P_{k+1})

so a model is never trained to predict the score of an image it is not shown. (The paper writes
the same sample as (I_src, I_edit^{t-1}, T_s, T_{t-1}) -> (R_t, S, T_t) with t = k + 1, and
Sec. 3.2 defines S_qual as the quality of I_edit^{t-1}, the image shown.)

Rules, in pipeline order:

1. `keeps(scores)`: keep a trajectory iff max(S_k, k > 1) >= S_1. With one edit there is no
   k > 1 (the max of nothing): such a trajectory is kept only when the expert said stop on it
   (`single_stopped=True`), a finished first edit whose stop critique is a correct sample.
2. `truncate`: cut after the best edit k* (the earliest edit with the highest S, the loop's own
   `select="best"` tie rule). Edits after k* came from a rewrite that made things worse.
3. `unroll(trajectory, terminal)`: one sample per edit k < k*, whose target is the critique that
   led towards k*. The critique of k* itself (its input is the best image) is the terminal
   sample; `terminal` decides it:
   * `"stop"` (default): added only when the expert said stop on I_{k*}. Its target is then the
     expert's own text, unchanged: "this is done", the score of I_{k*}, and the instruction
     that made it (a minimal rewrite: none). Why: a learned thinker has no stop flag; it stops
     when its own score reaches the loop's threshold. Without terminal samples every training
     input would be an image that was later improved on, and the model would never learn to
     score a finished edit high, so it could never stop. When the expert did not stop on
     I_{k*} (the trajectory ran on and got worse), its critique asked for another rewrite,
     which the truncation exists to drop; rewriting its answer to "keep it" would contradict
     its own reasoning, so no sample is added.
   * `"none"`: the paper's literal truncation (no sample shows I_{k*}).
   * `"always"`: the expert's critique of I_{k*} as it was written, whether or not it stopped.
4. `split_by_variance(trajectories, threshold)`: Var(S_1..S_k*) (population variance of the
   truncated scores) > threshold goes to RL, the rest to SFT (Sec. 4.4).
5. `balance(samples, ...)`: cap each (task type, score bin) cell, where the bin is that of the
   semantic score of the image shown; cells over the cap are downsampled (seeded), none is
   duplicated (Sec. 4.3, "distribution balancing").
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from refine.errors import InputError
from refine.thinker.format import ThinkerOutput, format_thinker_output
from refine.thinker.trajectories import ImageRef, Trajectory

Terminal = Literal["stop", "none", "always"]
DEFAULT_SCORE_BINS: tuple[float, ...] = (2.5, 5.0, 7.5)  # semantic score bins [0, 2.5), [2.5, 5), [5, 7.5), [7.5, 10]


@dataclass(frozen=True)
class Sample:
    """One training sample: the thinker's input at edit `step` of a trajectory and its target.

    Inputs: `source` (I_src), `image` (I_k, the edit shown), `instruction` (T_s),
    `previous_instruction` (P_k, which made `image`). Target: `reasoning` (R), `semantic` and
    `quality` (the scorer's scores of `image`, the image shown), `answer` (P_{k+1}).
    `terminal` marks the critique of the best edit; `stop` is the expert's flag (metadata only).
    `next_scores` are the scores of the edit `answer` produced (None for a terminal sample):
    metadata for RL baselines and analysis, never part of a target.
    """

    trajectory_id: str
    step: int
    task: str
    source: ImageRef
    image: ImageRef
    instruction: str
    previous_instruction: str
    reasoning: str
    semantic: float
    quality: float | None
    answer: str
    terminal: bool = False
    stop: bool | None = None
    editor: str = ""
    seed: int | None = None
    next_scores: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    root: str | None = None

    def target_text(self, decimals: int = 1) -> str:
        """The target in the EditThinker format (scores style), scores rounded to `decimals`.

        Example:
            >>> Sample("t", 1, "recolor", "s.png", "e.png", "paint it like the sky", "paint it like the sky",
            ...        "still red", 2.04, 9.0, "make the red circle blue").target_text()
            '<think>still red</think><score>[2, 9]</score><answer>make the red circle blue</answer>'
        """
        quality = None if self.quality is None else round(self.quality, decimals)
        return format_thinker_output(ThinkerOutput(self.reasoning, round(self.semantic, decimals), quality, None, self.answer), "scores")


def keeps(scores: Sequence[float], single_stopped: bool = False) -> bool:
    """The trajectory filter: max(S_k, k > 1) >= S_1 (see the module docstring for one edit).

    Example:
        >>> keeps([3.0, 3.0]), keeps([3.0, 2.9]), keeps([9.0]), keeps([9.0], single_stopped=True), keeps([])
        (True, False, False, True, False)
    """
    if not scores:
        return False
    if len(scores) == 1:
        return single_stopped
    return max(scores[1:]) >= scores[0]


def best_step(scores: Sequence[float]) -> int:
    """k*, the 1-based index of the earliest highest score.

    Example:
        >>> best_step([5.0, 8.0, 8.0, 6.0]), best_step([9.0, 9.0])
        (2, 1)
    """
    if not scores:
        raise InputError("best_step of an empty trajectory; filter empty trajectories out first")
    return max(range(len(scores)), key=lambda i: (scores[i], -i)) + 1


def truncate(trajectory: Trajectory) -> Trajectory:
    """The trajectory cut after its best edit k* (edits k* + 1 ... are dropped)."""
    return trajectory.with_steps(trajectory.steps[: best_step(trajectory.scores())])


def unroll(trajectory: Trajectory, terminal: Terminal = "stop") -> list[Sample]:
    """Samples of a **truncated** trajectory (see the module docstring, rule 3).

    An edit whose critique is missing (the thinker's reply was unusable) gives no sample.
    """
    if terminal not in ("stop", "none", "always"):
        raise InputError(f"terminal={terminal!r}; use 'stop', 'none' or 'always'")
    samples = []
    steps = trajectory.steps
    for k, step in enumerate(steps, start=1):
        critique = step.critique
        if critique is None:
            continue
        is_last = k == len(steps)
        if is_last and (terminal == "none" or (terminal == "stop" and not critique.stop)):
            continue
        # What the loop executed next is the answer it learned from; on the terminal edit there is no
        # next edit, and a stop keeps the instruction that made the edit (the expert's own answer).
        answer = steps[k].instruction if not is_last else (critique.answer or step.instruction)
        samples.append(
            Sample(
                trajectory_id=trajectory.id,
                step=k,
                task=trajectory.task,
                source=trajectory.source,
                image=step.image,
                instruction=trajectory.instruction,
                previous_instruction=step.instruction,
                reasoning=critique.reasoning,
                semantic=step.semantic,
                quality=step.scores.get("quality"),
                answer=answer,
                terminal=is_last,
                stop=critique.stop,
                editor=trajectory.editor,
                seed=step.seed,
                next_scores=None if is_last else dict(steps[k].scores),
                meta=trajectory.meta,
                root=trajectory.root,
            )
        )
    return samples


def score_variance(scores: Sequence[float]) -> float:
    """Population variance of the scores (0 for one score), the paper's Var(S_t).

    Example:
        >>> score_variance([10.0]), score_variance([0.0, 10.0])
        (0.0, 25.0)
    """
    return statistics.pvariance(scores) if len(scores) > 1 else 0.0


def split_by_variance(trajectories: Sequence[Trajectory], threshold: float) -> tuple[list[Trajectory], list[Trajectory]]:
    """(sft, rl): truncated trajectories with Var(S) > `threshold` go to RL, the others to SFT."""
    sft, rl = [], []
    for trajectory in trajectories:
        (rl if score_variance(trajectory.scores()) > threshold else sft).append(trajectory)
    return sft, rl


def score_bin(score: float, edges: Sequence[float] = DEFAULT_SCORE_BINS) -> int:
    """Index of the bin of `score` for bin edges `edges` (bin i is [edges[i-1], edges[i])).

    Example:
        >>> [score_bin(s) for s in (0.0, 2.5, 7.49, 10.0)]
        [0, 1, 2, 3]
    """
    return sum(score >= edge for edge in edges)


def balance(samples: Sequence[Sample], cap: int | Literal["median", "none"] = "median",
            edges: Sequence[float] = DEFAULT_SCORE_BINS, seed: int = 0) -> list[Sample]:
    """At most `cap` samples per (task, score bin) cell, downsampled at random (seeded); order kept.

    `cap="median"` uses the median size of the non-empty cells: the large cells shrink to a
    typical one, the rare ones (a task the editor always gets right, low scores on easy tasks)
    stay whole. Nothing is duplicated: upsampling would repeat the same images.

    Example:
        >>> from dataclasses import replace
        >>> base = Sample("t", 1, "add", "s", "e", "i", "i", "r", 0.0, 9.0, "a")
        >>> pool = [replace(base, step=i) for i in range(6)] + [replace(base, task="move", semantic=9.0)]
        >>> [(s.task, s.step) for s in balance(pool, cap=2)]
        [('add', 3), ('add', 5), ('move', 1)]
    """
    cells: dict[tuple[str, int], list[int]] = {}
    for index, sample in enumerate(samples):
        cells.setdefault((sample.task, score_bin(sample.semantic, edges)), []).append(index)
    if cap == "none" or not cells:
        return list(samples)
    limit = int(statistics.median(len(v) for v in cells.values())) if cap == "median" else int(cap)
    if limit < 1:
        raise InputError(f"balance cap={cap!r} keeps nothing; use a positive number, 'median' or 'none'")
    rng = random.Random(seed)
    kept: list[int] = []
    for key in sorted(cells):
        members = cells[key]
        kept += members if len(members) <= limit else rng.sample(members, limit)
    return [samples[i] for i in sorted(kept)]


def cell_counts(samples: Sequence[Sample], edges: Sequence[float] = DEFAULT_SCORE_BINS) -> dict[str, dict[str, int]]:
    """{task: {"bin i": count}} of `samples` (for the pipeline's summary)."""
    counts: dict[str, dict[str, int]] = {}
    for sample in samples:
        row = counts.setdefault(sample.task, {})
        key = f"bin {score_bin(sample.semantic, edges)}"
        row[key] = row.get(key, 0) + 1
    return {task: dict(sorted(row.items())) for task, row in sorted(counts.items())}
