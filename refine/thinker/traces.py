"""Loop traces as training data: one JSONL record per thinker turn, images as PNG files beside it.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from refine.editor import compose
    >>> from refine.types import EditRequest, EditResult
    >>> from refine.thinker.loop import ThinkWhileEdit
    >>> from refine.thinker.protocol import Thought
    >>> from refine.thinker.traces import TraceWriter, read_turns, read_requests
    >>> class Echo:
    ...     def edit(self, requests):
    ...         return [EditResult(r.image, r.instruction) for r in requests]
    >>> class Rewriter:
    ...     name = "rewriter"
    ...     def think(self, requests):
    ...         return [Thought(f"{r.instruction}, take {r.turn + 1}", "why", {"semantic": 3.0 * r.turn}) for r in requests]
    >>> root = tempfile.mkdtemp()
    >>> with TraceWriter(root) as trace:
    ...     _ = compose(Echo(), ThinkWhileEdit(Rewriter(), max_turns=3, observers=[trace])).edit(
    ...         [EditRequest(Image.new("RGB", (8, 8)), "add a hat", seed=1)])
    >>> [(r.turn, r.previous_instruction, r.output["instruction"]) for r in read_turns(root)]
    [(1, 'add a hat', 'add a hat, take 2'), (2, 'add a hat, take 2', 'add a hat, take 3'), (3, 'add a hat, take 3', 'add a hat, take 4')]
    >>> read_requests(root)[0]["stop_reason"], read_requests(root)[0]["chosen_turn"]
    ('score_threshold', 3)

Layout (version 1), read by the SFT/RL data pipelines:

    <root>/manifest.json          {"format": "refine.thinker.trace", "version": 1}
    <root>/turns.jsonl            one `TurnRecord` per thinker call (see its fields)
    <root>/requests.jsonl         one record per request: every turn's instruction, image and
                                  scores, the chosen turn, the stop reason (trajectory filters)
    <root>/images/<request_id>/source.png, turn_<t>.png

A turn record is exactly one EditThinker sample (paper Sec. 4.3): inputs (I_src, I_edit^t, T_s,
T_t) and outputs (R, S, T_{t+1}); `text` is the output serialized in the canonical format (the SFT
target); `next_image` is the edit that T_{t+1} produced, so an RL pipeline can compute the
differential edit reward E(t+1) - E(t) of Eq. (4). Paths are relative to `<root>`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refine.errors import ArtifactError
from refine.thinker.format import ThinkerOutput, format_thinker_output
from refine.thinker.loop import TurnEvent
from refine.types import EditRequest, EditResult

TRACE_FORMAT = "refine.thinker.trace"
TRACE_VERSION = 1


@dataclass
class TurnRecord:
    """One thinker call of one request, as stored in `turns.jsonl`.

    Attributes:
        request_id: the request's id within the trace ("000003").
        turn: the index t of the critiqued edit (0: a think-before-edit rewrite, no edit yet).
        source_image: I_src; edited_image: I_edit^t (None at turn 0); paths relative to the root.
        instruction: the original instruction T_s; previous_instruction: T_t, which produced the edit.
        output: {"reasoning", "semantic", "quality", "stop", "instruction"} (T_{t+1}), None if no critique.
        text: `output` in the canonical EditThinker format (the SFT target); None when unusable.
        raw / ok / error / repairs: the model's raw text and what the parser made of it.
        next_image: the edit produced by T_{t+1} (None on the last turn); stop_reason: set on the last turn.
        thinker, seed, seconds ({"edit", "think"}), meta (JSON-safe part of the request meta).
    """

    request_id: str
    turn: int
    source_image: str
    edited_image: str | None
    instruction: str
    previous_instruction: str
    output: dict[str, Any] | None
    text: str | None
    raw: str | None = None
    ok: bool = True
    error: str | None = None
    repairs: list[str] = field(default_factory=list)
    next_image: str | None = None
    stop_reason: str | None = None
    thinker: str = ""
    seed: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TurnRecord":
        return cls(**data)


class TraceWriter:
    """Loop observer that writes every turn to `root` as it happens (see the module docstring).

    Records of a request are held until its last turn so that `next_image` can be filled in, then
    appended and flushed; a run that is interrupted keeps every finished request.
    """

    def __init__(self, root: str | Path, thinker_name: str | None = None):
        self.root = Path(root)
        # The folder and its files appear with the first turn: a run that fails before any turn
        # (a thinker server that is down) leaves no empty trace behind.
        self._turns: Any = None
        self._requests: Any = None
        self._next_id = 0
        self._open: dict[int, dict[str, Any]] = {}  # id(request) -> {"id", "records", "images"}
        self.thinker_name = thinker_name

    def _start(self) -> None:
        if self._turns is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "manifest.json").write_text(json.dumps({"format": TRACE_FORMAT, "version": TRACE_VERSION}) + "\n")
        self._turns = open(self.root / "turns.jsonl", "a", encoding="utf-8")
        self._requests = open(self.root / "requests.jsonl", "a", encoding="utf-8")
        self._next_id = _count_lines(self.root / "requests.jsonl")

    # -- observer interface -------------------------------------------------------------------

    def on_turn(self, event: TurnEvent) -> None:
        self._start()
        entry = self._entry(event.request)
        rid = entry["id"]
        edited = None
        if event.image is not None:
            edited = self._save(event.image, f"images/{rid}/turn_{event.turn}.png")
            entry["images"][event.turn] = edited
            if entry["records"] and entry["records"][-1].turn == event.turn - 1:
                entry["records"][-1].next_image = edited
        thought = event.thought
        output = text = None
        if thought is not None:
            out = ThinkerOutput(
                reasoning=thought.reasoning,
                semantic=thought.scores.get("semantic"),
                quality=thought.scores.get("quality"),
                stop=thought.stop,
                answer=thought.instruction,
            )
            output = {"reasoning": out.reasoning, "semantic": out.semantic, "quality": out.quality, "stop": out.stop, "instruction": out.answer}
            text = format_thinker_output(out) if thought.ok and (out.answer or out.stop) else None
        entry["records"].append(
            TurnRecord(
                request_id=rid,
                turn=event.turn,
                source_image=entry["source"],
                edited_image=edited,
                instruction=event.request.instruction,
                previous_instruction=event.instruction if event.instruction is not None else event.request.instruction,
                output=output,
                text=text,
                raw=thought.raw if thought else None,
                ok=thought.ok if thought else True,
                error=thought.error if thought else None,
                repairs=list(thought.repairs) if thought else [],
                stop_reason=event.stop_reason,
                thinker=self.thinker_name or "",
                seed=event.seed,
                seconds={"edit": round(event.edit_seconds, 6), "think": round(event.think_seconds, 6)},
                meta=entry["meta"],
            )
        )

    def on_finish(self, index: int, request: EditRequest, result: EditResult) -> None:
        entry = self._open.pop(id(request), None)
        if entry is None:
            return
        summary = result.meta.get("thinker", {})
        for record in entry["records"]:
            record.thinker = record.thinker or summary.get("thinker", "")
            self._turns.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        scores = summary.get("scores", [])
        instructions = summary.get("instructions", [])
        turns = [
            {"turn": t, "instruction": instructions[t - 1] if t - 1 < len(instructions) else None,
             "image": entry["images"].get(t), "scores": scores[t - 1] if t - 1 < len(scores) else {}}
            for t in sorted(k for k in entry["images"])
        ]
        chosen = summary.get("chosen_turn")
        record = {
            "request_id": entry["id"],
            "instruction": request.instruction,
            "source_image": entry["source"],
            "turns": turns,
            "chosen_turn": chosen,
            "final_image": entry["images"].get(chosen),
            "final_instruction": result.instruction,
            "stop_reason": summary.get("stop_reason"),
            "editor_calls": summary.get("editor_calls"),
            "thinker_calls": summary.get("thinker_calls"),
            "thinker": summary.get("thinker"),
            "seed": request.seed,
            "meta": entry["meta"],
        }
        self._requests.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._turns.flush()
        self._requests.flush()

    # -- files ----------------------------------------------------------------------------------

    def close(self) -> None:
        if self._turns is not None:
            self._turns.close()
            self._requests.close()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _entry(self, request: EditRequest) -> dict[str, Any]:
        key = id(request)
        if key not in self._open:
            rid = f"{self._next_id:06d}"
            self._next_id += 1
            self._open[key] = {
                "id": rid,
                "records": [],
                "images": {},
                "source": self._save(request.image, f"images/{rid}/source.png"),
                "meta": json_safe_meta(request.meta),
            }
        return self._open[key]

    def _save(self, image, relative: str) -> str:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return relative


def read_turns(root: str | Path) -> list[TurnRecord]:
    """All `TurnRecord`s of a trace directory, in the order they were written."""
    return [TurnRecord.from_json(row) for row in _read_jsonl(Path(root), "turns.jsonl")]


def read_requests(root: str | Path) -> list[dict[str, Any]]:
    """All per-request records of a trace directory (see the module docstring)."""
    return _read_jsonl(Path(root), "requests.jsonl")


def json_safe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable part of a request's meta; objects are summarised, not pickled.

    Objects with `to_json()` are stored through it; other objects keep only an `id`/`case_id`/
    `name` attribute if they have one (so a pipeline can find the ground truth again) and are
    otherwise listed under `"_dropped"`.

    Example:
        >>> class Case:
        ...     id = "shapes-bench/0007"
        >>> json_safe_meta({"category": "move", "shapes_case": Case(), "blob": object()})
        {'category': 'move', 'shapes_case': {'id': 'shapes-bench/0007'}, '_dropped': ['blob']}
    """
    safe: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in meta.items():
        converted = _json_value(value)
        if converted is _DROP:
            dropped.append(str(key))
        else:
            safe[str(key)] = converted
    if dropped:
        safe["_dropped"] = dropped
    return safe


_DROP = object()


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_json_value(v) for v in value]
        return _DROP if any(v is _DROP for v in items) else items
    if isinstance(value, dict):
        items = {str(k): _json_value(v) for k, v in value.items()}
        return _DROP if any(v is _DROP for v in items.values()) else items
    if hasattr(value, "to_json"):
        return _json_value(value.to_json())
    for attr in ("id", "case_id", "name"):
        ident = getattr(value, attr, None)
        if isinstance(ident, (str, int)):
            return {attr: ident}
    return _DROP  # images, tensors, arbitrary objects: not data a pipeline can read back


def _read_jsonl(root: Path, name: str) -> list[dict[str, Any]]:
    path = root / name
    if not path.is_file():
        raise ArtifactError(f"{path}: no such trace file; pass the folder a TraceWriter wrote (it holds turns.jsonl and requests.jsonl)")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ArtifactError(f"{path}:{number}: not valid JSON ({err.msg}); the trace is corrupt") from None
    return rows


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())
