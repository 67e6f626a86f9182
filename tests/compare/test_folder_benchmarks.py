"""GEdit-Bench, ImgEdit and EdiVal folders (generated in their layouts) are read and judged by a tiny VLM."""

import math

import pytest

from refine.compare import run_compare
from refine.compare.benchmarks.edival import EdiValBench
from refine.compare.benchmarks.gedit import GEditBench
from refine.compare.benchmarks.imgedit import ImgEditBench
from refine.testing.benchmark_folders import write_edival_folder, write_gedit_folder, write_imgedit_folder
from refine.types import EditResult


@pytest.fixture(scope="module")
def judge():
    from refine.testing.tiny_vlm import tiny_vlm_dir

    return {"backend": {"kind": "transformers", "model": str(tiny_vlm_dir("qwen2_5_vl"))}}


def _judged(bench, cases):
    """Score every case with the source image as the "edit" (one batch through the judge)."""
    items = [(case, [EditResult(case.source_image(), text) for text in case.instructions]) for case in cases]
    return bench.score(items)


def test_gedit_parquet_snapshot_runs_end_to_end_through_compare(tmp_path, judge):
    root = write_gedit_folder(tmp_path / "GEdit-Bench", cases=4)
    config = {
        "benchmark": {"kind": "gedit", "root": str(root), "judge": judge},
        "editor": {"kind": "refine.testing.compare_fakes:paint_editor"},
        "entries": {"base": {}},
        "out_dir": str(tmp_path / "out"),
        "progress": False,
        "bootstrap": 200,
    }
    run = run_compare(config)
    assert [c.category for c in run.cases] == ["color_alter", "subject-add", "background_change", "style_change"]
    assert all(c.meta["language"] == "en" for c in run.cases)  # GEdit-Bench-EN by default
    for row in run.rows:
        sc, pq = row.scores["semantics"], row.scores["quality"]
        assert 0 <= sc <= 10 and 0 <= pq <= 10
        assert row.scores["overall"] == pytest.approx(math.sqrt(sc * pq))
        ratings = row.details["ratings"]
        assert sc == min(ratings["success"], ratings["overediting"]) and pq == min(ratings["naturalness"], ratings["artifacts"])
    assert (run.out_dir / "report.html").is_file()
    assert len(GEditBench(str(root), judge, language="all").cases()) == 8


def test_imgedit_folder_is_read_and_judged_on_its_1_to_5_scale(tmp_path, judge):
    root = write_imgedit_folder(tmp_path / "Benchmark", cases=4)
    bench = ImgEditBench(str(root), judge)
    cases = bench.cases()
    assert [c.id for c in cases] == ["100", "101", "102", "103"]
    assert [c.category for c in cases] == ["add", "remove", "adjust", "style"]
    assert cases[0].instructions == ["Change the square to green."] and cases[0].source_image().size == (32, 32)
    for score in _judged(bench, cases):
        ratings = [score.scores[m] for m in ("compliance", "seamlessness", "fidelity")]
        assert all(1 <= r <= 5 for r in ratings)
        assert score.scores["overall"] == pytest.approx(sum(ratings) / 3)


@pytest.mark.parametrize("zipped", [False, True])
def test_edival_folder_is_read_as_three_turn_sequences_and_judged_per_turn(tmp_path, judge, zipped):
    root = write_edival_folder(tmp_path / "EdiVal", cases=2, zipped=zipped)
    bench = EdiValBench(str(root), judge)
    cases = bench.cases()
    assert [c.id for c in cases] == ["0", "1"] and all(c.turns == 3 for c in cases)
    assert cases[0].instructions[1] == "Add circle on the left of square"  # release quoting removed
    assert cases[0].category == "background_change" and bench.request(cases[0], 1, cases[0].source_image(), 0).meta["task_type"] == "subject_add"
    if zipped:
        return  # the images come out of the zip: reading them is enough
    for score in _judged(bench, cases):
        assert len(score.turn_scores) == 3
        for turn in score.turn_scores:
            assert 0 <= turn["if"] <= 100 and 0 <= turn["cc"] <= 100
        assert score.scores["if"] == pytest.approx(sum(t["if"] for t in score.turn_scores) / 3)
        assert score.scores["overall"] == pytest.approx(math.sqrt(score.scores["if"] * score.scores["cc"]))
