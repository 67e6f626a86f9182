"""Comparisons on ShapeEdit (shapes-bench / shapes-mt) with a tiny random editor and the expert thinker."""

import json

import pytest

from refine.compare import run_compare


@pytest.fixture(scope="module")
def tiny_editor(tmp_path_factory):
    from refine.backbones.shapes import build_shapes_backbone

    folder = tmp_path_factory.mktemp("tiny-shapes-editor")
    build_shapes_backbone(layers=1, width=32, heads=2, text_width=32).save_pretrained(folder)
    return {"kind": "shapes", "path": str(folder), "flow": {"sampler": "euler", "steps": 2}}


def test_shapes_bench_subset_writes_every_report_file_with_one_row_per_entry_and_category(tiny_editor, tmp_path):
    config = {
        "benchmark": "shapes-bench",
        "limit": 4,  # one case of each of the first four categories
        "editor": tiny_editor,
        "entries": {"base": {}, "+thinker": {"refiners": [{"kind": "thinker", "thinker": "expert", "max_turns": 2}]}},
        "out_dir": str(tmp_path / "out"),
        "progress": False,
        "bootstrap": 200,
    }
    run = run_compare(config)
    out = run.out_dir
    categories = {c.category for c in run.cases}
    assert len(categories) == 4
    summary = json.loads((out / "summary.json").read_text())["summary"]
    expected = {(e, c) for e in ("base", "+thinker") for c in categories | {"all"}}
    assert {(r["entry"], r["category"]) for r in summary} == expected and len(summary) == len(expected)
    assert len((out / "summary.csv").read_text().strip().splitlines()) == 1 + len(expected)
    rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 and all((out / r["image"]).is_file() for r in rows)
    assert all(0.0 <= r["scores"]["overall"] <= 1.0 for r in rows)
    # the thinker's turns are in the trace: edits and critiques with the expert's scores
    thinker_steps = [s for r in rows if r["entry"] == "+thinker" for s in r["turns"][0]["steps"]]
    assert {s["kind"] for s in thinker_steps} >= {"edit"} and len(thinker_steps) > 4
    assert (out / "report.html").stat().st_size > 10_000
    assert not (out / "charts" / "turns.png").exists()  # single-turn: no per-turn chart

    again = run_compare(config, write_report=False)
    assert again.edited == {"base": 0, "+thinker": 0}


def test_shapes_mt_runs_three_turns_per_sequence(tiny_editor, tmp_path):
    config = {
        "benchmark": "shapes-mt",
        "limit": 2,
        "editor": tiny_editor,
        "entries": {"base": {}},
        "out_dir": str(tmp_path / "mt"),
        "progress": False,
        "bootstrap": 200,
    }
    run = run_compare(config)
    assert len(run.rows) == 2
    turns_png = run.out_dir / "charts" / "turns.png"  # MT-EditFlow's per-turn view, in the HTML page too
    assert turns_png.stat().st_size > 5_000 and 'alt="turns"' in (run.out_dir / "report.html").read_text()
    for row in run.rows:
        assert len(row.turns) == 3 and len(row.turn_scores) == 3 and set(row.scores) == {"overall", "if", "cc", "success"} | {
            f"{m}_t{k}" for m in ("o", "if", "cc", "success") for k in (1, 2, 3)
        }
        for k, turn in enumerate(row.turn_scores, 1):  # the per-turn summary metrics are the turn records'
            assert (row.scores[f"o_t{k}"], row.scores[f"success_t{k}"]) == (turn["overall"], turn["success"])


def _rows(run) -> dict[tuple[str, str], dict]:
    return {(r["entry"], r["case_id"]): r for r in (json.loads(line) for line in (run.out_dir / "cases.jsonl").read_text().splitlines())}


def _thinker(**options):
    return {"refiners": [{"kind": "thinker", "thinker": "expert", "max_turns": 2, **options}]}


def _compare(tmp_path, direct_works, entries):
    from refine.shapes.data import find_case

    config = {
        "benchmark": "shapes-bench",
        "limit": 8,
        "editor": {"kind": "refine.testing.shapes_fakes:direct_only_editor", "direct_works": direct_works},
        "entries": entries,
        "out_dir": str(tmp_path / "out"),
        "progress": False,
        "bootstrap": 200,
    }
    run = run_compare(config)
    cases = {c.id: find_case(c.id) for c in run.cases}
    rephrased = [c for c in cases.values() if c.instruction != c.direct_instruction]
    assert len(rephrased) >= 3  # indirect cases and paraphrased direct ones: the thinker has something to rewrite
    return run, cases, rephrased


def test_the_expert_thinker_rewrites_into_the_direct_phrasing_and_keeps_the_better_edit(tmp_path):
    # The editor does a case's edit only when told its direct phrasing: the base entry fails every
    # rephrased case; the thinker's second turn, rewritten, succeeds, and best-of selection keeps it.
    run, cases, rephrased = _compare(tmp_path, True, {"base": {}, "+thinker": _thinker()})
    rows = _rows(run)
    for case in rephrased:
        base, thinker = rows[("base", case.id)], rows[("+thinker", case.id)]
        assert base["scores"]["if"] == 0.0 and thinker["scores"]["if"] == 1.0 and thinker["scores"]["overall"] == 1.0
        edits = [s for s in thinker["turns"][0]["steps"] if s["kind"] == "edit"]
        assert [s["instruction"] for s in edits] == [case.instruction, case.direct_instruction]  # the rewrite
        assert thinker["instruction_used"] == case.direct_instruction  # the selection: the second edit
    for case in set(cases.values()) - set(rephrased):  # already direct: one turn, nothing to fix
        assert rows[("+thinker", case.id)]["scores"]["overall"] == rows[("base", case.id)]["scores"]["overall"] == 1.0


def test_best_selection_keeps_the_first_edit_when_the_rewrite_makes_it_worse_and_last_does_not(tmp_path):
    # Here the direct phrasing gives noise: turn 2 is worse than turn 1 (the unchanged source).
    entries = {"base": {}, "+thinker": _thinker(), "+thinker-last": _thinker(select="last")}
    run, _, rephrased = _compare(tmp_path, False, entries)
    rows = _rows(run)
    for case in rephrased:
        base, best, last = (rows[(entry, case.id)] for entry in entries)
        assert [s["instruction"] for s in last["turns"][0]["steps"] if s["kind"] == "edit"] == [case.instruction, case.direct_instruction]
        assert best["instruction_used"] == case.instruction and best["scores"] == base["scores"]
        assert last["instruction_used"] == case.direct_instruction and last["scores"]["cc"] < best["scores"]["cc"]  # IF is 0 for both
