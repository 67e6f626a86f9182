"""What a comparison runs on: `Case`s from a `Benchmark`, scored by that benchmark's own judge.

Example:
    >>> from PIL import Image
    >>> from refine.compare.benchmarks.base import Case, select_cases
    >>> cases = [Case(f"c{i}", "add" if i % 2 else "remove", Image.new("RGB", (8, 8)), ["add a dot"]) for i in range(6)]
    >>> [c.id for c in select_cases(cases, 4)]          # stratified: categories take turns
    ['c0', 'c1', 'c2', 'c3']
    >>> cases[0].turns, cases[0].instruction
    (1, 'add a dot')

A benchmark knows three things the runner does not: how to list its cases (`cases()`), how to
turn a case, a turn index and the current image into an `EditRequest` (`request()`), and how to
score finished cases in its own scheme (`score()`, batched because MLLM judges are). Multi-turn
benchmarks give several instructions per case; the runner feeds the output of turn k to turn k+1.

Optional: `aggregate = "categories"` makes the report's "all" row the mean of the per-category
means (GEdit-Bench and ImgEdit report it that way); without it, the mean over cases.

Identity for caching: `key` names the case data (so the same cases under another `limit` reuse
outputs) and `judge_key` names the scoring scheme + judge settings (so re-judging does not
re-edit). Both must change whenever what they describe changes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from PIL import Image

from refine.types import EditRequest, EditResult


@dataclass
class Case:
    """One benchmark item: a source image and one instruction per turn (single-turn: one).

    `source` and `target` may be given as zero-argument callables so large folders are read only
    when a case is actually edited or drawn in the report. `meta` is merged into every request's
    `EditRequest.meta` (ground-truth handles for the judge live there).
    """

    id: str
    category: str
    source: Image.Image | Callable[[], Image.Image]
    instructions: list[str]
    target: Image.Image | Callable[[], Image.Image] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def turns(self) -> int:
        return len(self.instructions)

    @property
    def instruction(self) -> str:
        """The instructions as one line (turns joined by ' | '), for tables and captions."""
        return " | ".join(self.instructions)

    def source_image(self) -> Image.Image:
        if callable(self.source):
            self.source = self.source()
        return self.source

    def target_image(self) -> Image.Image | None:
        if callable(self.target):
            self.target = self.target()
        return self.target


@dataclass
class CaseScore:
    """A finished case scored in the benchmark's scheme.

    `scores` maps metric name -> value in `Benchmark.scale` (the headline metric first);
    `turn_scores` holds one such dict per turn for multi-turn benchmarks; `details` is anything
    JSON-serialisable the judge wants to keep (sub-scores, raw MLLM answers).
    """

    scores: dict[str, float]
    turn_scores: list[dict[str, float]] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scores": self.scores, "turn_scores": self.turn_scores, "details": self.details}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CaseScore":
        return cls(data["scores"], data.get("turn_scores"), data.get("details", {}))


@runtime_checkable
class Benchmark(Protocol):
    """The interface every benchmark kind implements (see the module docstring)."""

    name: str
    metrics: tuple[str, ...]  # score names; metrics[0] is the headline ("overall")
    scale: tuple[float, float]  # (worst, best) of every metric

    @property
    def key(self) -> str: ...

    @property
    def judge_key(self) -> str: ...

    def cases(self) -> list[Case]: ...

    def request(self, case: Case, turn: int, image: Image.Image, seed: int) -> EditRequest: ...

    def score(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]: ...


def default_request(case: Case, turn: int, image: Image.Image, seed: int, **meta: Any) -> EditRequest:
    """The request most benchmarks need: turn `turn`'s instruction on `image` with the case meta."""
    info = {**case.meta, "case_id": case.id, "category": case.category, "turn": turn, **meta}
    return EditRequest(image, case.instructions[turn], seed=seed, meta=info)


def select_cases(cases: Sequence[Case], limit: int | None) -> list[Case]:
    """The first `limit` cases taking categories in turn (so a small subset covers every category).

    Deterministic: depends only on the order of `cases`. `None` keeps all of them.
    """
    if limit is None or limit >= len(cases):
        return list(cases)
    by_category: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_category[case.category].append(case)
    queues = list(by_category.values())
    chosen: list[Case] = []
    depth = 0
    while len(chosen) < limit:
        for queue in queues:
            if depth < len(queue) and len(chosen) < limit:
                chosen.append(queue[depth])
        depth += 1
    order = {id(case): i for i, case in enumerate(cases)}
    return sorted(chosen, key=lambda c: order[id(c)])


def stable_hash(data: Any, length: int = 12) -> str:
    """A short hex digest of JSON-able `data` (keys sorted), stable across runs and machines."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
