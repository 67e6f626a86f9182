"""A learned thinker assembled from two skills of one model: a rewrite before the edit, a judge's score after it.

Example:
    >>> from PIL import Image
    >>> from refine.rewards.mllm import MLLMJudge
    >>> from refine.rewards.backends.base import ProbResult
    >>> from refine.thinker.judged import JudgedThinker
    >>> from refine.thinker.protocol import ThinkRequest
    >>> from refine.thinker.vlm import VLMThinker
    >>> class Canned:                                   # a VLM backend: one rewrite, one score
    ...     name = "canned"
    ...     def generate(self, conversations, max_new_tokens=128, temperature=0.0):
    ...         return ["move the red circle to the top left"] * len(conversations)
    ...     def next_token_probs(self, conversations, candidates, prefill=""):
    ...         return [ProbResult({"0": 0.0, "1": 0.0, "2": 0.0, "3": 0.5, "4": 0.5, "5": 0.0}, mass=1.0)] * len(conversations)
    >>> backend = Canned()
    >>> thinker = JudgedThinker(VLMThinker(backend, prompts="shapes-rewrite"), MLLMJudge(backend, mode="score_logit"))
    >>> image = Image.new("RGB", (32, 32))
    >>> [thought] = thinker.think([ThinkRequest(image, image, "move the circle to where the sun rises", "move the circle to where the sun rises")])
    >>> thought.scores, thought.instruction                        # E = 3.5 of 5 -> 7 of 10
    ({'semantic': 7.0}, 'move the red circle to the top left')

EditThinker's thinker (paper Sec. 3.1-3.2) does three things at every turn: it scores the current
edit, critiques it, and writes the next instruction. On ShapeEdit a model of 6M parameters learns
two of them well enough to use, from the same SFT chain (`refine/assets/shapes-vlm`, issue 23):
the rewrite of an instruction into the editor's direct phrasing, seen in the source image
(`prompt: shapes-rewrite-find`, 80-87% exact on shapes-val), and the judge's score of an edit,
reasoning first (`score_logit_cot`: it orders two edits of one input as the exact judge does 0.69 of
the time). A critique that rewrites *from the failed edit* is what it never learned: stops 36-43
trained that with SFT and GRPO, and its score did not rank edits (benchmarks/RESULTS.md).

So this thinker answers each `ThinkRequest` with those two skills:

* before any edit (`edited is None`, think-before-edit): the rewrite;
* after an edit: the judge's score of the edit against the *original* instruction T_s (what the
  user asked), as the semantic score on 0-10, the judge's reasoning as the critique, and the
  rewrite of T_s as the next instruction. The rewrite depends on (source, T_s) only, so it is
  computed once per request and cached.

In the loop (`ThinkWhileEdit`, think-while-edit, the paper's protocol) turn 1 edits the user's
instruction, the judge scores it, and if the score is under `score_threshold` turn 2 edits the
rewrite; with `vary_seed` further turns re-sample the rewrite's edit with new seeds (with the
same seed the repeated instruction stops the request: "unchanged_instruction"). `select="best"`
keeps the edit the judge scores best. Nothing in this path reads a case's target: the judge is a
model, not ShapeEdit's exact judge.

From a config: `{kind: thinker, thinker: "vlm:refine/assets/shapes-vlm", prompt: shapes-rewrite-find,
judge_mode: score_logit_cot}` (`ThinkerConfig.judge_mode`); the judge runs on the thinker's own
model unless `judge_model` names another.
"""

from __future__ import annotations

import time
from typing import Sequence

from refine.errors import ConfigError
from refine.rewards.base import ScoreCache, image_digest
from refine.rewards.mllm import MLLMJudge
from refine.thinker.protocol import ThinkRequest, Thought
from refine.thinker.vlm import VLMThinker


JUDGE_AGAINST = ("original", "rewrite")


class JudgedThinker:
    """A `Thinker` whose rewrite comes from `rewriter` and whose score of each edit comes from `judge`.

    Args:
        rewriter: a `VLMThinker`; only its think-before-edit request (source, instruction) is asked.
        judge: a rewards-layer `MLLMJudge` (any mode); its score in [0, 1] becomes the semantic score x 10.
        name: shown in traces (default "judged:" + the rewriter's name).
        cache_size: rewrites kept per thinker object (the loop asks for the same rewrite at every turn).
        judge_against: the instruction each edit is scored against: "original", the user's T_s (the paper's
            thinker scores the edit against what was asked), or "rewrite", the thinker's own rewrite of T_s
            (its reading of what was asked; T_s when the rewrite is unusable). A small judge checks a direct
            instruction far better than it resolves an indirect one: on 16 indirect training-stream cases the
            ShapeEdit VLM's `score_logit_cot` scores the done edit above the untouched source 9 times against
            the user's words and 14 against the direct phrasing. So the thinker resolves the reference once,
            in its rewrite, and the judge checks the edit against it.
    """

    reads_ground_truth = False  # a model's rewrite and a model's score: no case target anywhere

    def __init__(self, rewriter: VLMThinker, judge: MLLMJudge, name: str | None = None, cache_size: int = 100_000,
                 judge_against: str = "original") -> None:
        if not isinstance(judge, MLLMJudge):
            raise ConfigError(f"JudgedThinker needs an MLLMJudge from refine.rewards.mllm, got {type(judge).__name__}")
        if judge_against not in JUDGE_AGAINST:
            raise ConfigError(f"judge_against={judge_against!r}: use one of {', '.join(JUDGE_AGAINST)}")
        self.judge_against = judge_against
        self.rewriter = rewriter
        self.judge = judge
        self.name = name or f"judged:{rewriter.name}"
        self._rewrites = ScoreCache(cache_size)

    def think(self, requests: Sequence[ThinkRequest]) -> list[Thought]:
        if not requests:
            return []
        rewrites = self.rewrites(requests)
        critiqued = [i for i, r in enumerate(requests) if r.edited is not None]
        scores: dict[int, tuple[float | None, dict]] = {}
        start = time.perf_counter()
        if critiqued:
            asked = [requests[i] for i in critiqued]
            against = [r.instruction if self.judge_against == "original" else (rewrites[i].instruction or r.instruction)
                       for i, r in zip(critiqued, asked)]
            out = self.judge([r.source for r in asked], [r.edited for r in asked], against, [r.meta for r in asked])
            scores = {i: (score, detail) for i, score, detail in zip(critiqued, out.scores, out.details)}
        share = (time.perf_counter() - start) / max(1, len(critiqued))
        thoughts = []
        for i, (request, rewrite) in enumerate(zip(requests, rewrites)):
            if request.edited is None:
                thoughts.append(rewrite)
                continue
            score, detail = scores[i]
            if score is None:
                thoughts.append(Thought(error=f"the judge gave no score ({detail.get('error', 'unparseable')})",
                                        raw=detail.get("raw") or detail.get("reasoning"), seconds=share))
                continue
            # An unusable rewrite leaves the instruction as it is: with vary_seed the next turn re-samples it.
            thoughts.append(Thought(
                instruction=rewrite.instruction or request.previous_instruction,
                reasoning=str(detail.get("reasoning", "")),
                scores={"semantic": round(10.0 * score, 4)},
                raw=detail.get("reasoning"),
                seconds=share,
                confidence=rewrite.confidence,
            ))
        return thoughts

    def rewrites(self, requests: Sequence[ThinkRequest]) -> list[Thought]:
        """The rewrite of each request's original instruction, seen in its source (cached, batched)."""
        keys = [(image_digest(r.source), r.instruction) for r in requests]
        missing = {key: r for key, r in zip(keys, requests) if key not in self._rewrites}
        fresh: dict[tuple[str, str], Thought] = {}
        if missing:
            asks = [ThinkRequest(r.source, None, r.instruction, r.instruction, 0, r.meta) for r in missing.values()]
            fresh = dict(zip(missing, self.rewriter.think(asks)))
        found = [fresh[key] if key in fresh else self._rewrites.get(key) for key in keys]
        for key, thought in fresh.items():
            self._rewrites.put(key, thought)
        return found
