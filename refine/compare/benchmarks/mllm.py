"""Rubric judging for folder benchmarks: each benchmark's own questions and scales, on a rewards-layer VLM.

Example:
    >>> from PIL import Image
    >>> from refine.rewards.backends.base import ProbResult
    >>> from refine.compare.benchmarks.mllm import Criterion, JudgeSpec, RubricJudge
    >>> class FakeVLM:
    ...     name = "fake"
    ...     def next_token_probs(self, conversations, candidates, prefill=""):
    ...         if prefill.endswith("[[1"):
    ...             return [ProbResult({"0": 1.0, "]": 0.0}, 0.9)] * len(conversations)   # "1" was "10"
    ...         return [ProbResult({c: float(c == "1") for c in candidates}, 0.9)] * len(conversations)
    ...     def generate(self, conversations, max_new_tokens=64, temperature=0.0):
    ...         return ['"Score": [[7]]'] * len(conversations)
    >>> judge = RubricJudge(JudgeSpec(backend={"kind": "fake"}), backend=FakeVLM())
    >>> rate = Criterion("success", "Rate 0-10 how well {instruction} was done.", 0, 10)
    >>> image = Image.new("RGB", (8, 8))
    >>> [(value, detail["p10"]) for value, detail in judge.rate(rate, [[image, image]], ["add a cat"])]
    [(10.0, 1.0)]
    >>> RubricJudge(JudgeSpec(backend={"kind": "fake"}, mode="sample"), backend=FakeVLM()).rate(rate, [[image]], ["x"])[0][0]
    7.0

Why not `refine.rewards.mllm.MLLMJudge` directly: benchmarks score on their own scales, and
GEdit-Bench's is 0-10, where "10" is two tokens for most tokenizers while the reward judge reads
one digit. The reading here is the same score-logit expected value (Edit-R1's mode) over the
digits after the prefill ``"Score": [[``, with one extra query for scales reaching 10: the
probability of "1" is split into "1" and "10" by the next-token probability of "0" (vs "]")
after ``[[1``. Yes/no criteria read P("Yes") over {"Yes", "No"}. `mode: sample` instead generates
the answer greedily and parses it with the reward layer's parsers (None when unparseable).
Backends are the rewards layer's (`transformers`, `openai` for vLLM or a hosted model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from PIL import Image
from pydantic import Field

from refine.config import RefineConfig
from refine.errors import ArtifactError, ConfigError

SYSTEM_PROMPT = "You are a meticulous judge of image edits. Follow the response format exactly."
SCORE_PREFILL = '"Score": [['
YESNO_PREFILL = '"Judgement": [['


class JudgeSpec(RefineConfig):
    """The `judge` of a folder benchmark: which VLM (a rewards-layer backend spec) and how to read it."""

    backend: dict[str, Any] = Field(
        description="VLM backend spec: {kind: transformers, model: /path/to/Qwen2.5-VL-72B-Instruct, device_map: auto} "
        "(device_map splits a large judge across GPUs) or "
        "{kind: openai, base_url: http://127.0.0.1:8000/v1, model: NAME} (see refine.rewards.backends)."
    )
    mode: Literal["logit", "sample"] = Field(
        "logit", description="logit: expected value of the score digits (deterministic); sample: generate and parse."
    )
    max_new_tokens: int = Field(64, ge=1, description="Generation budget in sample mode.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature in sample mode (0: greedy).")
    min_mass: float = Field(0.0, ge=0.0, le=1.0, description="Logit mode: None when the score tokens held less probability.")
    system: str | None = Field(SYSTEM_PROMPT, description="System message of every judge query (null: none).")
    scheme: Literal["refine-judge", "official"] = Field(
        "refine-judge",
        description="refine-judge: our own prompts for the benchmark's criteria; official: the authors' prompts read "
        "from `prompts`, asked and parsed as their scripts do (see refine.compare.benchmarks.protocols).",
    )
    prompts: str | None = Field(
        None, description="scheme official: your checkout of the benchmark's repository (or its prompt file)."
    )
    repeats: int = Field(
        1, ge=1, description="Judge every case this many times; a case scores the mean, the report the spread over repeats."
    )


@dataclass(frozen=True)
class Criterion:
    """One question of a rubric: `prompt` (with `{instruction}`) answered on `low`..`high` or yes/no.

    The images of a query come first, in the order the benchmark passes them (it says which is
    which in the prompt).
    """

    name: str
    prompt: str
    low: int = 0
    high: int = 10
    kind: Literal["score", "yesno"] = "score"

    def text(self, instruction: str, fields: dict[str, str] | None = None) -> str:
        """The question for one item: `{instruction}` and any other `{name}` in `fields` filled in."""
        prompt = self.prompt
        for name, value in (fields or {}).items():
            prompt = prompt.replace("{" + name + "}", str(value))
        if self.kind == "yesno":
            fmt = 'Answer "Yes" or "No".\nResponse Format:\n"Judgement": [[Yes/No]]'
        else:
            fmt = f'Response Format:\n"Score": [[rating]] (an integer from {self.low} to {self.high})'
        return prompt.replace("{instruction}", instruction) + "\n" + fmt


def check_judge(spec: dict[str, Any] | JudgeSpec | None, benchmark: str) -> JudgeSpec:
    """Validate a judge spec before any compute: fields, backend kind and parameters, local model path."""
    from refine.compare.entries import _HUB_ID, resolve_path
    from refine.config import validate_config
    from refine.registry import registry, validate_params

    if spec is None:
        raise ConfigError(
            f"benchmark {benchmark!r} needs a judge: judge: {{backend: {{kind: transformers, model: /path/to/vlm}}}} "
            "or {backend: {kind: openai, base_url: http://host:8000/v1, model: NAME}}"
        )
    judge = spec if isinstance(spec, JudgeSpec) else validate_config(JudgeSpec, dict(spec), source=f"{benchmark} judge")
    backend = dict(judge.backend)
    if "kind" not in backend:
        raise ConfigError(f"{benchmark} judge backend {backend!r} has no 'kind' (transformers or openai)")
    target = registry.resolve("vlm_backend", backend["kind"])
    validate_params(target, {k: v for k, v in backend.items() if k != "kind"}, label=f"{benchmark} judge backend {backend['kind']!r}")
    model = backend.get("model")
    if backend["kind"] == "transformers" and isinstance(model, str) and resolve_path(model) is None and not _HUB_ID.match(model):
        raise ArtifactError(f"{benchmark} judge model {model!r} does not exist; point judge.backend.model to a VLM checkpoint folder")
    return judge


class RubricJudge:
    """Reads ratings of `Criterion`s from a VLM backend (built lazily from `spec.backend`)."""

    def __init__(self, spec: JudgeSpec, backend: Any | None = None) -> None:
        self.spec = spec
        self._backend = backend

    @property
    def backend(self):
        if self._backend is None:
            from refine.rewards.backends.base import build_backend

            backend = dict(self.spec.backend)
            if backend.get("kind") == "transformers" and isinstance(backend.get("model"), str):
                from refine.compare.entries import resolve_path

                found = resolve_path(backend["model"])
                backend["model"] = str(found) if found else backend["model"]
            self._backend = build_backend(backend)
        return self._backend

    def conversation(self, images: Sequence[Image.Image], text: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.spec.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.spec.system}]})
        content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": text}]
        messages.append({"role": "user", "content": content})
        return messages

    def rate(
        self,
        criterion: Criterion,
        images: Sequence[Sequence[Image.Image]],
        instructions: Sequence[str],
        fields: Sequence[dict[str, str]] | None = None,
    ) -> list[tuple[float | None, dict[str, Any]]]:
        """One (rating in the criterion's scale, or None; details) per query; yes/no gives P(Yes) in [0, 1].

        `fields` fills per-item placeholders of the prompt besides `{instruction}` (e.g. `{edit_type}`).
        """
        fields = fields or [{}] * len(instructions)
        conversations = [self.conversation(ims, criterion.text(text, f)) for ims, text, f in zip(images, instructions, fields)]
        if not conversations:
            return []
        if self.spec.mode == "sample":
            return self._sample(criterion, conversations)
        if criterion.kind == "yesno":
            results = self.backend.next_token_probs(conversations, ["Yes", "No"], YESNO_PREFILL)
            return [self._checked(r, r.probs.get("Yes"), {"probs": r.probs}) for r in results]
        digits = [str(d) for d in range(criterion.low, min(criterion.high, 9) + 1)]
        results = self.backend.next_token_probs(conversations, digits, SCORE_PREFILL)
        p10 = [0.0] * len(results)
        if criterion.high >= 10 and "1" in digits:
            # "1" may be the first token of "10": split its mass by what follows it
            follow = self.backend.next_token_probs(conversations, ["0", "]"], SCORE_PREFILL + "1")
            p10 = [f.probs.get("0", 0.0) if f.probs else 0.0 for f in follow]
        out = []
        for result, ten in zip(results, p10):
            probs = dict(result.probs)
            if probs:
                one = probs.pop("1", 0.0)
                probs["1"], probs["10"] = one * (1.0 - ten), one * ten
            value = sum(int(token) * p for token, p in probs.items()) if probs else None
            out.append(self._checked(result, value, {"probs": probs, "p10": ten}))
        return out

    def _checked(self, result, value: float | None, detail: dict[str, Any]) -> tuple[float | None, dict[str, Any]]:
        detail = {**detail, "mass": result.mass}
        if value is None or result.mass <= 0.0 or result.mass < self.spec.min_mass:
            return None, {**detail, "error": "low_candidate_mass"}
        return float(value), detail

    def ask(self, images: Sequence[Sequence[Image.Image]], texts: Sequence[str], text_first: bool = False) -> list[str]:
        """One generated answer per (images, full question), with no system message or format line added.

        The official protocols send their authors' prompts as they are (`refine.compare.benchmarks.protocols`),
        the question before the images where their scripts put it there (`text_first`).
        """
        conversations = []
        for ims, t in zip(images, texts):
            pictures, question = [{"type": "image", "image": i} for i in ims], [{"type": "text", "text": t}]
            conversations.append([{"role": "user", "content": question + pictures if text_first else pictures + question}])
        return list(self.backend.generate(conversations, self.spec.max_new_tokens, self.spec.temperature)) if conversations else []

    def ask_parts(self, queries: Sequence[Sequence[str | Image.Image]]) -> list[str]:
        """One generated answer per query given as its content parts in order (texts and images interleaved).

        For official protocols whose scripts label each image with a text before it (KRIS-Bench).
        """
        conversations = [
            [{"role": "user", "content": [
                {"type": "text", "text": part} if isinstance(part, str) else {"type": "image", "image": part} for part in parts
            ]}]
            for parts in queries
        ]
        return list(self.backend.generate(conversations, self.spec.max_new_tokens, self.spec.temperature)) if conversations else []

    def _sample(self, criterion: Criterion, conversations) -> list[tuple[float | None, dict[str, Any]]]:
        from refine.rewards.mllm import parse_score, parse_yesno

        texts = self.backend.generate(conversations, self.spec.max_new_tokens, self.spec.temperature)
        out = []
        for text in texts:
            value, reason = parse_yesno(text) if criterion.kind == "yesno" else parse_score(text, criterion.low, criterion.high)
            out.append((value, {"raw": text, **({"error": reason} if reason else {})}))
        return out


def judge_key(name: str, version: int, spec: JudgeSpec, criteria: Sequence[Criterion]) -> str:
    """Identity of a benchmark's scoring: scheme version, rubric texts, judge settings and model files."""
    from refine.compare.benchmarks.base import stable_hash
    from refine.compare.entries import fingerprint, resolve_path

    model = spec.backend.get("model")
    found = resolve_path(model) if isinstance(model, str) else None
    data = {
        "scheme": f"{name}-v{version}",
        "criteria": [(c.name, c.prompt, c.low, c.high, c.kind) for c in criteria],
        "judge": spec.model_dump(),
        "model_files": fingerprint(found) if found else None,
    }
    return f"{name}-{spec.mode}-{stable_hash(data)}"
