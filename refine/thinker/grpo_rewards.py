"""EditThinker's GRPO rewards (paper Sec. 3.3.2, Eqs. 3-5) as plain TRL reward functions.

Example (the format and critic rewards of two hand-written replies to one row):
    >>> from refine.thinker.grpo_rewards import critic_reward, format_reward
    >>> good = [{"role": "assistant", "content": "<think>still red</think><score>[3, 9]</score><answer>make the circle blue</answer>"}]
    >>> sloppy = [{"role": "assistant", "content": "<think>still red</think><score>7/10, 9/10</score><answer>make the circle blue</answer>"}]
    >>> format_reward([good, sloppy])                          # the forgiving parser reads both; only one is the format
    [1.0, 0.0]
    >>> critic_reward([good, sloppy], semantic=[2.0, 2.0], quality=[9.0, 9.0])   # -(|3-2| + |9-9|) / 20, -(|7-2| + 0) / 20
    [-0.05, -0.25]

TRL calls every reward function as `f(prompts=..., completions=..., completion_ids=..., **columns)`
with one list entry per completion and every extra dataset column as a keyword argument (the
`rl` split of `refine thinker data`: `semantic`, `quality`, `images`, `instruction`, `meta`,
`seed`, `trajectory_id`, `step`, ...; `refine.thinker.trl_rows`). `GRPOTrainer` sums them with
`reward_weights` = (alpha, beta, gamma): R = alpha R_format + beta R_critic + gamma R_edit (Eq. 5;
defaults and why in `refine.thinker.train_config.RewardWeights`), then normalises per group.

* `format_reward` (R_format, 1/0): 1 only for the exact format, read by the **strict** parser
  (`parse_thinker_output_strict`): no repairs, so a reply the forgiving parser fixes earns 0.
* `critic_reward` (R_critic, Eq. 3, in [-1, 0]): minus the error of the predicted
  [S_sem, S_qual] against the scores of the image the thinker is shown, I_edit^{t-1} (the row's
  `semantic` and `quality`, 0-10: the data scorer's scores, the same numbers the SFT targets hold;
  on ShapeEdit the exact judge). The two dimensions combine as the **mean absolute error,
  normalised to [0, 1]**: R_critic = -(|s_sem - S_sem| + |s_qual - S_qual|) / 20; a row without a
  quality score uses the semantic error alone (/ 10); a missing predicted score counts as the
  largest error (10 points) on its dimension. The paper writes Eq. 3 against E(I_edit^t); we score
  the image shown, as Sec. 3.2 defines S_qual, so the thinker never predicts the score of an image
  it has not seen.
* `EditReward` (R_edit, Eq. 4, in [-1, 1]): E(I^t) - E(I^{t-1}). The editor re-edits the source
  with the rewritten instruction T_t; E is a judge of the rewards layer (scores in [0, 1]: on
  ShapeEdit `shapes_overall`, sqrt(IF x CC) = the semantic score / 10; elsewhere any MLLM judge,
  e.g. `MLLMJudge`), applied to both images with the user's instruction T_s. **The judge reads the
  case's ground truth on ShapeEdit**: that is the reward signal only (like Edit-R1's exact judge),
  never an input of the thinker. The editor seed is fixed per row (`group_seed`: the seed that
  made I_{t-1}), so the 8 rollouts of one prompt are edited with the same noise: R_edit ranks
  their instructions, not the editor's sampling (an unchanged instruction reproduces I_{t-1}
  and scores exactly 0 when the editor is the one that made the data). Identical rewrites in a
  group are edited once. **Think before edit** (a row whose prompt shows only the source,
  `refine.thinker.first_turn_rows`): I^{t-1} is the editor's output on the user's instruction
  with the same seed, so R_edit is the rewrite's gain over the plain edit, the figure
  `benchmarks/thinker_learned.py` reports; a rollout that returns the instruction unchanged
  scores exactly 0 without an editor call.
* `ReferenceMatchReward` (in R_edit's place, `ThinkerTrainConfig.edit_reward: reference_match`;
  not in the paper): 1.0 when a rollout's instruction is the row's `reference`, else 0.0. On
  ShapeEdit's training stream the reference is the case's canonical direct phrasing (written by
  `refine thinker first-turn`, never shown to the model), so the reward is the SFT label read at
  the sequence level, with no editor and none of the editor's noise. Why (issue 24, stop 43): the
  bundled rewrite model is right on 69% of shapes-val's indirect cases greedily but on 90% with
  one of 8 samples at T = 1, and a rewrite is worth something only when it is right as a whole.
* Rewrite-only prompt sets (`output_style="answer"`, e.g. `shapes-rewrite`): the whole reply is
  the instruction (`answer_instruction`), `answer_format_reward` pays a usable one, and there is
  no score to criticise (`no_critic_reward`: None, left out of the sum).

R_critic and R_edit read a reply with the forgiving parser, as the loop does at inference: the
edit a repaired reply produces is the edit a user gets; only R_format pays for strictness. A
reply even the forgiving parser rejects (no usable answer) gets the worst value of each reward:
0, -1, -1, so no reward can be raised by failing. A judge that cannot score an item gives None
(TRL: NaN, left out of the weighted sum).

Completions come as TRL's conversational messages (`completion_text`): a tokenizer with a
response schema (Qwen3's) moves `<think>...</think>` into `reasoning_content`; it is put back in
front of the content before parsing, as the model wrote it.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable, Optional, Sequence

from PIL import Image

from refine.rewards.base import check_batch
from refine.thinker.format import ThinkerOutput, parse_thinker_output, parse_thinker_output_strict
from refine.thinker.vlm import thought_from_answer
from refine.types import EditRequest

SCORE_RANGE = 10.0  # S_sem and S_qual are 0-10 (refine.thinker.format)


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or a list of messages (the last one's content).

    Example:
        >>> completion_text([{"role": "assistant", "content": "<score>[1, 2]</score>", "reasoning_content": "hm"}])
        '<think>hm</think><score>[1, 2]</score>'
    """
    if isinstance(completion, str):
        return completion
    message = completion[-1] if isinstance(completion, (list, tuple)) and completion else completion
    if not isinstance(message, dict):
        return "" if message is None else str(message)
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(part.get("text") or "" for part in content if isinstance(part, dict) and part.get("type") == "text")
    reasoning = message.get("reasoning_content") or message.get("thinking")
    return f"<think>{reasoning}</think>{content}" if reasoning else content


def format_reward(completions: Sequence[Any], **_columns: Any) -> list[float]:
    """R_format: 1.0 for a reply in the exact EditThinker format (strict parse), else 0.0."""
    return [1.0 if parse_thinker_output_strict(completion_text(c)).ok else 0.0 for c in completions]


def answer_instruction(text: str) -> Optional[str]:
    """The instruction of a rewrite-only reply (`output_style="answer"`): the reply itself, or None.

    Example:
        >>> answer_instruction(" make the red circle blue "), answer_instruction("")
        ('make the red circle blue', None)
    """
    thought = thought_from_answer(text)
    return thought.instruction if thought.error is None else None


def answer_format_reward(completions: Sequence[Any], **_columns: Any) -> list[float]:
    """R_format of a rewrite-only reply: 1.0 for a usable instruction (not empty, not a runaway), else 0.0."""
    return [0.0 if answer_instruction(completion_text(c)) is None else 1.0 for c in completions]


def no_critic_reward(completions: Sequence[Any], **_columns: Any) -> list[None]:
    """R_critic of a prompt set whose replies hold no score: None (TRL leaves it out of the weighted sum)."""
    return [None] * len(completions)


def critic_error(predicted: ThinkerOutput | None, semantic: float, quality: float | None) -> float:
    """Mean absolute error of the predicted [S_sem, S_qual] against the targets, normalised to [0, 1].

    Example:
        >>> critic_error(ThinkerOutput(semantic=3, quality=9), 2.0, 9.0), critic_error(ThinkerOutput(semantic=3), 2.0, 9.0)
        (0.05, 0.55)
        >>> critic_error(ThinkerOutput(semantic=3, quality=9), 2.0, float("nan")), critic_error(None, 2.0, 9.0)
        (0.1, 1.0)
    """
    if predicted is None:
        return 1.0
    pairs = [(predicted.semantic, semantic)]
    if quality is not None and not math.isnan(quality):
        pairs.append((predicted.quality, quality))
    errors = [1.0 if guess is None else min(1.0, abs(guess - float(target)) / SCORE_RANGE) for guess, target in pairs]
    return sum(errors) / len(errors)


def critic_reward(completions: Sequence[Any], semantic: Sequence[float], quality: Sequence[float], **_columns: Any) -> list[float]:
    """R_critic = -critic_error(reply's scores, the scores of the image shown); -1 for an unusable reply."""
    rewards = []
    for completion, sem, qual in zip(completions, semantic, quality, strict=True):
        parsed = parse_thinker_output(completion_text(completion))
        rewards.append(-critic_error(parsed.output if parsed.ok else None, sem, qual))
    return rewards


def group_seed(seed: int | None, trajectory_id: str, step: int) -> int:
    """The editor seed of every rollout of one row: the seed that made I_{t-1}, else a hash of the row.

    Example:
        >>> group_seed(7, "t0", 2), group_seed(-1, "t0", 2) == group_seed(None, "t0", 2) != group_seed(-1, "t0", 3)
        (7, True)
    """
    if seed is not None and int(seed) >= 0:
        return int(seed)
    digest = hashlib.blake2b(f"{trajectory_id}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31)


class EditReward:
    """R_edit = E(I^t) - E(I^{t-1}): edit with each rollout's instruction, judge before and after.

    Args:
        editor: any `refine.editor.Editor` (on ShapeEdit the bundled `FlowEditor`, Euler, few steps).
        judge: any rewards-layer `Reward` with scores in [0, 1] (`shapes_overall`, `MLLMJudge`, ...).
        unusable: R_edit of a reply without a usable instruction (the worst value, -1).
        keep: a reply that means "the row's instruction as it is" (rewrite-only models: `KEEP_REPLY`);
            on a row before the first edit it is the plain edit itself, R_edit 0. None: no such reply.

    One editor call (two for rows before the first edit: their plain edits first) and at most two
    judge calls per batch: the judge scores each distinct I_{t-1} once and each distinct
    (row, instruction) edit once. `answer_of` reads a reply's instruction (default: the
    EditThinker format's <answer>, forgiving parser; `answer_instruction` for rewrite-only replies). `self.last` keeps the last batch's
    details (instructions, seeds, both judge scores) for tests and logging.
    """

    __name__ = "edit_reward"  # the name TRL logs the reward under (rewards/edit_reward/mean)

    def __init__(self, editor: Any, judge: Callable, unusable: float = -1.0,
                 answer_of: Callable[[str], Optional[str]] | None = None, keep: Optional[str] = None) -> None:
        self.editor = editor
        self.keep = keep
        self.judge = judge
        self.unusable = unusable
        self.answer_of = answer_of or _usable_answer  # reply text -> instruction (None: unusable)
        self.last: list[dict[str, Any]] = []

    def __call__(
        self,
        completions: Sequence[Any],
        images: Sequence[Sequence[Image.Image]],
        instruction: Sequence[str],
        meta: Sequence[str | dict],
        seed: Sequence[int],
        trajectory_id: Sequence[str],
        step: Sequence[int],
        original_images: Optional[Sequence[Sequence[Image.Image]]] = None,
        log_metric: Optional[Callable[[str, float], None]] = None,
        **_columns: Any,
    ) -> list[Optional[float]]:
        shown = original_images if original_images is not None else images  # full-size images when the prompt's were fitted
        metas = [json.loads(m) if isinstance(m, str) else dict(m or {}) for m in meta]
        rows = [(str(t), int(s)) for t, s in zip(trajectory_id, step, strict=True)]
        answers = reply_instructions(completions, instruction, self.answer_of, self.keep)

        # 1. E(I^{t-1}): each distinct row once. A row showing only the source (think before edit)
        #    is measured against the plain edit: the user's instruction with the row's seed.
        index: dict[tuple[str, int], int] = {}  # row -> its first completion
        for i, row in enumerate(rows):
            index.setdefault(row, i)
        firsts = list(index.values())
        plain_firsts = [i for i in firsts if len(shown[i]) < 2]
        plain = {rows[i] for i in plain_firsts}
        previous = {rows[i]: shown[i][1] for i in firsts if rows[i] not in plain}
        plain_requests = [EditRequest(shown[i][0], instruction[i], seed=group_seed(seed[i], *rows[i]), meta=metas[i])
                          for i in plain_firsts]
        if plain_requests:
            edited_plain = self.editor.edit(plain_requests)
            previous.update((rows[i], result.image) for i, result in zip(plain_firsts, edited_plain))
        before = self._judge([shown[i][0] for i in firsts], [previous[rows[i]] for i in firsts],
                             [instruction[i] for i in firsts], [metas[i] for i in firsts])
        before_of = {rows[i]: score for i, score in zip(firsts, before)}

        # 2. I^t: each distinct (row, instruction) once, with the row's seed, in one editor call. On a
        #    plain-edit row the unchanged instruction is the baseline itself: no call, R_edit 0.
        unchanged = {(rows[i], a) for i, a in enumerate(answers) if rows[i] in plain and a is not None and a.strip() == instruction[i].strip()}
        wanted = list(dict.fromkeys((rows[i], a) for i, a in enumerate(answers) if a is not None and (rows[i], a) not in unchanged))
        requests = [EditRequest(shown[index[row]][0], answer, seed=group_seed(seed[index[row]], *row), meta=metas[index[row]])
                    for row, answer in wanted]
        edited = [result.image for result in self.editor.edit(requests)] if requests else []
        after = self._judge([r.image for r in requests], edited, [instruction[index[row]] for row, _ in wanted],
                            [r.meta for r in requests])
        after_of = dict(zip(wanted, after))

        # 3. R_edit per completion.
        rewards: list[Optional[float]] = []
        self.last = []
        for row, answer in zip(rows, answers):
            e_before = before_of[row]
            e_after = e_before if (row, answer) in unchanged else after_of.get((row, answer)) if answer is not None else None
            if answer is None:
                reward = self.unusable
            elif e_before is None or e_after is None:
                reward = None
            else:
                reward = e_after - e_before
            rewards.append(reward)
            self.last.append({"row": row, "instruction": answer, "seed": group_seed(seed[index[row]], *row),
                              "before": e_before, "after": e_after, "reward": reward})
        if log_metric is not None:
            for name, values in (("edit/judge_before", [before_of[r] for r in rows]), ("edit/judge_after", [d["after"] for d in self.last])):
                values = [v for v in values if v is not None]
                if values:
                    log_metric(name, sum(values) / len(values))
            log_metric("edit/editor_calls", float(len(requests) + len(plain_requests)))
            if plain:  # think before edit: how often a rollout leaves the user's instruction as it is
                log_metric("edit/unchanged", sum((row, a) in unchanged for row, a in zip(rows, answers)) / len(rows))
        return rewards

    def _judge(self, sources, outputs, instructions, metas) -> list[Optional[float]]:
        if not outputs:
            return []
        result = self.judge(sources, outputs, instructions, check_batch(sources, outputs, instructions, metas))
        return [None if s is None or math.isnan(s) else float(s) for s in result.scores]


class ReferenceMatchReward:
    """1.0 when a rollout's instruction is its row's `reference`, else 0.0 (see the module docstring).

    Example:
        >>> reward = ReferenceMatchReward(answer_of=answer_instruction, keep="keep")
        >>> reward(["make the red circle blue", "make the red circle green", "", "keep"],
        ...        reference=["make the red circle blue"] * 4, instruction=["make the red circle blue"] * 4)
        [1.0, 0.0, 0.0, 1.0]

    `keep` (rewrite-only models: `KEEP_REPLY`) reads as the row's instruction, which matches only
    when the instruction already is the reference. Text is compared after stripping, and nothing
    else: a near miss names another object or cell, which the editor then edits.
    """

    __name__ = "reference_match"  # the name TRL logs the reward under (rewards/reference_match/mean)

    def __init__(self, answer_of: Callable[[str], Optional[str]] | None = None, keep: Optional[str] = None) -> None:
        self.answer_of = answer_of or _usable_answer
        self.keep = keep

    def __call__(self, completions: Sequence[Any], reference: Sequence[str], instruction: Sequence[str], **_columns: Any) -> list[float]:
        said = reply_instructions(completions, instruction, self.answer_of, self.keep)
        return [float(s is not None and s.strip() == wanted.strip()) for s, wanted in zip(said, reference, strict=True)]


def reply_instructions(completions: Sequence[Any], instruction: Sequence[str], answer_of: Callable[[str], Optional[str]],
                       keep: Optional[str]) -> list[Optional[str]]:
    """The instruction each completion asks for (None: unusable), as `EditReward` and `ReferenceMatchReward` read it.

    Example:
        >>> reply_instructions(["keep", " paint it red ", ""], ["make it look like a tomato"] * 3, answer_instruction, "keep")
        ['make it look like a tomato', 'paint it red', None]
    """
    texts = [completion_text(c) for c in completions]
    return [asked if keep is not None and text.strip() == keep else answer_of(text) for text, asked in zip(texts, instruction, strict=True)]


def _usable_answer(text: str) -> Optional[str]:
    parsed = parse_thinker_output(text)
    return parsed.output.answer if parsed.ok and parsed.output.answer else None
