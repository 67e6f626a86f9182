"""ShapeEdit benchmarks for comparisons: `shapes-bench` (single turn) and `shapes-mt` (three turns).

Report on those two; tune on their validation twins `shapes-val` and `shapes-mt-val` (built the
same way from other seeds, see `refine.shapes.data`), which are benchmark kinds too.

Example:
    >>> from refine.compare.benchmarks.shapes import shapes_bench
    >>> bench = shapes_bench()
    >>> cases = bench.cases()
    >>> len(cases), cases[0].category, cases[1].category, bench.metrics
    (540, 'add', 'add', ('overall', 'if', 'cc', 'pq'))
    >>> [c.meta["phrasing"] for c in cases[:2]]         # direct and indirect alternate
    ['direct', 'indirect']
    >>> from refine.types import EditResult
    >>> case = cases[0]
    >>> [score] = bench.score([(case, [EditResult(case.target_image(), case.instruction)])])
    >>> score.scores["overall"]                          # the exact target scores 1
    1.0

Scores come from ShapeEdit's exact judge (`refine.shapes.judge`), all in [0, 1]:
* shapes-bench: `overall` = sqrt(IF * CC), `if`, `cc`, `pq` per case (see `judge_edit`).
* shapes-mt: per turn IF (vs that turn's exact source and target), CC against the original
  scene and PQ; per sequence `if` = mean IF over turns, `cc` = CC vs the original after the
  last turn, `overall` = sqrt(if * cc), `success` = 1 when every turn was fully followed
  (EdiVal's success at the last turn); per turn k = 1..3 `o_tk` = sqrt(IF_k * CC_k vs the
  original) (MT-EditFlow's overall at turn k; `o_t3` is its headline), `if_tk`, `cc_tk` and
  `success_tk` (turns 1..k all fully followed), each with its interval in the summary.
Categories are ShapeEdit's edit categories (the last turn's for shapes-mt); the phrasing
(direct / indirect) is kept in each case's meta and in `cases.jsonl`.

Cases are ordered index-major (case 0 of every category and phrasing, then case 1, ...), so the
stratified `limit` of a comparison takes direct and indirect phrasings in turn within a category.
The cache keys hash the split's content and the judge's source code: a change to either
re-edits (split) or re-scores (judge) only what it affects.

`judge` (every split): a VLM judges the edits too, its score the headline (`vlm_score_logit`),
the exact judge's metrics beside it: `judge: vlm` is the bundled ShapeEdit VLM, or give an MLLM
judge spec ({kind: mllm, mode: ..., backend: {...}}); see `shapes_vlm.py`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import mean
from refine.compare.benchmarks.shapes_vlm import VLMJudge
from refine.types import EditRequest, EditResult


class ShapesBenchmark:
    """A ShapeEdit split as a `Benchmark` (use the `shapes_bench` / `shapes_mt` factories).

    `judge`: None scores with the exact judge alone; `"vlm"` or an MLLM judge spec adds a VLM
    judge's score as the headline metric (`shapes_vlm.VLMJudge`, checked here, loaded when scoring).
    """

    scale = (0.0, 1.0)

    def __init__(self, split: str = "shapes-bench", size: int = 32, judge: str | dict[str, Any] | None = None) -> None:
        from refine.shapes.data import MULTI_TURN_SPLITS, SPLITS

        if split not in SPLITS:
            from refine.errors import ConfigError

            raise ConfigError(f"unknown ShapeEdit split {split!r}; use one of {', '.join(SPLITS)}")
        self.split, self.size = split, size
        self.name = split
        self.multi_turn = split in MULTI_TURN_SPLITS
        from refine.shapes.data import MT_TURNS

        per_turn = tuple(f"{m}_t{k}" for m in ("o", "if", "cc", "success") for k in range(1, MT_TURNS + 1))
        self.metrics = ("overall", "if", "cc", "success", *per_turn) if self.multi_turn else ("overall", "if", "cc", "pq")
        self.vlm_judge = None if judge is None else VLMJudge(judge, split)
        if self.vlm_judge is not None:  # the judge's score leads; the exact judge's (free) stays beside it
            self.metrics = (self.vlm_judge.metric, *self.metrics)
        self._items: dict[str, object] = {}

    @property
    def key(self) -> str:
        from refine.shapes.data import split_hash

        return f"{self.split}-{self.size}-{split_hash(self.split, self.size)[:12]}"

    @property
    def judge_key(self) -> str:
        import refine.shapes.judge as judge

        exact = f"shapes-judge-{stable_hash(inspect.getsource(judge))}"
        return exact if self.vlm_judge is None else f"{exact}-{self.vlm_judge.key}"

    @property
    def protocol_label(self) -> str | None:
        """The VLM judge's label for report titles (None: the exact judge alone, the title says nothing)."""
        return None if self.vlm_judge is None else self.vlm_judge.label

    def judge_report(self, rows) -> dict[str, Any]:
        """The report's `judge_protocol` of a VLM-judged run: which metric is whose, their agreement, a note."""
        return self.vlm_judge.report(rows, [m for m in self.metrics if m != self.vlm_judge.metric])

    def cases(self) -> list[Case]:
        from refine.shapes.data import load_split

        items = load_split(self.split, self.size)
        self._items = {item.id: item for item in items}
        cases = [self._case(item) for item in items]
        if self.multi_turn:
            return cases
        # index-major order: the k-th case of every (category, phrasing) before the (k+1)-th
        index = {c.id: int(c.id.rsplit("-", 1)[-1]) for c in cases}
        return sorted(cases, key=lambda c: index[c.id])  # stable: keeps category x phrasing order

    def _case(self, item) -> Case:
        if self.multi_turn:
            last = item.cases[-1]
            return Case(
                id=item.id, category=last.category, source=lambda item=item: item.source_image,
                instructions=item.instructions, target=lambda item=item: item.target_images[-1],
                meta={"phrasing": [c.phrasing for c in item.cases], "categories": [c.category for c in item.cases]},
            )
        return Case(
            id=item.id, category=item.category, source=lambda item=item: item.source_image,
            instructions=[item.instruction], target=lambda item=item: item.target_image,
            meta={"phrasing": item.phrasing},
        )

    def _item(self, case_id: str):
        if not self._items:
            self.cases()
        return self._items[case_id]

    def request(self, case: Case, turn: int, image: Image.Image, seed: int) -> EditRequest:
        item = self._item(case.id)
        shape_case = item.cases[turn] if self.multi_turn else item
        request = shape_case.to_request(seed)  # meta["shapes_case"]: what judges and expert thinkers read
        request.meta.update({"turn": turn, "benchmark": self.name, "sequence_id": case.id if self.multi_turn else None})
        return EditRequest(image, request.instruction, seed=seed, meta=request.meta)

    def score(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        from refine.shapes.judge import judge_edit, judge_sequence

        scores = []
        for case, results in items:
            item = self._item(case.id)
            outputs = [r.image for r in results]
            if not self.multi_turn:
                judged = judge_edit(item.source_image, outputs[0], item)
                values = {"overall": judged.overall, "if": judged.if_, "cc": judged.cc, "pq": judged.pq}
                scores.append(CaseScore(values, None, {"breakdown": judged.breakdown}))
                continue
            judged = judge_sequence(item, outputs)
            turn_scores = [
                {"overall": math.sqrt(t.if_ * cc), "if": t.if_, "cc": cc, "pq": t.pq, "success": float(ok)}
                for t, cc, ok in zip(judged.turns, judged.cc_original, judged.success_at_turn)
            ]
            mean_if = sum(judged.if_) / len(judged.if_)
            final_cc = judged.cc_original[-1]
            values = {
                "overall": math.sqrt(mean_if * final_cc),
                "if": mean_if,
                "cc": final_cc,
                "success": float(judged.success_at_turn[-1]),
            }
            for k, turn in enumerate(turn_scores, 1):  # MT-EditFlow's per-turn view, summarised like the rest
                values.update({f"o_t{k}": turn["overall"], f"if_t{k}": turn["if"], f"cc_t{k}": turn["cc"], f"success_t{k}": turn["success"]})
            scores.append(CaseScore(values, turn_scores, {"breakdown": judged.breakdown}))
        if self.vlm_judge is not None:
            self._add_vlm_scores(items, scores)
        return scores

    def _add_vlm_scores(self, items: Sequence[tuple[Case, list[EditResult]]], scores: list[CaseScore]) -> None:
        """Judge every turn of every case in one batch; each turn is an edit of the image it was given."""
        sources, outputs, instructions, metas, spans = [], [], [], [], []
        for case, results in items:
            item = self._item(case.id)
            turns = item.cases if self.multi_turn else [item]
            inputs = [item.source_image] + [r.image for r in results[:-1]]
            spans.append(slice(len(sources), len(sources) + len(results)))
            for shape_case, source, result in zip(turns, inputs, results):
                sources.append(source)
                outputs.append(result.image)
                instructions.append(shape_case.instruction)  # the case's, not a thinker's rewrite: what was asked
                metas.append(shape_case.to_request().meta)
        judged = self.vlm_judge(sources, outputs, instructions, metas)
        metric = self.vlm_judge.metric
        for score, span in zip(scores, spans):
            values = judged.scores[span]
            score.scores = {metric: mean(values), **score.scores}  # the headline first, as in `metrics`
            score.details["vlm"] = judged.details[span]
            for turn, value in zip(score.turn_scores or [], values):
                turn[metric] = value


def shapes_bench(size: int = 32, judge: str | dict[str, Any] | None = None) -> ShapesBenchmark:
    """The `shapes-bench` benchmark kind: 540 single-turn ShapeEdit cases (9 categories x 2 phrasings x 30)."""
    return ShapesBenchmark("shapes-bench", size, judge)


def shapes_mt(size: int = 32, judge: str | dict[str, Any] | None = None) -> ShapesBenchmark:
    """The `shapes-mt` benchmark kind: 120 three-turn ShapeEdit sequences."""
    return ShapesBenchmark("shapes-mt", size, judge)


def shapes_val(size: int = 32, judge: str | dict[str, Any] | None = None) -> ShapesBenchmark:
    """The `shapes-val` benchmark kind: shapes-bench's twin for tuning (540 cases, other seeds)."""
    return ShapesBenchmark("shapes-val", size, judge)


def shapes_mt_val(size: int = 32, judge: str | dict[str, Any] | None = None) -> ShapesBenchmark:
    """The `shapes-mt-val` benchmark kind: shapes-mt's twin for tuning (120 sequences, other seeds)."""
    return ShapesBenchmark("shapes-mt-val", size, judge)
