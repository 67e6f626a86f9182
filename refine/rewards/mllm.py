"""MLLM judges as rewards: Edit-R1's scoring modes, and one-query multi-turn scoring.

Example:
    >>> from PIL import Image
    >>> from refine.rewards.backends.base import ProbResult
    >>> from refine.rewards.mllm import MLLMJudge
    >>> class FakeVLM:                                   # any object with the two backend calls
    ...     name = "fake"
    ...     def next_token_probs(self, conversations, candidates, prefill=""):
    ...         return [ProbResult({"0": 0.0, "1": 0.0, "2": 0.0, "3": 0.5, "4": 0.5, "5": 0.0}, mass=0.9)] * len(conversations)
    ...     def generate(self, conversations, max_new_tokens=128, temperature=0.0):
    ...         return ['"Score": [[4]]'] * len(conversations)
    >>> image = Image.new("RGB", (32, 32))
    >>> MLLMJudge(FakeVLM(), mode="score_logit")([image], [image], ["add a cat"], [{}]).scores   # E = 3.5 -> 3.5 / 5
    [0.7]
    >>> MLLMJudge(FakeVLM(), mode="score_sample")([image], [image], ["add a cat"], [{}]).scores
    [0.8]

Modes (Edit-R1, appendix B.1; prompts in `refine.rewards.prompts`):

| mode | prompt | how the score is read |
|---|---|---|
| `score_logit` (the paper's choice) | Score 0-5 | after the prefill ``"Score": [[``, the next-token probabilities of "0".."5" (renormalised), expected value / 5 |
| `score_sample` | Score 0-5 | generate, parse ``[[n]]``, n / 5 |
| `yesno_logit` | Yes/No | after ``"Judgement": [[``, P("Yes") renormalised over {"Yes", "No"} |
| `yesno_sample` | Yes/No | generate, parse ``[[Yes]]`` -> 1, ``[[No]]`` -> 0 |
| `score_logit_cot` | CoT Score | generate the reasoning, cut it before its score, then read the score token's probabilities after reasoning + ``"Score": [[`` |
| `score_sample_cot` | CoT Score | generate reasoning and score, parse the last ``[[n]]`` |

Robustness in a training loop: an unparseable or out-of-range answer, or candidates holding less
than `min_mass` probability, gives None for that item with the reason and the raw text in its
details, and increments `judge.failures[reason]`; it never raises. A backend that cannot reach
its model raises `PartialRewardError` (a `BackendError`) whose `.partial` `RewardOutput` keeps the
items scored before the failure (None for the rest); those items are also cached, so calling again
re-queries only the missing ones.

Caching: identical requests (same source and output pixels, same prompt text, mode and generation
settings) are scored once per judge object (one run), including duplicates within a batch; an
answer that could not be parsed is cached too (the failure is the judge's answer), a backend
failure is not.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping, Sequence

from PIL import Image

from refine.errors import BackendError, ConfigError
from refine.images import load_image
from refine.rewards.backends.base import PartialBatchError, ProbResult, build_backend
from refine.rewards.base import RewardOutput, ScoreCache, check_batch, image_digest
from refine.rewards.prompts import JudgePrompts, MultiTurnPrompts

MODES = ("score_logit", "score_sample", "yesno_logit", "yesno_sample", "score_logit_cot", "score_sample_cot")
TASK_KEYS = ("task_type", "task", "category")

_NUMBER = r"([-+]?\d+(?:\.\d+)?)"
_BRACKETED = re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]")
_SCORE_COLON = re.compile(r"score\W{0,3}\s*[:=]\s*\[*\s*" + _NUMBER, re.IGNORECASE)
_YESNO_BRACKETED = re.compile(r"\[\[\s*(yes|no)\s*\]\]", re.IGNORECASE)
_YESNO_COLON = re.compile(r"judge?ment\W{0,3}\s*[:=]\s*\W{0,3}(yes|no)\b", re.IGNORECASE)


class PartialRewardError(BackendError):
    """The judge's backend failed part-way; `.partial` holds the items scored before the failure."""

    def __init__(self, message: str, partial: RewardOutput) -> None:
        super().__init__(message)
        self.partial = partial


def parse_score(text: str, low: float, high: float) -> tuple[float | None, str | None]:
    """The last ``[[n]]`` (else the last ``Score: n``) in `text`, or (None, reason).

    >>> parse_score('"Reasoning": "2 of 3 shapes moved", "Score": [[4]]', 0, 5)
    (4.0, None)
    >>> parse_score("Score: 7", 0, 5), parse_score("looks fine", 0, 5)
    ((None, 'out_of_range'), (None, 'unparseable'))
    """
    matches = _BRACKETED.findall(text) or _SCORE_COLON.findall(text)
    if not matches:
        return None, "unparseable"
    value = float(matches[-1])
    if not low <= value <= high:
        return None, "out_of_range"
    return value, None


def parse_yesno(text: str) -> tuple[float | None, str | None]:
    """1.0 for the last ``[[Yes]]``, 0.0 for ``[[No]]`` (or ``Judgement: Yes/No``), else (None, reason).

    >>> parse_yesno('"Judgement": [[Yes]]'), parse_yesno("maybe")
    ((1.0, None), (None, 'unparseable'))
    """
    matches = _YESNO_BRACKETED.findall(text) or _YESNO_COLON.findall(text)
    if not matches:
        return None, "unparseable"
    return (1.0 if matches[-1].lower() == "yes" else 0.0), None


def reasoning_prefill(text: str, prefill: str) -> str:
    """The assistant text to continue for a CoT logit read: the reasoning up to its score, then `prefill`.

    >>> reasoning_prefill('"Reasoning": "ok",\\n"Score": [[3]]', '"Score": [[')
    '"Reasoning": "ok",\\n"Score": [['
    >>> reasoning_prefill('"Reasoning": "ok"', '"Score": [[')
    '"Reasoning": "ok"\\n"Score": [['
    """
    marker = prefill.split(":")[0].strip() or prefill
    cut = text.find(marker)
    reasoning = text[:cut] if cut >= 0 else text.rstrip() + "\n"
    return reasoning + prefill


class MLLMJudge:
    """A single-turn MLLM judge reward (see the module docstring for modes and failure handling).

    Args:
        backend: a `VLMBackend` object, or a spec such as {"kind": "transformers", "model": "path"}
            or {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "..."}.
        mode: one of `MODES`.
        prompts: `JudgePrompts` (or a dict of its fields) overriding the paper's templates.
        max_new_tokens: generation budget of the sampling and CoT modes (default 16, CoT 256).
        temperature: sampling temperature of generated answers (0 = greedy).
        min_mass: logit modes give None when the candidates held less probability than this.
        score_range: (low, high) of the score scale in the prompt; scores are mapped to [0, 1].
        cache: score identical requests once (per judge object); cache_size bounds the entries.
        name: key of this reward in composite details and logs.

    Per item, `meta["task_type"]` (or "task", "category") picks the task requirement and
    `meta["requirement"]` replaces it outright.
    """

    def __init__(
        self,
        backend: Any,
        mode: str = "score_logit",
        prompts: JudgePrompts | dict | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        min_mass: float = 0.0,
        score_range: tuple[int, int] = (0, 5),
        cache: bool = True,
        cache_size: int = 100_000,
        name: str = "mllm",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown judge mode {mode!r}; choose one of {', '.join(MODES)}")
        low, high = score_range
        if not (0 <= low < high <= 9):
            raise ConfigError(f"score_range={score_range!r}; logit scoring needs single digits with low < high (e.g. (0, 5))")
        self.backend = build_backend(backend)
        self.mode = mode
        self.prompts = prompts if isinstance(prompts, JudgePrompts) else JudgePrompts(**(prompts or {}))
        self.cot = mode.endswith("_cot")
        self.max_new_tokens = max_new_tokens or (256 if self.cot else 16)
        self.temperature = temperature
        self.min_mass = min_mass
        self.low, self.high = low, high
        self.cache = ScoreCache(cache_size) if cache else None
        self.name = name
        self.failures: Counter[str] = Counter()

    # -- prompt building ---------------------------------------------------------------------

    @property
    def prompt_kind(self) -> str:
        return "yesno" if self.mode.startswith("yesno") else ("score_cot" if self.cot else "score")

    def user_text(self, instruction: str, meta: Mapping[str, Any]) -> str:
        """The user prompt for one item: the mode's template, the instruction, the task's requirement."""
        task = next((str(meta[k]) for k in TASK_KEYS if meta.get(k)), None)
        requirement = str(meta["requirement"]) if meta.get("requirement") else None
        return self.prompts.user_text(self.prompt_kind, instruction, task, requirement=requirement)

    def conversation(self, source: Image.Image, output: Image.Image, text: str) -> list[dict[str, Any]]:
        """The chat sent to the backend: [system], user(original image, edited image, prompt)."""
        messages: list[dict[str, Any]] = []
        if self.prompts.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.prompts.system}]})
        content = [{"type": "image", "image": source}, {"type": "image", "image": output}, {"type": "text", "text": text}]
        messages.append({"role": "user", "content": content})
        return messages

    # -- the reward call ---------------------------------------------------------------------

    def __call__(self, sources, outputs, instructions, metas=None) -> RewardOutput:
        metas = check_batch(sources, outputs, instructions, metas)
        keys, pending = [], {}
        for src, out, instruction, meta in zip(sources, outputs, instructions, metas):
            src, out = load_image(src), load_image(out)
            text = self.user_text(instruction, meta)
            key = (self.backend.name, self.mode, self.max_new_tokens, self.temperature, image_digest(src), image_digest(out), text)
            keys.append(key)
            if (self.cache is None or key not in self.cache) and key not in pending:
                pending[key] = self.conversation(src, out, text)
        scored: dict[Any, tuple[float | None, dict]] = {}
        error: BackendError | None = None
        try:
            self._score(list(pending.items()), scored)
        except PartialBatchError as err:
            error = err  # `scored` holds the items finished before the failure
        if self.cache is not None:
            for key, value in scored.items():
                self.cache.put(key, value)
        scores, details = [], []
        for key in keys:
            from_cache = key not in scored
            value = scored[key] if not from_cache else (self.cache.get(key) if self.cache is not None else None)
            if value is None:
                self.failures["backend_failed"] += 1
                scores.append(None)
                details.append({"mode": self.mode, "error": "backend_failed"})
                continue
            scores.append(value[0])
            details.append({**value[1], "cached": from_cache})
        result = RewardOutput(scores, details)
        if error is not None:
            raise PartialRewardError(f"{self.name}: {error}", result) from None
        return result

    def _score(self, items: list[tuple[Any, list]], out: dict) -> None:
        """Score (key, conversation) pairs into `out[key] = (score, details)`; batched backend calls."""
        if not items:
            return
        keys = [k for k, _ in items]
        conversations = [c for _, c in items]
        if self.mode in ("score_logit", "yesno_logit"):
            prefill = self.prompts.yesno_prefill if self.mode == "yesno_logit" else self.prompts.score_prefill
            self._read_probs(keys, conversations, [prefill] * len(keys), out, extra=[{}] * len(keys))
            return
        texts = self._call(lambda: self.backend.generate(conversations, self.max_new_tokens, self.temperature), keys, out)
        if self.mode == "score_logit_cot":
            prefills = [reasoning_prefill(t, self.prompts.score_prefill) for t in texts]
            self._read_probs(keys, conversations, prefills, out, extra=[{"reasoning": t} for t in texts])
            return
        self._score_texts(keys, texts, out)

    def _read_probs(self, keys, conversations, prefills, out, extra) -> None:
        candidates = ["Yes", "No"] if self.mode == "yesno_logit" else [str(d) for d in range(self.low, self.high + 1)]
        results = self._call(lambda: self.backend.next_token_probs(conversations, candidates, prefills), keys, out, extra)
        for key, result, more in zip(keys, results, extra):
            out[key] = self._from_probs(result, more)

    def _call(self, fn, keys, out, extra=None):
        """Run a backend call; on a partial failure, record the finished items, then re-raise."""
        try:
            return fn()
        except PartialBatchError as err:
            for i, (key, result) in enumerate(zip(keys, err.results)):
                if result is None:
                    continue
                if isinstance(result, ProbResult):
                    out[key] = self._from_probs(result, (extra or [{}] * len(keys))[i])
                elif self.mode != "score_logit_cot":  # a CoT text alone is not a score yet
                    self._score_texts([key], [result], out)
            raise

    def _score_texts(self, keys, texts, out) -> None:
        for key, text in zip(keys, texts):
            if self.mode == "yesno_sample":
                value, reason = parse_yesno(text)
            else:
                raw, reason = parse_score(text, self.low, self.high)
                value = None if raw is None else (raw - self.low) / (self.high - self.low)
            out[key] = self._result(value, reason, {"raw": text})

    def _from_probs(self, result: ProbResult, extra: dict) -> tuple[float | None, dict]:
        detail = {**extra, "probs": result.probs, "mass": result.mass}
        if not result.probs or result.mass < self.min_mass or result.mass <= 0.0:
            return self._result(None, "low_candidate_mass", detail)
        if self.mode == "yesno_logit":
            return self._result(result.probs["Yes"], None, detail)
        expected = sum(int(token) * p for token, p in result.probs.items())
        detail["expected"] = expected
        return self._result((expected - self.low) / (self.high - self.low), None, detail)

    def _result(self, value: float | None, reason: str | None, detail: dict) -> tuple[float | None, dict]:
        detail = {"mode": self.mode, **detail}
        if reason is not None:
            self.failures[reason] += 1
            detail["error"] = reason
        return value, detail


class MultiTurnJudge:
    """One judge query per trajectory scores every turn (MT-EditFlow's multi-turn IF evaluator).

    >>> from PIL import Image
    >>> class FakeVLM:
    ...     name = "fake"
    ...     def generate(self, conversations, max_new_tokens=128, temperature=0.0):
    ...         return ["<Thought> ok </Thought> <Turn1Score>5</Turn1Score> <Turn2Score>3</Turn2Score>"] * len(conversations)
    ...     def next_token_probs(self, *args, **kwargs):
    ...         raise NotImplementedError
    >>> image = Image.new("RGB", (32, 32))
    >>> judge = MultiTurnJudge(FakeVLM())
    >>> out = judge.score_turns([image], [[image, image]], [["add a cat", "make it red"]])
    >>> out.details[0]["turn_scores"], out.scores          # (score - 1) / 4 per turn, then the mean
    ([1.0, 0.5], [0.75])

    As a reward (`judge(sources, outputs, instructions, metas)`), the current turn is
    (instruction, output) and `meta["history"]` lists the earlier turns as
    ``[{"instruction": str, "image": PIL}, ...]`` in order. `scores` holds the aggregate over turns
    (`aggregate`: "mean", "min" or "last"; None if any turn could not be read) and
    `details[i]["turn_scores"]` the per-turn scores in [0, 1]. Sampling only: the scores are read
    from generated text (``thinking=True`` asks for a ``<Thought>`` analysis first).
    """

    def __init__(
        self,
        backend: Any,
        thinking: bool = True,
        prompts: MultiTurnPrompts | dict | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        aggregate: str = "mean",
        cache: bool = True,
        cache_size: int = 100_000,
        name: str = "mllm_multiturn",
    ) -> None:
        if aggregate not in ("mean", "min", "last"):
            raise ConfigError(f"multi-turn aggregate={aggregate!r}; choose 'mean', 'min' or 'last'")
        self.backend = build_backend(backend)
        self.thinking = thinking
        self.prompts = prompts if isinstance(prompts, MultiTurnPrompts) else MultiTurnPrompts(**(prompts or {}))
        self.max_new_tokens = max_new_tokens or (512 if thinking else 64)
        self.temperature = temperature
        self.aggregate = aggregate
        self.cache = ScoreCache(cache_size) if cache else None
        self.name = name
        self.failures: Counter[str] = Counter()

    def __call__(self, sources, outputs, instructions, metas=None) -> RewardOutput:
        metas = check_batch(sources, outputs, instructions, metas)
        turn_images, turn_instructions = [], []
        for output, instruction, meta in zip(outputs, instructions, metas):
            history = list(meta.get("history") or [])
            turn_images.append([h["image"] for h in history] + [output])
            turn_instructions.append([h["instruction"] for h in history] + [instruction])
        return self.score_turns(sources, turn_images, turn_instructions)

    def conversation(self, source: Image.Image, images: Sequence[Image.Image], instructions: Sequence[str]) -> list[dict]:
        content: list[dict[str, Any]] = [{"type": "text", "text": "Original image:"}, {"type": "image", "image": source}]
        for k, image in enumerate(images, 1):
            content += [{"type": "text", "text": f"Turn {k} result:"}, {"type": "image", "image": image}]
        content.append({"type": "text", "text": self.prompts.user_text(list(instructions), self.thinking)})
        messages: list[dict[str, Any]] = []
        if self.prompts.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.prompts.system}]})
        messages.append({"role": "user", "content": content})
        return messages

    def score_turns(self, sources, turn_images, turn_instructions) -> RewardOutput:
        """Score whole trajectories: per item a source image, its turn outputs and turn instructions."""
        if not (len(sources) == len(turn_images) == len(turn_instructions)):
            raise ConfigError("score_turns needs one source, one image list and one instruction list per trajectory")
        keys, pending = [], {}
        for src, images, instructions in zip(sources, turn_images, turn_instructions):
            if len(images) != len(instructions) or not images:
                raise ConfigError(f"a trajectory has {len(images)} images for {len(instructions)} instructions; give one per turn")
            src, images = load_image(src), [load_image(im) for im in images]
            key = (self.backend.name, self.thinking, self.max_new_tokens, self.temperature, image_digest(src),
                   tuple(image_digest(im) for im in images), tuple(instructions))
            keys.append(key)
            if (self.cache is None or key not in self.cache) and key not in pending:
                pending[key] = (self.conversation(src, images, instructions), len(images))
        scored: dict[Any, tuple[float | None, dict]] = {}
        error: PartialBatchError | None = None
        items = list(pending.items())
        try:
            texts = self.backend.generate([c for _, (c, _) in items], self.max_new_tokens, self.temperature)
        except PartialBatchError as err:
            texts, error = err.results, err
        for (key, (_, num_turns)), text in zip(items, texts):
            if text is not None:
                scored[key] = self._parse(text, num_turns)
                if self.cache is not None:
                    self.cache.put(key, scored[key])
        scores, details = [], []
        for key in keys:
            from_cache = key not in scored and self.cache is not None and key in self.cache
            value = scored.get(key) or (self.cache.get(key) if from_cache else None)
            if value is None:
                scores.append(None)
                details.append({"error": "backend_failed"})
                continue
            scores.append(value[0])
            details.append({**value[1], "cached": from_cache})
        result = RewardOutput(scores, details)
        if error is not None:
            raise PartialRewardError(f"{self.name}: {error}", result) from None
        return result

    def _parse(self, text: str, num_turns: int) -> tuple[float | None, dict]:
        low, high = self.prompts.score_min, self.prompts.score_max
        turn_scores: list[float | None] = []
        errors = []
        for k in range(1, num_turns + 1):
            found = re.findall(rf"<Turn{k}Score>\s*{_NUMBER}", text, flags=re.IGNORECASE)
            if not found:
                errors.append(f"turn {k}: unparseable")
                turn_scores.append(None)
                continue
            value = float(found[-1])
            if not low <= value <= high:
                errors.append(f"turn {k}: out_of_range")
                turn_scores.append(None)
                continue
            turn_scores.append((value - low) / (high - low))
        detail: dict[str, Any] = {"turn_scores": turn_scores, "raw": text}
        for err in errors:
            self.failures[err.split(": ")[1]] += 1
        if errors:
            detail["error"] = "; ".join(errors)
            return None, detail
        values = [s for s in turn_scores if s is not None]
        aggregate = {"mean": sum(values) / len(values), "min": min(values), "last": values[-1]}[self.aggregate]
        return aggregate, detail
