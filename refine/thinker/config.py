"""`ThinkerConfig`: which thinker, its prompts and the loop settings; `build_thinker_refiner` builds it.

Example:
    >>> from refine.thinker.config import ThinkerConfig, build_thinker_refiner
    >>> config = ThinkerConfig(thinker="expert", max_turns=3)
    >>> config.thinker_kind(), config.loop_config().max_turns
    ('expert', 3)
    >>> refiner = build_thinker_refiner(thinker="expert", max_turns=3)       # the registry's "thinker" refiner
    >>> refiner.name, refiner.thinker.name, refiner.config.max_turns
    ('thinker', 'shape-expert', 3)
    >>> from refine.config import validate_config
    >>> validate_config(ThinkerConfig, {"thinker": "gpt"})
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: thinker: thinker 'gpt' is not a thinker spec: use 'expert' (ShapeEdit's programmatic expert), 'vlm:SPEC' (a VLM backend, e.g. 'vlm:/models/EditThinker-8B' or 'vlm:http://127.0.0.1:8000/v1#EditThinker-8B') or an import path 'pkg.module:factory' (got 'gpt')

Thinker specs:

* `expert`: `refine.thinker.shape_expert.ShapeExpertThinker`, ShapeEdit's oracle (needs
  `meta["shapes_case"]` on every request).
* `vlm:SPEC`: `refine.thinker.vlm.VLMThinker` on a VLM backend of the rewards layer; SPEC is a
  local checkpoint folder (transformers) or an OpenAI-compatible endpoint URL, optionally followed
  by `#model-name` (vLLM-served EditThinker-8B, GPT-4.1...). `prompt` picks the paper's thinker
  prompt (scores) or the expert prompt (stop flag); the `*_prompt` fields override the texts.
* `pkg.module:factory`: any callable returning a `Thinker` (called without arguments).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from refine.config import validate_config
from refine.errors import ConfigError
from refine.registry import import_object
from refine.rewards.base import ScoreCache
from refine.rewards.mllm import MODES, MLLMJudge
from refine.thinker.judged import JUDGE_AGAINST, JudgedThinker
from refine.thinker.loop import LoopConfig, ThinkWhileEdit
from refine.thinker.prompts import PROMPT_NAMES, get_prompts
from refine.thinker.protocol import Thinker
from refine.thinker.shape_expert import ShapeExpertThinker
from refine.thinker.vlm import VLMThinker


class ThinkerConfig(LoopConfig):
    """The `thinker` refiner: a thinker spec, its prompts and generation, and the loop settings."""

    thinker: str = Field("expert", description="'expert', 'vlm:SPEC' (checkpoint folder or http URL[#model]) or 'pkg.module:factory'.")
    prompt: Literal[PROMPT_NAMES] = Field(
        "thinker", description="VLM prompt set: the paper's EditThinker prompt (scores), its expert prompt (stop flag), or "
        "shapes-rewrite[-think|-grid|-locate|-scan|-scan-read|-lookup] (a rewrite-only model answering the ShapeEdit VLM's rewrite question: think before one edit only, or the whole loop with judge_mode)."
    )
    expert_critique: Literal["full", "brief"] = Field(
        "full", description="ShapeEdit's expert: its reasoning is the judge's whole breakdown (full) or the request made "
        "concrete plus at most three failed checks (brief: what a small thinker can learn to write; see shape_expert).")
    system_prompt: str | None = Field(None, description="Replaces the VLM system prompt.")
    critique_prompt: str | None = Field(
        None, description="Replaces the critique template; must contain {instruction}, may contain {previous_instruction}."
    )
    rewrite_prompt: str | None = Field(None, description="Replaces the think-before-edit template; must contain {instruction}.")
    max_new_tokens: int = Field(512, ge=1, description="VLM generation budget per thinker call.")
    temperature: float = Field(0.0, ge=0, description="VLM sampling temperature (0: greedy).")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key sent to an http(s) VLM endpoint (null: none)."
    )
    trace_dir: str | None = Field(None, description="If set, write the loop's trace (JSONL + PNG) to this folder.")
    confidence_over: Literal["answer", "reply"] = Field(
        "answer", description="vlm with min_confidence: the confidence is the smallest token probability of the refined "
        "instruction (answer) or of the whole reply, reasoning included (reply: for thinkers that look things up in "
        "<think> before they answer, e.g. shapes-rewrite-find)."
    )
    image_size: tuple[int, int] | None = Field(
        None, description="vlm: pad-resize both images to [W, H] before sending, as the thinker was trained (GRPO's image_size)."
    )
    judge_mode: Literal[MODES] | None = Field(
        None, description="vlm: score each edit with the rewards layer's MLLM judge in this mode (score_logit_cot, ...) and "
        "propose the prompt set's rewrite of the original instruction as the next one (`refine.thinker.judged`); a "
        "rewrite-only model that also judges then runs the whole think-while-edit loop. null: the thinker's own critique."
    )
    judge_against: Literal[JUDGE_AGAINST] = Field(
        "original", description="judge_mode: score each edit against the user's instruction (original, the paper) or against "
        "the thinker's own rewrite of it (rewrite: a small judge checks a direct instruction better than it resolves one)."
    )
    judge_model: str | None = Field(
        None, description="judge_mode: the judge's model (checkpoint folder or http URL[#model]); null: the thinker's own model."
    )

    @field_validator("thinker")
    @classmethod
    def _check_thinker(cls, value: str) -> str:
        value = value.strip()
        if value == "expert" or (value.startswith("vlm:") and len(value) > 4) or (":" in value and not value.startswith("vlm:")):
            return value
        raise ValueError(
            f"thinker {value!r} is not a thinker spec: use 'expert' (ShapeEdit's programmatic expert), 'vlm:SPEC' "
            "(a VLM backend, e.g. 'vlm:/models/EditThinker-8B' or 'vlm:http://127.0.0.1:8000/v1#EditThinker-8B') "
            "or an import path 'pkg.module:factory'"
        )

    @model_validator(mode="after")
    def _check_confidence(self) -> "ThinkerConfig":
        if self.min_confidence is not None and self.thinker_kind() == "expert":
            raise ValueError("min_confidence gates on a model's confidence in its rewrite; ShapeEdit's expert has none (use a vlm: thinker)")
        return self

    @model_validator(mode="after")
    def _check_judge(self) -> "ThinkerConfig":
        if self.thinker_kind() != "vlm" and (self.judge_mode is not None or self.judge_model is not None):
            raise ValueError("judge_mode and judge_model put an MLLM judge beside a vlm: thinker's rewrite; use thinker='vlm:SPEC'")
        if self.judge_against != "original" and self.judge_mode is None:
            raise ValueError("judge_against says what judge_mode's judge scores each edit against: set judge_mode too")
        if self.judge_model is not None and self.judge_mode is None:
            raise ValueError("judge_model is the model of judge_mode's judge: set judge_mode too (e.g. score_logit_cot)")
        return self

    @model_validator(mode="after")
    def _check_rewrite_only(self) -> "ThinkerConfig":
        if self.thinker_kind() == "vlm" and get_prompts(self.prompt).rewrite_only and self.judge_mode is None:
            loop = (self.think_before_edit, self.max_turns, self.select, self.critique_last_turn)
            if loop != (True, 1, "last", False):
                raise ValueError(
                    f"prompt={self.prompt!r} only rewrites the instruction before the first edit (no critique, no score): "
                    "set think_before_edit=true, max_turns=1, select='last', critique_last_turn=false, or give it a judge "
                    "(judge_mode) for the whole loop"
                )
        return self

    def thinker_kind(self) -> str:
        """'expert', 'vlm' or 'import'."""
        if self.thinker == "expert":
            return "expert"
        return "vlm" if self.thinker.startswith("vlm:") else "import"

    def loop_config(self) -> LoopConfig:
        """The loop settings alone."""
        return LoopConfig(**{name: getattr(self, name) for name in LoopConfig.model_fields})


def build_thinker(config: ThinkerConfig):
    """The `Thinker` a config names (a checkpoint loads here).

    With `judge_mode`, a `JudgedThinker` (the rewrite of `prompt` plus an MLLM judge's score), shared within the
    process by every config that differs only in its loop settings (see `_SHARED_JUDGED`).
    """
    kind = config.thinker_kind()
    if kind == "expert":
        return ShapeExpertThinker(critique=config.expert_critique)
    if kind == "vlm" and config.judge_mode is not None:
        return _shared_judged_thinker(config)
    if kind == "vlm":
        prompts = get_prompts(config.prompt).with_overrides(config.system_prompt, config.critique_prompt, config.rewrite_prompt)
        return VLMThinker.from_spec(
            config.thinker.removeprefix("vlm:"),
            api_key_env=config.api_key_env,
            prompts=prompts,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            image_size=config.image_size,
            confidence=config.min_confidence is not None,  # the gate reads Thought.confidence
            confidence_over=config.confidence_over,
        )
    thinker = import_object(config.thinker)()
    if not isinstance(thinker, Thinker):
        raise ConfigError(f"{config.thinker!r} returned {type(thinker).__name__}, not a Thinker (needs .name and .think(requests))")
    return thinker


# Judged thinkers already built in this process, by the settings that make them (not the loop's). The loop of
# `+thinker`, its `select: last` row and the best-of-k control picked by the same score edit the same images in one
# `refine compare` run; sharing one thinker shares its judge's score cache and its rewrites, so the companion rows
# cost only the edits they add (and one model is loaded, not three).
_SHARED_JUDGED = ScoreCache(max_items=2)  # the project's bounded LRU map


def _shared_judged_thinker(config: ThinkerConfig) -> JudgedThinker:
    key = config.model_dump_json(exclude=set(LoopConfig.model_fields) | {"trace_dir"})
    if key in _SHARED_JUDGED:
        return _SHARED_JUDGED.get(key)
    rewriter = build_thinker(config.model_copy(update={"judge_mode": None}))
    backend = rewriter.backend if config.judge_model is None else VLMThinker.from_spec(
        config.judge_model, api_key_env=config.api_key_env).backend  # one model loaded when the thinker judges itself
    thinker = JudgedThinker(rewriter, MLLMJudge(backend, mode=config.judge_mode), judge_against=config.judge_against)
    _SHARED_JUDGED.put(key, thinker)
    return thinker


def build_thinker_refiner(thinker: str = "expert", max_turns: int = 5, **settings: Any) -> ThinkWhileEdit:
    """The registry's `thinker` refiner: `ThinkWhileEdit` around the thinker `thinker` names.

    `settings` are the other `ThinkerConfig` fields (typos are `ConfigError`s naming the closest
    field). With `trace_dir`, a `TraceWriter` observes the loop.
    """
    config = validate_config(ThinkerConfig, {"thinker": thinker, "max_turns": max_turns, **settings})
    return refiner_from_config(config)


def thinker_reads_ground_truth(thinker: str = "expert", **_settings: Any) -> bool:
    """Whether the thinker a spec names reads ground truth, from its class (nothing is built or loaded).

    The `thinker` refiner is an oracle exactly when its thinker is (`refine.oracle`): the loop
    itself only sees the thinker's scores and rewrites.

    >>> thinker_reads_ground_truth("expert"), thinker_reads_ground_truth("vlm:http://127.0.0.1:8000/v1")
    (True, False)
    """
    config = validate_config(ThinkerConfig, {"thinker": thinker})
    kind = config.thinker_kind()
    if kind == "expert":
        target = ShapeExpertThinker
    elif kind == "vlm":
        target = VLMThinker
    else:
        target = import_object(config.thinker)
    return getattr(target, "reads_ground_truth", False) is True


build_thinker_refiner.reads_ground_truth = thinker_reads_ground_truth  # read by refine.oracle


def refiner_from_config(config: ThinkerConfig, observers: tuple = ()) -> ThinkWhileEdit:
    """`ThinkWhileEdit` for a validated `ThinkerConfig`, plus `observers` (e.g. a CLI printer)."""
    observers = list(observers)
    if config.trace_dir:
        from refine.thinker.traces import TraceWriter

        observers.append(TraceWriter(config.trace_dir))
    return ThinkWhileEdit(build_thinker(config), config.loop_config(), observers=observers)
