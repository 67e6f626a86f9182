"""What the folder benchmarks (`gedit`, `imgedit`, `edival`) share: a root folder, a rubric judge, None-aware scores.

Example:
    >>> from refine.compare.benchmarks.folder import FolderBenchmark, geometric_mean, mean
    >>> class Tiny(FolderBenchmark):
    ...     name, version, criteria, layout = "tiny", 1, (), "expected <root>/cases.json"
    >>> Tiny("/no/such/folder", {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}})
    Traceback (most recent call last):
    ...
    refine.errors.InputError: tiny root '/no/such/folder' is not a folder; expected <root>/cases.json
    >>> mean([4.0, 8.0]), mean([4.0, None]), geometric_mean(4.0, 9.0)
    (6.0, None, 6.0)

Each benchmark's own file keeps what differs: its documented layout and how it reads it, its
criteria and how it combines the ratings into its metrics (`score_once`). A score is None when any
rating it needs is None (the judge could not read an answer), never a guess.

What they share here: the judge scheme (`judge.scheme`, refine-judge or official, checked when the
benchmark is built; `protocol_label` says which one a report shows, see `protocols.py`) and
`judge.repeats`: `score` judges every case that many times and keeps the mean of each metric, with
each repeat's scores in ``details["repeats"]`` for the report's run-to-run interval.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, default_request, stable_hash
from refine.compare.benchmarks.mllm import Criterion, RubricJudge, check_judge, judge_key
from refine.compare.benchmarks.protocols import check_scheme, protocol_label
from refine.compare.benchmarks.rewrite import InstructionRewriter, RewriteSpec
from refine.config import validate_config
from refine.errors import InputError
from refine.types import EditRequest, EditResult


class FolderBenchmark:
    """Base of the benchmarks read from a local folder and scored by a `RubricJudge`.

    Subclasses set `name`, `version` (bump it when the scoring changes), `criteria` and `layout`
    (the one-line layout hint errors end with), call `super().__init__(root, judge)` and then read
    their index, so a wrong folder fails when the benchmark is built, before any compute. The
    judge's backend is built on first use (`judge`), so listing cases never loads a VLM.
    """

    name: str
    version: int
    criteria: Sequence[Criterion]
    layout: str

    def __init__(self, root: str, judge: dict[str, Any] | None) -> None:
        self.root = Path(root).expanduser()
        self.judge_spec = check_judge(judge, self.name)
        check_scheme(self.name, self.judge_spec.scheme, self.judge_spec.prompts)
        self._judge: RubricJudge | None = None
        if not self.root.is_dir():
            raise InputError(f"{self.name} root {str(self.root)!r} is not a folder; {self.layout}")
        self.official_prompts: dict[str, str] | None = None  # set by a benchmark that reads its authors' prompts
        self.rewriter: InstructionRewriter | None = None  # set by `set_rewrite` (the rewrite protocol flag)
        self._rewrites: dict[tuple[str, int], str] = {}

    @property
    def judge_key(self) -> str:
        key = judge_key(self.name, self.version, self.judge_spec, self.criteria)
        if self.official_prompts is not None:  # the authors' prompt texts are part of the scheme
            key += "-o" + stable_hash(self.official_prompts)
        return key

    @property
    def protocol_label(self) -> str:
        """``refine-judge``, ``official`` or ``official-prompts (...)`` (see `protocols.protocol_label`)."""
        spec = self.judge_spec
        return protocol_label(
            self.name, scheme=spec.scheme, model=spec.backend.get("model"), temperature=spec.temperature, repeats=spec.repeats
        )

    def score(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        """`score_once` `judge.repeats` times; each metric is the mean over repeats (None if any repeat is None)."""
        runs = [self.score_once(items) for _ in range(self.judge_spec.repeats)]
        if len(runs) == 1:
            return runs[0]
        merged = []
        for per_case in zip(*runs):
            turns = None
            if per_case[0].turn_scores is not None:
                turns = [_mean_scores([run.turn_scores[t] for run in per_case]) for t in range(len(per_case[0].turn_scores))]
            details = {**per_case[0].details, "repeats": [run.scores for run in per_case]}
            merged.append(CaseScore(_mean_scores([run.scores for run in per_case]), turns, details))
        return merged

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        raise NotImplementedError

    @property
    def judge(self) -> RubricJudge:
        if self._judge is None:
            self._judge = RubricJudge(self.judge_spec)
        return self._judge

    def set_rewrite(self, rewrite: dict[str, Any] | None) -> None:
        """Install the instruction-rewrite protocol flag (see `rewrite.py`), its backend checked now.

        For single-turn benchmarks (KRIS, RISE): a rewrite depends on the case's source only, so it
        is made once per case and shared by every seed and entry.
        """
        if rewrite is not None:
            spec = validate_config(RewriteSpec, dict(rewrite), source=f"{self.name} rewrite")
            check_judge({"backend": spec.backend}, f"{self.name} rewrite")
            self.rewriter = InstructionRewriter(spec)

    @property
    def rewrite_key(self) -> str:
        """'' or a suffix naming the rewrite settings, for the benchmark's cache `key` (edits depend on them)."""
        return "" if self.rewriter is None else "-rw" + stable_hash(self.rewriter.spec.model_dump())

    def request(self, case: Case, turn: int, image: Image.Image, seed: int) -> EditRequest:
        request = default_request(case, turn, image, seed, benchmark=self.name)
        if self.rewriter is None:
            return request
        if (case.id, turn) not in self._rewrites:
            self._rewrites[(case.id, turn)] = self.rewriter(image, request.instruction)
        request.meta["original_instruction"] = request.instruction
        request.instruction = self._rewrites[(case.id, turn)]
        return request


def warn_unknown(benchmark: str, field: str, values: Sequence[str], known: Sequence[str]) -> None:
    """A warning naming the values of `field` the benchmark does not define, with the ones it does."""
    unknown = sorted({str(v) for v in values} - set(known))
    if unknown:
        warnings.warn(
            f"{benchmark}: unknown {field}(s) {', '.join(unknown)}; known: {', '.join(known)}", UserWarning, stacklevel=3
        )


def missing_images(benchmark: str, ids: Sequence[str], what: str) -> InputError:
    """The one-line preflight error naming the cases without an image (at most 5 named)."""
    named = ", ".join(repr(i) for i in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return InputError(f"{benchmark}: {len(ids)} case(s) have no {what}: {named}; fix or remove them from the data")


def mean(values: Sequence[float | None]) -> float | None:
    """The mean, or None when `values` is empty or holds a None."""
    return None if any(v is None for v in values) or not values else sum(values) / len(values)


def minimum(*values: float | None) -> float | None:
    """The smallest value, or None when any is None."""
    return None if any(v is None for v in values) else min(values)


def geometric_mean(a: float | None, b: float | None) -> float | None:
    """sqrt(a * b) (the "overall" of GEdit-Bench and EdiVal), or None when either is None."""
    return None if a is None or b is None else math.sqrt(a * b)


def _mean_scores(runs: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    return {name: mean([run.get(name) for run in runs]) for name in runs[0]}
