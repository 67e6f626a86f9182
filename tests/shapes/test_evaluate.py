"""ShapeEdit evaluation of an editor: the bundled editor is decent; summaries group by phrasing and category."""

import pytest

from refine.shapes.evaluate import bench_subset, evaluate_editor, summarize_scores


def test_bench_subset_spreads_over_categories_and_phrasings():
    cases = bench_subset(direct=18, indirect=9)
    assert len(cases) == 27 and sum(c.phrasing == "direct" for c in cases) == 18
    assert len({c.category for c in cases}) == 9


def test_summaries_average_per_group():
    rows = [{"phrasing": "direct", "category": "add", "overall": 1.0, "if": 1, "cc": 1, "pq": 1, "success": 1},
            {"phrasing": "indirect", "category": "remove", "overall": 0.0, "if": 0, "cc": 1, "pq": 1, "success": 0}]
    summary = summarize_scores(rows)
    assert summary["n"] == 2 and summary["overall"] == 0.5 and summary["cc"] == 1.0
    assert summary["overall/add"] == 1.0 and summary["success/indirect"] == 0.0


FLOOR_CASES = dict(direct=40, indirect=0)
FLOOR_SAMPLING = dict(steps=8, batch_size=40)


@pytest.mark.slow
def test_bundled_editor_reaches_the_quality_floor():
    from refine.backbones.shapes import BUNDLED_EDITOR, load_shapes_backbone

    size = sum(p.stat().st_size for p in BUNDLED_EDITOR.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    # A reported figure of the shipped editor (issue 4's floor), not a tuning decision: shapes-bench.
    cases = bench_subset(**FLOOR_CASES, split="shapes-bench")
    assert len(cases) == 40 and {c.phrasing for c in cases} == {"direct"}
    scores = evaluate_editor(load_shapes_backbone(), cases, **FLOOR_SAMPLING)
    # Measured here: the bundled editor (eight stages, refine/assets/shapes-editor/README.md) O 0.52,
    # CC 0.64, success 0.23; stage 7 (the default of stop 9) O 0.51, CC 0.59, success 0.25; stage 6 O 0.40,
    # CC 0.51, success 0.20; an untrained one 0, 0.01, 0. O is the floor itself (>= 0.5 on direct
    # phrasings; over all of shapes-bench the bundled editor reads 0.53); CC and success sit below the
    # bundled figures by about the spread of 40 cases.
    assert scores["overall"] >= 0.5 and scores["cc"] >= 0.55 and scores["success"] >= 0.2, scores


