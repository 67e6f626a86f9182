"""Think-while-Edit: wrap any Editor in the critique -> refine -> re-edit loop of EditThinker.

Example:
    >>> from PIL import Image
    >>> from refine.editor import compose
    >>> from refine.types import EditRequest, EditResult
    >>> from refine.thinker.loop import ThinkWhileEdit
    >>> from refine.thinker.protocol import Thought
    >>> class Literal:                                    # an editor that only obeys "paint it red"
    ...     def edit(self, requests):
    ...         return [EditResult(Image.new("RGB", (8, 8), "red" if r.instruction == "paint it red" else "gray"),
    ...                            r.instruction) for r in requests]
    >>> class Critic:                                     # a thinker that knows what the editor needs
    ...     name = "critic"
    ...     def think(self, requests):
    ...         red = [r.edited.getpixel((0, 0)) == (255, 0, 0) for r in requests]
    ...         return [Thought("paint it red", scores={"semantic": 10.0 if ok else 1.0}) for ok in red]
    >>> editor = compose(Literal(), ThinkWhileEdit(Critic(), max_turns=5))
    >>> result = editor.edit([EditRequest(Image.new("RGB", (8, 8)), "make it look like a tomato")])[0]
    >>> result.instruction, result.meta["thinker"]["stop_reason"], result.meta["thinker"]["editor_calls"]
    ('paint it red', 'score_threshold', 2)

The loop (paper Sec. 3.1, Eq. 1-2), for a batch of requests:

1. (optional, `think_before_edit`) the thinker rewrites each instruction before any edit;
2. turn t: every unfinished request is edited *together* in one `editor.edit` call, from the
   source image (the paper) or from the previous edit (`edit_from="current"`);
3. every unfinished request is critiqued *together* in one `thinker.think` call, which scores
   the new edit and proposes T_{t+1};
4. a request stops on the expert's stop flag, on a semantic score >= `score_threshold`, at
   `max_turns`, on an unchanged instruction (when re-running it would reproduce the same edit:
   same source, same seed), on a refined instruction the thinker is not sure of (`min_confidence`,
   not in the paper: "low_confidence"), or when the thinker's output is unusable
   ("thinker_failed"); the others go back to 2.

Each request returns the best-scored edit (or the last, `select="last"`), with every turn in
`EditResult.steps` and a summary in `EditResult.meta["thinker"]` (stop reason, chosen turn,
number of editor and thinker calls). Observers (`on_turn`, `on_finish`) see each turn as it
happens: the CLI prints them, `refine.thinker.traces.TraceWriter` writes them as training data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

from PIL import Image
from pydantic import Field, model_validator

from refine.config import RefineConfig
from refine.editor import Editor
from refine.errors import BackendError, ConfigError
from refine.thinker.protocol import Thinker, ThinkRequest, Thought
from refine.types import EditRequest, EditResult, Step

StopReason = Literal["thinker_stop", "score_threshold", "max_turns", "unchanged_instruction", "low_confidence", "thinker_failed"]
STOP_REASONS: tuple[str, ...] = ("thinker_stop", "score_threshold", "max_turns", "unchanged_instruction", "low_confidence",
                                 "thinker_failed")


class LoopConfig(RefineConfig):
    """Settings of the Think-while-Edit loop (the thinker itself is configured separately).

    Example:
        >>> LoopConfig(max_turns=3).max_turns
        3
        >>> from refine.config import validate_config
        >>> validate_config(LoopConfig, {"select": "best", "critique_last_turn": False})
        Traceback (most recent call last):
        ...
        refine.errors.ConfigError: select='best' ranks every edit by the thinker's score, so the last edit must be critiqued too: set critique_last_turn=true or select='last'
    """

    max_turns: int = Field(5, ge=1, description="Maximum number of edits per request (the paper uses N=5).")
    score_threshold: float | None = Field(
        8.0, ge=0, le=10, description="Stop once the thinker's semantic score (0-10) of the current edit reaches this; null disables."
    )
    quality_threshold: float | None = Field(
        None, ge=0, le=10, description="If set, the score stop also requires a quality score (0-10) at least this high."
    )
    select: Literal["best", "last"] = Field(
        "best", description="Return the edit with the highest (semantic, quality) score, or the last one."
    )
    think_before_edit: bool = Field(
        False, description="Let the thinker rewrite the instruction before the first edit (the paper's ablation)."
    )
    early_stop: bool = Field(
        True,
        description="False runs exactly max_turns edits (ignores the stop flag, threshold and unchanged instructions); for ablations.",
    )
    stop_on_unchanged: bool = Field(
        True,
        description="Stop when the thinker proposes the instruction that produced the current edit and the next edit would repeat "
        "it exactly (same source, same seed); with vary_seed or edit_from='current' a repeated instruction is a new attempt.",
    )
    thinker_retries: int = Field(
        1, ge=0, description="Times an unusable thinker output is asked again (same turn, batched) before stopping."
    )
    vary_seed: bool = Field(
        False, description="Turn t uses seed + t - 1 instead of the request's seed (re-samples as well as re-instructs)."
    )
    edit_from: Literal["source", "current"] = Field(
        "source", description="Re-edit the source image (the paper) or the previous turn's edit."
    )
    critique_last_turn: bool = Field(
        True, description="Ask the thinker to score the edit of the last turn too (needed by select='best')."
    )
    min_confidence: float | None = Field(
        None, ge=0, le=1,
        description="Use a refined instruction only when the thinker's confidence in it (Thought.confidence, e.g. "
        "VLMThinker(confidence=True)) reaches this; otherwise keep the current instruction: before the first edit the "
        "original is edited, after an edit the request stops ('low_confidence'). Not in the paper; null disables.",
    )

    @model_validator(mode="after")
    def _check(self) -> "LoopConfig":
        if self.select == "best" and not self.critique_last_turn:
            raise ValueError(
                "select='best' ranks every edit by the thinker's score, so the last edit must be critiqued too: "
                "set critique_last_turn=true or select='last'"
            )
        return self


@dataclass
class TurnEvent:
    """One turn of one request, as observers see it.

    `turn` 0 is the think-before-edit rewrite (no image); `thought` is the critique of `image`
    (None when it was not critiqued); `stop_reason` is set on the request's last turn.
    """

    index: int
    request: EditRequest
    turn: int
    instruction: str | None
    image: Image.Image | None
    seed: int | None
    thought: Thought | None
    stop_reason: str | None = None
    edit_seconds: float = 0.0
    think_seconds: float = 0.0


@dataclass
class _Turn:
    instruction: str
    image: Image.Image
    result: EditResult
    seed: int | None
    edit_seconds: float
    thought: Thought | None = None


@dataclass
class _State:
    index: int
    request: EditRequest
    instruction: str  # the instruction the next edit will execute
    turns: list[_Turn] = field(default_factory=list)
    pre_thought: Thought | None = None
    stop_reason: str | None = None
    thinker_calls: int = 0


class ThinkWhileEditEditor:
    """The refined editor returned by `ThinkWhileEdit(...)(editor)`; see the module docstring."""

    def __init__(self, editor: Editor, thinker: Thinker, config: LoopConfig, observers: Sequence[Any] = (), name: str = "thinker"):
        self.editor = editor
        self.thinker = thinker
        self.config = config
        self.observers = list(observers)
        self.name = name

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        cfg = self.config
        states = [_State(i, r, r.instruction) for i, r in enumerate(requests)]
        if not states:
            return []
        if cfg.think_before_edit:
            self._think_before_edit(states)
        for turn in range(1, cfg.max_turns + 1):
            active = [s for s in states if s.stop_reason is None]
            if not active:
                break
            self._edit_turn(active, turn)
            last = turn == cfg.max_turns
            critiqued = active if (not last or cfg.critique_last_turn) else []
            if critiqued:
                self._critique_turn(critiqued, turn)
            for state in active:
                state.stop_reason = self._stop_reason(state, turn)
                if state.stop_reason is None and state.turns[-1].thought is not None:
                    thought = state.turns[-1].thought
                    if self._confident(thought):
                        state.instruction = thought.instruction or state.instruction
                self._emit_turn(state, state.turns[-1], turn)
        results = [self._finish(state) for state in states]
        for state, result in zip(states, results):
            for observer in self.observers:
                if hasattr(observer, "on_finish"):
                    observer.on_finish(state.index, state.request, result)
        return results

    # -- the three phases of a turn -------------------------------------------------------

    def _think_before_edit(self, states: list[_State]) -> None:
        asks = [ThinkRequest(s.request.image, None, s.request.instruction, s.request.instruction, 0, s.request.meta) for s in states]
        for state, thought in zip(states, self._think(states, asks)):
            state.pre_thought = thought
            if thought.ok and thought.instruction and self._confident(thought):
                state.instruction = thought.instruction
            event = TurnEvent(state.index, state.request, 0, None, None, state.request.seed, thought, think_seconds=thought.seconds)
            self._notify(event)

    def _edit_turn(self, active: list[_State], turn: int) -> None:
        edit_requests = []
        for state in active:
            base = state.request.image if self.config.edit_from == "source" or not state.turns else state.turns[-1].image
            seed = state.request.seed
            if self.config.vary_seed and seed is not None:
                seed = seed + turn - 1
            edit_requests.append(EditRequest(base, state.instruction, seed=seed, meta=dict(state.request.meta)))
        start = time.perf_counter()
        results = self.editor.edit(edit_requests)
        share = (time.perf_counter() - start) / len(active)
        if len(results) != len(edit_requests):
            raise BackendError(f"editor {type(self.editor).__name__} returned {len(results)} results for {len(edit_requests)} requests")
        for state, request, result in zip(active, edit_requests, results):
            state.turns.append(_Turn(request.instruction, result.image, result, request.seed, share))

    def _critique_turn(self, states: list[_State], turn: int) -> None:
        asks = [
            ThinkRequest(
                s.request.image, s.turns[-1].image, s.request.instruction, s.turns[-1].instruction, turn, s.request.meta,
                edits_from=self.config.edit_from,
            )
            for s in states
        ]
        for state, thought in zip(states, self._think(states, asks)):
            state.turns[-1].thought = thought

    def _think(self, states: list[_State], asks: list[ThinkRequest]) -> list[Thought]:
        """One batched thinker call, then batched retries of the unusable answers."""
        thoughts: list[Thought | None] = [None] * len(asks)
        pending = list(range(len(asks)))
        for _attempt in range(self.config.thinker_retries + 1):
            start = time.perf_counter()
            batch = self.thinker.think([asks[i] for i in pending])
            share = (time.perf_counter() - start) / len(pending)
            if len(batch) != len(pending):
                raise BackendError(f"thinker {self.thinker.name!r} returned {len(batch)} thoughts for {len(pending)} requests")
            for i, thought in zip(pending, batch):
                states[i].thinker_calls += 1
                # a copy: a thinker may hand out one shared Thought object for several requests
                thoughts[i] = replace(thought, seconds=share + (thoughts[i].seconds if thoughts[i] is not None else 0.0))
            pending = [i for i in pending if not thoughts[i].ok]
            if not pending:
                break
        return thoughts  # type: ignore[return-value]

    # -- decisions ---------------------------------------------------------------------------

    def _stop_reason(self, state: _State, turn: int) -> str | None:
        cfg = self.config
        thought = state.turns[-1].thought
        usable = thought is not None and thought.ok
        if usable and cfg.early_stop and thought.stop is True:
            return "thinker_stop"
        if usable and cfg.early_stop and self._meets_threshold(thought.scores):
            return "score_threshold"
        if turn == cfg.max_turns:
            return "max_turns"
        if not usable:
            return "thinker_failed"
        if cfg.early_stop and not self._confident(thought):
            return "low_confidence"  # the current edit is what the thinker would re-run
        repeats_exactly = cfg.edit_from == "source" and not cfg.vary_seed
        if cfg.early_stop and cfg.stop_on_unchanged and repeats_exactly and thought.instruction is not None:
            if _normalize(thought.instruction) == _normalize(state.turns[-1].instruction):
                return "unchanged_instruction"
        return None

    def _confident(self, thought: Thought) -> bool:
        """Whether the loop may use the thought's instruction under `min_confidence`."""
        if self.config.min_confidence is None:
            return True
        if thought.confidence is None:
            raise ConfigError(
                f"min_confidence={self.config.min_confidence} needs a thinker that reports its confidence; thinker "
                f"{self.thinker.name!r} gave none (use VLMThinker(confidence=True), or min_confidence=null)"
            )
        return thought.confidence >= self.config.min_confidence

    def _meets_threshold(self, scores: dict[str, float]) -> bool:
        cfg = self.config
        if cfg.score_threshold is None or scores.get("semantic") is None:
            return False
        if scores["semantic"] < cfg.score_threshold:
            return False
        return cfg.quality_threshold is None or scores.get("quality", -math.inf) >= cfg.quality_threshold

    def _chosen(self, state: _State) -> int:
        if self.config.select == "last":
            return len(state.turns) - 1
        return best_edit_index([t.thought.scores if t.thought is not None and t.thought.ok else {} for t in state.turns])

    # -- results and events -----------------------------------------------------------------

    def _finish(self, state: _State) -> EditResult:
        chosen = self._chosen(state)
        steps: list[Step] = []
        if state.pre_thought is not None:
            steps.append(self._think_step(state.pre_thought, turn=0))
        for number, turn in enumerate(state.turns, start=1):
            scores = dict(turn.thought.scores) if turn.thought is not None and turn.thought.ok else {}
            steps.append(
                Step(
                    kind="edit",
                    source=self.name,
                    instruction=turn.instruction,
                    scores=scores,
                    image=turn.image,
                    seconds=turn.edit_seconds,
                    info={"turn": number, "seed": turn.seed, "editor_steps": [s.to_json() for s in turn.result.steps]},
                )
            )
            if turn.thought is not None:
                steps.append(self._think_step(turn.thought, turn=number))
        steps[-1].info["stop_reason"] = state.stop_reason
        picked = state.turns[chosen]
        summary = {
            "stop_reason": state.stop_reason,
            "turns": len(state.turns),
            "chosen_turn": chosen + 1,
            "editor_calls": len(state.turns),
            "thinker_calls": state.thinker_calls,
            "thinker": self.thinker.name,
            "scores": [dict(t.thought.scores) if t.thought is not None else {} for t in state.turns],
            "confidences": [t.thought.confidence if t.thought is not None else None for t in state.turns],
            "instructions": [t.instruction for t in state.turns],
        }
        meta = {**picked.result.meta, "thinker": summary}
        return EditResult(image=picked.image, instruction=picked.instruction, steps=steps, meta=meta)

    def _think_step(self, thought: Thought, turn: int) -> Step:
        info = {"turn": turn, "stop": thought.stop, "error": thought.error, "repairs": list(thought.repairs), "raw": thought.raw,
                "confidence": thought.confidence}
        return Step(
            kind="think",
            source=self.thinker.name,
            instruction=thought.instruction,
            scores=dict(thought.scores),
            reasoning=thought.reasoning or None,
            seconds=thought.seconds,
            info=info,
        )

    def _emit_turn(self, state: _State, turn: _Turn, number: int) -> None:
        thought = turn.thought
        self._notify(
            TurnEvent(
                state.index,
                state.request,
                number,
                turn.instruction,
                turn.image,
                turn.seed,
                thought,
                stop_reason=state.stop_reason,
                edit_seconds=turn.edit_seconds,
                think_seconds=thought.seconds if thought is not None else 0.0,
            )
        )

    def _notify(self, event: TurnEvent) -> None:
        for observer in self.observers:
            if hasattr(observer, "on_turn"):
                observer.on_turn(event)


class ThinkWhileEdit:
    """The Think-while-Edit refiner: `ThinkWhileEdit(thinker, **loop_settings)(editor)`.

    Black-box: it only calls `editor.edit`, so it composes after any editor or refiner
    (`refine.editor.compose(editor, ..., ThinkWhileEdit(thinker))`). Settings are the fields of
    `LoopConfig`, given as a config or as keyword arguments. `observers` receive `on_turn(event)`
    and `on_finish(index, request, result)` calls (e.g. a `TraceWriter`).

    Example:
        >>> from refine.thinker.loop import ThinkWhileEdit
        >>> refiner = ThinkWhileEdit(thinker=None, max_turns=2)
        Traceback (most recent call last):
        ...
        refine.errors.ConfigError: ThinkWhileEdit needs a Thinker (an object with .name and .think(requests)), got NoneType
    """

    name = "thinker"
    needs_white_box = False
    returns_white_box = False

    def __init__(self, thinker: Thinker, config: LoopConfig | None = None, *, observers: Sequence[Any] = (), **settings: Any):
        if not isinstance(thinker, Thinker):
            raise ConfigError(
                f"ThinkWhileEdit needs a Thinker (an object with .name and .think(requests)), got {type(thinker).__name__}"
            )
        if config is not None and settings:
            raise ConfigError(f"pass either a LoopConfig or keyword settings to ThinkWhileEdit, not both (got {sorted(settings)})")
        if config is None:
            from refine.config import validate_config

            config = validate_config(LoopConfig, settings)
        self.thinker = thinker
        self.config = config
        self.observers = list(observers)

    def __call__(self, editor: Editor) -> ThinkWhileEditEditor:
        return ThinkWhileEditEditor(editor, self.thinker, self.config, self.observers, name=self.name)


def best_edit_index(scores: Sequence[dict[str, float]]) -> int:
    """`select="best"`: the index of the edit with the highest (semantic, quality) among its thinker's scores.

    Ties go to the earliest edit (fewest changes); an edit without a semantic score never wins, and
    with no score at all the last edit is the loop's answer. Benchmarks replay the rule over the
    first k edits of a trace (`[step.scores for step in edits[:k]]`) to read a turn curve.

    >>> best_edit_index([{"semantic": 6.0}, {"semantic": 8.0, "quality": 5.0}, {"semantic": 8.0, "quality": 9.0}, {}])
    2
    >>> best_edit_index([{}, {}])
    1
    """
    keys = [(s["semantic"], s.get("quality", -math.inf)) if s and s.get("semantic") is not None else None for s in scores]
    if all(key is None for key in keys):
        return len(keys) - 1
    return keys.index(max(key for key in keys if key is not None))


def _normalize(instruction: str) -> str:
    return " ".join(instruction.casefold().split()).rstrip(".!")
