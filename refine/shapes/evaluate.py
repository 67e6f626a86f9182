"""Score a ShapeEdit editor: judge rows per case, their means per phrasing/category, multi-turn rates.

Example:
    >>> from refine.shapes.evaluate import bench_subset, summarize_scores
    >>> cases = bench_subset(direct=9, indirect=0)
    >>> len(cases), {c.phrasing for c in cases}
    (9, {'direct'})
    >>> summarize_scores([{"phrasing": "direct", "category": "add", "overall": 1.0, "if": 1, "cc": 1, "pq": 1, "success": 1}])["overall"]
    1.0

Used by the base editor's training (periodic evaluation of the EMA editor), the ShapeEdit
benchmarks and the quality tests. An editor is any `FlowBackbone` of ShapeEdit's size (the
bundled one: `refine.backbones.shapes.load_shapes_backbone()`); it is sampled by a `FlowEditor`
and judged by `refine.shapes.judge`. torch and the rollout layer are imported inside the
functions: `refine shapes ...` commands import this package and should start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from refine.errors import InputError

if TYPE_CHECKING:
    from refine.backbones.shapes import ShapesBackbone

__all__ = ["bench_subset", "evaluate_editor", "evaluate_multiturn", "score_cases", "summarize_scores"]


def bench_subset(direct: int, indirect: int, split: str = "shapes-val") -> list[Any]:
    """A fixed, category-spread subset of a ShapeEdit split: evenly spaced direct and indirect cases."""
    from refine.shapes.data import load_split

    cases = list(load_split(split))
    picked = []
    for phrasing_is_direct, count in ((True, direct), (False, indirect)):
        pool = [c for c in cases if (c.phrasing == "direct") == phrasing_is_direct]
        count = min(count, len(pool))
        picked.extend(pool[int(i * len(pool) / count)] for i in range(count))  # evenly spaced: every category
    return picked


def score_cases(
    backbone: "ShapesBackbone",
    cases: Sequence[Any],
    *,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str = "euler",
    seed: int = 0,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Edit ShapeEdit `cases` with a `FlowEditor` on `backbone`; one judge row per case.

    Rows hold ``phrasing``, ``category``, ``overall``, ``if``, ``cc``, ``pq``, ``success`` (IF = 1).
    Case i is sampled with seed ``seed * 1_000_003 + i``: scores are comparable across calls.
    """
    import torch

    from refine.rollout.flow_editor import FlowEditor
    from refine.shapes.judge import judge_edit

    was_training = backbone.training
    backbone.eval()
    editor = FlowEditor(backbone, sampler=sampler, steps=steps or backbone.default_steps, guidance=guidance, batch_size=batch_size)
    requests = [case.to_request(seed=seed * 1_000_003 + i) for i, case in enumerate(cases)]
    with torch.no_grad():
        results = editor.edit(requests)
    backbone.train(was_training)
    rows = []
    for case, result in zip(cases, results):
        score = judge_edit(case.source_image, result.image, case)
        rows.append({"phrasing": case.phrasing, "category": case.category, "overall": score.overall,
                     "if": score.if_, "cc": score.cc, "pq": score.pq, "success": float(score.success)})
    return rows


def evaluate_editor(backbone: "ShapesBackbone", cases: Sequence[Any], **sampling: Any) -> dict[str, Any]:
    """Mean judge scores of `score_cases` (same keyword arguments), overall and per phrasing/category.

    Keys: ``n``, ``overall``, ``if``, ``cc``, ``pq``, ``success``, ``overall/<phrasing>``,
    ``success/<phrasing>``, ``overall/<category>`` (see `summarize_scores`).
    """
    return summarize_scores(score_cases(backbone, cases, **sampling))


def evaluate_multiturn(
    backbone: "ShapesBackbone",
    sequences: Sequence[Any],
    *,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str = "euler",
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Run ShapeEdit sequences turn by turn (each turn edits the previous output) and judge them.

    Returns per turn t (lists indexed by turn): ``success_at_turn`` (share of sequences whose turns
    1..t all fully succeeded, EdiVal's metric), ``if_at_turn`` (mean IF of turn t against its exact
    source/target) and ``cc_original_at_turn`` (mean consistency with the original scene), and ``n``.
    """
    import torch

    from refine.rollout.flow_editor import FlowEditor
    from refine.shapes.judge import judge_sequence, success_rates
    from refine.types import EditRequest

    was_training = backbone.training
    backbone.eval()
    editor = FlowEditor(backbone, sampler=sampler, steps=steps or backbone.default_steps, guidance=guidance, batch_size=batch_size)
    turns = len(sequences[0])
    if any(len(s) != turns for s in sequences):
        raise InputError(f"sequences of {sorted({len(s) for s in sequences})} turns; evaluate sequences of one length together")
    images = [s.source_image for s in sequences]
    outputs: list[list[Any]] = [[] for _ in sequences]
    for turn in range(turns):
        requests = [
            EditRequest(image, s.cases[turn].instruction, seed=seed * 1_000_003 + 16 * i + turn)
            for i, (image, s) in enumerate(zip(images, sequences))
        ]
        with torch.no_grad():
            images = [r.image for r in editor.edit(requests)]
        for out, image in zip(outputs, images):
            out.append(image)
    backbone.train(was_training)
    scores = [judge_sequence(s, out) for s, out in zip(sequences, outputs)]
    mean = lambda values: round(sum(values) / len(values), 4)
    return {
        "n": len(sequences),
        "success_at_turn": [round(r, 4) for r in success_rates(scores)[:turns]],
        "if_at_turn": [mean([s.turns[t].if_ for s in scores]) for t in range(turns)],
        "cc_original_at_turn": [mean([s.cc_original[t] for s in scores]) for t in range(turns)],
    }


def summarize_scores(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means of judge rows (dicts with phrasing, category, overall, if, cc, pq, success) overall and per group.

    >>> summarize_scores([{"phrasing": "direct", "category": "add", "overall": 1.0, "if": 1, "cc": 1, "pq": 1, "success": 1},
    ...                   {"phrasing": "indirect", "category": "add", "overall": 0.0, "if": 0, "cc": 1, "pq": 1, "success": 0}])["overall/add"]
    0.5
    """
    def mean(values):
        values = list(values)
        return round(sum(values) / len(values), 4) if values else float("nan")

    out: dict[str, Any] = {"n": len(rows)}
    for key in ("overall", "if", "cc", "pq", "success"):
        out[key] = mean(r[key] for r in rows)
    for group in ("phrasing", "category"):
        for name in sorted({r[group] for r in rows}):
            out[f"overall/{name}"] = mean(r["overall"] for r in rows if r[group] == name)
            if group == "phrasing":
                out[f"success/{name}"] = mean(r["success"] for r in rows if r[group] == name)
    return out

